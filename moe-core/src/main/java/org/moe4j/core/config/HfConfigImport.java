package org.moe4j.core.config;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;
import org.moe4j.core.config.internal.JsonFields;

/**
 * Imports the MoE layer of a Hugging Face {@code config.json} as a {@link MoeConfig}, dispatching on
 * {@code model_type}: {@code deepseek_v2}, {@code deepseek_v3}, {@code kimi_k2}, {@code glm4_moe},
 * {@code qwen2_moe}, {@code qwen3_moe}, {@code olmoe}, {@code mixtral}, {@code gpt_oss}, {@code llama4}
 * (fields under {@code text_config}) and {@code llama4_text}. docs/config.md has the table of every
 * field read, the setting it becomes and its default.
 *
 * <p>Each family takes its routing recipe from its reference modeling code: score function, top-k
 * before or after the softmax (equivalent to softmax + route norm), group-limited selection
 * ({@code group_limited_greedy}: groups scored by their max; {@code noaux_tc}: by their top-2 sum, with
 * the aux-loss-free expert bias), normalisation, scaling, shared experts (gated for Qwen2-MoE), router
 * and expert biases with the clamped SwiGLU (gpt-oss), weights applied before the experts (Llama 4),
 * and the aux-loss coefficient.
 *
 * <p>An absent field takes the default of that family's transformers configuration class (for the
 * DeepSeek fields transformers does not define — {@code scoring_func}, {@code topk_method},
 * {@code aux_loss_alpha}, {@code seq_aux} — the default of DeepSeek's own {@code configuration_deepseek.py}).
 * Fields unrelated to the MoE layer (attention, vocabulary, which layers are MoE layers) are ignored.
 * A field asking for something moe4j cannot do ({@code hidden_act} other than {@code silu},
 * {@code mlp_bias}, router jitter, an unsupported quantisation, ...) is never ignored: the import is
 * refused with one message listing every such field.
 *
 * <p>Settings that a {@code config.json} does not carry (expert-parallel size, capacity, dtype,
 * alignment, sequence length of the sequence-wise loss) keep the builder defaults; pass an
 * {@code overrides} hook to set them, or to shrink a preset for a demo. Overrides run before
 * validation.
 */
public final class HfConfigImport {
    /** The {@code model_type} values this importer understands. */
    public static final List<String> SUPPORTED_MODEL_TYPES = List.of("deepseek_v2", "deepseek_v3", "kimi_k2",
            "glm4_moe", "qwen2_moe", "qwen3_moe", "olmoe", "mixtral", "gpt_oss", "llama4", "llama4_text");
    /** Bias update speed {@code γ} of DeepSeek-V3's aux-loss-free balancing (the paper's value). */
    public static final double DEEPSEEK_V3_BIAS_UPDATE_SPEED = 0.001;
    /** Quantisation methods whose weights the checkpoint reader dequantises (anything else is refused). */
    public static final List<String> DEQUANTIZED_METHODS = List.of("fp8", "mxfp4");
    /**
     * Bundled published {@code config.json} files, loadable with {@link #preset(String)}; where each
     * one's values come from is in {@code org/moe4j/core/hf/SOURCES.md}.
     */
    public static final List<String> PRESETS = List.of("deepseek-v3", "deepseek-v2", "deepseek-v2-lite",
            "kimi-k2", "glm-4.5", "qwen1.5-moe-a2.7b", "qwen2-57b-a14b", "qwen3-30b-a3b", "olmoe-1b-7b",
            "mixtral-8x7b", "gpt-oss-20b", "llama4-scout");

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
        Objects.requireNonNull(file, "file");
        Objects.requireNonNull(overrides, "overrides");
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
        Objects.requireNonNull(overrides, "overrides");
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
     * @throws IllegalArgumentException naming the source and the mistyped field, or listing every field
     *                                  moe4j cannot honour
     */
    public static MoeConfig.Builder builder(String json, String source) {
        Objects.requireNonNull(json, "json");
        Objects.requireNonNull(source, "source");
        JsonFields top = JsonFields.parse(json, source);
        String type = modelType(top);
        Family f;
        if (type.equals("llama4")) {
            JsonFields text = top.objectOrNull("text_config");
            f = new Family(type, text != null ? text : JsonFields.parse("{}", source + " text_config"));
            f.checkQuantization(top); // multimodal checkpoints carry it at the top level
        } else {
            f = new Family(type, top);
        }
        f.checkCommon();
        MoeConfig.Builder b = switch (type) {
            case "deepseek_v2", "deepseek_v3", "kimi_k2" -> deepseek(f);
            case "glm4_moe" -> glm4Moe(f);
            case "qwen2_moe" -> qwen2Moe(f);
            case "qwen3_moe" -> qwen3Moe(f);
            case "olmoe" -> olmoe(f);
            case "mixtral" -> mixtral(f);
            case "gpt_oss" -> gptOss(f);
            case "llama4", "llama4_text" -> llama4(f);
            default -> throw new IllegalStateException("unreachable: " + type);
        };
        f.throwIfRefused();
        return b;
    }

