package org.moe4j.core.config;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;
import org.moe4j.core.config.internal.JsonFields;

/**
 * Imports the MoE layer of a Hugging Face {@code config.json} as a {@link MoeConfig}, dispatching on
 * {@code model_type}. Fields unrelated to the MoE layer (attention, vocabulary, ...) are ignored;
 * optional MoE fields that are absent mean "feature off". See docs/config.md for the full mapping.
 *
 * <ul>
 *   <li>{@code deepseek_v3}: {@code hidden_size}, {@code n_routed_experts}, {@code num_experts_per_tok},
 *       {@code moe_intermediate_size} (routed and shared experts), {@code scoring_func},
 *       {@code topk_method} ({@code noaux_tc}: groups scored by top-2 sum plus the aux-loss-free expert
 *       bias with update speed {@value #DEEPSEEK_V3_BIAS_UPDATE_SPEED}; {@code group_limited_greedy}:
 *       groups scored by max; {@code greedy}: no groups), {@code n_group} and {@code topk_group}
 *       (unless greedy); optional {@code n_shared_experts}, {@code routed_scaling_factor},
 *       {@code norm_topk_prob}, {@code aux_loss_alpha} (sequence-wise if {@code seq_aux}, else switch).</li>
 *   <li>{@code qwen3_moe}: {@code hidden_size}, {@code num_experts}, {@code num_experts_per_tok},
 *       {@code moe_intermediate_size}; optional {@code norm_topk_prob}, {@code router_aux_loss_coef};
 *       softmax scores.</li>
 *   <li>{@code mixtral}: {@code hidden_size}, {@code num_local_experts}, {@code num_experts_per_tok},
 *       {@code intermediate_size}; optional {@code router_aux_loss_coef}; softmax scores with route
 *       norm (the top-k of a softmax renormalised equals Mixtral's softmax over the top-k logits).</li>
 * </ul>
 *
 * <p>Settings that a {@code config.json} does not carry (expert-parallel size, capacity, dtype,
 * alignment, sequence length of the sequence-wise loss) keep the builder defaults; pass an
 * {@code overrides} hook to set them, or to shrink a preset for a demo. Overrides run before
 * validation.
 */
public final class HfConfigImport {
    /** The {@code model_type} values this importer understands. */
    public static final List<String> SUPPORTED_MODEL_TYPES = List.of("deepseek_v3", "qwen3_moe", "mixtral");
    /** Bias update speed {@code γ} of DeepSeek-V3's aux-loss-free balancing (the paper's value). */
    public static final double DEEPSEEK_V3_BIAS_UPDATE_SPEED = 0.001;
    /** Bundled {@code config.json} files, loadable with {@link #preset(String)}. */
    public static final List<String> PRESETS = List.of("deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b");

    private static final String PRESET_DIR = "/org/moe4j/core/hf/";

    private HfConfigImport() {
    }

    /**
     * Returns the validated config.
     * @param file a Hugging Face {@code config.json}
     * @return the validated config
     * @throws IOException              if the file cannot be read
     * @throws IllegalArgumentException naming the file and what is missing, unsupported or invalid
     */
    public static MoeConfig read(Path file) throws IOException {
        return read(file, b -> { });
    }

    /**
     * Returns the validated config.
     * @param file      a Hugging Face {@code config.json}
     * @param overrides changes applied to the imported builder before validation (e.g.
     *                  {@code b -> b.expertParallel(8)})
     * @return the validated config
     * @throws IOException              if the file cannot be read
     * @throws IllegalArgumentException naming the file and what is missing, unsupported or invalid
     */
    public static MoeConfig read(Path file, Consumer<MoeConfig.Builder> overrides) throws IOException {
        return parse(Files.readString(file, StandardCharsets.UTF_8), file.toString(), overrides);
    }

    /**
     * Imports from JSON text.
     *
     * @param json      the {@code config.json} contents
     * @param source    what it is, for messages (a path or a name)
     * @param overrides changes applied before validation
     * @return the validated config
     * @throws IllegalArgumentException naming the source and what is missing, unsupported or invalid
     */
    public static MoeConfig parse(String json, String source, Consumer<MoeConfig.Builder> overrides) {
        MoeConfig.Builder b = builder(json, source);
        overrides.accept(b);
        try {
            return b.build();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(source + ": " + e.getMessage(), e);
        }
    }

    /**
     * Imports into a builder without validating, for configs derived from a model's (e.g. a tiny
     * demo with the same routing recipe).
     *
     * @param json   the {@code config.json} contents
     * @param source what it is, for messages
     * @return a builder holding every mapped field
     * @throws IllegalArgumentException naming the source and the missing, mistyped or unsupported field
     */
    public static MoeConfig.Builder builder(String json, String source) {
        JsonFields f = JsonFields.parse(json, source);
        if (!f.has("model_type")) {
            throw f.error("no model_type; supported: " + String.join(", ", SUPPORTED_MODEL_TYPES));
        }
        String type = f.requireString("model_type", "");
        return switch (type) {
            case "deepseek_v3" -> deepseekV3(f);
            case "qwen3_moe" -> qwen3Moe(f);
            case "mixtral" -> mixtral(f);
            default -> throw f.error("model_type '" + type + "' is not supported; supported: "
                    + String.join(", ", SUPPORTED_MODEL_TYPES));
        };
    }

