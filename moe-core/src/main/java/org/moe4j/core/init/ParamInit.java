package org.moe4j.core.init;

import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.buffer.HostView;

/**
 * Seeded, counter-based parameter initialisation that any backend can reproduce bit for bit.
 *
 * <p>Element {@code i} of the tensor with stream id {@code s} under seed {@code seed} is a pure
 * function of {@code (seed, s, i)}, so values do not depend on thread count, on how a tensor is
 * split across ranks, or on the order tensors are initialised. The algorithm, for a GPU port:
 * <pre>
 *   mix(z):  z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L; z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL; return z ^ (z >>> 31)
 *   key    = mix(seed + 0x9E3779B97F4A7C15L * (s + 1))
 *   h      = mix(key  + 0x9E3779B97F4A7C15L * (i + 1))            (64-bit wrap-around arithmetic)
 *   m      = (int) (h >>> 40)                                      (24 random bits)
 *   sym    = (float) (m - 2^23) * 2^-23                            (exact: a 24-bit dyadic in [-1, 1))
 *   value  = sym * bound                                           (one fp32 multiply, round to nearest)
 * </pre>
 * This is the uniform {@code U(-bound, bound)} of {@code nn.Linear}'s default with
 * {@code bound = 1/sqrt(fanIn)}.
 */
public final class ParamInit {
    private static final long GOLDEN = 0x9E3779B97F4A7C15L;

    private ParamInit() {
    }

    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /**
     * Returns a value in {@code [-1, 1)} with 24 random bits.
     * @param seed   run seed
     * @param stream tensor stream id
     * @param index  element index within the stream
     * @return a value in {@code [-1, 1)} with 24 random bits
     */
    public static float symmetric(long seed, long stream, long index) {
        long key = mix(seed + GOLDEN * (stream + 1));
        long h = mix(key + GOLDEN * (index + 1));
        int m = (int) (h >>> 40);
        return (m - (1 << 23)) * 0x1p-23f;
    }

    /**
     * Returns a value of {@code U(-bound, bound)}.
     * @param seed   run seed
     * @param stream tensor stream id
     * @param index  element index within the stream
     * @param bound  half-width
     * @return a value of {@code U(-bound, bound)}
     */
    public static float uniform(long seed, long stream, long index, float bound) {
        return symmetric(seed, stream, index) * bound;
    }

    /**
     * Fills {@code target} with {@code U(-bound, bound)}, element {@code j} taking stream index
     * {@code offset + j} (so a rank's slice of a larger tensor gets the same values the whole would).
     *
     * @param target destination (any floating dtype; rounded on store)
     * @param seed   run seed
     * @param stream tensor stream id
     * @param offset stream index of the first element
     * @param bound  half-width
     */
    public static void fillUniform(HostBuffer target, long seed, long stream, long offset, float bound) {
        long n = target.numel();
        for (long j = 0; j < n; j++) {
            target.setFloat(j, uniform(seed, stream, offset + j, bound));
        }
    }

    /**
     * {@link #fillUniform(HostBuffer, long, long, long, float)} for a buffer in any backend's memory,
     * through {@link Buffer#hostView}: filled in place in host memory, else filled on the host and
     * uploaded, so every backend holds bitwise the same values.
     *
     * @param target destination (any floating dtype; rounded on store)
     * @param seed   run seed
     * @param stream tensor stream id
     * @param offset stream index of the first element
     * @param bound  half-width
     */
    public static void fillUniform(Buffer target, long seed, long stream, long offset, float bound) {
        try (HostView v = target.hostView(HostView.Mode.WRITE)) {
            fillUniform(v.host(), seed, stream, offset, bound);
        }
    }

    /**
     * Returns {@code 1/sqrt(fanIn)}, the bound of {@code nn.Linear}'s default init.
     * @param fanIn input features of a linear layer
     * @return {@code 1/sqrt(fanIn)}, the bound of {@code nn.Linear}'s default init
     */
    public static float linearBound(int fanIn) {
        return (float) (1.0 / Math.sqrt(fanIn));
    }
}
