package org.moe4j.checkpoint;

import java.util.Locale;
import java.util.Objects;

/**
 * Where one model family keeps a Mixture-of-Experts layer's tensors in a Hugging Face checkpoint:
 * the tensor names, relative to the layer's prefix (e.g. {@code model.layers.3.mlp.}), and how the
 * routed experts are laid out. Loaders and exporters take every name from a map like this, never by
 * patching strings, so a new family is one new map.
 *
 * <p>Routed-expert layouts ({@link ExpertLayout}):
 * <ul>
 *   <li>{@link ExpertLayout#PER_EXPERT}: one {@code nn.Linear} weight per expert and projection,
 *       {@code [out, in]}: {@link #gateProj} {@code [ffn, hidden]}, {@link #upProj}
 *       {@code [ffn, hidden]}, {@link #downProj} {@code [hidden, ffn]}; the patterns hold
 *       {@code {e}} for the global expert index (DeepSeek, Qwen, OLMoE, GLM-4 MoE: gate_proj/up_proj/
 *       down_proj; Mixtral: w1/w3/w2 under {@code block_sparse_moe}). Optional per-expert bias
 *       patterns (moe4j's training state of a layer with expert linear biases): {@link #gateUpBias}
 *       {@code [2·ffn]}, gate first then up, and {@link #downBias} {@code [hidden]}.</li>
 *   <li>{@link ExpertLayout#FUSED_CHUNKED}: one tensor for all experts, {@link #gateProj} is
 *       {@code gate_up_proj [experts, hidden, 2·ffn]} with the gate in the first {@code ffn} columns
 *       and up in the last, {@link #downProj} {@code [experts, ffn, hidden]} (Llama 4).</li>
 *   <li>{@link ExpertLayout#FUSED_INTERLEAVED}: as chunked, but gate and up alternate column by
 *       column (gate even, up odd; gpt-oss), optionally with biases {@link #gateUpBias}
 *       {@code [experts, 2·ffn]} and {@link #downBias} {@code [experts, hidden]}.</li>
 * </ul>
 *
 * <p>Quantised storage is found beside a weight's name: FP8 ({@code F8_E4M3}) weights carry
 * 128×128 block scales named {@code name + fp8ScaleSuffix} (DeepSeek-V3/R1, Kimi-K2:
 * {@code weight_scale_inv}); MXFP4 fused weights are stored as {@code name + mxfp4BlocksSuffix}
 * and {@code name + mxfp4ScalesSuffix} (gpt-oss: {@code _blocks}, {@code _scales}) in the
 * {@code [experts, out, in]} orientation.
 *
 * <p>Optional entries are {@code null} where the family has no such tensor. A layer loads the
 * entries it has parameters for; entries for parameters a layer does not (yet) have are refused by
 * the loader only when the file holds them and the caller asks for strictness.
 *
 * @param family              the {@code model_type} this map is for, e.g. {@code deepseek_v3}
 * @param routerWeight        router (gate) weight {@code [experts, hidden]}, e.g. {@code gate.weight}
 * @param routerBias          router bias {@code [experts]} (gpt-oss {@code router.bias}), or null
 * @param scoreCorrectionBias expert score-correction bias {@code [experts]} used for selection only
 *                            (DeepSeek-V3, Kimi-K2, GLM-4 MoE {@code gate.e_score_correction_bias}), or null
 * @param expertLayout        how routed experts are stored
 * @param gateProj            per-expert gate pattern with {@code {e}}, or the fused gate_up name
 * @param upProj              per-expert up pattern with {@code {e}}, or null for fused layouts
 * @param downProj            per-expert down pattern with {@code {e}}, or the fused down name
 * @param gateUpBias          fused gate_up bias {@code [experts, 2·ffn]} (gpt-oss), or for
 *                            {@link ExpertLayout#PER_EXPERT} a per-expert pattern with {@code {e}} of a
 *                            {@code [2·ffn]} bias (gate then up), or null
 * @param downBias            fused down bias {@code [experts, hidden]} (gpt-oss), or for
 *                            {@link ExpertLayout#PER_EXPERT} a per-expert pattern with {@code {e}} of a
 *                            {@code [hidden]} bias, or null
 * @param sharedGateProj      shared-expert gate weight {@code [sharedFfn, hidden]}, or null (no shared experts)
 * @param sharedUpProj        shared-expert up weight {@code [sharedFfn, hidden]}, or null
 * @param sharedDownProj      shared-expert down weight {@code [hidden, sharedFfn]}, or null
 * @param sharedExpertGate    sigmoid gate of the shared expert {@code [1, hidden]} (Qwen2-MoE
 *                            {@code shared_expert_gate.weight}), or null
 * @param fp8ScaleSuffix      suffix of an FP8 weight's block-scale tensor, e.g. {@code _scale_inv}
 * @param mxfp4BlocksSuffix   suffix of an MXFP4 weight's packed nibbles, e.g. {@code _blocks}
 * @param mxfp4ScalesSuffix   suffix of an MXFP4 weight's E8M0 scales, e.g. {@code _scales}
 */
