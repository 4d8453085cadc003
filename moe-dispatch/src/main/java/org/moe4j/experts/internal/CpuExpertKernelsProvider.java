package org.moe4j.experts.internal;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.experts.ExpertKernels;

/** Registers {@link CpuExpertKernels} as the "cpu" backend's {@link ExpertKernels}. */
public final class CpuExpertKernelsProvider implements KernelProvider<ExpertKernels> {
    @Override
    public String backend() {
        return CpuBackend.NAME;
    }

    @Override
    public Class<ExpertKernels> family() {
        return ExpertKernels.class;
    }

    @Override
    public ExpertKernels create(Backend backend) {
        return new CpuExpertKernels();
    }
}
