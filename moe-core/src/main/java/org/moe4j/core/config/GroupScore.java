package org.moe4j.core.config;

/** How node-limited routing scores an expert group. */
public enum GroupScore {
    /** Sum of the two highest biased scores in the group (DeepSeek-V3 {@code noaux_tc}, torchtitan). */
    TOP2_SUM,
    /** Highest score in the group (DeepSeek-V2 {@code group_limited_greedy}). */
    MAX
}
