package org.moe4j.cuda.kernels;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.dispatch.DispatchKernels;

/** Registers {@link CudaDispatchKernels} as the {@code cuda} provider of {@link DispatchKernels}. */
public final class CudaDispatchKernelsProvider implements KernelProvider<DispatchKernels> {
    /** Creates the provider (ServiceLoader instantiates it). */
    public CudaDispatchKernelsProvider() {
    }

    @Override
    public String backend() {
        return CudaBackend.NAME;
    }

    @Override
    public Class<DispatchKernels> family() {
        return DispatchKernels.class;
    }

    @Override
    public DispatchKernels create(Backend backend) {
        return new CudaDispatchKernels(backend);
    }
}
