package org.moe4j.core.config;

/** The gated activation of the routed experts, applied to {@code gate = x·W1ᵀ} and {@code up = x·W3ᵀ}. */
public enum ExpertActivation {
    /** {@code silu(gate) ⊙ up} (DeepSeek, Qwen, Mixtral, OLMoE, GLM-4.5, Llama 4). */
    SWIGLU,
    /**
     * gpt-oss: {@code g = min(gate, limit)}, {@code u = clamp(up, -limit, limit)},
     * {@code (u + 1) ⊙ g ⊙ σ(alpha · g)} with {@link LayerFeatures#swigluLimit()} and
     * {@link LayerFeatures#swigluAlpha()}.
     */
    CLAMPED_SWIGLU
}
