package org.moe4j.dispatch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moe4j.core.DType;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.Harness.Pass;
import org.moe4j.dispatch.Harness.Problem;

class DispatcherTest {
    static final double F32_TOL = 1e-6;
    static final double BF16_TOL = 1e-2;
    static final double FD_TOL = 2e-3;
    static final int[] WORLDS = {1, 2, 4, 8};

    static long seed(String test) {
        long seed = System.nanoTime();
        System.out.println(test + " seed=" + seed);
        return seed;
    }

    static List<DispatchConfig> configs(int experts) {
        DispatchConfig base = DispatchConfig.of(experts);
        return List.of(base, base.withGroupAlignment(8), base.withPerRankDedup(true),
                base.withWeightBeforeReturn(true), base.withPerRankDedup(true).withWeightBeforeReturn(true).withGroupAlignment(3),
                base.withStrategy(DispatchStrategy.ALL_GATHER), base.withStrategy(DispatchStrategy.ALL_GATHER).withGroupAlignment(4),
                // static shape: one global chunk bound (ranks hold uneven token counts here), never reached
                base.withOptions(new org.moe4j.core.config.DispatchOptions("static-all-to-all", false, false, 0, 160)),
                base.withOptions(new org.moe4j.core.config.DispatchOptions("static-all-to-all", false, false, 0, 160))
                        .withGroupAlignment(8));
    }

