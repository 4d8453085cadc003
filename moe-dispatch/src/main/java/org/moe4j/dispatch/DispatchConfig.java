package org.moe4j.dispatch;

import java.util.Objects;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.MoeConfig;

/**
 * Settings of a {@link Dispatcher}.
 *
 * @param experts        routed experts {@code E} (global); rank {@code r} of {@code W} owns
 *                       {@code [r*E/W, (r+1)*E/W)}
 * @param groupAlignment pad each local expert's row group to a multiple of this (1 = none)
 * @param options        strategy name and its options (see {@link DispatchOptions}); the name is resolved
 *                       by {@link Dispatchers} when a dispatcher is created
 * @param dropPolicy     which rows a static-shape chunk keeps when more are routed to it than fit
 * @param forceBalanced  the routing is the router's force-balanced round robin (slot {@code t*K+k} to expert
 *                       {@code (t*K+k) mod E}; benchmarks): the static-shape strategy then sizes its chunks
 *                       to exactly the balanced split, so nothing is padded (any other routing stays
 *                       correct: what does not fit is dropped by the policy and counted)
 */
public record DispatchConfig(int experts, int groupAlignment, DispatchOptions options, DropPolicy dropPolicy,
        boolean forceBalanced) {

    /**
     * Validates the settings.
     *
     * @throws IllegalArgumentException on a non-positive {@code experts} or {@code groupAlignment}
     * @throws NullPointerException     on a null {@code options} or {@code dropPolicy}
     */
    public DispatchConfig {
        Objects.requireNonNull(options, "DispatchConfig.options");
        Objects.requireNonNull(dropPolicy, "DispatchConfig.dropPolicy");
        if (experts < 1) {
            throw new IllegalArgumentException("DispatchConfig.experts must be >= 1, got " + experts);
        }
        if (groupAlignment < 1) {
            throw new IllegalArgumentException("DispatchConfig.groupAlignment must be >= 1, got " + groupAlignment);
        }
    }

    /**
     * Returns all-to-all, no padding, no dedup, weighting after the return trip.
     * @param experts routed experts {@code E}
     * @return all-to-all, no padding, no dedup, weighting after the return trip
     */
    public static DispatchConfig of(int experts) {
        return new DispatchConfig(experts, 1, DispatchOptions.DEFAULT, DropPolicy.BY_SCORE, false);
    }

    /**
     * Returns experts and group alignment taken from it, all-to-all.
     * @param config the layer configuration
     * @return experts, group alignment, strategy and options, and the capacity's drop policy taken from it
     */
    public static DispatchConfig from(MoeConfig config) {
        return new DispatchConfig(config.experts(), config.groupAlignment(), config.dispatch(),
                config.capacity().policy(), false);
    }

    /**
     * Returns the strategy name.
     * @return the strategy name
     */
    public String strategy() {
        return options.strategy();
    }

    /**
     * Returns whether a token is sent once per destination rank (all-to-all only).
     * @return whether a token is sent once per destination rank (all-to-all only)
     */
    public boolean perRankDedup() {
        return options.perRankDedup();
    }

    /**
     * Returns whether rows are weighted on the expert rank before the return trip (all-to-all only).
     * @return whether rows are weighted on the expert rank before the return trip (all-to-all only)
     */
    public boolean weightBeforeReturn() {
        return options.weightBeforeReturn();
    }

    /**
     * Returns a copy with that alignment.
     * @param alignment group alignment
     * @return a copy with that alignment
     */
    public DispatchConfig withGroupAlignment(int alignment) {
        return new DispatchConfig(experts, alignment, options, dropPolicy, forceBalanced);
    }

    /**
     * Returns a copy with that strategy and default options for it.
     * @param s a built-in strategy
     * @return a copy with that strategy and default options for it
     * @throws IllegalArgumentException if the current options do not apply to {@code s}
     */
    public DispatchConfig withStrategy(DispatchStrategy s) {
        return withStrategy(Objects.requireNonNull(s, "strategy").id());
    }

    /**
     * Returns a copy with that strategy, keeping the other options.
     * @param name a strategy name (resolved when the dispatcher is created)
     * @return a copy with that strategy, keeping the other options
     * @throws IllegalArgumentException if the name is invalid or the current options do not apply to it
     */
    public DispatchConfig withStrategy(String name) {
        return withOptions(new DispatchOptions(name, options.perRankDedup(), options.weightBeforeReturn(),
                options.chunkFactor(), options.chunkRows()));
    }

    /**
     * Returns a copy with them.
     * @param o strategy and options
     * @return a copy with them
     */
    public DispatchConfig withOptions(DispatchOptions o) {
        return new DispatchConfig(experts, groupAlignment, o, dropPolicy, forceBalanced);
    }

    /**
     * Returns a copy with that setting.
     * @param dedup whether to send a token once per destination rank
     * @return a copy with that setting
     * @throws IllegalArgumentException if the strategy is not all-to-all
     */
    public DispatchConfig withPerRankDedup(boolean dedup) {
        return withOptions(new DispatchOptions(options.strategy(), dedup, options.weightBeforeReturn(),
                options.chunkFactor(), options.chunkRows()));
    }

    /**
     * Returns a copy with that setting.
     * @param before whether to weight on the expert rank before the return trip
     * @return a copy with that setting
     * @throws IllegalArgumentException if the strategy is not all-to-all
     */
    public DispatchConfig withWeightBeforeReturn(boolean before) {
        return withOptions(new DispatchOptions(options.strategy(), options.perRankDedup(), before,
                options.chunkFactor(), options.chunkRows()));
    }

    /**
     * Returns a copy with that policy.
     * @param policy which rows an over-full static chunk keeps
     * @return a copy with that policy
     */
    public DispatchConfig withDropPolicy(DropPolicy policy) {
        return new DispatchConfig(experts, groupAlignment, options, policy, forceBalanced);
    }

    /**
     * Returns a copy with that setting.
     * @param balanced whether the routing is the force-balanced round robin
     * @return a copy with that setting
     */
    public DispatchConfig withForceBalanced(boolean balanced) {
        return new DispatchConfig(experts, groupAlignment, options, dropPolicy, balanced);
    }

    /**
     * The static chunk capacity for a batch of {@code tokens} on one rank: the exact largest
     * per-destination split of the force-balanced round robin when {@link #forceBalanced()}, else
     * {@link DispatchOptions#chunkCapacity}.
     *
     * @param tokens tokens on the rank
     * @param topK   experts per token
     * @param world  ranks
     * @return rows per (source, destination) chunk, at least 1
     * @throws IllegalArgumentException on bad arguments (see {@link DispatchOptions#chunkCapacity})
     */
    public int chunkCapacity(int tokens, int topK, int world) {
        int c = options.chunkCapacity(tokens, topK, world);
        if (!forceBalanced || options.chunkRows() > 0) {
            return c;
        }
        long slots = (long) tokens * topK;
        int local = experts / world;
        long perExpert = slots / experts;
        long extra = slots % experts; // experts [0, extra) get one more; rank 0 holds the most
        long first = perExpert * local + Math.min(extra, local);
        return (int) Math.max(1, Math.min(first, c));
    }
}
