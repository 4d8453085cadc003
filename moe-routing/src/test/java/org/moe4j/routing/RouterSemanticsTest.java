package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.BiasCentering;
import org.moe4j.core.config.Capacity;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;

/** Selection rules, masks, capacity, force-balanced mode and the expert-bias update, on hand-made inputs. */
class RouterSemanticsTest {

    /** Routers made by the running test, closed after it. */
    private static final List<Router> ROUTERS = new ArrayList<>();

    static Router track(Router r) {
        ROUTERS.add(r);
        return r;
    }

    @AfterEach
    void closeRouters() {
        ROUTERS.forEach(Router::close);
        ROUTERS.clear();
    }
    static final double TOL = 1e-6;
    static CpuParallel pool;

    @BeforeAll
    static void start() {
        pool = new CpuParallel(2);
    }

    @AfterAll
    static void stop() {
        pool.close();
    }

    static MoeConfig.Builder base(int experts, int topK) {
        return MoeConfig.builder().hidden(1).experts(experts).topK(topK).ffn(1);
    }

    static int[] idx(RouterOutput o) {
        return ((HostBuffer) o.topkIdx()).toIntArray();
    }

    static float[] weights(RouterOutput o) {
        return ((HostBuffer) o.topkWeights()).toFloatArray();
    }

    @Test
    void tiesGoToTheLowerExpertIndexAndTheLowerGroup() {
        for (MoeConfig cfg : new MoeConfig[] {base(8, 3).build(),
                base(8, 3).scoreFunction(ScoreFunction.SIGMOID).groups(4, 2).build()}) {
            Router r = track(Router.builder(cfg).parallel(pool).build());
            try (HostBuffer l = HostBuffer.allocate(DType.F32, 5, 8); RouterOutput o = r.forwardLogits(l)) {
                for (int t = 0; t < 5; t++) {
                    assertArrayEquals(new int[] {0, 1, 2}, Arrays.copyOfRange(idx(o), t * 3, t * 3 + 3), "token " + t);
                }
            }
        }
    }

    @Test
    void slotsAreOrderedByDescendingScore() {
        Router r = track(Router.builder(base(6, 3).build()).parallel(pool).build());
        try (HostBuffer l = HostBuffer.ofFloats(new float[] {0.1f, 3f, -1f, 2f, 2.5f, 0f}, 1, 6);
                RouterOutput o = r.forwardLogits(l)) {
            assertArrayEquals(new int[] {1, 4, 3}, idx(o));
        }
    }

    @Test
    void biasSteersSelectionButNeverTheWeights() {
        MoeConfig cfg = base(8, 2).scoreFunction(ScoreFunction.SIGMOID).build();
        Router r = track(Router.builder(cfg).parallel(pool).build());
        r.expertBias().setValues(new float[] {0, 0, 0, 0, 0, 0, 0, 10f});
        Random rnd = new Random(1);
        float[] lv = new float[4 * 8];
        for (int i = 0; i < lv.length; i++) {
            lv[i] = (float) rnd.nextGaussian();
        }
        try (HostBuffer l = HostBuffer.ofFloats(lv, 4, 8); RouterOutput o = r.forwardLogits(l)) {
            float[] s = ((HostBuffer) o.scores()).toFloatArray();
            for (int t = 0; t < 4; t++) {
                assertEquals(7, idx(o)[t * 2], "biased expert chosen first for token " + t);
                assertEquals(s[t * 8 + 7], weights(o)[t * 2], 0f, "weight is the unbiased score");
            }
        }
    }

    @Test
    void nodeLimitedSelectionStaysInsideTheLimitedGroups() {
        long seed = Long.getLong("moe4j.test.seed", System.nanoTime());
        System.out.println("nodeLimited seed=" + seed);
        Random rnd = new Random(seed);
        for (GroupScore gs : GroupScore.values()) {
            MoeConfig cfg = base(64, 8).scoreFunction(ScoreFunction.SIGMOID).groups(8, 3).groupScore(gs).build();
            Router r = track(Router.builder(cfg).parallel(pool).build());
            int tokens = 300;
            float[] lv = new float[tokens * 64];
            for (int i = 0; i < lv.length; i++) {
                lv[i] = (float) rnd.nextGaussian() * 3;
            }
            try (HostBuffer l = HostBuffer.ofFloats(lv, tokens, 64); RouterOutput o = r.forwardLogits(l)) {
                int[] id = idx(o);
                for (int t = 0; t < tokens; t++) {
                    long groups = Arrays.stream(id, t * 8, t * 8 + 8).map(e -> e / 8).distinct().count();
                    assertTrue(groups <= 3, gs + ": token " + t + " uses " + groups + " groups");
                }
            }
        }
    }

