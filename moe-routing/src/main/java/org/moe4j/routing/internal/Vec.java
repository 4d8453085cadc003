package org.moe4j.routing.internal;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.core.cpu.VectorMath;

/**
 * Row-wise vector helpers for the routing kernels. Only exactly rounded IEEE operations are used
 * (add, mul, div, fma, min/max, bit manipulation) and lane sums are taken in lane order, so
 * interpreted, C1 and C2 code give bitwise identical results. In particular {@link #exp} is the
 * Cephes-style polynomial of {@link VectorMath#exp} instead of {@code VectorOperators.EXP}, whose
 * intrinsic and fallback implementations may differ in the last bit.
 */
final class Vec {
    /**
     * Tests only: {@code -Dmoe4j.routing.vectorBits=128|256|512} runs the kernels with that vector
     * width (e.g. the 16-lane AVX-512 layout on an AVX2 machine, through the Vector API's Java
     * fallback). Read once into a constant, so it costs nothing at run time.
     */
    static final VectorSpecies<Float> S = species(vectorBits());
    static final int L = S.length();
    /** Int lanes of the same shape, so float and int vectors have the same lane count. */
    static final VectorSpecies<Integer> IS = VectorSpecies.of(int.class, S.vectorShape());

    private Vec() {
    }

    /** The property that overrides the vector width (tests only). */
    static final String VECTOR_BITS_PROPERTY = "moe4j.routing.vectorBits";

    /**
     * @return {@value #VECTOR_BITS_PROPERTY}: 0 (unset: the preferred width), 64, 128, 256 or 512
     * @throws IllegalArgumentException naming the property and its value otherwise
     */
    static int vectorBits() {
        int bits = org.moe4j.core.Settings.intProperty(VECTOR_BITS_PROPERTY, 0, 0, 512);
        if (bits != 0 && bits != 64 && bits != 128 && bits != 256 && bits != 512) {
            throw new IllegalArgumentException("system property " + VECTOR_BITS_PROPERTY + "='"
                    + System.getProperty(VECTOR_BITS_PROPERTY) + "' must be 64, 128, 256 or 512");
        }
        return bits;
    }

    private static VectorSpecies<Float> species(int bits) {
        return bits == 0 ? FloatVector.SPECIES_PREFERRED : VectorSpecies.of(float.class, VectorShape.forBitSize(bits));
    }

    /**
     * @param x arguments
     * @return {@code e^x} per lane ({@link VectorMath#exp}: exactly rounded operations only)
     */
    static FloatVector exp(FloatVector x) {
        return VectorMath.exp(x);
    }

    /** @return the lanes of {@code v} summed in lane order */
    static float sumLanes(FloatVector v, float[] tmp) {
        v.intoArray(tmp, 0);
        float s = 0f;
        for (int i = 0; i < L; i++) {
            s += tmp[i];
        }
        return s;
    }

    /** @return true if {@code a[0..n)} has no NaN and no infinity */
    static boolean allFinite(float[] a, int n) {
        // v - v is NaN exactly for NaN and ±Inf; NaN propagates through the sum
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (; i <= n - L; i += L) {
            FloatVector v = FloatVector.fromArray(S, a, i);
            acc = acc.add(v.sub(v));
        }
        if (i < n) {
            VectorMask<Float> m = S.indexInRange(i, n);
            FloatVector v = FloatVector.fromArray(S, a, i, m);
            acc = acc.add(v.sub(v), m);
        }
        return !acc.compare(VectorOperators.NE, 0f).anyTrue();
    }

    /**
     * Replaces {@code a[0..n)} by its softmax.
     *
     * @return {@code logsumexp(a)} of the original values
     */
    static float softmaxInPlace(float[] a, int n, float[] tmp) {
        float max = max(a, n);
        FloatVector acc = FloatVector.zero(S);
        for (int i = 0; i < n; i += L) {
            VectorMask<Float> m = S.indexInRange(i, n);
            FloatVector e = exp(FloatVector.fromArray(S, a, i, m).sub(max));
            e.intoArray(a, i, m);
            acc = acc.add(e, m);
        }
        float sum = sumLanes(acc, tmp);
        for (int i = 0; i < n; i += L) {
            VectorMask<Float> m = S.indexInRange(i, n);
            FloatVector.fromArray(S, a, i, m).div(sum).intoArray(a, i, m);
        }
        return max + (float) Math.log(sum);
    }

    /**
     * Replaces {@code a[0..n)} by {@code sigmoid(a) = 1 / (1 + e^-a)}.
     *
     * @param wantLse also compute {@code logsumexp} of the original values (costs one more exp pass)
     * @return the logsumexp, or 0 when not wanted
     */
    static float sigmoidInPlace(float[] a, int n, boolean wantLse, float[] tmp) {
        float lse = 0f;
        if (wantLse) {
            float max = max(a, n);
            FloatVector acc = FloatVector.zero(S);
            for (int i = 0; i < n; i += L) {
                VectorMask<Float> m = S.indexInRange(i, n);
                acc = acc.add(exp(FloatVector.fromArray(S, a, i, m).sub(max)), m);
            }
            lse = max + (float) Math.log(sumLanes(acc, tmp));
        }
        FloatVector one = FloatVector.broadcast(S, 1f);
        int i = 0;
        for (; i <= n - L; i += L) {
            FloatVector v = FloatVector.fromArray(S, a, i);
            one.div(exp(v.neg()).add(1f)).intoArray(a, i);
        }
        if (i < n) {
            VectorMask<Float> m = S.indexInRange(i, n);
            FloatVector v = FloatVector.fromArray(S, a, i, m);
            one.div(exp(v.neg()).add(1f)).intoArray(a, i, m);
        }
        return lse;
    }

    /** @return the maximum of {@code a[0..n)} */
    static float max(float[] a, int n) {
        FloatVector mx = FloatVector.broadcast(S, Float.NEGATIVE_INFINITY);
        int i = 0;
        for (; i <= n - L; i += L) {
            mx = mx.max(FloatVector.fromArray(S, a, i));
        }
        if (i < n) {
            VectorMask<Float> m = S.indexInRange(i, n);
            mx = mx.blend(mx.max(FloatVector.fromArray(S, a, i, m)), m);
        }
        return mx.reduceLanes(VectorOperators.MAX); // exact: order does not matter
    }

    /** {@code out = a + b} over {@code [0, n)}. */
    static void add(float[] a, float[] b, float[] out, int n) {
        int i = 0;
        for (; i <= n - L; i += L) {
            FloatVector.fromArray(S, a, i).add(FloatVector.fromArray(S, b, i)).intoArray(out, i);
        }
        if (i < n) {
            VectorMask<Float> m = S.indexInRange(i, n);
            FloatVector.fromArray(S, a, i, m).add(FloatVector.fromArray(S, b, i, m)).intoArray(out, i, m);
        }
    }

    /** @return {@code e^x} for one value, the same arithmetic as {@link #exp(FloatVector)} */
    static float exp(float x) {
        return exp(FloatVector.broadcast(S, x)).lane(0);
    }
}
