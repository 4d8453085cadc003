package org.moe4j.dispatch;

/** How tokens reach the ranks that own their experts. Both give bitwise-identical results. */
public enum DispatchStrategy {
    /** Count exchange, then all-to-all-v of the routed rows there and back (the default). */
    ALL_TO_ALL,
    /**
     * All-gather every rank's tokens; each rank takes the rows routed to its experts; results return
     * by a reduce-scatter of per-(token, k) slot rows. Better when tokens per rank are few.
     */
    ALL_GATHER
}
