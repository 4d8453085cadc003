package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;

/**
 * Backward agrees with central finite differences of the forward loss
 * {@code Σ dTopkWeights · topkWeights + auxLosses.total()} for x, the gate weight and the logits.
 */
class RouterGradientCheckTest {
    /** Finite-difference step. */
    static final float H = 2e-3f;
    /** fp32 forward evaluated by central differences: noise ~ 1e-7 / H. */
    static final double FD_TOL = 5e-3;

    static final int TOKENS = 12;
    static final int HIDDEN = 5;
    static final int EXPERTS = 8;

    static double loss(Router r, HostBuffer x, HostBuffer gate, HostBuffer mask, float[] dw, int[] selectionOut) {
        try (RouterOutput out = r.forward(x, gate, mask)) {
            float[] w = ((HostBuffer) out.topkWeights()).toFloatArray();
            if (selectionOut != null) {
                System.arraycopy(((HostBuffer) out.topkIdx()).toIntArray(), 0, selectionOut, 0, selectionOut.length);
            }
            double l = out.auxLosses().total();
            for (int i = 0; i < w.length; i++) {
                l += (double) dw[i] * w[i];
            }
            return l;
        }
    }

    /** Central differences over every element of {@code p}; skips (and counts) steps that change the selection. */
    static float[] numeric(Router r, HostBuffer x, HostBuffer gate, HostBuffer mask, float[] dw, HostBuffer p,
            int[] baseSel) {
        float[] g = new float[(int) p.numel()];
        int[] sel = new int[baseSel.length];
        for (int i = 0; i < g.length; i++) {
            float v = p.getFloat(i);
            p.setFloat(i, v + H);
            double up = loss(r, x, gate, mask, dw, sel);
            boolean same = java.util.Arrays.equals(sel, baseSel);
            p.setFloat(i, v - H);
            double down = loss(r, x, gate, mask, dw, sel);
            same &= java.util.Arrays.equals(sel, baseSel);
            p.setFloat(i, v);
            g[i] = same ? (float) ((up - down) / (2 * H)) : Float.NaN;
        }
        return g;
    }

    static void assertClose(String what, float[] analytic, float[] numeric) {
        int skipped = 0;
        float[] a = analytic.clone();
        for (int i = 0; i < a.length; i++) {
            if (Float.isNaN(numeric[i])) {
                a[i] = 0;
                numeric[i] = 0;
                skipped++;
            }
        }
        assertTrue(skipped < a.length / 4, what + ": too many selection flips (" + skipped + ")");
        double err = Norms.relErr(a, numeric);
        assertTrue(err <= FD_TOL, what + ": analytic vs finite-difference rel err " + err);
    }

    @ParameterizedTest
    @EnumSource(ScoreFunction.class)
    void backwardMatchesFiniteDifferencesWithEveryLossTerm(ScoreFunction sf) {
        long seed = System.nanoTime();
        System.out.println("RouterGradientCheckTest seed=" + seed + " " + sf);
        Random rnd = new Random(seed);
        MoeConfig cfg = MoeConfig.builder().hidden(HIDDEN).experts(EXPERTS).topK(3).ffn(1).scoreFunction(sf)
                .groups(4, 2).routeNorm(true).routeScale(1.7)
                .auxLoss(new AuxLoss(0.3, 0.2, 0.05, 6)).build();
        float[] xv = new float[TOKENS * HIDDEN];
        float[] gv = new float[EXPERTS * HIDDEN];
        float[] dw = new float[TOKENS * cfg.topK()];
        for (int i = 0; i < xv.length; i++) {
            xv[i] = (float) rnd.nextGaussian();
        }
        for (int i = 0; i < gv.length; i++) {
            gv[i] = (float) rnd.nextGaussian();
        }
        for (int i = 0; i < dw.length; i++) {
            dw[i] = (float) rnd.nextGaussian();
        }
        int[] mv = new int[TOKENS];
        java.util.Arrays.fill(mv, 1);
        mv[4] = 0;
        try (CpuParallel pool = new CpuParallel(1);
                HostBuffer x = HostBuffer.ofFloats(xv, TOKENS, HIDDEN);
                HostBuffer gate = HostBuffer.ofFloats(gv, EXPERTS, HIDDEN);
                HostBuffer mask = HostBuffer.ofInts(mv, TOKENS);
                HostBuffer dW = HostBuffer.ofFloats(dw, TOKENS, cfg.topK())) {
            Router r = Router.builder(cfg).parallel(pool).accumulateLoad(false).build();
            r.expertBias().setValues(new float[] {0.02f, -0.01f, 0f, 0.03f, -0.02f, 0.01f, 0f, -0.03f});
            int[] baseSel = new int[TOKENS * cfg.topK()];
            loss(r, x, gate, mask, dw, baseSel);
            float[] dX;
            float[] dG;
            float[] dL;
            try (RouterOutput out = r.forward(x, gate, mask); RouterGrads g = r.backward(out, dW)) {
                dX = ((HostBuffer) g.dX()).toFloatArray();
                dG = ((HostBuffer) g.dGateWeight()).toFloatArray();
                dL = ((HostBuffer) g.dLogits()).toFloatArray();
                assertArrayEquals(new float[EXPERTS], java.util.Arrays.copyOfRange(dL, 4 * EXPERTS, 5 * EXPERTS),
                        "padding token gets no gradient");
            }
            assertClose("dX", dX, numeric(r, x, gate, mask, dw, x, baseSel));
            assertClose("dGate", dG, numeric(r, x, gate, mask, dw, gate, baseSel));
            r.expertBias().close();
        }
    }
}
