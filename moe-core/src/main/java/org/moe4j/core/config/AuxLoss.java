package org.moe4j.core.config;

/**
 * Auxiliary-loss coefficients; 0 disables a loss.
 *
 * @param switchCoeff   switch/GShard load-balance loss, {@code E · Σ_e f_e · P_e}
 * @param seqCoeff      DeepSeek-V3 sequence-wise balance loss (per sequence)
 * @param zCoeff        router z-loss, mean of {@code logsumexp(logits)²}
 * @param seqLength     tokens per sequence for the sequence-wise loss (0 = the whole batch is one sequence)
 */
public record AuxLoss(double switchCoeff, double seqCoeff, double zCoeff, int seqLength) {
    /** No auxiliary loss. */
    public static final AuxLoss NONE = new AuxLoss(0, 0, 0, 0);

    /**
     * Returns true if any coefficient is non-zero.
     * @return true if any coefficient is non-zero
     */
    public boolean any() {
        return switchCoeff != 0 || seqCoeff != 0 || zCoeff != 0;
    }
}
