package org.moe4j.bench.train;

import java.util.List;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;

/** Small layer configs shaped like well-known MoE models, sized for a one-minute CPU demo. */
public final class Presets {
    /** Preset names accepted by {@code moe train --preset}. */
    public static final List<String> NAMES = List.of("deepseek-v3-tiny", "qwen3-moe-tiny", "mixtral-tiny");

    private Presets() {
    }

    /**
     * Returns a builder with the preset, its balancing recipe included (expert parallelism is set by the caller).
     * @param name one of {@link #NAMES}
     * @return a builder with the preset, its balancing recipe included (expert parallelism is set by the caller)
     * @throws IllegalArgumentException for an unknown name
     */
    public static MoeConfig.Builder of(String name) {
        return switch (name) {
            // DeepSeek-V3 shape: sigmoid scores, node-limited routing (8 groups, keep 4), top-k weights
            // renormalised and scaled, aux-loss-free bias, one shared expert. The bias step is twice
            // DeepSeek-V3's 0.001 so that balancing shows within the demo's 400 steps.
            case "deepseek-v3-tiny" -> MoeConfig.builder().hidden(64).experts(32).topK(4).ffn(32)
                    .scoreFunction(ScoreFunction.SIGMOID).groups(8, 4).routeNorm(true).routeScale(2.5)
                    .expertBiasCoeff(0.002).sharedExperts(1, 32);
            // Qwen3-MoE shape: softmax scores, renormalised top-k, many small experts, no shared expert.
            case "qwen3-moe-tiny" -> MoeConfig.builder().hidden(64).experts(32).topK(4).ffn(32)
                    .scoreFunction(ScoreFunction.SOFTMAX).routeNorm(true)
                    .auxLoss(new AuxLoss(0.001, 0, 0, 0));
            // Mixtral shape: 8 experts, top-2, softmax renormalised over the chosen two.
            case "mixtral-tiny" -> MoeConfig.builder().hidden(64).experts(8).topK(2).ffn(96)
                    .scoreFunction(ScoreFunction.SOFTMAX).routeNorm(true);
            default -> throw new IllegalArgumentException("unknown preset '" + name + "'; choose one of " + NAMES);
        };
    }
}
