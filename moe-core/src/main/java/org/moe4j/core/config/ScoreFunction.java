package org.moe4j.core.config;

/** How router logits become expert scores. */
public enum ScoreFunction {
    /** {@code softmax(logits)} over all experts (Mixtral, Qwen3-MoE). */
    SOFTMAX,
    /** Element-wise {@code sigmoid(logits)} (DeepSeek-V3). */
    SIGMOID
}
