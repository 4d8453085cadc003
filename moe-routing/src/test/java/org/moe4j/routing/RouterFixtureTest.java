package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.Arrays;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.cpu.CpuParallel;

/** Router forward and backward against the PyTorch reference fixtures. */
class RouterFixtureTest {
    /** fp32 forward values vs the float64 reference. */
    static final double WEIGHT_TOL = 1e-6;
    /** fp32 gradients vs the float64 reference. */
    static final double GRAD_TOL = 1e-5;
    /** Aux-loss values (sums of fp32 statistics). */
    static final double LOSS_TOL = 1e-6;

    static CpuParallel pool;

    @BeforeAll
    static void start() {
        pool = new CpuParallel(2);
    }

    @AfterAll
    static void stop() {
        pool.close();
    }

    static Stream<String> cases() {
        return Fixture.CASES.stream();
    }

    /** Dense [tokens, experts] matrix of weights from (idx, weights) slots; -1 slots skipped. */
    static float[] dense(int[] idx, float[] w, int tokens, int k, int experts) {
        float[] d = new float[tokens * experts];
        for (int t = 0; t < tokens; t++) {
            for (int j = 0; j < k; j++) {
                int e = idx[t * k + j];
                if (e >= 0) {
                    d[t * experts + e] += w[t * k + j];
                }
            }
        }
        return d;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void forwardAndBackwardMatchPyTorchReference(String name) {
        JsonNode f = Fixture.load(name);
        JsonNode ex = f.get("expected");
        int tokens = f.get("tokens").asInt();
        boolean fromHidden = f.has("x");
        int hidden = fromHidden ? f.get("hidden").asInt() : 1;
        MoeConfig cfg = Fixture.config(f.get("config"), hidden).build();
        int experts = cfg.experts();
        int k = cfg.topK();
        Router router = Router.builder(cfg).parallel(pool).build();
        router.expertBias().setValues(Fixture.floats(f.get("bias")));
        float[] upstream = Fixture.floats(f.get("upstream")); // [tokens, experts]
        try (HostBuffer mask = HostBuffer.ofInts(Fixture.ints(f.get("mask")), tokens);
                HostBuffer x = fromHidden ? HostBuffer.of(DType.valueOf(f.get("dtype").asText()),
                        Fixture.floats(f.get("x")), tokens, hidden) : null;
                HostBuffer gate = fromHidden ? HostBuffer.ofFloats(Fixture.floats(f.get("gate")), experts, hidden)
                        : null;
                HostBuffer logits = fromHidden ? null : HostBuffer.ofFloats(Fixture.floats(f.get("logits")), tokens,
                        experts);
                RouterOutput out = fromHidden ? router.forward(x, gate, mask) : router.forwardLogits(logits, mask)) {
            int[] idx = ((HostBuffer) out.topkIdx()).toIntArray();
            int[] refIdx = Fixture.ints(ex.get("topkIdx"));
            for (int t = 0; t < tokens; t++) {
                int[] a = Arrays.copyOfRange(idx, t * k, t * k + k);
                int[] b = Arrays.copyOfRange(refIdx, t * k, t * k + k);
                Arrays.sort(a);
                Arrays.sort(b);
                assertArrayEquals(b, a, name + ": expert set of token " + t);
            }
            float[] w = ((HostBuffer) out.topkWeights()).toFloatArray();
            double wErr = Norms.relErr(dense(idx, w, tokens, k, experts),
                    dense(refIdx, Fixture.floats(ex.get("topkWeights")), tokens, k, experts));
            assertTrue(wErr <= WEIGHT_TOL, name + ": topkWeights rel err " + wErr);
            double sErr = Norms.relErr(((HostBuffer) out.scores()).toFloatArray(), Fixture.floats(ex.get("scores")));
            assertTrue(sErr <= WEIGHT_TOL, name + ": scores rel err " + sErr);
            assertArrayEquals(Fixture.ints(ex.get("tokensPerExpert")), out.tokensPerExpert().toIntArray(),
                    name + ": tokensPerExpert");
            AuxLosses aux = out.auxLosses();
            assertTrue(Norms.relErr(aux.switchLoss(), ex.get("switchLoss").asDouble()) <= LOSS_TOL,
                    name + ": switch loss " + aux.switchLoss() + " vs " + ex.get("switchLoss"));
            assertTrue(Norms.relErr(aux.sequenceLoss(), ex.get("seqLoss").asDouble()) <= LOSS_TOL,
                    name + ": sequence loss " + aux.sequenceLoss() + " vs " + ex.get("seqLoss"));
            assertTrue(Norms.relErr(aux.zLoss(), ex.get("zLoss").asDouble()) <= LOSS_TOL,
                    name + ": z loss " + aux.zLoss() + " vs " + ex.get("zLoss"));

            float[] dw = new float[tokens * k];
            for (int i = 0; i < dw.length; i++) {
                dw[i] = idx[i] >= 0 ? upstream[(i / k) * experts + idx[i]] : 0f;
            }
            try (HostBuffer dW = HostBuffer.ofFloats(dw, tokens, k);
                    RouterGrads g = router.backward(out, dW)) {
                double lErr = Norms.relErr(((HostBuffer) g.dLogits()).toFloatArray(), Fixture.floats(ex.get("dLogits")));
                assertTrue(lErr <= GRAD_TOL, name + ": dLogits rel err " + lErr);
                System.out.printf("%s: weights %.2e scores %.2e dLogits %.2e%n", name, wErr, sErr, lErr);
                if (fromHidden) {
                    assertNotNull(g.dX());
                    double xErr = Norms.relErr(((HostBuffer) g.dX()).toFloatArray(), Fixture.floats(ex.get("dX")));
                    assertTrue(xErr <= GRAD_TOL, name + ": dX rel err " + xErr);
                    double gErr = Norms.relErr(((HostBuffer) g.dGateWeight()).toFloatArray(),
                            Fixture.floats(ex.get("dGate")));
                    assertTrue(gErr <= GRAD_TOL, name + ": dGate rel err " + gErr);
                    System.out.printf("%s: dX %.2e dGate %.2e%n", name, xErr, gErr);
                } else {
                    assertEquals(null, g.dX());
                }
            }
        } finally {
            router.expertBias().close();
        }
    }

    static Stream<String> trajectories() {
        return Fixture.TRAJECTORIES.stream();
    }

    /** Bias after each update, fp32 state vs the fp32 PyTorch update. */
    static final double BIAS_TOL = 1e-6;

    @ParameterizedTest(name = "{0}")
    @MethodSource("trajectories")
    void biasTrajectoryOverTenStepsMatchesReference(String name) {
        JsonNode f = Fixture.load(name);
        int tokens = f.get("tokens").asInt();
        MoeConfig cfg = Fixture.config(f.get("config"), 1)
                .expertBiasCoeff(f.get("coeff").asDouble())
                .biasCentering(Fixture.centering(f))
                .build();
        int k = cfg.topK();
        Router router = Router.builder(cfg).parallel(pool).build();
        ExpertBias bias = router.expertBias();
        int step = 0;
        for (JsonNode s : f.get("steps")) {
            try (HostBuffer logits = HostBuffer.ofFloats(Fixture.floats(s.get("logits")), tokens, cfg.experts());
                    RouterOutput out = router.forwardLogits(logits)) {
                int[] idx = ((HostBuffer) out.topkIdx()).toIntArray();
                int[] ref = Fixture.ints(s.get("topkIdx"));
                for (int t = 0; t < tokens; t++) {
                    int[] a = Arrays.copyOfRange(idx, t * k, t * k + k);
                    int[] b = Arrays.copyOfRange(ref, t * k, t * k + k);
                    Arrays.sort(a);
                    Arrays.sort(b);
                    assertArrayEquals(b, a, name + " step " + step + ": expert set of token " + t);
                }
                long[] load = bias.load();
                assertArrayEquals(Arrays.stream(Fixture.ints(s.get("load"))).asLongStream().toArray(), load,
                        name + " step " + step + ": load");
                bias.update();
                assertArrayEquals(new long[cfg.experts()], bias.load(), "load resets after update");
                double err = Norms.relErr(bias.values(), Fixture.floats(s.get("biasAfter")));
                assertTrue(err <= BIAS_TOL, name + " step " + step + ": bias rel err " + err);
            }
            step++;
        }
        assertEquals(10, step);
        bias.close();
    }
}
