package org.moe4j.cuda.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.LayerFeatures;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.init.ParamInit;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.comm.VirtualRankGroup;
import org.moe4j.experts.TokenBlockTree;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;

/**
 * Training on the CUDA backend is bitwise identical for W = 1, 2, 4 (virtual ranks on one device):
 * the replicated gradients go through the token-block tree of the CUDA expert kernels and the aux
 * losses are global means, as on the CPU backend. Every weight, the bias and the aux losses after a
 * few steps of forward, backward, AdamW and bias update.
 */
@Tag("gpu")
class MoeLayerGpuWorldSizeTest {
    static final int GLOBAL_TOKENS = 4 * TokenBlockTree.BLOCK;
    static final int HIDDEN = 32;
    static final int STEPS = 2;
    private static final Duration TIMEOUT = Duration.ofSeconds(300);

    private static CudaBackend cuda;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        cuda = new CudaBackend();
    }

    static float[] floats(Buffer b) {
        try (HostBuffer h = b.toHost()) {
            return h.toFloatArray();
        }
    }

    static Map<String, float[]> train(int world, DType expertDtype) {
        return train(world, MoeConfig.builder().scoreFunction(ScoreFunction.SIGMOID).groups(4, 2).routeNorm(true)
                .routeScale(2.5).sharedExperts(1, 16).expertDtype(expertDtype));
    }

    /**
     * Trains the layer configured by {@code family} (hidden, experts, topK, ffn, aux losses and the world
     * size are set here) at world size {@code world}.
     */
    static Map<String, float[]> train(int world, MoeConfig.Builder family) {
        MoeConfig cfg = family.hidden(HIDDEN).experts(8).topK(2).ffn(16).expertBiasCoeff(1e-2)
                .auxLoss(new AuxLoss(1e-2, 0, 1e-4, 0)).expertParallel(world).build();
        int per = GLOBAL_TOKENS / world;
        List<Map<String, float[]>> ranks = VirtualRankGroup.run(cuda.context(), world, TIMEOUT, comm -> {
            Map<String, float[]> out = new LinkedHashMap<>();
            float[] aux = new float[2 * STEPS];
            try (HostBuffer all = HostBuffer.allocate(DType.F32, GLOBAL_TOKENS, HIDDEN);
                 HostBuffer allTarget = HostBuffer.allocate(DType.F32, GLOBAL_TOKENS, HIDDEN)) {
                ParamInit.fillUniform(all, 11, 1, 0, 1f);
                ParamInit.fillUniform(allTarget, 11, 2, 0, 0.2f);
                int from = comm.rank() * per * HIDDEN;
                float[] target = Arrays.copyOfRange(allTarget.toFloatArray(), from, from + per * HIDDEN);
                try (HostBuffer xh = HostBuffer.ofFloats(Arrays.copyOfRange(all.toFloatArray(), from, from + per * HIDDEN),
                        per, HIDDEN);
                     Buffer x = cuda.upload(xh);
                     MoeLayer layer = MoeLayer.builder(cfg, comm).seed(5).backend(cuda).build();
                     AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2), cuda)) {
                    for (int step = 0; step < STEPS; step++) {
                        MoeLayer.Forward f = layer.forward(x);
                        float[] y = floats(f.output());
                        f.output().close();
                        float[] dy = new float[y.length];
                        for (int i = 0; i < y.length; i++) {
                            dy[i] = 2f * (y[i] - target[i]) / ((float) GLOBAL_TOKENS * HIDDEN);
                        }
                        aux[2 * step] = (float) f.auxLosses().switchLoss();
                        aux[2 * step + 1] = (float) f.auxLosses().zLoss();
                        try (HostBuffer dyh = HostBuffer.ofFloats(dy, per, HIDDEN); Buffer dY = cuda.upload(dyh);
                             Buffer dX = layer.backward(f.context(), dY)) {
                            out.merge("dx." + step, floats(dX), MoeLayerGpuWorldSizeTest::concat);
                        }
                        layer.reduceGradients();
                        opt.step();
                        opt.zeroGrad();
                        layer.updateExpertBias();
                    }
                    for (Parameter p : layer.parameters()) {
                        out.put(p.name(), floats(p.value()));
                    }
                    out.put("bias", layer.expertBias().values());
                    out.put("aux", aux);
                }
            }
            return out;
        });
        Map<String, float[]> merged = new LinkedHashMap<>();
        for (Map<String, float[]> r : ranks) {
            r.forEach((k, v) -> {
                if (k.startsWith("experts.") || k.startsWith("dx.")) {
                    merged.merge(k, v, MoeLayerGpuWorldSizeTest::concat); // rank order = global expert / token order
                } else {
                    float[] seen = merged.putIfAbsent(k, v);
                    if (seen != null) {
                        assertArrayEquals(seen, v, 0f, k + ": replicas differ between ranks");
                    }
                }
            });
        }
        return merged;
    }

    static float[] concat(float[] a, float[] b) {
        float[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    void trainingIsBitwiseIdenticalForWorldSizes124(DType expertDtype) {
        Map<String, float[]> w1 = train(1, expertDtype);
        assertNotEquals(0f, w1.get("bias")[0], "the expert bias must have moved");
        for (int world : new int[] {2, 4}) {
            assertSameRun(w1, train(world, expertDtype), "W=" + world + " " + expertDtype);
        }
    }

    /** The family variants' replicated parameters (router bias, shared-expert gate) go through the tree too. */
    enum Family {
        /** Router bias, expert linear biases, clamped SwiGLU. */
        GPT_OSS,
        /** A shared expert behind a sigmoid gate. */
        QWEN2_MOE;

        MoeConfig.Builder config() {
            MoeConfig.Builder b = MoeConfig.builder().scoreFunction(ScoreFunction.SOFTMAX);
            return switch (this) {
                case GPT_OSS -> b.features(LayerFeatures.NONE.withRouterBias(true).withExpertLinearBias(true)
                        .withClampedSwiglu(0.5, 1.702));
                case QWEN2_MOE -> b.sharedExperts(1, 16).sharedExpertGate(true);
            };
        }
    }

    @ParameterizedTest
    @EnumSource(Family.class)
    void familyVariantsAreBitwiseIdenticalForWorldSizes124(Family family) {
        Map<String, float[]> w1 = train(1, family.config());
        String replicated = family == Family.GPT_OSS ? "gate.bias" : "shared_expert_gate.weight";
        assertTrue(w1.containsKey(replicated), replicated + " is a parameter");
        for (int world : new int[] {2, 4}) {
            assertSameRun(w1, train(world, family.config()), family + " W=" + world);
        }
    }

    static void assertSameRun(Map<String, float[]> expected, Map<String, float[]> actual, String what) {
        assertEquals(expected.keySet(), actual.keySet(), what);
        for (String k : expected.keySet()) {
            assertArrayEquals(expected.get(k), actual.get(k), 0f, k + " " + what);
        }
    }
}
