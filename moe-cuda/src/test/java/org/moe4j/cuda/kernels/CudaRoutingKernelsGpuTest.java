package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.cuda.kernels.GpuParity.assertBitEqual;
import static org.moe4j.cuda.kernels.GpuParity.assertFullyWritten;
import static org.moe4j.cuda.kernels.GpuParity.down;
import static org.moe4j.cuda.kernels.GpuParity.poisoned;
import static org.moe4j.cuda.kernels.GpuParity.poisonedDevice;
import static org.moe4j.cuda.kernels.GpuParity.relError;
import static org.moe4j.cuda.kernels.GpuParity.up;

import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.routing.RouteParams;
import org.moe4j.routing.RoutingKernels;
import org.moe4j.routing.internal.CpuRoutingKernels;

/**
 * {@link CudaRoutingKernels} against {@link CpuRoutingKernels} for every router configuration of
 * the routing fixtures (moe-routing/src/test/resources/fixtures), on fresh random inputs: same
 * expert sets except near-exact ties, weights and scores within fp32 rounding, integer outputs
 * identical, outputs poisoned first and checked fully written.
 */
@Tag("gpu")
class CudaRoutingKernelsGpuTest {
    /** fp32 results of a different summation order / exp implementation. */
    static final double FP32_TOLERANCE = 1e-6;
    /** Gradients and GEMMs: longer reductions in another order. */
    static final double GRAD_TOLERANCE = 1e-5;
    /** Two choice values closer than this (relative) count as a tie that may select either expert. */
    static final double TIE = 1e-5;

    final RoutingKernels cpu = new CpuRoutingKernels(CpuParallel.common());
    RoutingKernels gpu;
    Random rnd;

    @BeforeEach
    void setUp() {
        GpuTestSupport.assumeGpu();
        gpu = new CudaRoutingKernels(GpuParity.backend());
        long seed = System.nanoTime();
        rnd = new Random(seed);
        System.out.println("seed=" + seed);
    }

    /** The router configurations of the routing fixtures (name, params). */
    static Stream<RouteParams> fixtureConfigs() {
        return Stream.of(
                new RouteParams(32, 4, ScoreFunction.SIGMOID, 4, 2, GroupScore.TOP2_SUM, true, 1.5f, false),
                new RouteParams(16, 4, ScoreFunction.SIGMOID, 1, 1, GroupScore.TOP2_SUM, true, 1.0f, false),
                new RouteParams(16, 2, ScoreFunction.SOFTMAX, 1, 1, GroupScore.TOP2_SUM, false, 1.0f, false),
                new RouteParams(16, 4, ScoreFunction.SIGMOID, 4, 2, GroupScore.TOP2_SUM, false, 1.0f, false),
                new RouteParams(16, 2, ScoreFunction.SOFTMAX, 4, 2, GroupScore.MAX, false, 1.0f, false),
                new RouteParams(256, 8, ScoreFunction.SIGMOID, 8, 4, GroupScore.TOP2_SUM, true, 2.5f, false),
                new RouteParams(8, 2, ScoreFunction.SOFTMAX, 1, 1, GroupScore.TOP2_SUM, true, 1.0f, false),
                new RouteParams(128, 8, ScoreFunction.SOFTMAX, 1, 1, GroupScore.TOP2_SUM, true, 1.0f, false),
                new RouteParams(8, 3, ScoreFunction.SIGMOID, 4, 2, GroupScore.TOP2_SUM, false, 1.0f, false),
                new RouteParams(64, 6, ScoreFunction.SOFTMAX, 1, 1, GroupScore.TOP2_SUM, true, 1.0f, true));
    }

