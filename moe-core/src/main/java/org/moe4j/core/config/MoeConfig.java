package org.moe4j.core.config;

import java.util.Objects;
import org.moe4j.core.DType;

/**
 * The complete, validated description of one MoE layer: sizes, routing, balancing, capacity,
 * shared experts and expert parallelism. Immutable; build one with {@link #builder()}.
 *
 * <p>Every invalid value or combination is refused in the constructor with an
 * {@link IllegalArgumentException} that names the field and its value.
 *
 * @param hidden          model hidden size (the token row width)
 * @param experts         routed experts {@code E}
 * @param topK            experts chosen per token {@code K}
 * @param ffn             intermediate size of one routed expert
 * @param scoreFunction   softmax or sigmoid
 * @param expertGroups    expert groups {@code G} for node-limited routing (1 = no grouping)
 * @param limitedGroups   groups kept per token (equal to {@code expertGroups} = no limit)
 * @param groupScore      how a group is scored (top-2 sum or max)
 * @param routeNorm       divide the top-k weights by their sum (+1e-20)
 * @param routeScale      multiply the top-k weights by this factor
 * @param expertBiasCoeff step size of the aux-loss-free expert-bias update (0 = no bias update)
 * @param biasCentering   re-centre the bias to zero mean after each update, or not
 * @param auxLoss         auxiliary-loss coefficients
 * @param capacity        capacity factor and drop policy (dropless by default)
 * @param sharedExperts   shared experts applied to every token (0 = none)
 * @param sharedFfn       intermediate size of one shared expert (used when {@code sharedExperts > 0})
 * @param expertParallel  expert-parallel world size {@code W}; each rank owns {@code E/W} experts
 * @param groupAlignment  pad every expert's token group to a multiple of this (1 = no padding)
 * @param expertDtype     compute dtype of the expert GEMMs (F32 or BF16; accumulation is always fp32)
 * @param dispatch        dispatch strategy and its options (count-exchange all-to-all by default)
 * @param features        model-family variants (gated shared expert, score before experts, router bias,
 *                        expert linear biases, clamped SwiGLU); {@link LayerFeatures#NONE} by default
 */
