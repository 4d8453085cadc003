package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.BiasCentering;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;

/** Every bad input is refused with a message naming what and where; no state changes on failure. */
class RouterBadInputTest {
    static final int TOKENS = 10;
    static final int HIDDEN = 8;
    static final int EXPERTS = 8;

    CpuParallel pool;
    Router router;
    float[] biasBefore;

    @BeforeEach
    void setUp() {
        pool = new CpuParallel(2);
        MoeConfig cfg = MoeConfig.builder().hidden(HIDDEN).experts(EXPERTS).topK(2).ffn(1)
                .scoreFunction(ScoreFunction.SIGMOID).groups(4, 2).expertBiasCoeff(0.01)
                .auxLoss(new AuxLoss(0.01, 0.01, 0.01, 5)).build();
        router = Router.builder(cfg).parallel(pool).build();
        biasBefore = new float[] {0.1f, -0.1f, 0.2f, -0.2f, 0f, 0f, 0.05f, -0.05f};
        router.expertBias().setValues(biasBefore);
        try (HostBuffer logits = logits()) {
            router.forwardLogits(logits).close(); // some load pending
        }
    }

    @AfterEach
    void tearDown() {
        router.expertBias().close();
        pool.close();
    }

    static HostBuffer logits() {
        float[] v = new float[TOKENS * EXPERTS];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) Math.sin(i * 0.7);
        }
        return HostBuffer.ofFloats(v, TOKENS, EXPERTS);
    }

    void assertRefused(String fragment, Executable call) {
        long[] loadBefore = router.expertBias().load();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(fragment), "message '" + e.getMessage() + "' lacks '" + fragment + "'");
        assertArrayEquals(biasBefore, router.expertBias().values(), "bias unchanged after a failed call");
        assertArrayEquals(loadBefore, router.expertBias().load(), "load unchanged after a failed call");
    }

    @Test
    void nanLogitNamesTheFirstBadToken() {
        try (HostBuffer l = logits()) {
            l.setFloat(7L * EXPERTS + 3, Float.NaN);
            l.setFloat(9L * EXPERTS + 1, Float.NaN);
            assertRefused("logits of token 7 are not finite", () -> router.forwardLogits(l));
        }
    }

    @Test
    void infiniteLogitNamesItsToken() {
        try (HostBuffer l = logits()) {
            l.setFloat(2L * EXPERTS, Float.NEGATIVE_INFINITY);
            assertRefused("logits of token 2 are not finite", () -> router.forwardLogits(l));
        }
    }

    @Test
    void infiniteHiddenStateNamesItsTokenAndTheInputs() {
        try (HostBuffer x = HostBuffer.allocate(DType.F32, TOKENS, HIDDEN);
                HostBuffer g = HostBuffer.allocate(DType.F32, EXPERTS, HIDDEN)) {
            g.setFloat(0, 1f);
            x.setFloat(4L * HIDDEN, Float.POSITIVE_INFINITY);
            assertRefused("token 4 are not finite (NaN or Inf); check x and gateWeight", () -> router.forward(x, g));
        }
    }

    @Test
    void nanInPaddingTokenIsIgnored() {
        try (HostBuffer l = logits(); HostBuffer mask = HostBuffer.ofInts(new int[] {1, 1, 1, 0, 1, 1, 1, 1, 1, 1},
                TOKENS)) {
            l.setFloat(3L * EXPERTS, Float.NaN);
            try (RouterOutput out = router.forwardLogits(l, mask)) {
                int[] idx = ((HostBuffer) out.topkIdx()).toIntArray();
                float[] w = ((HostBuffer) out.topkWeights()).toFloatArray();
                int k = idx.length / TOKENS;
                for (int t = 0; t < TOKENS; t++) {
                    for (int j = 0; j < k; j++) {
                        int i = t * k + j;
                        if (t == 3) {
                            assertEquals(-1, idx[i], "padding token 3 selects no expert (slot " + j + ")");
                            assertEquals(0f, w[i], "padding token 3 has weight 0 (slot " + j + ")");
                        } else {
                            assertTrue(idx[i] >= 0 && idx[i] < EXPERTS, "token " + t + " slot " + j + ": " + idx[i]);
                            assertTrue(Float.isFinite(w[i]), "token " + t + " slot " + j + " weight " + w[i]);
                        }
                    }
                }
            }
        }
    }

    @Test
    void wrongDtypesAndShapesAreNamed() {
        try (HostBuffer xi = HostBuffer.allocate(DType.I32, TOKENS, HIDDEN);
                HostBuffer x = HostBuffer.allocate(DType.F32, TOKENS, HIDDEN);
                HostBuffer xWide = HostBuffer.allocate(DType.F32, TOKENS, HIDDEN + 1);
                HostBuffer g = HostBuffer.allocate(DType.F32, EXPERTS, HIDDEN);
                HostBuffer gBad = HostBuffer.allocate(DType.F32, EXPERTS + 1, HIDDEN);
                HostBuffer gBf = HostBuffer.allocate(DType.BF16, EXPERTS, HIDDEN);
                HostBuffer l = logits();
                HostBuffer lBad = HostBuffer.allocate(DType.F32, TOKENS, EXPERTS - 1);
                HostBuffer maskF = HostBuffer.allocate(DType.F32, TOKENS);
                HostBuffer maskShort = HostBuffer.allocate(DType.I32, TOKENS - 1)) {
            assertRefused("x must be F32 or BF16 but is I32", () -> router.forward(xi, g));
            assertRefused("x must be [tokens, hidden=8] but is [10, 9]", () -> router.forward(xWide, g));
            assertRefused("gateWeight must be F32 [8, 8] but is F32 [9, 8]", () -> router.forward(x, gBad));
            assertRefused("gateWeight must be F32 [8, 8] but is BF16", () -> router.forward(x, gBf));
            assertRefused("logits must be F32 [tokens, experts=8] but is F32 [10, 7]", () -> router.forwardLogits(lBad));
            assertRefused("paddingMask must be I32 [10] but is F32", () -> router.forwardLogits(l, maskF));
            assertRefused("paddingMask must be I32 [10] but is I32 [9]", () -> router.forwardLogits(l, maskShort));
        }
    }

    @Test
    void sequenceLengthThatDoesNotDivideTheBatchIsRefused() {
        try (HostBuffer l = HostBuffer.allocate(DType.F32, 7, EXPERTS)) {
            assertRefused("tokens=7 is not a multiple of auxLoss.seqLength=5", () -> router.forwardLogits(l));
        }
    }

    @Test
    void backwardRefusesWrongGradientShapeClosedAndForeignOutputs() {
        try (HostBuffer l = logits(); HostBuffer dBad = HostBuffer.allocate(DType.F32, TOKENS, 3)) {
            RouterOutput out = router.forwardLogits(l);
            assertRefused("dTopkWeights must be F32 [10, 2] but is F32 [10, 3]", () -> router.backward(out, dBad));
            Router other = Router.builder(router.config()).parallel(pool).build();
            assertRefused("out was produced by another router", () -> other.backward(out, null));
            out.close();
            assertRefused("out is closed", () -> router.backward(out, null));
            other.expertBias().close();
        }
    }

    @Test
    void expertBiasRefusesBadValuesWithoutChangingState() {
        ExpertBias b = router.expertBias();
        assertRefused("value of expert 2 is NaN", () -> b.setValues(new float[] {0, 0, Float.NaN, 0, 0, 0, 0, 0}));
        assertRefused("got 3 values for 8 experts", () -> b.setValues(new float[3]));
        assertRefused("count of expert 1 is negative (-4)", () -> b.accumulate(new int[] {1, -4, 0, 0, 0, 0, 0, 0}));
        assertRefused("got 7 counts for 8 experts", () -> b.update(new long[7]));
        assertRefused("count of expert 7 is negative", () -> b.update(new long[] {0, 0, 0, 0, 0, 0, 0, -1}));
        assertRefused("coeff=-1.0 must be finite and >= 0", () -> new ExpertBias(8, -1, BiasCentering.NONE));
        assertRefused("experts=0 must be >= 1", () -> new ExpertBias(0, 0, BiasCentering.NONE));
    }

    @Test
    void outOfRangeOptionsAreRefusedByTheConfig() {
        MoeConfig.Builder b = MoeConfig.builder().hidden(8).experts(8).topK(2).ffn(1);
        assertRefused("limitedGroups=5: must not exceed expertGroups (4)", () -> b.groups(4, 5).build());
        assertRefused("topK=9: must not exceed experts (8)", () -> b.groups(1, 1).topK(9).build());
        assertRefused("topK=6: exceeds the 4 experts reachable", () -> b.topK(6).groups(4, 2).build());
        assertRefused("routeScale=0.0: must be finite and > 0", () -> b.topK(2).routeScale(0).build());
        assertRefused("need 1 <= topK (5) <= experts (4)", () -> new RouteParams(4, 5, ScoreFunction.SOFTMAX, 1, 1,
                org.moe4j.core.config.GroupScore.TOP2_SUM, false, 1f, false));
        assertRefused("needs >= 2 experts per group, got experts=4 in expertGroups=4", () -> new RouteParams(4, 1,
                ScoreFunction.SOFTMAX, 4, 1, org.moe4j.core.config.GroupScore.TOP2_SUM, false, 1f, false));
    }
}
