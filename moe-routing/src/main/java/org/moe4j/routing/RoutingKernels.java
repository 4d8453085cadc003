package org.moe4j.routing;

import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.ScoreFunction;

/**
 * The router's kernel family. The CPU reference ships in this module (registered as the
 * {@code cpu} {@link org.moe4j.core.backend.KernelProvider}); a device backend implements the same
 * interface. Every method writes into caller-provided output buffers and keeps no state.
 *
 * <p>Big tensors (logits, scores, indices, weights, gradients) live in the backend's memory.
 * Small per-expert or per-segment tables (parameters named {@code ...Host}) are always host
 * buffers ({@link org.moe4j.core.buffer.HostBuffer}); a device implementation reads or writes them
 * with a host copy. Validation of shapes and dtypes is the caller's ({@link Router}'s) job.
 *
 * <p>Conventions: {@code selected}/{@code topkIdx} are I32 {@code [tokens, topK]} with -1 for "no
 * expert"; slots are ordered by descending selection score, ties towards the lower expert index.
 * A token is <em>valid</em> when its first selected slot is not -1 (padding tokens select nothing).
 */
public interface RoutingKernels {

    /**
     * {@code logits = x · gateWeightᵀ} in fp32.
     *
     * @param x          F32 or BF16 {@code [tokens, hidden]}
     * @param gateWeight F32 {@code [experts, hidden]}
     * @param logits     out: F32 {@code [tokens, experts]}
     */
    void gateLogits(Buffer x, Buffer gateWeight, Buffer logits);

    /**
     * Scores, (biased, node-limited) top-k selection and top-k weights for every token.
     * Padding tokens get scores 0, selection -1, weights 0 and are not checked for finiteness.
     *
     * @param params      selection parameters
     * @param logits      F32 {@code [tokens, experts]}
     * @param expertBias  F32 {@code [experts]}, added to the scores for selection only
     * @param paddingMask I32 {@code [tokens]} (non-zero = real token) or null for no padding
     * @param scores      out: F32 {@code [tokens, experts]}
     * @param selected    out: I32 {@code [tokens, topK]}
     * @param topkWeights out: F32 {@code [tokens, topK]}
     * @param lse         out (nullable): F32 {@code [tokens]}, {@code logsumexp(logits)} per token (0 for padding)
     * @return the lowest token index whose logits contain NaN or ±Inf, or -1 when all are finite
     */
    int route(RouteParams params, Buffer logits, Buffer expertBias, Buffer paddingMask, Buffer scores,
            Buffer selected, Buffer topkWeights, Buffer lse);

    /**
     * Returns whether this implementation keeps the router's per-step statistics on its device: when
     * true, {@link #routeDeferred}, {@link #accumulateLoad} and {@link #updateExpertBias} are
     * implemented and make no device→host read, and {@link Router} uses them for the sync-free
     * configurations (dropless, no auxiliary losses; see docs/routing.md). The CPU reference
     * returns false (host memory is free to read, so it keeps the eager checks).
     *
     * @return whether the deferred, device-resident statistics are implemented
     */
    default boolean deviceStatistics() {
        return false;
    }