public record MoeConfig(
        int hidden,
        int experts,
        int topK,
        int ffn,
        ScoreFunction scoreFunction,
        int expertGroups,
        int limitedGroups,
        GroupScore groupScore,
        boolean routeNorm,
        double routeScale,
        double expertBiasCoeff,
        BiasCentering biasCentering,
        AuxLoss auxLoss,
        Capacity capacity,
        int sharedExperts,
        int sharedFfn,
        int expertParallel,
        int groupAlignment,
        DType expertDtype,
        DispatchOptions dispatch,
        LayerFeatures features) {

    /**
     * Validates every field and combination (see the class description for the fields).
     *
     * @param hidden          model hidden size
     * @param experts         routed experts
     * @param topK            experts chosen per token
     * @param ffn             intermediate size of one routed expert
     * @param scoreFunction   softmax or sigmoid
     * @param expertGroups    expert groups for node-limited routing
     * @param limitedGroups   groups kept per token
     * @param groupScore      how a group is scored
     * @param routeNorm       divide the top-k weights by their sum
     * @param routeScale      multiply the top-k weights by this factor
     * @param expertBiasCoeff step size of the expert-bias update
     * @param biasCentering   re-centring of the bias after each update
     * @param auxLoss         auxiliary-loss coefficients
     * @param capacity        capacity factor and drop policy
     * @param sharedExperts   shared experts
     * @param sharedFfn       intermediate size of one shared expert
     * @param expertParallel  expert-parallel world size
     * @param groupAlignment  expert group padding multiple
     * @param expertDtype     compute dtype of the expert GEMMs
     * @throws IllegalArgumentException naming the first invalid field and its value
     * @throws NullPointerException     if an object field is null
     */
    public MoeConfig {
        Objects.requireNonNull(scoreFunction, "MoeConfig.scoreFunction");
        Objects.requireNonNull(groupScore, "MoeConfig.groupScore");
        Objects.requireNonNull(biasCentering, "MoeConfig.biasCentering");
        Objects.requireNonNull(auxLoss, "MoeConfig.auxLoss");
        Objects.requireNonNull(capacity, "MoeConfig.capacity");
        Objects.requireNonNull(capacity.policy(), "MoeConfig.capacity.policy");
        Objects.requireNonNull(expertDtype, "MoeConfig.expertDtype");
        Objects.requireNonNull(dispatch, "MoeConfig.dispatch");
        Objects.requireNonNull(features, "MoeConfig.features");
        Objects.requireNonNull(features.activation(), "MoeConfig.features.activation");
        positive("hidden", hidden);
        positive("experts", experts);
        positive("topK", topK);
        positive("ffn", ffn);
        positive("expertGroups", expertGroups);
        positive("limitedGroups", limitedGroups);
        positive("expertParallel", expertParallel);
        positive("groupAlignment", groupAlignment);
        if (topK > experts) {
            fail("topK", topK, "must not exceed experts (" + experts + ")");
        }
        if (experts % expertGroups != 0) {
            fail("expertGroups", expertGroups, "must divide experts (" + experts + ")");
        }
        if (expertGroups > 1 && experts / expertGroups < 2) {
            fail("expertGroups", expertGroups, "leaves " + experts / expertGroups
                    + " expert per group; node-limited routing needs at least 2 (experts=" + experts + ")");
        }
        if (limitedGroups > expertGroups) {
            fail("limitedGroups", limitedGroups, "must not exceed expertGroups (" + expertGroups + ")");
        }
        int reachable = limitedGroups * (experts / expertGroups);
        if (topK > reachable) {
            fail("topK", topK, "exceeds the " + reachable + " experts reachable in " + limitedGroups
                    + " limited group(s) of " + experts / expertGroups);
        }
        if (!(routeScale > 0) || Double.isInfinite(routeScale)) {
            fail("routeScale", routeScale, "must be finite and > 0");
        }
        nonNegativeFinite("expertBiasCoeff", expertBiasCoeff);
        nonNegativeFinite("auxLoss.switchCoeff", auxLoss.switchCoeff());
        nonNegativeFinite("auxLoss.seqCoeff", auxLoss.seqCoeff());
        nonNegativeFinite("auxLoss.zCoeff", auxLoss.zCoeff());
        if (auxLoss.seqLength() < 0) {
            fail("auxLoss.seqLength", auxLoss.seqLength(), "must be >= 0 (0 = whole batch)");
        }
        nonNegativeFinite("capacity.factor", capacity.factor());
        if (sharedExperts < 0) {
            fail("sharedExperts", sharedExperts, "must be >= 0");
        }
        if (sharedExperts > 0 && sharedFfn <= 0) {
            fail("sharedFfn", sharedFfn, "must be > 0 when sharedExperts (" + sharedExperts + ") > 0");
        }
        if (sharedFfn < 0) {
            fail("sharedFfn", sharedFfn, "must be >= 0");
        }
        if ((long) sharedExperts * sharedFfn > Integer.MAX_VALUE) {
            fail("sharedFfn", sharedFfn, "times sharedExperts (" + sharedExperts + ") = " + (long) sharedExperts * sharedFfn
                    + " overflows the int range of the shared intermediate size");
        }
        if (experts % expertParallel != 0) {
            fail("expertParallel", expertParallel, "must divide experts (" + experts + ")");
        }
        if (expertDtype != DType.F32 && expertDtype != DType.BF16) {
            fail("expertDtype", expertDtype, "must be F32 or BF16");
        }
        if (features.sharedExpertGate() && sharedExperts == 0) {
            fail("features.sharedExpertGate", true, "needs shared experts (sharedExperts=0)");
        }
        if (features.activation() == ExpertActivation.CLAMPED_SWIGLU) {
            if (!(features.swigluLimit() > 0) || Double.isInfinite(features.swigluLimit())) {
                fail("features.swigluLimit", features.swigluLimit(), "must be finite and > 0 with CLAMPED_SWIGLU");
            }
            if (!(features.swigluAlpha() > 0) || Double.isInfinite(features.swigluAlpha())) {
                fail("features.swigluAlpha", features.swigluAlpha(), "must be finite and > 0 with CLAMPED_SWIGLU");
            }
        } else if (features.swigluLimit() != 0 || features.swigluAlpha() != 1) {
            fail("features.swigluLimit", features.swigluLimit() + "/" + features.swigluAlpha(),
                    "limit and alpha apply to CLAMPED_SWIGLU only; SWIGLU needs limit 0 and alpha 1");
        }
    }

    private static void positive(String field, int value) {
        if (value <= 0) {
            fail(field, value, "must be > 0");
        }
    }

    private static void nonNegativeFinite(String field, double value) {
        if (!(value >= 0) || Double.isInfinite(value)) {
            fail(field, value, "must be finite and >= 0");
        }
    }

    private static void fail(String field, Object value, String why) {
        throw new IllegalArgumentException("MoeConfig." + field + "=" + value + ": " + why);
    }

    /**
     * Returns experts per expert-parallel rank, {@code E / W}.
     * @return experts per expert-parallel rank, {@code E / W}
     */
    public int localExperts() {
        return experts / expertParallel;
    }

    /**
     * Returns experts per group, {@code E / G}.
     * @return experts per group, {@code E / G}
     */
    public int expertsPerGroup() {
        return experts / expertGroups;
    }

    /**
     * Returns true when node-limited routing actually excludes groups.
     * @return true when node-limited routing actually excludes groups
     */
    public boolean groupLimited() {
        return expertGroups > 1 && limitedGroups < expertGroups;
    }

    /**
     * Returns total intermediate size of the shared experts (0 when none).
     * @return total intermediate size of the shared experts (0 when none)
     */
    public int sharedFfnTotal() {
        return sharedExperts * sharedFfn;
    }

    /**
     * Returns a builder with every field of this config.
     * @return a builder with every field of this config
     */
    public Builder toBuilder() {
        return new Builder(this);
    }

    /**
     * Returns a builder with defaults: softmax, no groups, no norm, scale 1, no bias, no aux loss, dropless, W=1.
     * @return a builder with defaults: softmax, no groups, no norm, scale 1, no bias, no aux loss, dropless, W=1
     */
    public static Builder builder() {
        return new Builder();
    }

    /** Mutable builder; {@link #build()} validates. */
    public static final class Builder {
        private int hidden;
        private int experts;
        private int topK;
        private int ffn;
        private ScoreFunction scoreFunction = ScoreFunction.SOFTMAX;
        private int expertGroups = 1;
        private int limitedGroups;
        private boolean limitedGroupsSet; // unset: same as expertGroups
        private GroupScore groupScore = GroupScore.TOP2_SUM;
        private boolean routeNorm;
        private double routeScale = 1.0;
        private double expertBiasCoeff;
        private BiasCentering biasCentering = BiasCentering.ZERO_MEAN;
        private AuxLoss auxLoss = AuxLoss.NONE;
        private Capacity capacity = Capacity.DROPLESS;
        private int sharedExperts;
        private int sharedFfn;
        private int expertParallel = 1;
        private int groupAlignment = 1;
        private DType expertDtype = DType.F32;
        private DispatchOptions dispatch = DispatchOptions.DEFAULT;
        private LayerFeatures features = LayerFeatures.NONE;

        private Builder() {
        }

        private Builder(MoeConfig c) {
            hidden = c.hidden;
            experts = c.experts;
            topK = c.topK;
            ffn = c.ffn;
            scoreFunction = c.scoreFunction;
            expertGroups = c.expertGroups;
            limitedGroups = c.limitedGroups;
            limitedGroupsSet = true;
            groupScore = c.groupScore;
            routeNorm = c.routeNorm;
            routeScale = c.routeScale;
            expertBiasCoeff = c.expertBiasCoeff;
            biasCentering = c.biasCentering;
            auxLoss = c.auxLoss;
            capacity = c.capacity;
            sharedExperts = c.sharedExperts;
            sharedFfn = c.sharedFfn;
            expertParallel = c.expertParallel;
            groupAlignment = c.groupAlignment;
            expertDtype = c.expertDtype;
            dispatch = c.dispatch;
            features = c.features;
        }

        /**
         * Sets {@code hidden}: hidden size.
         * @param v hidden size
         * @return this
         */
        public Builder hidden(int v) { hidden = v; return this; }
        /**
         * Sets {@code experts}: routed experts.
         * @param v routed experts
         * @return this
         */
        public Builder experts(int v) { experts = v; return this; }
        /**
         * Sets {@code topK}: experts per token.
         * @param v experts per token
         * @return this
         */
        public Builder topK(int v) { topK = v; return this; }
        /**
         * Sets {@code ffn}: expert intermediate size.
         * @param v expert intermediate size
         * @return this
         */
        public Builder ffn(int v) { ffn = v; return this; }
        /**
         * Sets {@code scoreFunction}: score function.
         * @param v score function
         * @return this
         */
        public Builder scoreFunction(ScoreFunction v) { scoreFunction = v; return this; }
        /**
         * Sets node-limited routing: the experts form {@code groups} groups, and each token picks its
         * experts from its best {@code limited} groups.
         *
         * @param groups expert groups
         * @param limited groups kept per token (any value is checked by {@link #build()}; a negative
         *                one is refused, never read as "no limit")
         * @return this
         */
        public Builder groups(int groups, int limited) {
            expertGroups = groups;
            limitedGroups = limited;
            limitedGroupsSet = true;
            return this;
        }
        /**
         * Sets {@code expertGroups}: expert groups.
         * @param v expert groups (limited groups default to the same value unless set)
         * @return this
         */
        public Builder expertGroups(int v) { expertGroups = v; return this; }
        /**
         * Sets {@code limitedGroups}: limited groups.
         * @param v limited groups (checked by {@link #build()}; a negative value is refused)
         * @return this
         */
        public Builder limitedGroups(int v) { limitedGroups = v; limitedGroupsSet = true; return this; }
        /**
         * Sets {@code groupScore}: group scoring.
         * @param v group scoring
         * @return this
         */
        public Builder groupScore(GroupScore v) { groupScore = v; return this; }
        /**
         * Sets {@code routeNorm}: route norm.
         * @param v route norm
         * @return this
         */
        public Builder routeNorm(boolean v) { routeNorm = v; return this; }
        /**
         * Sets {@code routeScale}: route scale.
         * @param v route scale
         * @return this
         */
        public Builder routeScale(double v) { routeScale = v; return this; }
        /**
         * Sets {@code expertBiasCoeff}: expert-bias update coefficient.
         * @param v expert-bias update coefficient
         * @return this
         */
        public Builder expertBiasCoeff(double v) { expertBiasCoeff = v; return this; }
        /**
         * Sets {@code biasCentering}: bias centering.
         * @param v bias centering
         * @return this
         */
        public Builder biasCentering(BiasCentering v) { biasCentering = v; return this; }
        /**
         * Sets {@code auxLoss}: aux losses.
         * @param v aux losses
         * @return this
         */
        public Builder auxLoss(AuxLoss v) { auxLoss = v; return this; }
        /**
         * Sets {@code capacity}: capacity.
         * @param v capacity
         * @return this
         */
        public Builder capacity(Capacity v) { capacity = v; return this; }
        /**
         * Sets the shared experts applied to every token.
         *
         * @param count shared experts
         * @param ffnEach intermediate size of each
         * @return this
         */
        public Builder sharedExperts(int count, int ffnEach) { sharedExperts = count; sharedFfn = ffnEach; return this; }
        /**
         * Sets {@code expertParallel}: expert-parallel world size.
         * @param v expert-parallel world size
         * @return this
         */
        public Builder expertParallel(int v) { expertParallel = v; return this; }
        /**
         * Sets {@code groupAlignment}: expert group alignment.
         * @param v expert group alignment
         * @return this
         */
        public Builder groupAlignment(int v) { groupAlignment = v; return this; }
        /**
         * Sets {@code expertDtype}: expert compute dtype.
         * @param v expert compute dtype
         * @return this
         */
        public Builder expertDtype(DType v) { expertDtype = v; return this; }
        /**
         * Sets {@code dispatch}: dispatch strategy and options.
         * @param v dispatch strategy and options
         * @return this
         */
        public Builder dispatch(DispatchOptions v) { dispatch = v; return this; }
        /**
         * Sets every family variant at once.
         *
         * @param v model-family layer variants
         * @return this
         */
        public Builder features(LayerFeatures v) { features = v; return this; }
        /**
         * Sets the shared-expert gate.
         *
         * @param v gate the shared experts with {@code σ(x·w_gate)} (Qwen2-MoE)
         * @return this
         */
        public Builder sharedExpertGate(boolean v) { features = features.withSharedExpertGate(v); return this; }
        /**
         * Sets score-before-experts.
         *
         * @param v apply the routing weight to the expert input (Llama 4)
         * @return this
         */
        public Builder scoreBeforeExperts(boolean v) { features = features.withScoreBeforeExperts(v); return this; }
        /**
         * Sets the router bias.
         *
         * @param v add a trainable bias to the router logits (gpt-oss)
         * @return this
         */
        public Builder routerBias(boolean v) { features = features.withRouterBias(v); return this; }
        /**
         * Sets the expert linear biases.
         *
         * @param v biases on the routed experts' linears (gpt-oss)
         * @return this
         */
        public Builder expertLinearBias(boolean v) { features = features.withExpertLinearBias(v); return this; }
        /**
         * Selects the gpt-oss clamped SwiGLU.
         *
         * @param limit clamp of the gate (above) and up projection (both sides)
         * @param alpha sigmoid gain
         * @return this, with the gpt-oss clamped SwiGLU
         */
        public Builder clampedSwiglu(double limit, double alpha) { features = features.withClampedSwiglu(limit, alpha); return this; }

        /**
         * Returns the validated config.
         * @return the validated config
         * @throws IllegalArgumentException naming the first invalid field and its value
         */
        public MoeConfig build() {
            return new MoeConfig(hidden, experts, topK, ffn, scoreFunction, expertGroups,
                    limitedGroupsSet ? limitedGroups : expertGroups, groupScore, routeNorm, routeScale,
                    expertBiasCoeff, biasCentering, auxLoss, capacity, sharedExperts, sharedFfn, expertParallel,
                    groupAlignment, expertDtype, dispatch, features);
        }
    }
}