    /**
     * Returns the bundled model's config.
     * @param name one of {@link #PRESETS}
     * @return the bundled model's config
     * @throws IllegalArgumentException for an unknown name, listing the presets
     */
    public static MoeConfig preset(String name) {
        return preset(name, b -> { });
    }

    /**
     * Returns the bundled model's config with the overrides.
     * @param name      one of {@link #PRESETS}
     * @param overrides changes applied before validation (e.g. shrinking sizes for a demo)
     * @return the bundled model's config with the overrides
     * @throws IllegalArgumentException for an unknown name, listing the presets
     */
    public static MoeConfig preset(String name, Consumer<MoeConfig.Builder> overrides) {
        return parse(presetJson(name), "preset " + name, overrides);
    }

    /**
     * Returns the bundled {@code config.json} text.
     * @param name one of {@link #PRESETS}
     * @return the bundled {@code config.json} text
     * @throws IllegalArgumentException for an unknown name, listing the presets
     */
    public static String presetJson(String name) {
        Objects.requireNonNull(name, "name");
        if (!PRESETS.contains(name)) {
            throw new IllegalArgumentException("unknown preset '" + name + "'; presets: " + String.join(", ", PRESETS));
        }
        try (InputStream in = HfConfigImport.class.getResourceAsStream(PRESET_DIR + name + ".json")) {
            if (in == null) {
                throw new IllegalStateException("preset resource " + PRESET_DIR + name + ".json missing from the jar");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("reading preset " + name, e);
        }
    }

    private static MoeConfig.Builder deepseekV3(JsonFields f) {
        String ctx = " (model_type deepseek_v3)";
        int ffn = f.requireInt("moe_intermediate_size", ctx);
        MoeConfig.Builder b = MoeConfig.builder()
                .hidden(f.requireInt("hidden_size", ctx))
                .experts(f.requireInt("n_routed_experts", ctx))
                .topK(f.requireInt("num_experts_per_tok", ctx))
                .ffn(ffn)
                .routeNorm(f.booleanOr("norm_topk_prob", false))
                .routeScale(f.doubleOr("routed_scaling_factor", 1.0));
        String scoring = f.requireString("scoring_func", ctx);
        b.scoreFunction(switch (scoring) {
            case "sigmoid" -> ScoreFunction.SIGMOID;
            case "softmax" -> ScoreFunction.SOFTMAX;
            default -> throw f.error("field 'scoring_func' must be one of sigmoid, softmax, got \"" + scoring + "\"");
        });
        String method = f.requireString("topk_method", ctx);
        switch (method) {
            case "noaux_tc" -> b.groups(f.requireInt("n_group", ctx), f.requireInt("topk_group", ctx))
                    .groupScore(GroupScore.TOP2_SUM)
                    .expertBiasCoeff(DEEPSEEK_V3_BIAS_UPDATE_SPEED)
                    .biasCentering(BiasCentering.NONE);
            case "group_limited_greedy" -> b.groups(f.requireInt("n_group", ctx), f.requireInt("topk_group", ctx))
                    .groupScore(GroupScore.MAX);
            case "greedy" -> b.groups(1, 1);
            default -> throw f.error("field 'topk_method' must be one of noaux_tc, group_limited_greedy, greedy, got \""
                    + method + "\"");
        }
        int shared = f.intOr("n_shared_experts", 0);
        b.sharedExperts(shared, shared > 0 ? ffn : 0);
        double alpha = f.doubleOr("aux_loss_alpha", 0);
        boolean seqAux = f.booleanOr("seq_aux", false);
        b.auxLoss(new AuxLoss(seqAux ? 0 : alpha, seqAux ? alpha : 0, 0, 0));
        return b;
    }

    private static MoeConfig.Builder qwen3Moe(JsonFields f) {
        String ctx = " (model_type qwen3_moe)";
        return MoeConfig.builder()
                .hidden(f.requireInt("hidden_size", ctx))
                .experts(f.requireInt("num_experts", ctx))
                .topK(f.requireInt("num_experts_per_tok", ctx))
                .ffn(f.requireInt("moe_intermediate_size", ctx))
                .scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(f.booleanOr("norm_topk_prob", false))
                .auxLoss(new AuxLoss(f.doubleOr("router_aux_loss_coef", 0), 0, 0, 0));
    }

    private static MoeConfig.Builder mixtral(JsonFields f) {
        String ctx = " (model_type mixtral)";
        return MoeConfig.builder()
                .hidden(f.requireInt("hidden_size", ctx))
                .experts(f.requireInt("num_local_experts", ctx))
                .topK(f.requireInt("num_experts_per_tok", ctx))
                .ffn(f.requireInt("intermediate_size", ctx))
                .scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(true)
                .auxLoss(new AuxLoss(f.doubleOr("router_aux_loss_coef", 0), 0, 0, 0));
    }
}