    @Test
    void routeNormMakesWeightsSumToTheRouteScale() {
        MoeConfig cfg = base(16, 4).scoreFunction(ScoreFunction.SIGMOID).routeNorm(true).routeScale(2.5).build();
        Router r = track(Router.builder(cfg).parallel(pool).build());
        Random rnd = new Random(3);
        float[] lv = new float[10 * 16];
        for (int i = 0; i < lv.length; i++) {
            lv[i] = (float) rnd.nextGaussian();
        }
        try (HostBuffer l = HostBuffer.ofFloats(lv, 10, 16); RouterOutput o = r.forwardLogits(l)) {
            float[] w = weights(o);
            for (int t = 0; t < 10; t++) {
                double sum = 0;
                for (int j = 0; j < 4; j++) {
                    sum += w[t * 4 + j];
                }
                assertEquals(2.5, sum, 1e-5, "token " + t);
            }
        }
    }

    @Test
    void paddingTokensRouteNowhereAndAddNoLoad() {
        Router r = track(Router.builder(base(4, 2).build()).parallel(pool).build());
        try (HostBuffer l = HostBuffer.allocate(DType.F32, 4, 4);
                HostBuffer mask = HostBuffer.ofInts(new int[] {1, 0, 1, 0}, 4);
                RouterOutput o = r.forwardLogits(l, mask)) {
            assertArrayEquals(new int[] {0, 1, -1, -1, 0, 1, -1, -1}, idx(o));
            assertArrayEquals(new float[] {0.25f, 0.25f, 0, 0, 0.25f, 0.25f, 0, 0}, weights(o));
            assertArrayEquals(new int[] {2, 2, 0, 0}, o.tokensPerExpert().toIntArray());
            assertArrayEquals(new long[] {2, 2, 0, 0}, r.expertBias().load());
            assertEquals(2, o.validTokens());
        }
    }

    @Test
    void forceBalancedModeAssignsRoundRobinWithEvenLoad() {
        MoeConfig cfg = base(8, 2).scoreFunction(ScoreFunction.SIGMOID).groups(4, 2).build();
        Router r = track(Router.builder(cfg).parallel(pool).forceBalanced(true).build());
        Random rnd = new Random(5);
        float[] lv = new float[16 * 8];
        for (int i = 0; i < lv.length; i++) {
            lv[i] = (float) rnd.nextGaussian();
        }
        try (HostBuffer l = HostBuffer.ofFloats(lv, 16, 8); RouterOutput o = r.forwardLogits(l)) {
            int[] id = idx(o);
            for (int i = 0; i < id.length; i++) {
                assertEquals(i % 8, id[i], "slot " + i);
            }
            assertArrayEquals(new int[] {4, 4, 4, 4, 4, 4, 4, 4}, o.tokensPerExpert().toIntArray());
            float[] s = ((HostBuffer) o.scores()).toFloatArray();
            assertEquals(s[3 * 8 + 6], weights(o)[3 * 2], 0f, "weights still come from the scores");
        }
    }

    /** 8 tokens, 4 experts, top-1, all prefer expert 0; capacity factor 1 → 2 per expert. */
    static RouterOutput overloaded(DropPolicy policy, HostBuffer l) {
        MoeConfig cfg = base(4, 1).capacity(new Capacity(1.0, policy)).build();
        return track(Router.builder(cfg).parallel(pool).build()).forwardLogits(l);
    }

    static HostBuffer overloadLogits() {
        float[] lv = new float[8 * 4];
        for (int t = 0; t < 8; t++) {
            lv[t * 4] = 3f + (t % 4) * 0.25f + t * 0.01f; // highest for tokens 3 and 7, then 6, 2
        }
        return HostBuffer.ofFloats(lv, 8, 4);
    }