    HostBuffer gaussian(float scale, long... dims) {
        HostBuffer h = HostBuffer.allocate(DType.F32, dims);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, scale * (float) rnd.nextGaussian());
        }
        return h;
    }

    @ParameterizedTest
    @MethodSource("fixtureConfigs")
    void routeSelectsTheCpuExpertsWithTheCpuWeights(RouteParams p) {
        int tokens = GpuParity.SMALL ? 64 : 3000;
        int e = p.experts();
        int k = p.topK();
        try (HostBuffer logits = gaussian(2f, tokens, e); HostBuffer bias = gaussian(0.02f, e);
                HostBuffer mask = HostBuffer.allocate(DType.I32, tokens)) {
            for (int t = 0; t < tokens; t++) {
                mask.setInt(t, t % 11 == 5 ? 0 : 1);
            }
            logits.setFloat((long) (tokens / 2) * e + 1, Float.NaN); // one bad token, reported by index
            try (HostBuffer sCpu = poisoned(DType.F32, tokens, e); HostBuffer selCpu = poisoned(DType.I32, tokens, k);
                    HostBuffer wCpu = poisoned(DType.F32, tokens, k); HostBuffer lseCpu = poisoned(DType.F32, tokens);
                    DeviceBuffer dL = up(logits); DeviceBuffer dB = up(bias); DeviceBuffer dM = up(mask);
                    DeviceBuffer dS = poisonedDevice(DType.F32, tokens, e); DeviceBuffer dSel = poisonedDevice(DType.I32, tokens, k);
                    DeviceBuffer dW = poisonedDevice(DType.F32, tokens, k); DeviceBuffer dLse = poisonedDevice(DType.F32, tokens)) {
                int badCpu = cpu.route(p, logits, bias, mask, sCpu, selCpu, wCpu, lseCpu);
                int badGpu = gpu.route(p, dL, dB, dM, dS, dSel, dW, dLse);
                assertEquals(badCpu, badGpu, "first token with non-finite logits");
                try (HostBuffer s = down(dS); HostBuffer sel = down(dSel); HostBuffer w = down(dW); HostBuffer lse = down(dLse)) {
                    int mismatched = 0;
                    double num = 0;
                    double den = 0;
                    for (int t = 0; t < tokens; t++) {
                        if (t == badCpu) {
                            continue; // left unwritten on both sides
                        }
                        for (int j = 0; j < e; j++) {
                            assertTrue(Math.abs(s.getFloat((long) t * e + j) - sCpu.getFloat((long) t * e + j))
                                    <= FP32_TOLERANCE * Math.max(1e-3, Math.abs(sCpu.getFloat((long) t * e + j))) * 10,
                                    "score [" + t + ", " + j + "]");
                        }
                        assertTrue(Math.abs(lse.getFloat(t) - lseCpu.getFloat(t)) <= 1e-5 * Math.max(1, Math.abs(lseCpu.getFloat(t))),
                                "lse[" + t + "]");
                        boolean same = true;
                        for (int j = 0; j < k; j++) {
                            same &= sel.getInt((long) t * k + j) == selCpu.getInt((long) t * k + j);
                        }
                        if (!same) {
                            mismatched++;
                            assertNearTie(p, t, selCpu, sel, sCpu, bias);
                            continue;
                        }
                        for (int j = 0; j < k; j++) {
                            double d = w.getFloat((long) t * k + j) - (double) wCpu.getFloat((long) t * k + j);
                            num += d * d;
                            den += (double) wCpu.getFloat((long) t * k + j) * wCpu.getFloat((long) t * k + j);
                        }
                    }
                    System.out.println(p + ": " + mismatched + " of " + tokens + " tokens differ only by near ties");
                    assertTrue(mismatched <= Math.max(2, tokens / 100), mismatched + " tokens selected differently");
                    double err = den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
                    assertTrue(err < FP32_TOLERANCE, "topkWeights relative error " + err);
                }
            }
        }
    }

    private static void assertNearTie(RouteParams p, int t, HostBuffer selCpu, HostBuffer sel, HostBuffer scores, HostBuffer bias) {
        int e = p.experts();
        int k = p.topK();
        double last = Double.MAX_VALUE;
        for (int j = 0; j < k; j++) {
            int x = selCpu.getInt((long) t * k + j);
            last = Math.min(last, scores.getFloat((long) t * e + x) + bias.getFloat(x));
        }
        for (int j = 0; j < k; j++) {
            int x = sel.getInt((long) t * k + j);
            assertTrue(x >= 0 && x < e, "token " + t + ": expert id " + x);
            double c = scores.getFloat((long) t * e + x) + bias.getFloat(x);
            assertTrue(c >= last - TIE * Math.max(1, Math.abs(last)),
                    "token " + t + ": gpu chose expert " + x + " (choice " + c + ") below the cpu's last choice " + last);
        }
    }

    @Test
    void countsDropsAndSegmentStatsMatchTheCpuExactly() {
        RouteParams p = new RouteParams(64, 6, ScoreFunction.SIGMOID, 8, 4, GroupScore.TOP2_SUM, true, 1f, false);
        int tokens = GpuParity.SMALL ? 128 : 2000;
        int e = p.experts();
        int k = p.topK();
        try (HostBuffer logits = gaussian(1.5f, tokens, e); HostBuffer bias = HostBuffer.allocate(DType.F32, e);
                HostBuffer scores = HostBuffer.allocate(DType.F32, tokens, e); HostBuffer sel = HostBuffer.allocate(DType.I32, tokens, k);
                HostBuffer w = HostBuffer.allocate(DType.F32, tokens, k); HostBuffer lse = HostBuffer.allocate(DType.F32, tokens);
                HostBuffer mask = HostBuffer.allocate(DType.I32, tokens)) {
            for (int t = 0; t < tokens; t++) {
                mask.setInt(t, t % 9 == 0 ? 0 : 1);
            }
            cpu.route(p, logits, bias, mask, scores, sel, w, lse);
            try (DeviceBuffer dScores = up(scores); DeviceBuffer dSel = up(sel); DeviceBuffer dLse = up(lse);
                    HostBuffer cntCpu = poisoned(DType.I32, e); HostBuffer cntGpu = poisoned(DType.I32, e)) {
                cpu.countTokens(sel, cntCpu);
                gpu.countTokens(dSel, cntGpu);
                assertBitEqual("countTokens", cntCpu, cntGpu);
                for (DropPolicy policy : DropPolicy.values()) {
                    int capacity = (int) (tokens * k / e * 0.8);
                    try (HostBuffer idxCpu = poisoned(DType.I32, tokens, k); HostBuffer wCpu = w.copy();
                            DeviceBuffer dIdx = poisonedDevice(DType.I32, tokens, k); DeviceBuffer dW = up(w)) {
                        long dc = cpu.dropOverCapacity(sel, scores, capacity, policy, idxCpu, wCpu);
                        long dg = gpu.dropOverCapacity(dSel, dScores, capacity, policy, dIdx, dW);
                        assertEquals(dc, dg, policy + ": dropped count");
                        assertTrue(dc > 0, "the test must drop something");
                        try (HostBuffer gi = down(dIdx); HostBuffer gw = down(dW)) {
                            assertBitEqual(policy + " topkIdx", idxCpu, gi);
                            assertBitEqual(policy + " topkWeights", wCpu, gw);
                        }
                    }
                }
                int seg = 128;
                int segments = (tokens + seg - 1) / seg;
                try (HostBuffer pc = poisoned(DType.F32, segments, e); HostBuffer cc = poisoned(DType.I32, segments, e);
                        HostBuffer vc = poisoned(DType.I32, segments); HostBuffer lc = poisoned(DType.F32, segments);
                        HostBuffer pg = poisoned(DType.F32, segments, e); HostBuffer cg = poisoned(DType.I32, segments, e);
                        HostBuffer vg = poisoned(DType.I32, segments); HostBuffer lg = poisoned(DType.F32, segments)) {
                    cpu.segmentStats(p.scoreFunction(), scores, sel, lse, seg, pc, cc, vc, lc);
                    gpu.segmentStats(p.scoreFunction(), dScores, dSel, dLse, seg, pg, cg, vg, lg);
                    assertBitEqual("segment counts", cc, cg);
                    assertBitEqual("segment valid tokens", vc, vg);
                    assertTrue(relError(pg, pc) < FP32_TOLERANCE, "probability sums " + relError(pg, pc));
                    assertTrue(relError(lg, lc) < FP32_TOLERANCE, "lse^2 sums " + relError(lg, lc));
                }
            }
        }
    }

    @ParameterizedTest
    @MethodSource("fixtureConfigs")
    void routeBackwardMatchesTheCpuWithAllLossTerms(RouteParams p) {
        int tokens = GpuParity.SMALL ? 64 : 1000;
        int e = p.experts();
        int k = p.topK();
        int seg = 50;
        int segments = (tokens + seg - 1) / seg;
        try (HostBuffer logits = gaussian(1.5f, tokens, e); HostBuffer bias = HostBuffer.allocate(DType.F32, e);
                HostBuffer scores = HostBuffer.allocate(DType.F32, tokens, e); HostBuffer sel = HostBuffer.allocate(DType.I32, tokens, k);
                HostBuffer w = HostBuffer.allocate(DType.F32, tokens, k); HostBuffer lse = HostBuffer.allocate(DType.F32, tokens);
                HostBuffer mask = HostBuffer.allocate(DType.I32, tokens); HostBuffer dW = gaussian(1f, tokens, k);
                HostBuffer aux = gaussian(0.01f, segments, e)) {
            for (int t = 0; t < tokens; t++) {
                mask.setInt(t, t % 13 == 3 ? 0 : 1);
            }
            cpu.route(p, logits, bias, mask, scores, sel, w, lse);
            HostBuffer idx = sel.copy();
            for (int t = 0; t < tokens; t += 7) {
                idx.setInt((long) t * k, -1); // a dropped slot: no weight, still in the norm
            }
            try (idx; HostBuffer dlCpu = poisoned(DType.F32, tokens, e);
                    DeviceBuffer dL = up(logits); DeviceBuffer dS = up(scores); DeviceBuffer dSel = up(sel);
                    DeviceBuffer dIdx = up(idx); DeviceBuffer dDw = up(dW); DeviceBuffer dLse = up(lse);
                    DeviceBuffer dOut = poisonedDevice(DType.F32, tokens, e)) {
                float zGrad = 2f * 0.001f / tokens;
                cpu.routeBackward(p, logits, scores, sel, idx, dW, aux, seg, lse, zGrad, dlCpu);
                gpu.routeBackward(p, dL, dS, dSel, dIdx, dDw, aux, seg, dLse, zGrad, dOut);
                try (HostBuffer got = down(dOut)) {
                    assertFullyWritten("dLogits", got);
                    double err = relError(got, dlCpu);
                    assertTrue(err < GRAD_TOLERANCE, "dLogits relative error " + err);
                }
            }
        }
    }

    @Test
    void gateLogitsAndGateBackwardMatchTheCpu() {
        int tokens = GpuParity.SMALL ? 70 : 700;
        int hidden = 520;
        int experts = 96;
        for (DType xt : new DType[] {DType.F32, DType.BF16}) {
            try (HostBuffer x32 = gaussian(1f, tokens, hidden); HostBuffer gate = gaussian(0.05f, experts, hidden);
                    HostBuffer dLog = gaussian(1f, tokens, experts)) {
                HostBuffer x = HostBuffer.allocate(xt, tokens, hidden);
                for (long i = 0; i < x.numel(); i++) {
                    x.setFloat(i, x32.getFloat(i));
                }
                try (x; HostBuffer lc = poisoned(DType.F32, tokens, experts); HostBuffer dxc = poisoned(DType.F32, tokens, hidden);
                        HostBuffer dgc = poisoned(DType.F32, experts, hidden);
                        DeviceBuffer dX = up(x); DeviceBuffer dG = up(gate); DeviceBuffer dDl = up(dLog);
                        DeviceBuffer lg = poisonedDevice(DType.F32, tokens, experts);
                        DeviceBuffer dxg = poisonedDevice(DType.F32, tokens, hidden);
                        DeviceBuffer dgg = poisonedDevice(DType.F32, experts, hidden)) {
                    cpu.gateLogits(x, gate, lc);
                    gpu.gateLogits(dX, dG, lg);
                    cpu.gateBackward(x, gate, dLog, dxc, dgc);
                    gpu.gateBackward(dX, dG, dDl, dxg, dgg);
                    try (HostBuffer a = down(lg); HostBuffer b = down(dxg); HostBuffer c = down(dgg)) {
                        assertTrue(relError(a, lc) < GRAD_TOLERANCE, "logits " + relError(a, lc));
                        assertTrue(relError(b, dxc) < GRAD_TOLERANCE, "dX " + relError(b, dxc));
                        assertTrue(relError(c, dgc) < GRAD_TOLERANCE, "dGate " + relError(c, dgc));
                    }
                }
            }
        }
    }
}
