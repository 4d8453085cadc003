package org.moe4j.cuda.layer;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;

/**
 * The model-family variants (docs/config.md) on the CUDA backend against the CPU layer, forward, backward
 * and AdamW steps, as {@link MoeLayerGpuTest} does for the plain layer: gpt-oss (router bias, expert linear
 * biases, clamped SwiGLU with a small limit so that the clamps act), Qwen2-MoE (gated shared expert),
 * Llama 4 (weights before the experts, top-2 so that slots are summed); fp32 experts (exact fp32 GEMMs on
 * either GEMM path). Launches every kernel of native/layer_features.cu. A class of its own so that
 * scripts/gpu-run.sh's layer steps keep their time on the CPU device.
 */
@Tag("gpu")
class FamilyLayerGpuTest {
    @BeforeAll
    static void open() {
        MoeLayerGpuTest.open();
    }

    static MoeConfig familyConfig(String family, int world) {
        MoeConfig.Builder b = MoeConfig.builder().hidden(MoeLayerGpuTest.HIDDEN).experts(MoeLayerGpuTest.EXPERTS).topK(2)
                .ffn(32).expertParallel(world);
        return switch (family) {
            case "gpt_oss" -> b.scoreFunction(ScoreFunction.SOFTMAX).routeNorm(true).routerBias(true)
                    .expertLinearBias(true).clampedSwiglu(0.3, 1.702).build();
            case "qwen2_moe" -> b.scoreFunction(ScoreFunction.SOFTMAX).sharedExperts(1, 48).sharedExpertGate(true).build();
            case "llama4" -> b.scoreFunction(ScoreFunction.SIGMOID).scoreBeforeExperts(true).sharedExperts(1, 32).build();
            default -> throw new IllegalArgumentException(family);
        };
    }

    static List<Arguments> familyCases() {
        List<Arguments> list = new ArrayList<>();
        for (String f : new String[] {"gpt_oss", "qwen2_moe", "llama4"}) {
            for (int w : new int[] {1, 2}) {
                list.add(Arguments.of(f, w));
            }
        }
        return list;
    }

    @ParameterizedTest(name = "{0} W={1}")
    @MethodSource("familyCases")
    void familyVariantsOnTheGpuMatchTheCpuLayer(String family, int world) {
        MoeLayerGpuTest.compareWithCpu(familyConfig(family, world), MoeLayerGpuTest.FP32_TOLERANCE, family);
    }
}