    /**
     * Reads the {@code model_type} of a config, e.g. to pick the family's tensor names.
     *
     * @param json   a {@code config.json}
     * @param source what it is, for messages
     * @return its {@code model_type}, checked to be one of {@link #SUPPORTED_MODEL_TYPES}
     * @throws IllegalArgumentException if the text is not a JSON object or the type is absent or unsupported
     */
    public static String modelType(String json, String source) {
        Objects.requireNonNull(json, "json");
        Objects.requireNonNull(source, "source");
        return modelType(JsonFields.parse(json, source));
    }

    private static String modelType(JsonFields f) {
        if (!f.has("model_type")) {
            throw f.error("no model_type; supported: " + String.join(", ", SUPPORTED_MODEL_TYPES));
        }
        String type = f.requireString("model_type", "");
        if (!SUPPORTED_MODEL_TYPES.contains(type)) {
            throw f.error("model_type '" + type + "' is not supported; supported: "
                    + String.join(", ", SUPPORTED_MODEL_TYPES));
        }
        return type;
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

    /** The fields of one family's config, with its defaults, and the list of fields it cannot honour. */
    private static final class Family {
        final String type;
        final JsonFields f;
        final List<String> refused = new ArrayList<>();

        Family(String type, JsonFields f) {
            this.type = type;
            this.f = f;
        }

        int i(String name, int dflt) {
            return f.intOr(name, dflt);
        }

        int required(String name, String why) {
            if (!f.has(name)) {
                throw f.error("missing required field '" + name + "' (model_type " + type + "; " + why + ")");
            }
            return f.requireInt(name, "");
        }

        double d(String name, double dflt) {
            return f.doubleOr(name, dflt);
        }

        boolean b(String name, boolean dflt) {
            return f.booleanOr(name, dflt);
        }

        String s(String name, String dflt) {
            return f.stringOr(name, dflt);
        }

        void refuse(String name, String why) {
            refused.add(name + "=" + f.rawText(name) + " (" + why + ")");
        }

        /** Checks that apply to every family. */
        void checkCommon() {
            String act = s("hidden_act", "silu");
            if (!act.equals("silu")) {
                refuse("hidden_act", "the experts are SiLU-gated (SwiGLU) only");
            }
            if (b("mlp_bias", false)) {
                refuse("mlp_bias", "expert linear biases are implemented for gpt_oss's expert layout only");
            }
            if (d("router_jitter_noise", 0) != 0) {
                refuse("router_jitter_noise", "moe4j's router is deterministic; multiplicative jitter is not implemented");
            }
            if (!type.equals("gpt_oss")) {
                for (String k : List.of("swiglu_limit", "swiglu_alpha")) {
                    if (f.has(k)) {
                        refuse(k, "the clamped SwiGLU belongs to gpt_oss experts; " + type + " experts do not use it");
                    }
                }
            }
            checkQuantization(f);
        }

        void checkQuantization(JsonFields where) {
            JsonFields q = where.objectOrNull("quantization_config");
            if (q == null) {
                return;
            }
            String method = q.stringOr("quant_method", "");
            if (!DEQUANTIZED_METHODS.contains(method)) {
                refused.add("quantization_config.quant_method=\"" + method + "\" (only "
                        + String.join(", ", DEQUANTIZED_METHODS) + " checkpoints are dequantised on load)");
            }
        }

        void throwIfRefused() {
            if (!refused.isEmpty()) {
                throw f.error("model_type " + type + ": " + refused.size() + " field(s) ask for what moe4j cannot do: "
                        + String.join("; ", refused));
            }
        }

        /** Aux-loss coefficient {@code name} as the switch/GShard balance loss. */
        AuxLoss switchLoss(String name, double dflt) {
            double c = d(name, dflt);
            return new AuxLoss(c, 0, 0, 0);
        }
    }

    private static MoeConfig.Builder deepseek(Family f) {
        boolean v2 = f.type.equals("deepseek_v2");
        int ffn = f.i("moe_intermediate_size", v2 ? 1407 : 2048);
        int topK = v2 ? f.required("num_experts_per_tok", "DeepseekV2Config's default None means a dense model")
                : f.i("num_experts_per_tok", 8);
        boolean norm = f.b("norm_topk_prob", !v2);
        double scale = f.d("routed_scaling_factor", v2 ? 1.0 : 2.5);
        MoeConfig.Builder b = MoeConfig.builder()
                .hidden(f.i("hidden_size", v2 ? 4096 : 7168))
                .experts(f.i("n_routed_experts", v2 ? 64 : 256))
                .topK(topK)
                .ffn(ffn);
        if (v2 && norm && topK > 1) {
            // DeepSeek-V2's reference gate normalises or scales, never both
            b.routeNorm(true).routeScale(1.0);
        } else {
            b.routeNorm(!v2 && norm).routeScale(scale);
        }
        String scoring = f.s("scoring_func", v2 ? "softmax" : "sigmoid");
        switch (scoring) {
            case "sigmoid" -> {
                if (v2) {
                    f.refuse("scoring_func", "DeepSeek-V2's gate is softmax only");
                }
                b.scoreFunction(ScoreFunction.SIGMOID);
            }
            case "softmax" -> b.scoreFunction(ScoreFunction.SOFTMAX);
            default -> f.refuse("scoring_func", "must be sigmoid or softmax");
        }
        String method = f.s("topk_method", v2 ? "greedy" : "noaux_tc");
        switch (method) {
            case "noaux_tc" -> {
                if (v2) {
                    f.refuse("topk_method", "DeepSeek-V2's gate knows greedy and group_limited_greedy only");
                }
                b.groups(f.i("n_group", v2 ? 1 : 8), f.i("topk_group", v2 ? 1 : 4))
                        .groupScore(GroupScore.TOP2_SUM)
                        .expertBiasCoeff(DEEPSEEK_V3_BIAS_UPDATE_SPEED)
                        .biasCentering(BiasCentering.NONE);
            }
            case "group_limited_greedy" -> b.groups(
                    v2 ? f.required("n_group", "DeepseekV2Config's default None") : f.i("n_group", 8),
                    v2 ? f.required("topk_group", "DeepseekV2Config's default None") : f.i("topk_group", 4))
                    .groupScore(GroupScore.MAX);
            case "greedy" -> b.groups(1, 1);
            default -> f.refuse("topk_method", "must be noaux_tc, group_limited_greedy or greedy");
        }
        int shared = f.f.isNull("n_shared_experts") ? 0 : f.i("n_shared_experts", v2 ? 2 : 1);
        b.sharedExperts(shared, shared > 0 ? ffn : 0);
        double alpha = f.d("aux_loss_alpha", 0.001);
        boolean seqAux = f.b("seq_aux", true);
        b.auxLoss(new AuxLoss(seqAux ? 0 : alpha, seqAux ? alpha : 0, 0, 0));
        return b;
    }

    private static MoeConfig.Builder glm4Moe(Family f) {
        int ffn = f.i("moe_intermediate_size", 1408);
        int shared = f.f.isNull("n_shared_experts") ? 0 : f.i("n_shared_experts", 1);
        return MoeConfig.builder()
                .hidden(f.i("hidden_size", 4096))
                .experts(f.i("n_routed_experts", 128))
                .topK(f.i("num_experts_per_tok", 8))
                .ffn(ffn)
                .scoreFunction(ScoreFunction.SIGMOID)
                .groups(f.i("n_group", 1), f.i("topk_group", 1))
                .groupScore(GroupScore.TOP2_SUM)
                .expertBiasCoeff(DEEPSEEK_V3_BIAS_UPDATE_SPEED)
                .biasCentering(BiasCentering.NONE)
                .routeNorm(f.b("norm_topk_prob", true))
                .routeScale(f.d("routed_scaling_factor", 1.0))
                .sharedExperts(shared, shared > 0 ? ffn : 0);
    }

    private static MoeConfig.Builder qwen2Moe(Family f) {
        int sharedFfn = f.i("shared_expert_intermediate_size", 5632);
        MoeConfig.Builder b = MoeConfig.builder()
                .hidden(f.i("hidden_size", 2048))
                .experts(f.i("num_experts", 60))
                .topK(f.i("num_experts_per_tok", 4))
                .ffn(f.i("moe_intermediate_size", 1408))
                .scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(f.b("norm_topk_prob", false))
                .auxLoss(f.switchLoss("router_aux_loss_coef", 0.001));
        if (sharedFfn > 0) {
            b.sharedExperts(1, sharedFfn).sharedExpertGate(true);
        } else if (sharedFfn < 0) {
            f.refuse("shared_expert_intermediate_size", "must be >= 0");
        }
        return b;
    }

    private static MoeConfig.Builder qwen3Moe(Family f) {
        return MoeConfig.builder()
                .hidden(f.i("hidden_size", 2048))
                .experts(f.i("num_experts", 128))
                .topK(f.i("num_experts_per_tok", 8))
                .ffn(f.i("moe_intermediate_size", 768))
                .scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(f.b("norm_topk_prob", false))
                .auxLoss(f.switchLoss("router_aux_loss_coef", 0.001));
    }

    private static MoeConfig.Builder olmoe(Family f) {
        return MoeConfig.builder()
                .hidden(f.i("hidden_size", 2048))
                .experts(f.i("num_experts", 64))
                .topK(f.i("num_experts_per_tok", 8))
                .ffn(f.i("intermediate_size", 2048))
                .scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(f.b("norm_topk_prob", false))
                .auxLoss(f.switchLoss("router_aux_loss_coef", 0.01));
    }

    private static MoeConfig.Builder mixtral(Family f) {
        return MoeConfig.builder()
                .hidden(f.i("hidden_size", 4096))
                .experts(f.i("num_local_experts", 8))
                .topK(f.i("num_experts_per_tok", 2))
                .ffn(f.i("intermediate_size", 14336))
                .scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(true)
                .auxLoss(f.switchLoss("router_aux_loss_coef", 0.001));
    }

    private static MoeConfig.Builder gptOss(Family f) {
        int topK = f.i("num_experts_per_tok", 4);
        if (f.f.has("experts_per_token") && f.i("experts_per_token", topK) != topK) {
            f.refuse("experts_per_token", "disagrees with num_experts_per_tok=" + topK);
        }
        return MoeConfig.builder()
                .hidden(f.i("hidden_size", 2880))
                .experts(f.i("num_local_experts", 128))
                .topK(topK)
                .ffn(f.i("intermediate_size", 2880))
                .scoreFunction(ScoreFunction.SOFTMAX)
                .routeNorm(true)
                .routerBias(true)
                .expertLinearBias(true)
                .clampedSwiglu(f.d("swiglu_limit", 7.0), f.d("swiglu_alpha", 1.702))
                .auxLoss(f.switchLoss("router_aux_loss_coef", 0.001));
    }

    private static MoeConfig.Builder llama4(Family f) {
        int ffn = f.i("intermediate_size", 8192);
        return MoeConfig.builder()
                .hidden(f.i("hidden_size", 5120))
                .experts(f.i("num_local_experts", 16))
                .topK(f.i("num_experts_per_tok", 1))
                .ffn(ffn)
                .scoreFunction(ScoreFunction.SIGMOID)
                .scoreBeforeExperts(true)
                .sharedExperts(1, ffn);
        // router_aux_loss_coef is read by Llama4TextConfig but no Llama 4 model in transformers adds a
        // balance loss, so none is set here (docs/config.md).
    }
}