    @Test
    void capacityByPositionKeepsTheEarliestTokens() {
        try (HostBuffer l = overloadLogits(); RouterOutput o = overloaded(DropPolicy.BY_POSITION, l)) {
            assertArrayEquals(new int[] {0, 0, -1, -1, -1, -1, -1, -1}, idx(o));
            assertEquals(6, o.dropped());
            assertArrayEquals(new int[] {2, 0, 0, 0}, o.tokensPerExpert().toIntArray());
            assertArrayEquals(new int[] {8, 0, 0, 0}, o.selectedPerExpert());
            float[] w = weights(o);
            for (int t = 2; t < 8; t++) {
                assertEquals(0f, w[t], "dropped weight of token " + t);
            }
        }
    }

    @Test
    void capacityByScoreKeepsTheHighestScores() {
        try (HostBuffer l = overloadLogits(); RouterOutput o = overloaded(DropPolicy.BY_SCORE, l)) {
            assertArrayEquals(new int[] {-1, -1, -1, 0, -1, -1, -1, 0}, idx(o));
            assertEquals(6, o.dropped());
        }
    }

    @Test
    void droppedSlotsGetNoWeightGradient() {
        try (HostBuffer l = overloadLogits(); HostBuffer dW = HostBuffer.ofFloats(new float[] {1, 1, 1, 1, 1, 1, 1, 1},
                8, 1)) {
            MoeConfig cfg = base(4, 1).capacity(new Capacity(1.0, DropPolicy.BY_POSITION)).build();
            Router r = track(Router.builder(cfg).parallel(pool).build());
            try (RouterOutput o = r.forwardLogits(l); RouterGrads g = r.backward(o, dW)) {
                float[] d = ((HostBuffer) g.dLogits()).toFloatArray();
                for (int t = 2; t < 8; t++) {
                    for (int e = 0; e < 4; e++) {
                        assertEquals(0f, d[t * 4 + e], "token " + t + " expert " + e);
                    }
                }
                assertTrue(d[0] != 0f, "kept token has a gradient");
            }
        }
    }

    @Test
    void biasUpdateStepsTowardsTheMeanAndRecentres() {
        ExpertBias zero = new ExpertBias(4, 0.1, BiasCentering.ZERO_MEAN);
        ExpertBias none = new ExpertBias(4, 0.1, BiasCentering.NONE);
        for (ExpertBias b : new ExpertBias[] {zero, none}) {
            b.accumulate(new int[] {2, 0, 0, 1});
            b.accumulate(new int[] {1, 0, 0, 0});
            assertEquals(2, b.microBatches());
            assertArrayEquals(new long[] {3, 0, 0, 1}, b.load());
            b.update(); // mean 1: sign = [-1, +1, +1, 0]
            assertArrayEquals(new long[4], b.load(), "load resets");
        }
        assertArrayEquals(new float[] {-0.125f, 0.075f, 0.075f, -0.025f}, zero.values(), 1e-7f);
        assertArrayEquals(new float[] {-0.1f, 0.1f, 0.1f, 0f}, none.values(), 1e-7f);
        zero.accumulate(new int[] {9, 9, 9, 9});
        zero.update(new long[] {5, 5, 5, 5}); // balanced external sum: no step, own load reset
        assertArrayEquals(new float[] {-0.125f, 0.075f, 0.075f, -0.025f}, zero.values(), 1e-7f);
        assertArrayEquals(new long[4], zero.load());
        zero.close();
        none.close();
    }

    @Test
    void emptyBatchRoutesNothing() {
        MoeConfig cfg = base(4, 2).auxLoss(new org.moe4j.core.config.AuxLoss(0.1, 0.1, 0.1, 0)).build();
        Router r = track(Router.builder(cfg).parallel(pool).build());
        try (HostBuffer l = HostBuffer.allocate(DType.F32, 0, 4); RouterOutput o = r.forwardLogits(l);
                RouterGrads g = r.backward(o, null)) {
            assertEquals(0, o.validTokens());
            assertEquals(AuxLosses.NONE, o.auxLosses());
            assertEquals(0, g.dLogits().numel());
        }
    }
}
