package org.moe4j.dispatch.internal;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.dispatch.DispatchKernels;

/** Registers {@link CpuDispatchKernels} as the "cpu" provider of {@link DispatchKernels}. */
public final class CpuDispatchKernelProvider implements KernelProvider<DispatchKernels> {
    @Override
    public String backend() {
        return CpuBackend.NAME;
    }

    @Override
    public Class<DispatchKernels> family() {
        return DispatchKernels.class;
    }

    @Override
    public DispatchKernels create(Backend backend) {
        return new CpuDispatchKernels();
    }
}
