package org.moe4j.core.config;

/** Which token-expert assignments an over-full expert drops when a capacity factor is set. */
public enum DropPolicy {
    /** Keep the assignments with the highest routing score, drop the rest. */
    BY_SCORE,
    /** Keep the earliest tokens (lowest token index), drop the rest. */
    BY_POSITION
}
