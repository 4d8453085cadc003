package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.Capacity;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;

/** The CPU router gives bitwise identical results for 1, 2 and 3 threads. */
class RouterDeterminismTest {

    record Result(int[] idx, float[] weights, float[] scores, int[] perExpert, AuxLosses aux, long dropped,
            float[] dLogits, float[] dX, float[] dGate) {
    }

    static Result run(MoeConfig cfg, int threads, HostBuffer x, HostBuffer gate, HostBuffer mask, HostBuffer dW,
            float[] bias) {
        try (CpuParallel pool = new CpuParallel(threads)) {
            Router r = Router.builder(cfg).parallel(pool).build();
            r.expertBias().setValues(bias);
            try (RouterOutput out = r.forward(x, gate, mask); RouterGrads g = r.backward(out, dW)) {
                return new Result(((HostBuffer) out.topkIdx()).toIntArray(),
                        ((HostBuffer) out.topkWeights()).toFloatArray(), ((HostBuffer) out.scores()).toFloatArray(),
                        out.tokensPerExpert().toIntArray(), out.auxLosses(), out.dropped(),
                        ((HostBuffer) g.dLogits()).toFloatArray(), ((HostBuffer) g.dX()).toFloatArray(),
                        ((HostBuffer) g.dGateWeight()).toFloatArray());
            } finally {
                r.expertBias().close();
            }
        }
    }

    @ParameterizedTest
    @EnumSource(ScoreFunction.class)
    void resultsAreBitwiseIdenticalForOneTwoAndThreeThreads(ScoreFunction sf) {
        long seed = System.nanoTime();
        System.out.println("RouterDeterminismTest seed=" + seed + " " + sf);
        Random rnd = new Random(seed);
        int tokens = 1000; // several token blocks, a partial last block
        int hidden = 72; // not a multiple of the vector length
        int experts = 64;
        MoeConfig cfg = MoeConfig.builder().hidden(hidden).experts(experts).topK(6).ffn(1).scoreFunction(sf)
                .groups(8, 4).routeNorm(true).routeScale(2.5)
                .auxLoss(new AuxLoss(0.01, 0.001, 0.001, 200))
                .capacity(new Capacity(1.0, DropPolicy.BY_SCORE)).build();
        float[] xv = new float[tokens * hidden];
        float[] gv = new float[experts * hidden];
        float[] dw = new float[tokens * cfg.topK()];
        int[] mv = new int[tokens];
        float[] bias = new float[experts];
        for (int i = 0; i < xv.length; i++) {
            xv[i] = (float) rnd.nextGaussian();
        }
        for (int i = 0; i < gv.length; i++) {
            gv[i] = (float) (rnd.nextGaussian() / Math.sqrt(hidden));
        }
        for (int i = 0; i < dw.length; i++) {
            dw[i] = (float) rnd.nextGaussian();
        }
        for (int i = 0; i < tokens; i++) {
            mv[i] = rnd.nextInt(10) == 0 ? 0 : 1;
        }
        for (int i = 0; i < experts; i++) {
            bias[i] = (float) (rnd.nextGaussian() * 0.01);
        }
        for (DType dt : new DType[] {DType.F32, DType.BF16}) {
            try (HostBuffer x = HostBuffer.of(dt, xv, tokens, hidden); HostBuffer gate = HostBuffer.ofFloats(gv, experts,
                    hidden); HostBuffer mask = HostBuffer.ofInts(mv, tokens); HostBuffer dW = HostBuffer.ofFloats(dw,
                    tokens, cfg.topK())) {
                Result one = run(cfg, 1, x, gate, mask, dW, bias);
                for (int threads : new int[] {2, 3}) {
                    Result r = run(cfg, threads, x, gate, mask, dW, bias);
                    String at = dt + ", " + threads + " threads";
                    assertArrayEquals(one.idx, r.idx, "topkIdx " + at);
                    assertArrayEquals(one.weights, r.weights, "topkWeights " + at);
                    assertArrayEquals(one.scores, r.scores, "scores " + at);
                    assertArrayEquals(one.perExpert, r.perExpert, "tokensPerExpert " + at);
                    assertEquals(one.aux, r.aux, "aux losses " + at);
                    assertEquals(one.dropped, r.dropped, "dropped " + at);
                    assertArrayEquals(one.dLogits, r.dLogits, "dLogits " + at);
                    assertArrayEquals(one.dX, r.dX, "dX " + at);
                    assertArrayEquals(one.dGate, r.dGate, "dGate " + at);
                }
            }
        }
    }
}
