package org.moe4j.routing.internal;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.routing.RoutingKernels;

/** Registers {@link CpuRoutingKernels} as the {@code cpu} provider of {@link RoutingKernels}. */
public final class CpuRoutingKernelsProvider implements KernelProvider<RoutingKernels> {
    @Override
    public String backend() {
        return CpuBackend.NAME;
    }

    @Override
    public Class<RoutingKernels> family() {
        return RoutingKernels.class;
    }

    @Override
    public RoutingKernels create(Backend backend) {
        return new CpuRoutingKernels(CpuParallel.common());
    }
}
