package org.moe4j.routing.internal;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorSpecies;

/**
 * Small fp32 matrix products for the gate, on row-major arrays. Each output element is summed in
 * a fixed order that does not depend on blocking by the caller (lane-strided partial sums over the
 * inner dimension, then lanes in order), so results are deterministic.
 */
final class Gemm {
    private static final VectorSpecies<Float> S = Vec.S;
    private static final int L = Vec.L;

    private Gemm() {
    }

    /**
     * {@code c[i, j] = Σ_h a[i, h] · b[j, h]}.
     *
     * @param a [n, k]
     * @param n rows of a
     * @param b [m, k]
     * @param m rows of b
     * @param k inner size
     * @param c out: [n, m]
     */
    static void abT(float[] a, int n, float[] b, int m, int k, float[] c) {
        float[] tmp = new float[L];
        int j = 0;
        for (; j + 4 <= m; j += 4) {
            int i = 0;
            for (; i + 4 <= n; i += 4) {
                kernel4x4(a, i, b, j, k, c, m, tmp);
            }
            for (; i < n; i++) {
                for (int jj = j; jj < j + 4; jj++) {
                    c[i * m + jj] = dot(a, i * k, b, jj * k, k, tmp);
                }
            }
        }
        for (; j < m; j++) {
            for (int i = 0; i < n; i++) {
                c[i * m + j] = dot(a, i * k, b, j * k, k, tmp);
            }
        }
    }

    private static float dot(float[] a, int ao, float[] b, int bo, int k, float[] tmp) {
        FloatVector acc = FloatVector.zero(S);
        for (int h = 0; h < k; h += L) {
            VectorMask<Float> msk = S.indexInRange(h, k);
            acc = FloatVector.fromArray(S, a, ao + h, msk).fma(FloatVector.fromArray(S, b, bo + h, msk), acc);
        }
        return Vec.sumLanes(acc, tmp);
    }

    private static void kernel4x4(float[] a, int i, float[] b, int j, int k, float[] c, int m, float[] tmp) {
        int a0 = i * k, a1 = a0 + k, a2 = a1 + k, a3 = a2 + k;
        int b0 = j * k, b1 = b0 + k, b2 = b1 + k, b3 = b2 + k;
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c02 = c00, c03 = c00;
        FloatVector c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        FloatVector c20 = c00, c21 = c00, c22 = c00, c23 = c00;
        FloatVector c30 = c00, c31 = c00, c32 = c00, c33 = c00;
        for (int h = 0; h < k; h += L) {
            VectorMask<Float> msk = S.indexInRange(h, k);
            FloatVector w0 = FloatVector.fromArray(S, b, b0 + h, msk);
            FloatVector w1 = FloatVector.fromArray(S, b, b1 + h, msk);
            FloatVector w2 = FloatVector.fromArray(S, b, b2 + h, msk);
            FloatVector w3 = FloatVector.fromArray(S, b, b3 + h, msk);
            FloatVector x = FloatVector.fromArray(S, a, a0 + h, msk);
            c00 = x.fma(w0, c00); c01 = x.fma(w1, c01); c02 = x.fma(w2, c02); c03 = x.fma(w3, c03);
            x = FloatVector.fromArray(S, a, a1 + h, msk);
            c10 = x.fma(w0, c10); c11 = x.fma(w1, c11); c12 = x.fma(w2, c12); c13 = x.fma(w3, c13);
            x = FloatVector.fromArray(S, a, a2 + h, msk);
            c20 = x.fma(w0, c20); c21 = x.fma(w1, c21); c22 = x.fma(w2, c22); c23 = x.fma(w3, c23);
            x = FloatVector.fromArray(S, a, a3 + h, msk);
            c30 = x.fma(w0, c30); c31 = x.fma(w1, c31); c32 = x.fma(w2, c32); c33 = x.fma(w3, c33);
        }
        int r = i * m + j;
        c[r] = Vec.sumLanes(c00, tmp); c[r + 1] = Vec.sumLanes(c01, tmp);
        c[r + 2] = Vec.sumLanes(c02, tmp); c[r + 3] = Vec.sumLanes(c03, tmp);
        r += m;
        c[r] = Vec.sumLanes(c10, tmp); c[r + 1] = Vec.sumLanes(c11, tmp);
        c[r + 2] = Vec.sumLanes(c12, tmp); c[r + 3] = Vec.sumLanes(c13, tmp);
        r += m;
        c[r] = Vec.sumLanes(c20, tmp); c[r + 1] = Vec.sumLanes(c21, tmp);
        c[r + 2] = Vec.sumLanes(c22, tmp); c[r + 3] = Vec.sumLanes(c23, tmp);
        r += m;
        c[r] = Vec.sumLanes(c30, tmp); c[r + 1] = Vec.sumLanes(c31, tmp);
        c[r + 2] = Vec.sumLanes(c32, tmp); c[r + 3] = Vec.sumLanes(c33, tmp);
    }

    /**
     * {@code c[i, :] = Σ_e g[goff + i·m + e] · w[e, :]}, e ascending.
     *
     * @param g    row-major source holding n rows of m values starting at {@code goff}
     * @param goff offset of the first row in g
     * @param n    rows
     * @param m    inner size (columns of g, rows of w)
     * @param w    [m, k]
     * @param k    columns of w
     * @param c    out: [n, k], accumulated from zero
     */
    static void ab(float[] g, int goff, int n, int m, float[] w, int k, float[] c) {
        for (int i = 0; i < n; i++) {
            int co = i * k;
            int go = goff + i * m;
            for (int e = 0; e < m; e++) {
                float s = g[go + e];
                if (s != 0f) {
                    axpy(s, w, e * k, c, co, k);
                }
            }
        }
    }

    /**
     * {@code c[j, :] = Σ_t g[t, col0 + j] · x[t, :]}, t ascending.
     *
     * @param g    [tokens, gcols]
     * @param gcols columns of g
     * @param col0 first column used
     * @param n    columns used
     * @param tokens rows of g and x
     * @param x    [tokens, k]
     * @param k    columns of x
     * @param c    out: [n, k], accumulated from zero
     */
    static void atB(float[] g, int gcols, int col0, int n, int tokens, float[] x, int k, float[] c) {
        for (int t = 0; t < tokens; t++) {
            int go = t * gcols + col0;
            for (int j = 0; j < n; j++) {
                float s = g[go + j];
                if (s != 0f) {
                    axpy(s, x, t * k, c, j * k, k);
                }
            }
        }
    }

    private static void axpy(float s, float[] x, int xo, float[] y, int yo, int k) {
        FloatVector sv = FloatVector.broadcast(S, s);
        for (int h = 0; h < k; h += L) {
            VectorMask<Float> msk = S.indexInRange(h, k);
            FloatVector.fromArray(S, x, xo + h, msk).fma(sv, FloatVector.fromArray(S, y, yo + h, msk))
                    .intoArray(y, yo + h, msk);
        }
    }
}
