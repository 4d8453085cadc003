package org.moe4j.core.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * Vector functions whose bits do not depend on how the JVM runs them. The Vector API's transcendental
 * lane operations ({@code VectorOperators.EXP} and the like) have a C2 intrinsic and a Java fallback that
 * may differ in the last bit, so a CPU kernel using them gives different results before and after the JIT
 * compiles it. The functions here use only exactly rounded IEEE operations (add, mul, fma, min/max, bit
 * manipulation), so interpreted, C1 and C2 code, and every vector species, give the same bits: what the
 * CPU kernels' determinism guarantees (docs/training.md) rest on.
 */
public final class VectorMath {
    private static final float LOG2E = 1.44269504088896341f;
    private static final float LN2_HI = 0.693359375f;
    private static final float LN2_LO = -2.12194440e-4f;
    /** Below this {@code exp} returns 0 (the true value is under 1.7e-38, irrelevant next to 1). */
    private static final float EXP_LO = -87.0f;
    /** Above this {@code exp} returns +Inf. */
    private static final float EXP_HI = 88.7f;
    /** 1.5 · 2²³: adding it rounds a float of magnitude < 2²² to an integer (ties to even). */
    private static final float ROUND_MAGIC = 12582912f;
    private static final int ROUND_MAGIC_BITS = Float.floatToRawIntBits(ROUND_MAGIC);

    private VectorMath() {
    }

    /**
     * {@code e^x} per lane, a Cephes-style polynomial from exactly rounded operations only, so interpreted,
     * C1 and C2 code (and the Vector API's intrinsic and fallback paths) give the same bits; any species.
     *
     * @param x arguments
     * @return {@code e^x} per lane, within about 1 ulp from -86.5 to 88.7; 0 below -87 (and possibly from -87
     *         to -86.5, where the true value is under 2e-38: the scale {@code 2^(n-1)} would be subnormal);
     *         +Inf above 88.7; NaN for NaN
     */
    public static FloatVector exp(FloatVector x) {
        VectorSpecies<Float> s = x.species();
        VectorMask<Float> under = x.compare(VectorOperators.LT, EXP_LO);
        VectorMask<Float> over = x.compare(VectorOperators.GT, EXP_HI);
        FloatVector xc = x.max(EXP_LO).min(EXP_HI);
        FloatVector t = xc.mul(LOG2E).add(ROUND_MAGIC);
        FloatVector n = t.sub(ROUND_MAGIC);
        IntVector ni = (IntVector) t.reinterpretAsInts();
        ni = ni.sub(ROUND_MAGIC_BITS);
        FloatVector r = n.fma(FloatVector.broadcast(s, -LN2_HI), xc);
        r = n.fma(FloatVector.broadcast(s, -LN2_LO), r);
        FloatVector p = r.fma(1.9875691500E-4f, 1.3981999507E-3f);
        p = p.fma(r, FloatVector.broadcast(s, 8.3334519073E-3f));
        p = p.fma(r, FloatVector.broadcast(s, 4.1665795894E-2f));
        p = p.fma(r, FloatVector.broadcast(s, 1.6666665459E-1f));
        p = p.fma(r, FloatVector.broadcast(s, 5.0000001201E-1f));
        FloatVector y = p.fma(r.mul(r), r).add(1f);
        // 2^n as 2^(n-1) · 2 so that n = 128 (x near 88.7) stays representable
        FloatVector scale = (FloatVector) ni.add(126).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats();
        y = y.mul(scale).mul(2f);
        y = y.blend(0f, under);
        return y.blend(Float.POSITIVE_INFINITY, over);
    }
}
