package org.moe4j.dispatch;

import org.moe4j.core.config.DispatchOptions;

/**
 * The built-in dispatch strategies, each registered through {@link DispatcherProvider} under its
 * {@link #id()}. Every strategy gives bitwise-identical results (the static-shape one whenever no
 * chunk overflows). Strategies from other modules are named by their provider's id only.
 */
public enum DispatchStrategy {
    /** Count exchange, then all-to-all-v of the routed rows there and back (the default). */
    ALL_TO_ALL(DispatchOptions.ALL_TO_ALL),
    /**
     * All-gather every rank's tokens; each rank takes the rows routed to its experts; results return
     * by a reduce-scatter of per-(token, k) slot rows. Better when tokens per rank are few.
     */
    ALL_GATHER(DispatchOptions.ALL_GATHER),
    /**
     * All-to-all with fixed splits: every (source, destination) chunk is padded to a capacity known
     * before the step, the routing travels with the rows, and no count is read back to the host, so a
     * step can be captured as a CUDA graph. Overflow beyond the capacity is dropped by the drop policy
     * and counted.
     */
    STATIC_ALL_TO_ALL(DispatchOptions.STATIC_ALL_TO_ALL);

    private final String id;

    DispatchStrategy(String id) {
        this.id = id;
    }

    /**
     * Returns the provider id, e.g. {@code all-to-all}.
     * @return the provider id, e.g. {@code all-to-all}
     */
    public String id() {
        return id;
    }
}
