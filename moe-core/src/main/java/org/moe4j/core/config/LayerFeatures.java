package org.moe4j.core.config;

/**
 * Model-family variants of the MoE layer beyond the DeepSeek-V3 recipe. {@link #NONE} is the plain
 * layer: ungated shared experts, routing weights applied to the expert outputs, bias-free linears,
 * SwiGLU experts.
 *
 * @param sharedExpertGate   multiply the shared-expert output by {@code σ(x·w_gate)}, one scalar per
 *                           token from a {@code [1, hidden]} weight (Qwen2-MoE {@code shared_expert_gate});
 *                           needs shared experts
 * @param scoreBeforeExperts apply the routing weight to the expert <em>input</em> ({@code y = E(w·x)}) and
 *                           sum the expert outputs unweighted (Llama 4; torchtitan {@code score_before_experts})
 * @param routerBias         a trainable bias {@code [experts]} added to the router logits (gpt-oss
 *                           {@code router.bias}); unlike the aux-loss-free expert bias it changes the scores
 * @param expertLinearBias   biases on the routed experts' linears: {@code gate}/{@code up} {@code [experts, ffn]}
 *                           and {@code down} {@code [experts, hidden]} (gpt-oss {@code gate_up_proj_bias},
 *                           {@code down_proj_bias})
 * @param activation         the routed experts' gated activation
 * @param swigluLimit        clamp of {@link ExpertActivation#CLAMPED_SWIGLU} (gpt-oss 7.0); 0 with {@code SWIGLU}
 * @param swigluAlpha        sigmoid gain of {@link ExpertActivation#CLAMPED_SWIGLU} (gpt-oss 1.702); 1 with
 *                           {@code SWIGLU}
 */
public record LayerFeatures(boolean sharedExpertGate, boolean scoreBeforeExperts, boolean routerBias,
                            boolean expertLinearBias, ExpertActivation activation, double swigluLimit,
                            double swigluAlpha) {
    /** The plain layer: every feature off, SwiGLU experts. */
    public static final LayerFeatures NONE = new LayerFeatures(false, false, false, false, ExpertActivation.SWIGLU, 0, 1);

    /**
     * Whether this is anything but the plain layer.
     *
     * @return true if any feature differs from {@link #NONE}
     */
    public boolean any() {
        return !equals(NONE);
    }

    /**
     * Returns a copy with {@code sharedExpertGate} replaced.
     *
     * @param v gate the shared experts
     * @return a copy with {@code sharedExpertGate = v}
     */
    public LayerFeatures withSharedExpertGate(boolean v) {
        return new LayerFeatures(v, scoreBeforeExperts, routerBias, expertLinearBias, activation, swigluLimit, swigluAlpha);
    }

    /**
     * Returns a copy with {@code scoreBeforeExperts} replaced.
     *
     * @param v weight the expert inputs instead of the outputs
     * @return a copy with {@code scoreBeforeExperts = v}
     */
    public LayerFeatures withScoreBeforeExperts(boolean v) {
        return new LayerFeatures(sharedExpertGate, v, routerBias, expertLinearBias, activation, swigluLimit, swigluAlpha);
    }

    /**
     * Returns a copy with {@code routerBias} replaced.
     *
     * @param v add a trainable bias to the router logits
     * @return a copy with {@code routerBias = v}
     */
    public LayerFeatures withRouterBias(boolean v) {
        return new LayerFeatures(sharedExpertGate, scoreBeforeExperts, v, expertLinearBias, activation, swigluLimit, swigluAlpha);
    }

    /**
     * Returns a copy with {@code expertLinearBias} replaced.
     *
     * @param v biases on the routed experts' linears
     * @return a copy with {@code expertLinearBias = v}
     */
    public LayerFeatures withExpertLinearBias(boolean v) {
        return new LayerFeatures(sharedExpertGate, scoreBeforeExperts, routerBias, v, activation, swigluLimit, swigluAlpha);
    }

    /**
     * Returns a copy with the gpt-oss clamped SwiGLU (validated when the config is built).
     *
     * @param limit clamp (finite, &gt; 0)
     * @param alpha sigmoid gain (finite, &gt; 0)
     * @return a copy with the gpt-oss clamped SwiGLU
     */
    public LayerFeatures withClampedSwiglu(double limit, double alpha) {
        return new LayerFeatures(sharedExpertGate, scoreBeforeExperts, routerBias, expertLinearBias,
                ExpertActivation.CLAMPED_SWIGLU, limit, alpha);
    }

    /**
     * Returns a copy with the plain SwiGLU.
     *
     * @return a copy with the plain SwiGLU (limit 0, alpha 1)
     */
    public LayerFeatures withSwiglu() {
        return new LayerFeatures(sharedExpertGate, scoreBeforeExperts, routerBias, expertLinearBias,
                ExpertActivation.SWIGLU, 0, 1);
    }
}
