package org.moe4j.core.backend;

/** A test kernel family whose provider looks up another family while being created. */
public interface NestedKernels {
    /** @return what the inner family said */
    String inner();

    /** CPU provider that uses {@link EchoKernels} internally. */
    final class Cpu implements KernelProvider<NestedKernels> {
        @Override
        public String backend() {
            return CpuBackend.NAME;
        }

        @Override
        public Class<NestedKernels> family() {
            return NestedKernels.class;
        }

        @Override
        public NestedKernels create(Backend backend) {
            EchoKernels echo = Backends.kernels(EchoKernels.class, backend);
            return echo::who;
        }
    }
}
