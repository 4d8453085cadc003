package org.moe4j.cuda.kernels;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.experts.ExpertKernels;

/** Registers {@link CudaExpertKernels} as the {@code cuda} provider of {@link ExpertKernels}. */
public final class CudaExpertKernelsProvider implements KernelProvider<ExpertKernels> {
    /** Creates the provider (ServiceLoader instantiates it). */
    public CudaExpertKernelsProvider() {
    }

    @Override
    public String backend() {
        return CudaBackend.NAME;
    }

    @Override
    public Class<ExpertKernels> family() {
        return ExpertKernels.class;
    }

    @Override
    public ExpertKernels create(Backend backend) {
        return new CudaExpertKernels(backend);
    }
}
