package org.moe4j.dispatch;

import java.util.Objects;
import org.moe4j.core.config.MoeConfig;

/**
 * Settings of a {@link Dispatcher}.
 *
 * @param experts            routed experts {@code E} (global); rank {@code r} of {@code W} owns
 *                           {@code [r*E/W, (r+1)*E/W)}
 * @param groupAlignment     pad each local expert's row group to a multiple of this (1 = none)
 * @param strategy           all-to-all or all-gather
 * @param perRankDedup       all-to-all only: send a token once per destination rank even when several
 *                           of its top-k experts live there, expanding on the receiver (DeepEP style)
 * @param weightBeforeReturn all-to-all only: multiply by the routing weight on the expert rank before
 *                           the return trip (rows travel as F32 so the result is identical)
 */
public record DispatchConfig(int experts, int groupAlignment, DispatchStrategy strategy, boolean perRankDedup,
        boolean weightBeforeReturn) {

    /**
     * Validates the components.
     *
     * @param experts            routed experts
     * @param groupAlignment     pad every local expert's group to a multiple of this
     * @param strategy           how tokens travel between ranks
     * @param perRankDedup       send a token once per destination rank
     * @param weightBeforeReturn weight rows on the expert rank before the return trip
     * @throws IllegalArgumentException naming the invalid component
     * @throws NullPointerException     if {@code strategy} is null
     */
    public DispatchConfig {
        Objects.requireNonNull(strategy, "DispatchConfig.strategy");
        if (experts < 1) {
            throw new IllegalArgumentException("DispatchConfig.experts must be >= 1, got " + experts);
        }
        if (groupAlignment < 1) {
            throw new IllegalArgumentException("DispatchConfig.groupAlignment must be >= 1, got " + groupAlignment);
        }
        if (strategy == DispatchStrategy.ALL_GATHER && (perRankDedup || weightBeforeReturn)) {
            throw new IllegalArgumentException("DispatchConfig: perRankDedup and weightBeforeReturn apply to the "
                    + "ALL_TO_ALL strategy only");
        }
    }

    /**
     * Returns all-to-all, no padding, no dedup, weighting after the return trip.
     * @param experts routed experts {@code E}
     * @return all-to-all, no padding, no dedup, weighting after the return trip
     */
    public static DispatchConfig of(int experts) {
        return new DispatchConfig(experts, 1, DispatchStrategy.ALL_TO_ALL, false, false);
    }

    /**
     * Returns experts and group alignment taken from it, all-to-all.
     * @param config the layer configuration
     * @return experts and group alignment taken from it, all-to-all
     */
    public static DispatchConfig from(MoeConfig config) {
        return new DispatchConfig(config.experts(), config.groupAlignment(), DispatchStrategy.ALL_TO_ALL, false, false);
    }

    /**
     * Returns a copy with that alignment.
     * @param alignment group alignment
     * @return a copy with that alignment
     */
    public DispatchConfig withGroupAlignment(int alignment) {
        return new DispatchConfig(experts, alignment, strategy, perRankDedup, weightBeforeReturn);
    }

    /**
     * Returns a copy with that strategy.
     * @param s the strategy
     * @return a copy with that strategy
     */
    public DispatchConfig withStrategy(DispatchStrategy s) {
        return new DispatchConfig(experts, groupAlignment, s, perRankDedup, weightBeforeReturn);
    }

    /**
     * Returns a copy with that setting.
     * @param dedup whether to send a token once per destination rank
     * @return a copy with that setting
     */
    public DispatchConfig withPerRankDedup(boolean dedup) {
        return new DispatchConfig(experts, groupAlignment, strategy, dedup, weightBeforeReturn);
    }

    /**
     * Returns a copy with that setting.
     * @param before whether to weight on the expert rank before the return trip
     * @return a copy with that setting
     */
    public DispatchConfig withWeightBeforeReturn(boolean before) {
        return new DispatchConfig(experts, groupAlignment, strategy, perRankDedup, before);
    }
}
