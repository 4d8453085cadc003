package org.moe4j.core.backend;

/**
 * Supplies one backend's implementation of one kernel family. A module that needs device kernels
 * declares the family as an interface in its own package (e.g. {@code RoutingKernels}) and
 * registers its CPU reference provider in
 * {@code META-INF/services/org.moe4j.core.backend.KernelProvider}; moe-cuda registers its own.
 *
 * @param <K> the kernel family interface
 */
public interface KernelProvider<K> {
    /**
     * Returns the {@link Backend#name()} this provider belongs to.
     * @return the {@link Backend#name()} this provider belongs to
     */
    String backend();

    /**
     * Returns the kernel family interface implemented.
     * @return the kernel family interface implemented
     */
    Class<K> family();

    /**
     * Returns the kernels.
     * @param backend the selected backend instance (for allocation, streams, device handles)
     * @return the kernels
     */
    K create(Backend backend);
}
