package org.moe4j.routing;

/**
 * Values of the auxiliary losses of one forward call, already multiplied by their coefficients
 * (0 when a loss is disabled). "The batch" is the router's own tokens, or, with a
 * {@link BalanceStats.Exchange} ({@link Router.Builder#statsExchange}), the global batch of all ranks.
 *
 * @param switchLoss   {@code switchCoeff · E · Σ_e f_e · P_e} over the batch, with
 *                     {@code f_e = count_e / (N·K)} and {@code P_e = mean_t p[t, e]} over the N real tokens
 * @param sequenceLoss {@code seqCoeff · mean over sequences of Σ_e f'_e · P'_e} (DeepSeek-V3), with
 *                     {@code f'_e = E·count_e / (K·N_s)} and {@code P'_e} the mean of p over the sequence
 * @param zLoss        {@code zCoeff · mean_t logsumexp(logits[t])²}
 */
public record AuxLosses(double switchLoss, double sequenceLoss, double zLoss) {
    /** All zero. */
    public static final AuxLosses NONE = new AuxLosses(0, 0, 0);

    /**
     * Returns the sum of the three losses (what backward differentiates).
     * @return the sum of the three losses (what backward differentiates)
     */
    public double total() {
        return switchLoss + sequenceLoss + zLoss;
    }
}
