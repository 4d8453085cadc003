package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.experts.TokenBlockTree;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;

/**
 * A training state saved at one expert-parallel world size and resumed at another continues the run
 * bit for bit: train at W = 2, save, resume at W = 1 and at W = 4 (and the reverse), and the final
 * weights, optimiser moments, step counts, expert bias and bias load equal the uninterrupted run's. It
 * holds wherever the determinism guarantee holds (docs/training.md): every rank holds a multiple of
 * {@link TokenBlockTree#BLOCK} tokens of the same global batch. States are saved right after a bias
 * update and between two (the load, a global sum, is regrouped onto the new ranks).
 */
class CrossWorldResumeTest {
    static final int GLOBAL_TOKENS = 4 * TokenBlockTree.BLOCK;
    static final int HIDDEN = 16;
    static final int STEPS = 5;
    /** (saved at, resumed at) world sizes. */
    static final int[][] MOVES = {{2, 1}, {2, 4}, {1, 2}, {4, 2}};

    @TempDir
    Path tmp;

    /** The layers resumed: the plain recipe, and the replicated extras of the model families the state can name. */
    enum Variant {
        /** Node-limited sigmoid routing, an ungated shared expert, balance and z losses. */
        PLAIN,
        /** Softmax routing with a router bias (gpt-oss) and a gated shared expert (Qwen2-MoE). */
        ROUTER_BIAS_AND_SHARED_GATE
    }

    static MoeConfig config(int world, Variant v) {
        MoeConfig.Builder b = MoeConfig.builder().hidden(HIDDEN).experts(8).topK(2).ffn(12).sharedExperts(1, 8)
                .expertBiasCoeff(1e-2).auxLoss(new AuxLoss(1e-2, 0, 1e-4, 0)).expertParallel(world);
        return switch (v) {
            case PLAIN -> b.scoreFunction(ScoreFunction.SIGMOID).groups(4, 2).routeNorm(true).build();
            case ROUTER_BIAS_AND_SHARED_GATE -> b.scoreFunction(ScoreFunction.SOFTMAX).routerBias(true)
                    .sharedExpertGate(true).build();
        };
    }

    /** One step on this rank's contiguous slice of the global batch; the bias is updated every second step. */
    static void step(MoeLayer layer, AdamW opt, int step) {
        ExactResumeTest.step(layer, opt, 42, step, GLOBAL_TOKENS);
    }

    /** This rank's state: every parameter with its two moments, the bias, its load and the step counts. */
    static Map<String, float[]> rankState(MoeLayer layer, AdamW opt) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (Parameter p : layer.parameters()) {
            out.put(p.name(), ((HostBuffer) p.value()).toFloatArray());
            out.put(p.name() + ".exp_avg", ((HostBuffer) opt.firstMoment(p.value())).toFloatArray());
            out.put(p.name() + ".exp_avg_sq", ((HostBuffer) opt.secondMoment(p.value())).toFloatArray());
        }
        out.put("bias", layer.expertBias().values());
        long[] load = layer.expertBias().load();
        float[] l = new float[load.length];
        for (int i = 0; i < load.length; i++) {
            l[i] = load[i];
        }
        out.put("load", l);
        out.put("counts", new float[] {layer.expertBias().microBatches(), opt.steps(), opt.skippedSteps()});
        return out;
    }

    /**
     * The state of a whole run independent of W: routed experts (and their moments) concatenated in rank
     * order, the load summed over the ranks (the global load the next update uses), every other entry
     * identical on every rank.
     */
    static Map<String, float[]> global(List<Map<String, float[]>> ranks) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (Map<String, float[]> r : ranks) {
            r.forEach((k, v) -> {
                if (k.startsWith("experts.")) {
                    out.merge(k, v, ExactResumeTest::concat);
                } else if (k.equals("load")) {
                    out.merge(k, v, CrossWorldResumeTest::add);
                } else {
                    float[] seen = out.putIfAbsent(k, v);
                    if (seen != null) {
                        assertArrayEquals(seen, v, 0f, k + ": ranks differ");
                    }
                }
            });
        }
        return out;
    }

    static float[] add(float[] a, float[] b) {
        float[] out = a.clone();
        for (int i = 0; i < out.length; i++) {
            out[i] += b[i];
        }
        return out;
    }

    static Map<String, float[]> straight(int world, Variant v) {
        return global(LocalGroup.run(world, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(world, v), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                for (int s = 0; s < STEPS; s++) {
                    step(layer, opt, s);
                }
                return rankState(layer, opt);
            }
        }));
    }

    static void assertBitwise(Map<String, float[]> want, Map<String, float[]> got, String what) {
        ExactResumeTest.assertSame(List.of(want), List.of(got), what);
    }

    @ParameterizedTest
    @EnumSource(Variant.class)
    void stateSavedAtOneWorldSizeResumesBitwiseAtAnother(Variant v) {
        Map<String, float[]> want = straight(2, v);
        assertNotEquals(0f, want.get("bias")[0], "the expert bias must have moved for the test to mean something");
        assertBitwise(want, straight(1, v), "uninterrupted W=1 vs W=2 (the determinism guarantee)");
        for (int[] move : MOVES) {
            int savedWorld = move[0];
            int world = move[1];
            for (int saveAt : new int[] {2, 3}) { // right after a bias update, and between two (load accumulated)
                String what = v + " saved at W=" + savedWorld + " after " + saveAt + " steps, resumed at W=" + world;
                Path dir = tmp.resolve(v + "-" + savedWorld + "-" + world + "-" + saveAt);
                List<Map<String, float[]>> saved = LocalGroup.run(savedWorld, comm -> {
                    try (MoeLayer layer = MoeLayer.builder(config(savedWorld, v), comm).seed(7).build();
                         AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                        for (int s = 0; s < saveAt; s++) {
                            step(layer, opt, s);
                        }
                        layer.saveTrainingState(dir, opt, saveAt);
                        return rankState(layer, opt);
                    }
                });
                if (saveAt % 2 == 1) {
                    float[] load = global(saved).get("load");
                    assertFalse(Arrays.equals(new float[load.length], load), what + ": the load must be mid-accumulation");
                }
                Map<String, float[]> got = global(LocalGroup.run(world, comm -> {
                    // another seed and learning rate: everything that matters must come from the state
                    try (MoeLayer layer = MoeLayer.builder(config(world, v), comm).seed(1234).build();
                         AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(5))) {
                        assertEquals(saveAt, layer.loadTrainingState(dir, opt));
                        for (int s = saveAt; s < STEPS; s++) {
                            step(layer, opt, s);
                        }
                        return rankState(layer, opt);
                    }
                }));
                assertBitwise(want, got, what);
            }
        }
    }
}
