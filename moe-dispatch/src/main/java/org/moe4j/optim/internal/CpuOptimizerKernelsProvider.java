package org.moe4j.optim.internal;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.optim.OptimizerKernels;

/** Registers {@link CpuOptimizerKernels} as the "cpu" backend's {@link OptimizerKernels}. */
public final class CpuOptimizerKernelsProvider implements KernelProvider<OptimizerKernels> {
    @Override
    public String backend() {
        return CpuBackend.NAME;
    }

    @Override
    public Class<OptimizerKernels> family() {
        return OptimizerKernels.class;
    }

    @Override
    public OptimizerKernels create(Backend backend) {
        return new CpuOptimizerKernels();
    }
}
