package org.moe4j.core.config;

import java.util.Objects;
import java.util.regex.Pattern;

/**
 * How a layer moves tokens to the ranks that own their experts: the dispatch strategy (by name, found
 * through the dispatcher SPI of moe-dispatch) and its options. The expert-group alignment is
 * {@link MoeConfig#groupAlignment()}.
 *
 * <p>Built-in strategies: {@value #ALL_TO_ALL} (count exchange then all-to-all-v; the default),
 * {@value #ALL_GATHER} (all-gather + reduce-scatter, ring-of-experts style) and
 * {@value #STATIC_ALL_TO_ALL} (every (source, destination) chunk padded to a capacity known before the
 * step, counts travel with the rows, no device→host read). Other names are resolved when the layer is
 * built, against the strategies registered at run time.
 *
 * <p>The static chunk capacity (rows per (source, destination) chunk, static-shape strategy only) is
 * {@code chunkRows} when positive (a global bound, the same on every rank whatever its token count);
 * else {@code ceil(chunkFactor · tokens · topK / W)} when {@code chunkFactor > 0}; else the exact worst
 * case {@code tokens · topK}, which never overflows. The last two follow the rank's token count, so they
 * need every rank to pass the same number of tokens (the usual fixed batch shape); with uneven token
 * counts set {@code chunkRows}. The static dispatcher checks this over the ranks whenever the token
 * count changes and refuses uneven counts on every rank, naming them, before anything is sent.
 *
 * @param strategy           strategy name: lower-case letters, digits and '-', 1 to 64 characters
 * @param perRankDedup       send a token once per destination rank even when several of its top-k experts
 *                           live there (all-to-all only)
 * @param weightBeforeReturn multiply by the routing weight on the expert rank before the return trip
 *                           (all-to-all only)
 * @param chunkFactor        static-shape capacity factor ({@code >= 0}, 0 = not used)
 * @param chunkRows          static-shape capacity in rows per chunk ({@code >= 0}, 0 = not used)
 */
public record DispatchOptions(String strategy, boolean perRankDedup, boolean weightBeforeReturn, double chunkFactor,
        int chunkRows) {
    private static final Pattern NAME = Pattern.compile("[a-z0-9][a-z0-9-]{0,63}");
    /** Name of the count-exchange all-to-all-v strategy (the default). */
    public static final String ALL_TO_ALL = "all-to-all";
    /** Name of the all-gather + reduce-scatter strategy. */
    public static final String ALL_GATHER = "all-gather";
    /** Name of the static-shape (equal-split, padded) all-to-all strategy. */
    public static final String STATIC_ALL_TO_ALL = "static-all-to-all";
    /** The default: count-exchange all-to-all, no dedup, weighting after the return trip. */
    public static final DispatchOptions DEFAULT = new DispatchOptions(ALL_TO_ALL, false, false, 0, 0);

    /**
     * Validates the options.
     *
     * @throws IllegalArgumentException naming the bad field and value
     * @throws NullPointerException     if {@code strategy} is null
     */
    public DispatchOptions {
        Objects.requireNonNull(strategy, "DispatchOptions.strategy");
        requireName(strategy);
        if (!(chunkFactor >= 0) || Double.isInfinite(chunkFactor)) {
            throw new IllegalArgumentException("DispatchOptions.chunkFactor=" + chunkFactor + ": must be finite and >= 0");
        }
        if (chunkRows < 0) {
            throw new IllegalArgumentException("DispatchOptions.chunkRows=" + chunkRows + ": must be >= 0 (0 = not used)");
        }
        if (chunkRows > 0 && chunkFactor > 0) {
            throw new IllegalArgumentException("DispatchOptions: chunkRows=" + chunkRows + " and chunkFactor="
                    + chunkFactor + " both set; give at most one static chunk capacity");
        }
        boolean isStatic = STATIC_ALL_TO_ALL.equals(strategy);
        if ((chunkRows > 0 || chunkFactor > 0) && !isStatic) {
            throw new IllegalArgumentException("DispatchOptions: chunkRows/chunkFactor apply to the " + STATIC_ALL_TO_ALL
                    + " strategy only, not '" + strategy + "'");
        }
        if ((perRankDedup || weightBeforeReturn) && !ALL_TO_ALL.equals(strategy)) {
            throw new IllegalArgumentException("DispatchOptions: perRankDedup and weightBeforeReturn apply to the "
                    + ALL_TO_ALL + " strategy only, not '" + strategy + "'");
        }
    }

    /**
     * Returns the name.
     * @param strategy a strategy name
     * @return the name
     * @throws IllegalArgumentException unless it is 1-64 lower-case letters, digits or '-', starting with a
     *                                  letter or digit
     */
    public static String requireName(String strategy) {
        if (strategy == null || !NAME.matcher(strategy).matches()) {
            throw new IllegalArgumentException("dispatch strategy name '" + strategy
                    + "' is invalid: use 1-64 lower-case letters, digits and '-' (e.g. " + ALL_TO_ALL + ", "
                    + ALL_GATHER + ", " + STATIC_ALL_TO_ALL + ")");
        }
        return strategy;
    }

    /**
     * Returns the default options with that strategy.
     * @param name a strategy name
     * @return the default options with that strategy
     * @throws IllegalArgumentException on an invalid name
     */
    public static DispatchOptions of(String name) {
        return new DispatchOptions(name, false, false, 0, 0);
    }

    /**
     * The static chunk capacity for a batch.
     *
     * @param tokens tokens on the sending rank ({@code >= 0})
     * @param topK   experts per token ({@code >= 1})
     * @param world  expert-parallel ranks ({@code >= 1})
     * @return rows per (source, destination) chunk: {@code chunkRows} when set, else at least 1 and at most
     *         {@code max(1, tokens · topK)}
     * @throws IllegalArgumentException on a negative token count, non-positive topK or world, or a
     *                                  capacity that overflows an {@code int}
     */
    public int chunkCapacity(int tokens, int topK, int world) {
        if (tokens < 0 || topK < 1 || world < 1) {
            throw new IllegalArgumentException("chunkCapacity: tokens=" + tokens + ", topK=" + topK + ", world=" + world
                    + ": need tokens >= 0, topK >= 1, world >= 1");
        }
        long worst = Math.max(1L, (long) tokens * topK);
        long c;
        if (chunkRows > 0) {
            c = chunkRows;
        } else if (chunkFactor > 0) {
            c = (long) Math.ceil(chunkFactor * tokens * topK / world);
        } else {
            c = worst;
        }
        if (chunkRows <= 0) {
            c = Math.max(1, Math.min(c, worst));
        }
        if (c * world > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("chunkCapacity: " + c + " rows x " + world + " ranks overflows an I32 index");
        }
        return (int) c;
    }
}
