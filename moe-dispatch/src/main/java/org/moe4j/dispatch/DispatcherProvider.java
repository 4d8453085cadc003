package org.moe4j.dispatch;

import org.moe4j.core.backend.Backend;

/**
 * A dispatch strategy, found at run time through {@link java.util.ServiceLoader} (like kernel
 * providers): list the implementation in {@code META-INF/services/org.moe4j.dispatch.DispatcherProvider}
 * (and {@code provides} in a module descriptor). {@link Dispatchers} picks the provider whose
 * {@link #id()} equals the configured {@link DispatchConfig#strategy()}; moe4j registers
 * {@code all-to-all}, {@code all-gather} and {@code static-all-to-all}.
 *
 * <p>Implementations usually extend {@link org.moe4j.dispatch.internal.AbstractDispatcher}, which
 * holds the shared input validation, row layout and group-offset logic.
 */
public interface DispatcherProvider {
    /**
     * Returns the strategy name this provider answers to, e.g. {@code all-to-all}.
     * @return the strategy name this provider answers to, e.g. {@code all-to-all}
     */
    String id();

    /**
     * Returns true when a step on this strategy reads nothing back from device memory (no device→host synchronisation), so it can be captured as a CUDA graph.
     * @return true when a step on this strategy reads nothing back from device memory (no
     *         device→host synchronisation), so it can be captured as a CUDA graph
     */
    default boolean hostSyncFree() {
        return false;
    }

    /**
     * Creates a dispatcher for one rank.
     *
     * @param config  settings; {@code config.strategy()} equals {@link #id()}
     * @param comm    the expert-parallel group
     * @param backend allocates outputs
     * @param kernels the dispatch kernels of {@code backend}
     * @return the dispatcher
     * @throws IllegalArgumentException if the settings do not suit this strategy or group
     */
    Dispatcher create(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels);
}
