package org.moe4j.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.experts.TestInputs.rand;
import static org.moe4j.experts.TestInputs.seededRandom;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.experts.ExpertKernels.GemmSpec;
import org.moe4j.experts.internal.CpuExpertKernels;

class CpuExpertKernelsTest {
    static final double FP32_TOL = 1e-5;
    static final double BF16_TOL = 1e-6; // bf16-rounded operands vs a reference on the same rounded values

    /** Naive double-precision {@code out[i,:] = a[i,:]·b[g]} per group, operands optionally bf16-rounded first. */
    static double[] groupedMatmulReference(float[] a, float[] b, int[] off, int k, int n, boolean roundBf16) {
        int groups = off.length - 1;
        double[] ref = new double[off[groups] * n];
        for (int g = 0; g < groups; g++) {
            for (int i = off[g]; i < off[g + 1]; i++) {
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int q = 0; q < k; q++) {
                        float x = a[i * k + q], y = b[(g * k + q) * n + j];
                        s += roundBf16 ? (double) round(x) * round(y) : (double) x * y;
                    }
                    ref[i * n + j] = s;
                }
            }
        }
        return ref;
    }

    static void assertCloseToReference(float[] actual, double[] ref) {
        double e = relErr(actual, ref);
        assertTrue(e < FP32_TOL, "relative error " + e);
    }

    static int[] offsets(Random r, int groups, int rows) {
        int[] off = new int[groups + 1];
        for (int g = 1; g < groups; g++) {
            off[g] = r.nextInt(rows + 1);
        }
        off[groups] = rows;
        java.util.Arrays.sort(off);
        off[1] = off[0]; // group 0 is always empty
        return off;
    }

    static double relErr(float[] a, double[] ref) {
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            num += (a[i] - ref[i]) * (a[i] - ref[i]);
            den += ref[i] * ref[i];
        }
        return Math.sqrt(num / Math.max(den, 1e-300));
    }

    static float round(float v) {
        return DType.bf16ToF32(DType.f32ToBf16(v));
    }

    @Test
    void groupedMatmulMatchesNaiveReferenceWithEmptyAndRaggedGroups() {
        Random r = seededRandom();
        int rows = 203, k = 139, n = 77, groups = 5;
        float[] a = rand(r, rows * k), b = rand(r, groups * k * n);
        int[] off = offsets(r, groups, rows);
        double[] ref = groupedMatmulReference(a, b, off, k, n, false);
        try (var ha = HostBuffer.ofFloats(a, rows, k); var hb = HostBuffer.ofFloats(b, groups, k, n);
             var ho = HostBuffer.ofInts(off, groups + 1); var out = HostBuffer.allocate(DType.F32, rows, n)) {
            new CpuExpertKernels().groupedMatmul(ha, hb, ho, out, GemmSpec.OVERWRITE);
            assertCloseToReference(out.toFloatArray(), ref);
        }
    }

    @Test
    void transposedBIsBitwiseEqualToTransposeThenMatmulForEveryDtypeAndThreadCount() {
        Random r = seededRandom();
        // sizes straddle the micro-kernel and block edges: k > one inner block, n not a multiple of NR
        int rows = 157, k = 300, n = 83, groups = 4;
        float[] a = rand(r, rows * k), w = rand(r, groups * n * k), init = rand(r, rows * n);
        int[] off = offsets(r, groups, rows);
        for (DType wType : new DType[] {DType.F32, DType.BF16}) {
            for (boolean bf16 : new boolean[] {false, true}) {
                for (boolean acc : new boolean[] {false, true}) {
                    GemmSpec spec = new GemmSpec(acc, bf16);
                    float[] expected;
                    try (var ha = HostBuffer.ofFloats(a, rows, k); var hw = HostBuffer.of(wType, w, groups, n, k);
                         var wt = HostBuffer.allocate(wType, groups, k, n); var ho = HostBuffer.ofInts(off, groups + 1);
                         var out = HostBuffer.ofFloats(init, rows, n)) {
                        var kern = new CpuExpertKernels(new CpuParallel(1));
                        kern.transpose(hw, wt);
                        kern.groupedMatmul(ha, wt, ho, out, spec);
                        expected = out.toFloatArray();
                    }
                    for (int threads : new int[] {1, 3}) {
                        try (var par = new CpuParallel(threads); var ha = HostBuffer.ofFloats(a, rows, k);
                             var hw = HostBuffer.of(wType, w, groups, n, k); var ho = HostBuffer.ofInts(off, groups + 1);
                             var out = HostBuffer.ofFloats(init, rows, n)) {
                            var kern = new CpuExpertKernels(par);
                            assertTrue(kern.supportsTransposedB());
                            kern.groupedMatmulTransposedB(ha, hw, ho, out, spec);
                            assertArrayEquals(expected, out.toFloatArray(),
                                    "w " + wType + " spec " + spec + " threads " + threads);
                        }
                    }
                }
            }
        }
    }

    @Test
    void bf16RoundingOnLoadIsNearestEvenLikeDTypeIncludingTies() {
        Random r = seededRandom();
        int k = 37; // one full vector or more, plus a scalar tail
        float[] a = new float[k];
        for (int i = 0; i < k; i++) {
            int bits = Float.floatToRawIntBits((float) r.nextGaussian() * 100);
            // every third value sits exactly halfway between two bf16 values (odd and even lower halves)
            a[i] = i % 3 == 0 ? Float.intBitsToFloat((bits & 0xFFFF0000) | 0x8000) : Float.intBitsToFloat(bits);
        }
        float[] eye = new float[k * k];
        for (int i = 0; i < k; i++) {
            eye[i * k + i] = 1f;
        }
        try (var ha = HostBuffer.ofFloats(a, 1, k); var hb = HostBuffer.ofFloats(eye, 1, k, k);
             var ho = HostBuffer.ofInts(new int[] {0, 1}, 2); var out = HostBuffer.allocate(DType.F32, 1, k)) {
            new CpuExpertKernels().groupedMatmul(ha, hb, ho, out, new GemmSpec(false, true));
            float[] expected = new float[k];
            for (int i = 0; i < k; i++) {
                expected[i] = round(a[i]);
            }
            assertArrayEquals(expected, out.toFloatArray());
        }
    }

    @Test
    void transposedBRefusesMismatchedInnerDimension() {
        try (var ha = HostBuffer.allocate(DType.F32, 4, 8); var hw = HostBuffer.allocate(DType.F32, 2, 5, 7);
             var ho = HostBuffer.ofInts(new int[] {0, 2, 4}, 3); var out = HostBuffer.allocate(DType.F32, 4, 5)) {
            var e = assertThrows(IllegalArgumentException.class,
                    () -> new CpuExpertKernels().groupedMatmulTransposedB(ha, hw, ho, out, GemmSpec.OVERWRITE));
            assertTrue(e.getMessage().contains("inner dimensions 8 != 7"), e.getMessage());
        }
    }

    @Test
    void weightGradAccumulatesAndMatchesNaiveReference() {
        Random r = seededRandom();
        int rows = 301, m = 53, n = 101, groups = 4;
        float[] a = rand(r, rows * m), b = rand(r, rows * n), init = rand(r, groups * m * n);
        int[] off = offsets(r, groups, rows);
        double[] ref = new double[groups * m * n];
        for (int g = 0; g < groups; g++) {
            for (int i = 0; i < m; i++) {
                for (int j = 0; j < n; j++) {
                    double s = init[(g * m + i) * n + j];
                    for (int t = off[g]; t < off[g + 1]; t++) {
                        s += (double) a[t * m + i] * b[t * n + j];
                    }
                    ref[(g * m + i) * n + j] = s;
                }
            }
        }
        try (var ha = HostBuffer.ofFloats(a, rows, m); var hb = HostBuffer.ofFloats(b, rows, n);
             var ho = HostBuffer.ofInts(off, groups + 1); var out = HostBuffer.ofFloats(init, groups, m, n)) {
            new CpuExpertKernels().groupedWeightGrad(ha, hb, ho, out, GemmSpec.ACCUMULATE);
            assertCloseToReference(out.toFloatArray(), ref);
        }
    }

    @Test
    void bf16OperandsEqualRoundedFp32AndBf16Buffers() {
        Random r = seededRandom();
        int rows = 40, k = 70, n = 50, groups = 2;
        float[] a = rand(r, rows * k), b = rand(r, groups * k * n);
        int[] off = {0, 17, 40};
        try (var ha = HostBuffer.ofFloats(a, rows, k); var hb = HostBuffer.ofFloats(b, groups, k, n);
             var a16 = HostBuffer.of(DType.BF16, a, rows, k); var b16 = HostBuffer.of(DType.BF16, b, groups, k, n);
             var ho = HostBuffer.ofInts(off, groups + 1);
             var o1 = HostBuffer.allocate(DType.F32, rows, n); var o2 = HostBuffer.allocate(DType.F32, rows, n)) {
            var kern = new CpuExpertKernels();
            kern.groupedMatmul(ha, hb, ho, o1, new GemmSpec(false, true));
            kern.groupedMatmul(a16, b16, ho, o2, GemmSpec.OVERWRITE);
            assertArrayEquals(o2.toFloatArray(), o1.toFloatArray(), 0f);
            assertCloseToReference(o1.toFloatArray(), groupedMatmulReference(a, b, off, k, n, true));
        }
    }

    @Test
    void resultsAreBitwiseIdenticalForAnyThreadCount() {
        Random r = seededRandom();
        int rows = 500, k = 300, n = 260, groups = 3;
        float[] a = rand(r, rows * k), b = rand(r, groups * k * n), c = rand(r, rows * n);
        int[] off = offsets(r, groups, rows);
        float[][] mm = new float[3][];
        float[][] wg = new float[3][];
        int[] threads = {1, 2, 3};
        for (int t = 0; t < 3; t++) {
            try (var par = new CpuParallel(threads[t]); var ha = HostBuffer.ofFloats(a, rows, k);
                 var hb = HostBuffer.ofFloats(b, groups, k, n); var hc = HostBuffer.ofFloats(c, rows, n);
                 var ho = HostBuffer.ofInts(off, groups + 1); var out = HostBuffer.allocate(DType.F32, rows, n);
                 var dw = HostBuffer.allocate(DType.F32, groups, k, n)) {
                var kern = new CpuExpertKernels(par);
                kern.groupedMatmul(ha, hb, ho, out, GemmSpec.OVERWRITE);
                kern.groupedWeightGrad(ha, hc, ho, dw, GemmSpec.OVERWRITE);
                mm[t] = out.toFloatArray();
                wg[t] = dw.toFloatArray();
            }
        }
        assertArrayEquals(mm[0], mm[1], 0f);
        assertArrayEquals(mm[0], mm[2], 0f);
        assertArrayEquals(wg[0], wg[1], 0f);
        assertArrayEquals(wg[0], wg[2], 0f);
    }

    @Test
    void swigluBackwardMatchesFiniteDifferences() {
        float[] h = {-3f, -0.5f, 0f, 0.7f, 2.5f, -10f, 1.3f, 0.1f, 4f, -1f, 0.25f, 8f, -0.01f, 0.3f, 3f, -2f, 1f};
        float[] u = new float[h.length];
        float[] dy = new float[h.length];
        for (int i = 0; i < h.length; i++) {
            u[i] = 0.5f + 0.1f * i;
            dy[i] = 1f - 0.05f * i;
        }
        try (var g = HostBuffer.ofFloats(h, h.length); var up = HostBuffer.ofFloats(u, u.length);
             var d = HostBuffer.ofFloats(dy, dy.length); var out = HostBuffer.allocate(DType.F32, h.length);
             var dg = HostBuffer.allocate(DType.F32, h.length); var du = HostBuffer.allocate(DType.F32, h.length)) {
            var kern = new CpuExpertKernels();
            kern.swigluForward(g, up, out);
            kern.swigluBackward(g, up, d, dg, du);
            float[] o = out.toFloatArray(), dgs = dg.toFloatArray(), dus = du.toFloatArray();
            for (int i = 0; i < h.length; i++) {
                double x = h[i];
                double silu = x / (1 + Math.exp(-x));
                assertTrue(Math.abs(o[i] - silu * u[i]) < 1e-5 * (1 + Math.abs(silu * u[i])), "forward " + i);
                double eps = 1e-4;
                double fd = ((x + eps) / (1 + Math.exp(-(x + eps))) - (x - eps) / (1 + Math.exp(-(x - eps)))) / (2 * eps);
                assertTrue(Math.abs(dgs[i] - dy[i] * u[i] * fd) < 1e-4, "dGate " + i + ": " + dgs[i] + " vs " + dy[i] * u[i] * fd);
                assertTrue(Math.abs(dus[i] - dy[i] * silu) < 1e-5 * (1 + Math.abs(silu)), "dUp " + i);
            }
        }
    }

    @Test
    void transposeConvertsAndSwapsTheLastTwoDimensions() {
        float[] src = new float[2 * 3 * 37];
        for (int i = 0; i < src.length; i++) {
            src[i] = i * 0.37f;
        }
        try (var s = HostBuffer.ofFloats(src, 2, 3, 37); var d = HostBuffer.allocate(DType.BF16, 2, 37, 3)) {
            new CpuExpertKernels().transpose(s, d);
            for (int g = 0; g < 2; g++) {
                for (int i = 0; i < 3; i++) {
                    for (int j = 0; j < 37; j++) {
                        assertTrue(d.getFloat((g * 37 + j) * 3 + i) == round(src[(g * 3 + i) * 37 + j]));
                    }
                }
            }
        }
    }

    @Test
    void badOffsetsAreRefusedBeforeWriting() {
        try (var a = HostBuffer.allocate(DType.F32, 10, 4); var b = HostBuffer.allocate(DType.F32, 2, 4, 3);
             var out = HostBuffer.ofFloats(new float[30], 10, 3);
             var dec = HostBuffer.ofInts(new int[] {0, 6, 5}, 3); var over = HostBuffer.ofInts(new int[] {0, 6, 11}, 3);
             var wrongK = HostBuffer.allocate(DType.F32, 2, 5, 3)) {
            var kern = new CpuExpertKernels();
            var e1 = assertThrows(IllegalArgumentException.class, () -> kern.groupedMatmul(a, b, dec, out, GemmSpec.OVERWRITE));
            assertTrue(e1.getMessage().contains("groupOffsets must not decrease: groupOffsets[2]=5"), e1.getMessage());
            var e2 = assertThrows(IllegalArgumentException.class, () -> kern.groupedMatmul(a, b, over, out, GemmSpec.OVERWRITE));
            assertTrue(e2.getMessage().contains("exceeds the 10 rows"), e2.getMessage());
            var e3 = assertThrows(IllegalArgumentException.class, () -> kern.groupedMatmul(a, wrongK, over, out, GemmSpec.OVERWRITE));
            assertTrue(e3.getMessage().contains("inner dimensions 4 != 5"), e3.getMessage());
        }
    }
}
