package org.moe4j.core.config;

/**
 * Expert capacity. With {@code factor == 0} routing is dropless; otherwise each expert takes at most
 * {@code ceil(factor · tokens · topK / experts)} assignments and drops the rest by {@code policy}.
 *
 * @param factor capacity factor, 0 for dropless
 * @param policy which assignments are dropped
 */
public record Capacity(double factor, DropPolicy policy) {
    /** Dropless routing (the default). */
    public static final Capacity DROPLESS = new Capacity(0, DropPolicy.BY_SCORE);

    /**
     * Returns true when no assignment is ever dropped.
     * @return true when no assignment is ever dropped
     */
    public boolean dropless() {
        return factor == 0;
    }

    /**
     * Returns the per-expert capacity, or {@code Integer.MAX_VALUE} when dropless.
     * @param tokens  tokens in the batch
     * @param topK    experts per token
     * @param experts number of experts
     * @return the per-expert capacity, or {@code Integer.MAX_VALUE} when dropless
     */
    public int perExpert(int tokens, int topK, int experts) {
        if (dropless()) {
            return Integer.MAX_VALUE;
        }
        return (int) Math.min(Integer.MAX_VALUE, (long) Math.ceil(factor * tokens * topK / experts));
    }
}
