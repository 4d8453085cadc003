package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.LayerFeatures;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.core.init.ParamInit;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.experts.internal.CpuExpertKernels;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;
import org.moe4j.routing.AuxLosses;

/**
 * A whole training run (forward, MSE loss, backward, gradient reduction, AdamW, expert-bias update,
 * several steps) gives the same bits for every expert-parallel world size and thread count, whenever
 * every rank but the last holds a multiple of {@link org.moe4j.experts.TokenBlockTree#BLOCK} tokens:
 * every weight (gate, shared experts, routed experts), the expert bias, the losses and the aux losses; also
 * for the model-family variants whose replicated parameters are more than the gate and shared experts
 * (gpt-oss: router bias, expert linear biases, clamped SwiGLU; Qwen2-MoE: gated shared expert).
 */
class WorldSizeDeterminismTest {
    static final int STEPS = 4;
    static final int HIDDEN = 32;
    /** Switch, whole-batch sequence and z losses. */
    static final AuxLoss BATCH_AUX = new AuxLoss(1e-2, 1e-3, 1e-4, 0);
    /** Sequence-wise balance loss over sequences of one block. */
    static final AuxLoss SEQUENCE_AUX = new AuxLoss(0, 1e-2, 0, 64);
    /** Clamp of the gpt-oss-style SwiGLU: low enough that some activations are clamped at this scale. */
    static final double GPT_OSS_LIMIT = 0.5;

    /** The layer variants trained: the DeepSeek-V3 recipe and two model families' replicated extras. */
    enum Family {
        /** Node-limited sigmoid routing, one ungated shared expert. */
        DEEPSEEK,
        /** gpt-oss: softmax routing with a router bias, expert linear biases, clamped SwiGLU, no shared expert. */
        GPT_OSS,
        /** Qwen2-MoE: softmax routing, a shared expert behind a sigmoid gate. */
        QWEN2
    }

    static MoeConfig config(int world, AuxLoss aux) {
        return config(world, aux, Family.DEEPSEEK);
    }

    static MoeConfig config(int world, AuxLoss aux, Family family) {
        MoeConfig.Builder b = MoeConfig.builder().hidden(HIDDEN).experts(8).topK(2).ffn(16).expertBiasCoeff(1e-2)
                .auxLoss(aux).expertParallel(world);
        return switch (family) {
            case DEEPSEEK -> b.scoreFunction(ScoreFunction.SIGMOID).groups(4, 2).routeNorm(true).routeScale(2.5)
                    .sharedExperts(1, 16).build();
            case GPT_OSS -> b.scoreFunction(ScoreFunction.SOFTMAX).features(LayerFeatures.NONE.withRouterBias(true)
                    .withExpertLinearBias(true).withClampedSwiglu(GPT_OSS_LIMIT, 1.702)).build();
            case QWEN2 -> b.scoreFunction(ScoreFunction.SOFTMAX).sharedExperts(1, 16).sharedExpertGate(true).build();
        };
    }

    /** Everything a run ends with, by name: weights by global (Hugging Face) name, bias, losses per step. */
    static Map<String, float[]> train(int[] tokensPerRank, int threads, AuxLoss aux) {
        return train(tokensPerRank, threads, aux, true);
    }

    static Map<String, float[]> train(int[] tokensPerRank, int threads, AuxLoss aux, boolean tree) {
        return train(tokensPerRank, threads, aux, tree, Family.DEEPSEEK);
    }