public record MoeNameMap(String family, String routerWeight, String routerBias, String scoreCorrectionBias,
                         ExpertLayout expertLayout, String gateProj, String upProj, String downProj,
                         String gateUpBias, String downBias, String sharedGateProj, String sharedUpProj,
                         String sharedDownProj, String sharedExpertGate, String fp8ScaleSuffix,
                         String mxfp4BlocksSuffix, String mxfp4ScalesSuffix) {

    /** The placeholder for the global expert index in per-expert patterns. */
    public static final String EXPERT = "{e}";

    /** How a family stores its routed experts. */
    public enum ExpertLayout {
        /** One {@code [out, in]} weight per expert and projection. */
        PER_EXPERT,
        /** {@code gate_up_proj [experts, hidden, 2·ffn]}: gate columns first, then up. */
        FUSED_CHUNKED,
        /** {@code gate_up_proj [experts, hidden, 2·ffn]}: gate and up alternate (gate even). */
        FUSED_INTERLEAVED
    }

    /**
     * Checks the map is complete and consistent.
     *
     * @throws IllegalArgumentException naming the bad entry
     */
    public MoeNameMap {
        Objects.requireNonNull(expertLayout, "expertLayout");
        requireName("family", family);
        requireName("routerWeight", routerWeight);
        requireName("gateProj", gateProj);
        requireName("downProj", downProj);
        requireName("fp8ScaleSuffix", fp8ScaleSuffix);
        requireName("mxfp4BlocksSuffix", mxfp4BlocksSuffix);
        requireName("mxfp4ScalesSuffix", mxfp4ScalesSuffix);
        if (expertLayout == ExpertLayout.PER_EXPERT) {
            requireName("upProj", upProj);
            for (String[] p : new String[][] {{"gateProj", gateProj}, {"upProj", upProj}, {"downProj", downProj},
                    {"gateUpBias", gateUpBias}, {"downBias", downBias}}) {
                if (p[1] != null && !p[1].contains(EXPERT)) {
                    throw new IllegalArgumentException("MoeNameMap " + family + ": per-expert pattern " + p[0] + "='"
                            + p[1] + "' lacks the expert placeholder " + EXPERT);
                }
            }
        } else if (upProj != null) {
            throw new IllegalArgumentException("MoeNameMap " + family + ": upProj='" + upProj + "' must be null for "
                    + expertLayout + " (gate and up share gateProj)");
        }
        boolean anyShared = sharedGateProj != null || sharedUpProj != null || sharedDownProj != null;
        boolean allShared = sharedGateProj != null && sharedUpProj != null && sharedDownProj != null;
        if (anyShared && !allShared) {
            throw new IllegalArgumentException("MoeNameMap " + family + ": shared-expert names must be all set or all"
                    + " null, got gate=" + sharedGateProj + " up=" + sharedUpProj + " down=" + sharedDownProj);
        }
        if (sharedExpertGate != null && !allShared) {
            throw new IllegalArgumentException("MoeNameMap " + family + ": sharedExpertGate needs shared-expert names");
        }
        for (String[] p : new String[][] {{"routerBias", routerBias}, {"scoreCorrectionBias", scoreCorrectionBias},
                {"gateUpBias", gateUpBias}, {"downBias", downBias}, {"sharedGateProj", sharedGateProj},
                {"sharedUpProj", sharedUpProj}, {"sharedDownProj", sharedDownProj},
                {"sharedExpertGate", sharedExpertGate}}) {
            if (p[1] != null) {
                requireName(p[0], p[1]);
            }
        }
    }

    private static void requireName(String what, String v) {
        if (v == null || v.isBlank()) {
            throw new IllegalArgumentException("MoeNameMap: " + what + " must be a non-blank name, got "
                    + (v == null ? "null" : "'" + v + "'"));
        }
    }

    /** DeepSeek-style names: {@code gate.weight}, {@code experts.{e}.gate_proj.weight}, ... */
    private static MoeNameMap deepseekLike(String family, boolean scoreBias, String shared) {
        return new MoeNameMap(family, "gate.weight", null, scoreBias ? "gate.e_score_correction_bias" : null,
                ExpertLayout.PER_EXPERT, "experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight",
                "experts.{e}.down_proj.weight", null, null,
                shared == null ? null : shared + ".gate_proj.weight", shared == null ? null : shared + ".up_proj.weight",
                shared == null ? null : shared + ".down_proj.weight", null, "_scale_inv", "_blocks", "_scales");
    }

    /**
     * The map of a Hugging Face {@code model_type}. Names are relative to the MoE block's prefix:
     * {@code model.layers.N.mlp.} for most families, {@code model.layers.N.block_sparse_moe.} for
     * Mixtral, {@code model.layers.N.feed_forward.} for Llama 4.
     *
     * @param modelType {@code deepseek_v2}, {@code deepseek_v3}, {@code kimi_k2}, {@code glm4_moe},
     *                  {@code qwen2_moe}, {@code qwen3_moe}, {@code olmoe}, {@code mixtral},
     *                  {@code llama4} / {@code llama4_text}, {@code gpt_oss} (case-insensitive)
     * @return the family's map
     * @throws IllegalArgumentException naming an unknown or null model type and the known ones
     */
    public static MoeNameMap forModelType(String modelType) {
        if (modelType == null) {
            throw new IllegalArgumentException("MoeNameMap.forModelType: modelType is null");
        }
        String t = modelType.trim().toLowerCase(Locale.ROOT);
        return switch (t) {
            case "deepseek_v3", "kimi_k2", "glm4_moe" -> deepseekLike(t, true, "shared_experts");
            case "deepseek_v2" -> deepseekLike(t, false, "shared_experts");
            case "qwen3_moe", "olmoe" -> deepseekLike(t, false, null);
            case "qwen2_moe" -> {
                MoeNameMap m = deepseekLike(t, false, "shared_expert");
                yield new MoeNameMap(t, m.routerWeight, null, null, m.expertLayout, m.gateProj, m.upProj, m.downProj,
                        null, null, m.sharedGateProj, m.sharedUpProj, m.sharedDownProj, "shared_expert_gate.weight",
                        m.fp8ScaleSuffix, m.mxfp4BlocksSuffix, m.mxfp4ScalesSuffix);
            }
            case "mixtral" -> new MoeNameMap(t, "gate.weight", null, null, ExpertLayout.PER_EXPERT,
                    "experts.{e}.w1.weight", "experts.{e}.w3.weight", "experts.{e}.w2.weight", null, null,
                    null, null, null, null, "_scale_inv", "_blocks", "_scales");
            case "llama4", "llama4_text" -> new MoeNameMap(t, "router.weight", null, null, ExpertLayout.FUSED_CHUNKED,
                    "experts.gate_up_proj", null, "experts.down_proj", null, null,
                    "shared_expert.gate_proj.weight", "shared_expert.up_proj.weight", "shared_expert.down_proj.weight",
                    null, "_scale_inv", "_blocks", "_scales");
            case "gpt_oss" -> new MoeNameMap(t, "router.weight", "router.bias", null, ExpertLayout.FUSED_INTERLEAVED,
                    "experts.gate_up_proj", null, "experts.down_proj", "experts.gate_up_proj_bias",
                    "experts.down_proj_bias", null, null, null, null, "_scale_inv", "_blocks", "_scales");
            default -> throw new IllegalArgumentException("MoeNameMap: unknown model_type '" + modelType
                    + "'; known: deepseek_v2, deepseek_v3, kimi_k2, glm4_moe, qwen2_moe, qwen3_moe, olmoe, mixtral,"
                    + " llama4, llama4_text, gpt_oss");
        };
    }

    /**
     * Returns the DeepSeek-V3 map (the names moe4j has always used).
     *
     * @return the DeepSeek-V3 map (the names moe4j has always used)
     */
    public static MoeNameMap deepseekV3() {
        return forModelType("deepseek_v3");
    }

    /**
     * The same map with {@code suffix} appended to every tensor name (e.g. {@code .exp_avg} for
     * optimiser moments stored beside the weights' names).
     *
     * @param suffix a non-blank suffix
     * @return the suffixed map
     * @throws IllegalArgumentException on a blank suffix
     */
    public MoeNameMap suffixed(String suffix) {
        requireName("suffix", suffix);
        return new MoeNameMap(family, routerWeight + suffix, plus(routerBias, suffix), plus(scoreCorrectionBias, suffix),
                expertLayout, gateProj + suffix, plus(upProj, suffix), downProj + suffix, plus(gateUpBias, suffix),
                plus(downBias, suffix), plus(sharedGateProj, suffix), plus(sharedUpProj, suffix),
                plus(sharedDownProj, suffix), plus(sharedExpertGate, suffix), fp8ScaleSuffix, mxfp4BlocksSuffix,
                mxfp4ScalesSuffix);
    }

    private static String plus(String name, String suffix) {
        return name == null ? null : name + suffix;
    }

    /**
     * Returns true for the fused layouts (one tensor holds every expert).
     *
     * @return true for the fused layouts (one tensor holds every expert)
     */
    public boolean fused() {
        return expertLayout != ExpertLayout.PER_EXPERT;
    }

    /**
     * Returns true when the family has shared experts.
     *
     * @return true when the family has shared experts
     */
    public boolean hasSharedExperts() {
        return sharedGateProj != null;
    }

    /**
     * Fills a per-expert pattern with a global expert index.
     *
     * @param pattern a per-expert pattern
     * @param expert  global expert index (≥ 0)
     * @return the pattern with the index filled in
     * @throws IllegalArgumentException on a negative index
     */
    public static String expert(String pattern, int expert) {
        if (expert < 0) {
            throw new IllegalArgumentException("MoeNameMap: expert index " + expert + " is negative");
        }
        return pattern.replace(EXPERT, Integer.toString(expert));
    }

    /**
     * Returns the expert's gate weight name ({@link ExpertLayout#PER_EXPERT} only).
     *
     * @param expert global expert index
     * @return the expert's gate weight name ({@link ExpertLayout#PER_EXPERT} only)
     * @throws IllegalStateException for a fused layout
     */
    public String expertGate(int expert) {
        requirePerExpert("expertGate");
        return expert(gateProj, expert);
    }

    /**
     * Returns the expert's up weight name ({@link ExpertLayout#PER_EXPERT} only).
     *
     * @param expert global expert index
     * @return the expert's up weight name ({@link ExpertLayout#PER_EXPERT} only)
     * @throws IllegalStateException for a fused layout
     */
    public String expertUp(int expert) {
        requirePerExpert("expertUp");
        return expert(upProj, expert);
    }

    /**
     * Returns the expert's down weight name ({@link ExpertLayout#PER_EXPERT} only).
     *
     * @param expert global expert index
     * @return the expert's down weight name ({@link ExpertLayout#PER_EXPERT} only)
     * @throws IllegalStateException for a fused layout
     */
    public String expertDown(int expert) {
        requirePerExpert("expertDown");
        return expert(downProj, expert);
    }

    private void requirePerExpert(String what) {
        if (fused()) {
            throw new IllegalStateException("MoeNameMap " + family + ": " + what + " needs the PER_EXPERT layout, this"
                    + " family is " + expertLayout);
        }
    }

    /**
     * The name of a weight's FP8 block-scale tensor.
     *
     * @param weight a weight name
     * @return the name of its FP8 block-scale tensor
     */
    public String fp8Scale(String weight) {
        return weight + fp8ScaleSuffix;
    }

    /**
     * The name of a fused weight's MXFP4 packed nibbles.
     *
     * @param weight a fused weight name
     * @return the name of its MXFP4 packed nibbles
     */
    public String mxfp4Blocks(String weight) {
        return weight + mxfp4BlocksSuffix;
    }

    /**
     * The name of a fused weight's MXFP4 E8M0 scales.
     *
     * @param weight a fused weight name
     * @return the name of its MXFP4 E8M0 scales
     */
    public String mxfp4Scales(String weight) {
        return weight + mxfp4ScalesSuffix;
    }
}
