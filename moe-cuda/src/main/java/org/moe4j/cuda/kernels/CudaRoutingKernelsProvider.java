package org.moe4j.cuda.kernels;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.KernelProvider;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.routing.RoutingKernels;

/** Registers {@link CudaRoutingKernels} as the {@code cuda} provider of {@link RoutingKernels}. */
public final class CudaRoutingKernelsProvider implements KernelProvider<RoutingKernels> {
    /** Creates the provider (ServiceLoader instantiates it). */
    public CudaRoutingKernelsProvider() {
    }

    @Override
    public String backend() {
        return CudaBackend.NAME;
    }

    @Override
    public Class<RoutingKernels> family() {
        return RoutingKernels.class;
    }

    @Override
    public RoutingKernels create(Backend backend) {
        return new CudaRoutingKernels(backend);
    }
}
