package org.moe4j.cuda.kernels;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.optim.OptimizerKernels;

/** Registers {@link CudaOptimizerKernels} as the {@code cuda} provider of {@link OptimizerKernels}. */
public final class CudaOptimizerKernelsProvider implements KernelProvider<OptimizerKernels> {
    /** Creates the provider (ServiceLoader instantiates it). */
    public CudaOptimizerKernelsProvider() {
    }

    @Override
    public String backend() {
        return CudaBackend.NAME;
    }

    @Override
    public Class<OptimizerKernels> family() {
        return OptimizerKernels.class;
    }

    @Override
    public OptimizerKernels create(Backend backend) {
        return new CudaOptimizerKernels(backend);
    }
}
