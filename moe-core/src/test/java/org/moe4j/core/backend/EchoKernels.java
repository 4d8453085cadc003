package org.moe4j.core.backend;

/** A test kernel family: says which backend implemented it. */
public interface EchoKernels {
    /** @return the implementing backend's name */
    String who();

    /** CPU provider. */
    final class Cpu implements KernelProvider<EchoKernels> {
        @Override
        public String backend() {
            return CpuBackend.NAME;
        }

        @Override
        public Class<EchoKernels> family() {
            return EchoKernels.class;
        }

        @Override
        public EchoKernels create(Backend backend) {
            return () -> "cpu kernels on " + backend.name();
        }
    }

    /** fake-accel provider. */
    final class Accel implements KernelProvider<EchoKernels> {
        @Override
        public String backend() {
            return FakeAccelBackend.NAME;
        }

        @Override
        public Class<EchoKernels> family() {
            return EchoKernels.class;
        }

        @Override
        public EchoKernels create(Backend backend) {
            return () -> "accel kernels on " + backend.name();
        }
    }
}