    static Map<String, float[]> train(int[] tokensPerRank, int threads, AuxLoss aux, boolean tree, Family family) {
        int world = tokensPerRank.length;
        int global = Arrays.stream(tokensPerRank).sum();
        MoeConfig cfg = config(world, aux, family);
        List<Map<String, float[]>> ranks;
        try (CpuParallel pool = new CpuParallel(threads)) {
            ranks = LocalGroup.run(world, comm -> {
                int first = 0;
                for (int r = 0; r < comm.rank(); r++) {
                    first += tokensPerRank[r];
                }
                int tokens = tokensPerRank[comm.rank()];
                Map<String, float[]> out = new LinkedHashMap<>();
                float[] auxValues = new float[3 * STEPS];
                try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(5).expertKernels(new CpuExpertKernels(pool))
                        .tokenBlockTree(tree).build();
                     HostBuffer all = HostBuffer.allocate(DType.F32, global, HIDDEN);
                     HostBuffer allTarget = HostBuffer.allocate(DType.F32, global, HIDDEN);
                     AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                    ParamInit.fillUniform(all, 11, 1, 0, 1f);
                    ParamInit.fillUniform(allTarget, 11, 2, 0, 0.2f);
                    try (HostBuffer x = slice(all, first, tokens); // copies: closed after the loop
                         HostBuffer target = slice(allTarget, first, tokens)) {
                    for (int step = 0; step < STEPS; step++) {
                        MoeLayer.Forward f = layer.forward(x);
                        try (HostBuffer y = (HostBuffer) f.output();
                             HostBuffer dY = HostBuffer.allocate(DType.F32, tokens, HIDDEN);
                             HostBuffer sq = HostBuffer.allocate(DType.F32, tokens, HIDDEN)) {
                            for (long i = 0; i < y.numel(); i++) {
                                float d = y.getFloat(i) - target.getFloat(i);
                                dY.setFloat(i, 2f * d / ((float) global * HIDDEN));
                                sq.setFloat(i, d * d);
                            }
                            out.put("sq." + step, sq.toFloatArray()); // per element: the loss is summed by the test in global order
                            AuxLosses a = f.auxLosses();
                            auxValues[3 * step] = (float) a.switchLoss();
                            auxValues[3 * step + 1] = (float) a.sequenceLoss();
                            auxValues[3 * step + 2] = (float) a.zLoss();
                            try (Buffer dX = layer.backward(f.context(), dY)) {
                                out.put("dx." + step, ((HostBuffer) dX).toFloatArray());
                            }
                        }
                        layer.reduceGradients();
                        opt.step();
                        opt.zeroGrad();
                        layer.updateExpertBias();
                    }
                    }
                    out.put("aux", auxValues);
                    out.put("bias", layer.expertBias().values());
                    layer.namedTensors("").forEach((k, v) -> out.put(k, v.toFloatArray()));
                    for (Parameter p : layer.parameters()) { // expert linear biases have no per-expert names
                        if (p.name().startsWith("experts.") && p.name().endsWith("_bias")) {
                            out.put("routed." + p.name(), ((HostBuffer) p.value()).toFloatArray());
                        }
                    }
                }
                return out;
            });
        }
        Map<String, float[]> merged = new LinkedHashMap<>();
        for (Map<String, float[]> r : ranks) {
            r.forEach((k, v) -> {
                if (k.startsWith("sq.") || k.startsWith("dx.") || k.startsWith("routed.")) {
                    merged.merge(k, v, WorldSizeDeterminismTest::concat);
                } else if (k.startsWith("experts.")) {
                    merged.put(k, v); // this rank's routed experts, by global index
                } else {
                    float[] seen = merged.putIfAbsent(k, v);
                    if (seen != null) {
                        assertArrayEquals(seen, v, 0f, k + ": replicas differ between ranks");
                    }
                }
            });
        }
        float[] losses = new float[STEPS];
        for (int s = 0; s < STEPS; s++) {
            double sum = 0;
            for (float v : merged.remove("sq." + s)) {
                sum += v;
            }
            losses[s] = (float) (sum / ((double) global * HIDDEN));
        }
        merged.put("losses", losses);
        return merged;
    }

    static HostBuffer slice(HostBuffer all, int first, int tokens) {
        return HostBuffer.ofFloats(Arrays.copyOfRange(all.toFloatArray(), first * HIDDEN, (first + tokens) * HIDDEN),
                tokens, HIDDEN);
    }

    static float[] concat(float[] a, float[] b) {
        float[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    static void assertSameRun(Map<String, float[]> expected, Map<String, float[]> actual, String what) {
        assertEquals(expected.keySet(), actual.keySet(), what);
        for (String k : expected.keySet()) {
            assertArrayEquals(expected.get(k), actual.get(k), 0f, k + " (" + what + ")");
        }
    }

    @Test
    void trainingIsBitwiseIdenticalForWorldSizes124AndThreadCounts() {
        Map<String, float[]> w1 = train(new int[] {256}, 1, BATCH_AUX);
        assertNotEquals(0f, w1.get("bias")[0], "the expert bias must have moved for the test to mean something");
        assertNotEquals(w1.get("losses")[0], w1.get("losses")[STEPS - 1], "the weights must have moved");
        assertNotEquals(0f, w1.get("aux")[0], "the aux losses must be on");
        assertSameRun(w1, train(new int[] {256}, 3, BATCH_AUX), "W=1, 3 threads");
        assertSameRun(w1, train(new int[] {128, 128}, 2, BATCH_AUX), "W=2");
        assertSameRun(w1, train(new int[] {64, 64, 64, 64}, 1, BATCH_AUX), "W=4");
        assertSameRun(w1, train(new int[] {64, 128, 0, 64}, 3, BATCH_AUX), "W=4, uneven, one rank without tokens");
    }

    @Test
    void sequenceLossIsAGlobalMeanOverSequences() {
        Map<String, float[]> w1 = train(new int[] {256}, 2, SEQUENCE_AUX);
        assertNotEquals(0f, w1.get("aux")[1], "the sequence loss must be on");
        assertSameRun(w1, train(new int[] {128, 128}, 1, SEQUENCE_AUX), "W=2");
        assertSameRun(w1, train(new int[] {64, 64, 64, 64}, 2, SEQUENCE_AUX), "W=4");
    }

    @Test
    void onlyTheLastRankMayHoldAPartialBlock() {
        Map<String, float[]> w1 = train(new int[] {200}, 2, BATCH_AUX);
        assertSameRun(w1, train(new int[] {128, 72}, 1, BATCH_AUX), "W=2, 128 + 72");
        assertSameRun(w1, train(new int[] {64, 64, 64, 8}, 2, BATCH_AUX), "W=4, 64 + 64 + 64 + 8");
    }

    @Test
    void gptOssRouterBiasAndExpertLinearBiasesAreBitwiseIdenticalForWorldSizes124() {
        Map<String, float[]> w1 = train(new int[] {256}, 1, BATCH_AUX, true, Family.GPT_OSS);
        assertMoved(w1, "gate.bias");
        assertMoved(w1, "routed.experts.down_proj_bias");
        assertSameRun(w1, train(new int[] {128, 128}, 2, BATCH_AUX, true, Family.GPT_OSS), "gpt-oss W=2");
        assertSameRun(w1, train(new int[] {64, 64, 64, 64}, 1, BATCH_AUX, true, Family.GPT_OSS), "gpt-oss W=4");
        assertSameRun(w1, train(new int[] {64, 128, 0, 64}, 3, BATCH_AUX, true, Family.GPT_OSS),
                "gpt-oss W=4, uneven, one rank without tokens");
    }

    @Test
    void qwen2SharedExpertGateIsBitwiseIdenticalForWorldSizes124() {
        Map<String, float[]> w1 = train(new int[] {256}, 2, BATCH_AUX, true, Family.QWEN2);
        assertMoved(w1, "shared_expert_gate.weight");
        assertSameRun(w1, train(new int[] {128, 128}, 1, BATCH_AUX, true, Family.QWEN2), "Qwen2-MoE W=2");
        assertSameRun(w1, train(new int[] {64, 64, 64, 64}, 3, BATCH_AUX, true, Family.QWEN2), "Qwen2-MoE W=4");
        Map<String, float[]> shortLast = train(new int[] {200}, 1, BATCH_AUX, true, Family.QWEN2);
        assertSameRun(shortLast, train(new int[] {192, 8}, 2, BATCH_AUX, true, Family.QWEN2),
                "Qwen2-MoE W=2, 192 + 8");
    }

    /** A parameter must have left its initial value (zero for a bias) for a comparison to mean something. */
    static void assertMoved(Map<String, float[]> run, String name) {
        float[] v = run.get(name);
        assertNotEquals(null, v, name + " missing");
        float[] start = new float[v.length];
        if (name.equals("shared_expert_gate.weight")) {
            try (HostBuffer init = HostBuffer.allocate(DType.F32, 1, HIDDEN)) {
                ParamInit.fillUniform(init, 5, MoeLayer.STREAM_SHARED_GATE, 0, ParamInit.linearBound(HIDDEN));
                start = init.toFloatArray();
            }
        }
        assertFalse(Arrays.equals(start, v), name + " did not move from its initial value");
    }

    @Test
    void withoutTheTreeTheReplicatedWeightsDependOnTheWorldSize() {
        // the rank-order all-reduce of per-rank sums: what the tree replaces (shows the tests above are not vacuous)
        Map<String, float[]> w1 = train(new int[] {256}, 1, BATCH_AUX, false);
        Map<String, float[]> w2 = train(new int[] {128, 128}, 1, BATCH_AUX, false);
        assertFalse(Arrays.equals(w1.get("gate.weight"), w2.get("gate.weight"))
                && Arrays.equals(w1.get("shared_experts.down_proj.weight"), w2.get("shared_experts.down_proj.weight")),
                "replicated weights identical without the tree");
    }

    @Test
    void withoutTheTreeTheRouterBiasAndSharedExpertGateDependOnTheWorldSize() {
        // the same for the family variants' replicated parameters (the family tests above fail on this path)
        Map<String, float[]> gpt1 = train(new int[] {256}, 1, BATCH_AUX, false, Family.GPT_OSS);
        Map<String, float[]> gpt2 = train(new int[] {128, 128}, 1, BATCH_AUX, false, Family.GPT_OSS);
        assertFalse(Arrays.equals(gpt1.get("gate.bias"), gpt2.get("gate.bias")), "router bias identical without the tree");
        Map<String, float[]> qwen1 = train(new int[] {256}, 1, BATCH_AUX, false, Family.QWEN2);
        Map<String, float[]> qwen2 = train(new int[] {128, 128}, 1, BATCH_AUX, false, Family.QWEN2);
        assertFalse(Arrays.equals(qwen1.get("shared_expert_gate.weight"), qwen2.get("shared_expert_gate.weight")),
                "shared-expert gate identical without the tree");
    }
}
