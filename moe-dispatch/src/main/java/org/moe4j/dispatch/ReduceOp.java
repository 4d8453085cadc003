package org.moe4j.dispatch;

/** Element-wise reductions of {@link Communicator} collectives. */
public enum ReduceOp {
    /** Sum, in rank order. */
    SUM,
    /** Maximum. */
    MAX
}