    @Test
    void combineAfterDispatchWithIdentityExpertsIsTheWeightedSumOfInputs() {
        long seed = seed("identity");
        Problem p = Harness.problem(seed, 29, 19, 8, 3, DType.F32, 0.15);
        for (int world : new int[] {1, 4}) {
            for (DispatchConfig config : configs(p.experts())) {
                int[] split = Harness.split(p.tokens(), world);
                List<float[]> outs = LocalGroup.run(world, Harness.TIMEOUT, comm -> {
                    int r = comm.rank();
                    int t0 = split[r];
                    int t = split[r + 1] - t0;
                    int h = p.hidden();
                    int k = p.topK();
                    Dispatcher dispatcher = Dispatcher.create(config, comm, new CpuBackend(), Harness.kernels(2));
                    try (HostBuffer x = HostBuffer.ofFloats(Arrays.copyOfRange(p.x(), t0 * h, (t0 + t) * h), t, h);
                            HostBuffer idx = HostBuffer.ofInts(Arrays.copyOfRange(p.topkIdx(), t0 * k, (t0 + t) * k), t, k);
                            HostBuffer w = HostBuffer.ofFloats(Arrays.copyOfRange(p.weights(), t0 * k, (t0 + t) * k), t, k);
                            DispatchResult d = dispatcher.dispatch(x, idx, w);
                            Buffer out = dispatcher.combine(d, d.expertInput())) {
                        return ((HostBuffer) out).toFloatArray();
                    }
                });
                float[] got = concat(outs);
                float[] want = new float[p.tokens() * p.hidden()];
                for (int t = 0; t < p.tokens(); t++) {
                    for (int i = 0; i < p.hidden(); i++) {
                        float acc = 0f;
                        for (int k = 0; k < p.topK(); k++) {
                            if (p.topkIdx()[t * p.topK() + k] >= 0) {
                                acc = acc + p.x()[t * p.hidden() + i] * p.weights()[t * p.topK() + k];
                            }
                        }
                        want[t * p.hidden() + i] = acc;
                    }
                }
                assertArrayEquals(want, got, "W=" + world + " " + config + " seed=" + seed);
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    void outputsAndGradientsAreBitwiseIdenticalForAnyWorldSizeThreadCountAndStrategy(DType dtype) {
        long seed = seed("invariance " + dtype);
        Problem p = Harness.problem(seed, 37, 20, 16, 4, dtype, 0.1);
        Pass base = Harness.run(p, 1, DispatchConfig.of(p.experts()), 1);
        checkAgainstReference(p, base, dtype == DType.F32 ? F32_TOL : BF16_TOL);
        for (int world : WORLDS) {
            for (int threads : new int[] {1, 3}) {
                for (DispatchConfig config : configs(p.experts())) {
                    Pass pass = Harness.run(p, world, config, threads);
                    String what = "W=" + world + " threads=" + threads + " " + config + " seed=" + seed;
                    assertBitwise(base.out(), pass.out(), "out " + what);
                    assertBitwise(base.dX(), pass.dX(), "dX " + what);
                    assertBitwise(base.dW(), pass.dW(), "dTopkWeights " + what);
                    assertBitwise(base.dYSlots(), pass.dYSlots(), "dExpertOutput " + what);
                    assertArrayEquals(base.load(), pass.load(), "tokensPerLocalExpert " + what);
                }
            }
        }
    }

    /** out, dX, dW and dY from the closed form of the toy experts. */
    static void checkAgainstReference(Problem p, Pass pass, double tol) {
        int h = p.hidden();
        int kk = p.topK();
        float[] out = new float[p.tokens() * h];
        float[] dX = new float[p.tokens() * h];
        float[] dW = new float[p.tokens() * kk];
        float[] dY = new float[p.tokens() * kk * h];
        int[] load = new int[p.experts()];
        for (int t = 0; t < p.tokens(); t++) {
            for (int k = 0; k < kk; k++) {
                int e = p.topkIdx()[t * kk + k];
                if (e < 0) {
                    continue;
                }
                load[e]++;
                float a = e + 1;
                float w = p.weights()[t * kk + k];
                double dot = 0;
                for (int i = 0; i < h; i++) {
                    float y = p.x()[t * h + i] * a + a / 4;
                    out[t * h + i] += w * y;
                    dX[t * h + i] += w * p.dOut()[t * h + i] * a;
                    dY[(t * kk + k) * h + i] = w * p.dOut()[t * h + i];
                    dot += (double) p.dOut()[t * h + i] * y;
                }
                dW[t * kk + k] = (float) dot;
            }
        }
        assertTrue(Harness.relErr(pass.out(), out) < tol, "out error " + Harness.relErr(pass.out(), out));
        assertTrue(Harness.relErr(pass.dX(), dX) < tol, "dX error " + Harness.relErr(pass.dX(), dX));
        assertTrue(Harness.relErr(pass.dW(), dW) < tol, "dW error " + Harness.relErr(pass.dW(), dW));
        assertTrue(Harness.relErr(pass.dYSlots(), dY) < tol, "dY error " + Harness.relErr(pass.dYSlots(), dY));
        assertArrayEquals(load, pass.load(), "load");
    }

    @Test
    void backwardMatchesFiniteDifferences() {
        long seed = seed("finite differences");
        Problem p = Harness.problem(seed, 9, 6, 4, 2, DType.F32, 0.1);
        DispatchConfig config = DispatchConfig.of(4).withGroupAlignment(4);
        Pass pass = Harness.run(p, 2, config, 2);
        double eps = 1e-2;
        java.util.Random rnd = new java.util.Random(seed);
        List<Double> analytic = new ArrayList<>();
        List<Double> numeric = new ArrayList<>();
        for (int n = 0; n < 6; n++) {
            int i = rnd.nextInt(p.x().length);
            analytic.add((double) pass.dX()[i]);
            numeric.add(fd(p, config, eps, i, -1));
            int s = rnd.nextInt(p.weights().length);
            analytic.add((double) pass.dW()[s]);
            numeric.add(fd(p, config, eps, -1, s));
        }
        double num = 0;
        double den = 0;
        for (int i = 0; i < analytic.size(); i++) {
            num += Math.pow(analytic.get(i) - numeric.get(i), 2);
            den += numeric.get(i) * numeric.get(i);
        }
        assertTrue(Math.sqrt(num / den) < FD_TOL, "finite differences " + numeric + " vs analytic " + analytic
                + " seed=" + seed);
    }

    /** Central difference of L = <dOut, out> in x[xi] or weights[wi]. */
    private static double fd(Problem p, DispatchConfig config, double eps, int xi, int wi) {
        double[] l = new double[2];
        for (int side = 0; side < 2; side++) {
            float[] x = p.x().clone();
            float[] w = p.weights().clone();
            float delta = (float) (side == 0 ? eps : -eps);
            if (xi >= 0) {
                x[xi] += delta;
            } else {
                w[wi] += delta;
            }
            Problem q = new Problem(p.tokens(), p.hidden(), p.experts(), p.topK(), p.dtype(), x, p.topkIdx(), w, p.dOut());
            float[] out = Harness.run(q, 2, config, 1).out();
            double sum = 0;
            for (int i = 0; i < out.length; i++) {
                sum += (double) out[i] * p.dOut()[i];
            }
            l[side] = sum;
        }
        return (l[0] - l[1]) / (2 * eps);
    }

    @Test
    void expertInputIsGroupedLocalExpertMajorBySourceRankThenTokenWithZeroPadding() {
        long seed = seed("layout");
        Problem p = Harness.problem(seed, 23, 5, 8, 3, DType.F32, 0.1);
        int world = 4;
        int[] split = Harness.split(p.tokens(), world);
        for (boolean dedup : new boolean[] {false, true}) {
            DispatchConfig config = DispatchConfig.of(8).withGroupAlignment(4).withPerRankDedup(dedup);
            LocalGroup.run(world, Harness.TIMEOUT, comm -> {
                int r = comm.rank();
                int t0 = split[r];
                int t = split[r + 1] - t0;
                int h = p.hidden();
                int k = p.topK();
                Dispatcher dispatcher = Dispatcher.create(config, comm, new CpuBackend(), Harness.kernels(1));
                try (HostBuffer x = HostBuffer.ofFloats(Arrays.copyOfRange(p.x(), t0 * h, (t0 + t) * h), t, h);
                        HostBuffer idx = HostBuffer.ofInts(Arrays.copyOfRange(p.topkIdx(), t0 * k, (t0 + t) * k), t, k);
                        HostBuffer w = HostBuffer.ofFloats(Arrays.copyOfRange(p.weights(), t0 * k, (t0 + t) * k), t, k);
                        DispatchResult d = dispatcher.dispatch(x, idx, w)) {
                    HostBuffer in = (HostBuffer) d.expertInput();
                    int[] srcRank = ((HostBuffer) d.srcRank()).toIntArray();
                    int[] srcIndex = ((HostBuffer) d.srcIndex()).toIntArray();
                    int[] slot = ((HostBuffer) d.topkSlot()).toIntArray();
                    int[] off = d.groupOffsets();
                    int[] real = d.tokensPerLocalExpert();
                    assertEquals(2, d.localExperts());
                    assertEquals(r * 2, d.firstExpert());
                    for (int l = 0; l < 2; l++) {
                        assertEquals(0, off[l + 1] % 4, "group end aligned");
                        int e = d.firstExpert() + l;
                        long expected = Arrays.stream(p.topkIdx()).filter(v -> v == e).count();
                        assertEquals(expected, real[l], "real rows of expert " + e);
                        long prev = -1;
                        for (int row = off[l]; row < off[l + 1]; row++) {
                            if (row >= off[l] + real[l]) {
                                assertEquals(-1, srcRank[row], "padding row " + row + " has no source");
                                for (int i = 0; i < h; i++) {
                                    assertEquals(0f, in.getFloat((long) row * h + i), "padding row " + row + " is zero");
                                }
                                continue;
                            }
                            int gt = split[srcRank[row]] + srcIndex[row];
                            assertEquals(e, p.topkIdx()[gt * k + slot[row]], "row " + row + " routed to expert " + e);
                            long order = (long) gt * k + slot[row];
                            assertTrue(order > prev, "rows in source rank, token order inside expert " + e);
                            prev = order;
                            for (int i = 0; i < h; i++) {
                                assertEquals(p.x()[gt * h + i], in.getFloat((long) row * h + i), "row " + row + " holds x");
                            }
                        }
                    }
                }
                return null;
            });
        }
    }

    static float[] concat(List<float[]> parts) {
        int n = parts.stream().mapToInt(a -> a.length).sum();
        float[] all = new float[n];
        int at = 0;
        for (float[] a : parts) {
            System.arraycopy(a, 0, all, at, a.length);
            at += a.length;
        }
        return all;
    }

    static void assertBitwise(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what + " length");
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(got[i])) {
                throw new AssertionError(what + ": element " + i + " differs: " + want[i] + " vs " + got[i]);
            }
        }
    }
}
