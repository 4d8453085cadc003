package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.function.IntFunction;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.optim.AdamW;

/**
 * Exact resume (as {@link ExactResumeTest}) of layers with the family variants the training state
 * stores: router bias, gated shared expert, weights before the experts; and a gpt-oss-style layer
 * (router bias, expert linear biases, clamped SwiGLU).
 */
class VariantResumeTest {
    @TempDir
    Path tmp;

    static MoeConfig config(int world) {
        return MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(12).scoreFunction(ScoreFunction.SIGMOID)
                .sharedExperts(1, 8).sharedExpertGate(true).routerBias(true).scoreBeforeExperts(true)
                .expertBiasCoeff(1e-3).expertParallel(world).build();
    }

    /** gpt-oss's layer: softmax router with a bias, normalised top-k, expert linear biases, clamped SwiGLU. */
    static MoeConfig gptOss(int world) {
        return MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(12).scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(true).routerBias(true).expertLinearBias(true).clampedSwiglu(7, 1.702).expertBiasCoeff(1e-3)
                .expertParallel(world).build();
    }

    static List<Map<String, float[]>> run(IntFunction<MoeConfig> config, int world, int steps, Path saveTo,
                                          Path resumeFrom) {
        return LocalGroup.run(world, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config.apply(world), comm).seed(resumeFrom == null ? 7 : 99).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                int from = resumeFrom == null ? 0 : (int) layer.loadTrainingState(resumeFrom, opt);
                for (int s = from; s < steps; s++) {
                    ExactResumeTest.step(layer, opt, 42, s);
                }
                if (saveTo != null) {
                    layer.saveTrainingState(saveTo, opt, steps);
                }
                return ExactResumeTest.state(layer, opt);
            }
        });
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2})
    void resumedVariantRunEqualsTheStraightRunBitwise(int world) {
        List<Map<String, float[]>> want = run(VariantResumeTest::config, world, 3, null, null);
        assertEquals(true, want.get(0).containsKey("gate.bias") && want.get(0).containsKey("shared_expert_gate.weight"));
        Path dir = tmp.resolve("w" + world);
        run(VariantResumeTest::config, world, 2, dir, null);
        List<Map<String, float[]>> got = run(VariantResumeTest::config, world, 3, null, dir);
        ExactResumeTest.assertSame(want, got, "variants W=" + world);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2})
    void resumedGptOssRunWithExpertLinearBiasesEqualsTheStraightRunBitwise(int world) throws IOException {
        List<Map<String, float[]>> want = run(VariantResumeTest::gptOss, world, 3, null, null);
        for (String p : List.of("gate.bias", "experts.gate_proj_bias", "experts.up_proj_bias", "experts.down_proj_bias")) {
            assertTrue(want.get(0).containsKey(p) && want.get(0).containsKey(p + ".m"), p + " and its moments are compared");
        }
        Path dir = tmp.resolve("oss-w" + world);
        run(VariantResumeTest::gptOss, world, 2, dir, null); // saved after step 1, between two bias updates
        // every expert's biases and their moments are stored under its own name, written by its rank
        String index = Files.readString(dir.resolve("moe4j-state.safetensors.index.json"));
        for (int e = 0; e < 8; e++) {
            for (String t : List.of("gate_up_proj.bias", "down_proj.bias")) {
                for (String suffix : List.of("", ".exp_avg", ".exp_avg_sq")) {
                    assertTrue(index.contains("\"experts." + e + "." + t + suffix + "\""), "experts." + e + "." + t + suffix);
                }
            }
        }
        List<Map<String, float[]>> got = run(VariantResumeTest::gptOss, world, 3, null, dir);
        ExactResumeTest.assertSame(want, got, "gpt-oss W=" + world);
    }
}
