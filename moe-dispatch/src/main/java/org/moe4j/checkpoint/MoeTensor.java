package org.moe4j.checkpoint;

/**
 * The tensors of one MoE layer as a checkpoint reader or writer sees them, in moe4j's orientation
 * ({@code nn.Linear}'s {@code [out, in]}). {@code E} is the global expert count, {@code El} the
 * experts of one rank, {@code Fs} the total shared-expert width. A layer passes the slots it has;
 * a {@link MoeNameMap} says where each lives in a family's checkpoint.
 */
public enum MoeTensor {
    /** Router weight {@code [E, hidden]}. */
    ROUTER_WEIGHT,
    /** Router bias {@code [E]} (gpt-oss). */
    ROUTER_BIAS,
    /** Selection-only expert score-correction bias {@code [E]} (DeepSeek-V3 family). */
    SCORE_CORRECTION_BIAS,
    /** Routed experts' gate projection {@code [El, ffn, hidden]}. */
    EXPERT_GATE,
    /** Routed experts' up projection {@code [El, ffn, hidden]}. */
    EXPERT_UP,
    /** Routed experts' down projection {@code [El, hidden, ffn]}. */
    EXPERT_DOWN,
    /** Routed experts' gate bias {@code [El, ffn]} (gpt-oss). */
    EXPERT_GATE_BIAS,
    /** Routed experts' up bias {@code [El, ffn]} (gpt-oss). */
    EXPERT_UP_BIAS,
    /** Routed experts' down bias {@code [El, hidden]} (gpt-oss). */
    EXPERT_DOWN_BIAS,
    /** Shared experts' gate projection {@code [Fs, hidden]}. */
    SHARED_GATE,
    /** Shared experts' up projection {@code [Fs, hidden]}. */
    SHARED_UP,
    /** Shared experts' down projection {@code [hidden, Fs]}. */
    SHARED_DOWN,
    /** Sigmoid gate of the shared expert {@code [1, hidden]} (Qwen2-MoE). */
    SHARED_EXPERT_GATE;

    /**
     * Returns true for the per-rank routed-expert tensors (first dimension {@code El}).
     *
     * @return true for the per-rank routed-expert tensors (first dimension {@code El})
     */
    public boolean routed() {
        return switch (this) {
            case EXPERT_GATE, EXPERT_UP, EXPERT_DOWN, EXPERT_GATE_BIAS, EXPERT_UP_BIAS, EXPERT_DOWN_BIAS -> true;
            default -> false;
        };
    }
}
