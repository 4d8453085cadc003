package org.moe4j.routing;

import java.util.Objects;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;

/**
 * The selection parameters a {@link RoutingKernels#route} call needs: a flat, backend-friendly
 * projection of {@link MoeConfig}.
 *
 * @param experts       experts {@code E}
 * @param topK          experts per token {@code K}
 * @param scoreFunction softmax or sigmoid
 * @param expertGroups  groups {@code G} (1 = no grouping); {@code E % G == 0}
 * @param limitedGroups groups kept per token ({@code <= G}; equal to G = no limit)
 * @param groupScore    top-2 sum or max
 * @param routeNorm     divide the top-k weights by their sum (+1e-20)
 * @param routeScale    factor applied to the top-k weights
 * @param forceBalanced ignore the scores for selection and assign token {@code t}, slot {@code k}
 *                      to expert {@code (t·K + k) mod E} (perfectly even load; weights still come
 *                      from the scores)
 */
public record RouteParams(int experts, int topK, ScoreFunction scoreFunction, int expertGroups,
        int limitedGroups, GroupScore groupScore, boolean routeNorm, float routeScale, boolean forceBalanced) {

    /** Norm epsilon added to the sum of the top-k scores, as in torchtitan. */
    public static final float NORM_EPS = 1e-20f;

    /**
     * Validates the components.
     *
     * @param experts       routed experts
     * @param topK          experts chosen per token
     * @param scoreFunction softmax or sigmoid
     * @param expertGroups  expert groups (1 = none)
     * @param limitedGroups groups kept per token
     * @param groupScore    how a group is scored
     * @param routeNorm     divide the top-k weights by their sum
     * @param routeScale    multiply the top-k weights by this factor
     * @param forceBalanced round-robin selection instead of the scores
     * @throws IllegalArgumentException naming the invalid combination
     * @throws NullPointerException     if an enum component is null
     */
    public RouteParams {
        Objects.requireNonNull(scoreFunction, "scoreFunction");
        Objects.requireNonNull(groupScore, "groupScore");
        if (experts < 1 || topK < 1 || topK > experts) {
            throw new IllegalArgumentException("RouteParams: need 1 <= topK (" + topK + ") <= experts (" + experts + ")");
        }
        if (expertGroups < 1 || experts % expertGroups != 0 || limitedGroups < 1 || limitedGroups > expertGroups) {
            throw new IllegalArgumentException("RouteParams: expertGroups=" + expertGroups + ", limitedGroups="
                    + limitedGroups + " invalid for experts=" + experts);
        }
        if (expertGroups > 1 && experts / expertGroups < 2) {
            throw new IllegalArgumentException("RouteParams: node-limited routing needs >= 2 experts per group, got experts="
                    + experts + " in expertGroups=" + expertGroups);
        }
        if (limitedGroups * (experts / expertGroups) < topK) {
            throw new IllegalArgumentException("RouteParams: topK=" + topK + " exceeds the experts reachable in "
                    + limitedGroups + " group(s)");
        }
        if (!(routeScale > 0) || Float.isInfinite(routeScale)) {
            throw new IllegalArgumentException("RouteParams: routeScale=" + routeScale + " must be finite and > 0");
        }
    }

    /**
     * Returns the parameters of {@code config}.
     * @param config        the layer config
     * @param forceBalanced round-robin selection (see the record doc)
     * @return the parameters of {@code config}
     */
    public static RouteParams of(MoeConfig config, boolean forceBalanced) {
        return new RouteParams(config.experts(), config.topK(), config.scoreFunction(), config.expertGroups(),
                config.limitedGroups(), config.groupScore(), config.routeNorm(), (float) config.routeScale(),
                forceBalanced);
    }

    /**
     * Returns true when some groups are excluded per token.
     * @return true when some groups are excluded per token
     */
    public boolean groupLimited() {
        return expertGroups > 1 && limitedGroups < expertGroups;
    }

    /**
     * Returns experts per group.
     * @return experts per group
     */
    public int expertsPerGroup() {
        return experts / expertGroups;
    }
}
