package org.moe4j.routing;

import java.util.Objects;

/**
 * Per-segment statistics of the balance losses: for each segment {@code s} of consecutive tokens
 * and expert {@code e}, the sum over the segment's valid tokens of the balance probability
 * {@code p[t, e]}, the number of valid tokens that selected {@code e}, the valid-token count and the
 * sum of {@code logsumexp(logits[t])²}. The router's auxiliary losses are functions of these
 * statistics over all segments of the batch, folded in segment order.
 *
 * @param experts experts {@code E}
 * @param probSum F32 values {@code [segments, experts]}
 * @param counts  {@code [segments, experts]}
 * @param valid   {@code [segments]}
 * @param lseSq   {@code [segments]}
 */
public record BalanceStats(int experts, float[] probSum, int[] counts, int[] valid, float[] lseSq) {
    /**
     * Checks that the arrays agree in size.
     *
     * @throws IllegalArgumentException when the array sizes do not agree
     * @throws NullPointerException     on a null array
     */
    public BalanceStats {
        Objects.requireNonNull(probSum, "probSum");
        Objects.requireNonNull(counts, "counts");
        Objects.requireNonNull(valid, "valid");
        Objects.requireNonNull(lseSq, "lseSq");
        if (experts < 1 || lseSq.length != valid.length || probSum.length != (long) valid.length * experts
                || counts.length != probSum.length) {
            throw new IllegalArgumentException("BalanceStats: sizes disagree: experts=" + experts + ", probSum="
                    + probSum.length + ", counts=" + counts.length + ", valid=" + valid.length + ", lseSq=" + lseSq.length);
        }
    }

    /**
     * The number of segments.
     *
     * @return {@code valid.length}
     */
    public int segments() {
        return valid.length;
    }

    /**
     * Combines the statistics of all ranks that route one global batch, so the auxiliary losses are
     * means over the whole batch rather than per rank (see {@link Router.Builder#statsExchange}).
     */
    @FunctionalInterface
    public interface Exchange {
        /**
         * A collective: every rank of the group calls it once per statistics pass, in the same order.
         *
         * @param local this rank's statistics, segments in token order
         * @return every rank's statistics, concatenated in rank order (the same on every rank)
         */
        BalanceStats gather(BalanceStats local);
    }
}