    /**
     * {@link #route} without a host read: the non-finite check and the per-expert counts stay in
     * device memory. The lowest token index with non-finite logits is folded into {@code firstBad}
     * ({@code firstBad = min(firstBad, t)}; the caller initialises it to {@link Integer#MAX_VALUE}),
     * and the assignments per expert of {@code selected} are added to {@code tokensPerExpert}.
     *
     * @param params          selection parameters
     * @param logits          F32 {@code [tokens, experts]}
     * @param expertBias      F32 {@code [experts]}
     * @param paddingMask     I32 {@code [tokens]} or null
     * @param scores          out: F32 {@code [tokens, experts]}
     * @param selected        out: I32 {@code [tokens, topK]}
     * @param topkWeights     out: F32 {@code [tokens, topK]}
     * @param lse             out (nullable): F32 {@code [tokens]}
     * @param tokensPerExpert in/out: I32 {@code [experts]}, the assignments are added
     * @param firstBad        in/out: I32 {@code [1]}, the lowest non-finite token index folded in
     * @throws UnsupportedOperationException unless {@link #deviceStatistics()}
     */
    default void routeDeferred(RouteParams params, Buffer logits, Buffer expertBias, Buffer paddingMask,
            Buffer scores, Buffer selected, Buffer topkWeights, Buffer lse, Buffer tokensPerExpert, Buffer firstBad) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no device statistics");
    }

    /**
     * Adds one micro-batch's assignments per expert to the expert-bias load, on the device, unless
     * {@code firstBad} holds a token index (a step with non-finite router logits changes no state).
     *
     * @param tokensPerExpert I32 {@code [experts]}
     * @param firstBad        I32 {@code [1]}: {@link Integer#MAX_VALUE} when every routed token was finite
     * @param load            in/out: I64 {@code [experts]}
     * @throws UnsupportedOperationException unless {@link #deviceStatistics()}
     */
    default void accumulateLoad(Buffer tokensPerExpert, Buffer firstBad, Buffer load) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no device statistics");
    }

    /**
     * The aux-loss-free bias step on the device, bit-identical to {@link ExpertBias#update(long[])}:
     * {@code bias += coeff · sign(mean(load) − load)} (minus its mean when {@code zeroMean}), then the
     * load is set to zero.
     *
     * @param load     in/out: I64 {@code [experts]}, zeroed after the step
     * @param coeff    the step size
     * @param zeroMean whether to re-centre the step to zero mean
     * @param bias     in/out: F32 {@code [experts]}
     * @throws UnsupportedOperationException unless {@link #deviceStatistics()}
     */
    default void updateExpertBias(Buffer load, float coeff, boolean zeroMean, Buffer bias) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no device statistics");
    }

    /**
     * Counts assignments per expert, skipping -1.
     *
     * @param topkIdx             I32 {@code [tokens, topK]}
     * @param tokensPerExpertHost out: host I32 {@code [experts]}
     */
    void countTokens(Buffer topkIdx, Buffer tokensPerExpertHost);

    /**
     * Enforces a per-expert capacity. Copies {@code selected} to {@code topkIdx}, then for every
     * expert with more than {@code capacity} assignments sets the surplus entries of
     * {@code topkIdx} to -1 and their {@code topkWeights} to 0. {@link DropPolicy#BY_SCORE} keeps the
     * highest {@code scores[t, e]} (ties: lower token index); {@link DropPolicy#BY_POSITION} keeps the
     * lowest token indices.
     *
     * @param selected    I32 {@code [tokens, topK]}
     * @param scores      F32 {@code [tokens, experts]}
     * @param capacity    assignments kept per expert, >= 0
     * @param policy      which assignments are dropped
     * @param topkIdx     out: I32 {@code [tokens, topK]}
     * @param topkWeights in/out: F32 {@code [tokens, topK]}
     * @return the number of dropped assignments
     */
    long dropOverCapacity(Buffer selected, Buffer scores, int capacity, DropPolicy policy, Buffer topkIdx,
            Buffer topkWeights);

    /**
     * Per-segment statistics for the balance losses. Tokens are cut into segments of
     * {@code segmentLength} (the last may be shorter); for each segment {@code s} and expert
     * {@code e}: the sum over valid tokens of the balance probability {@code p[t, e]} (the score for
     * softmax; {@code score / Σ_e score} for sigmoid), the number of valid tokens that selected
     * {@code e}, the valid-token count, and the sum of {@code lse²}.
     *
     * @param scoreFunction  how scores were made
     * @param scores         F32 {@code [tokens, experts]}
     * @param selected       I32 {@code [tokens, topK]}
     * @param lse            F32 {@code [tokens]} or null (then {@code lseSqHost} is left 0)
     * @param segmentLength  tokens per segment, >= 1
     * @param probSumHost    out: host F32 {@code [segments, experts]}
     * @param countsHost     out: host I32 {@code [segments, experts]}
     * @param validHost      out: host I32 {@code [segments]}
     * @param lseSqHost      out: host F32 {@code [segments]}
     */
    void segmentStats(ScoreFunction scoreFunction, Buffer scores, Buffer selected, Buffer lse, int segmentLength,
            Buffer probSumHost, Buffer countsHost, Buffer validHost, Buffer lseSqHost);

    /**
     * Gradient of the loss with respect to the router logits, for every token:
     * the top-k weight path (through norm and scale; dropped slots carry no weight but still count
     * in the norm's denominator), the balance-loss path {@code auxGrad[t / auxSegmentLength, e]} =
     * dLoss/dp[t, e], and the z-loss path {@code zGrad · lse[t] · softmax(logits[t])}.
     * Padding tokens get 0.
     *
     * @param params           selection parameters
     * @param logits           F32 {@code [tokens, experts]}
     * @param scores           F32 {@code [tokens, experts]}
     * @param selected         I32 {@code [tokens, topK]} (before capacity drops)
     * @param topkIdx          I32 {@code [tokens, topK]} (after drops)
     * @param dTopkWeights     F32 {@code [tokens, topK]} or null (no weight-path gradient)
     * @param auxGradHost      host F32 {@code [segments, experts]} or null (no balance loss)
     * @param auxSegmentLength tokens per row of {@code auxGradHost}
     * @param lse              F32 {@code [tokens]} (needed when {@code zGrad != 0})
     * @param zGrad            {@code 2 · zCoeff / validTokens}, or 0
     * @param dLogits          out: F32 {@code [tokens, experts]}
     */
    void routeBackward(RouteParams params, Buffer logits, Buffer scores, Buffer selected, Buffer topkIdx,
            Buffer dTopkWeights, Buffer auxGradHost, int auxSegmentLength, Buffer lse, float zGrad, Buffer dLogits);

    /**
     * {@code dX = dLogits · gateWeight} and {@code dGate = dLogitsᵀ · x}, fp32.
     *
     * @param x          F32 or BF16 {@code [tokens, hidden]}
     * @param gateWeight F32 {@code [experts, hidden]}
     * @param dLogits    F32 {@code [tokens, experts]}
     * @param dX         out: F32 {@code [tokens, hidden]}
     * @param dGate      out: F32 {@code [experts, hidden]}, or null to skip the gate weight gradient
     *                   (a caller that reduces it over tokens itself, e.g. over a token-block tree)
     */
    void gateBackward(Buffer x, Buffer gateWeight, Buffer dLogits, Buffer dX, Buffer dGate);
}
