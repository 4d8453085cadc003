package org.moe4j.bench.train;

import java.util.List;
import org.moe4j.core.config.MoeConfig;

/**
 * Shrinks a real model's MoE layer for the CPU demo while keeping its routing recipe and a valid
 * routing shape: new hidden size, routed-expert intermediate size (shared experts scale by the same
 * ratio) and routed expert count. When the expert count changes, node-limited routing keeps as many
 * groups as still divide the experts with at least two experts each, and keeps enough groups per
 * token to reach top-k experts.
 */
public final class ScaleDown {
    private ScaleDown() {
    }

    /**
     * Returns a builder with the scaled layer (validated when built).
     * @param base    the model's validated config
     * @param hidden  new hidden size, or null to keep it
     * @param ffn     new routed-expert intermediate size, or null to keep it
     * @param experts new routed expert count, or null to keep it
     * @param notes   receives one line per adjustment made to keep the routing valid
     * @return a builder with the scaled layer (validated when built)
     * @throws IllegalArgumentException if a size is below 1, experts below 2 or below the model's top-k
     */
    public static MoeConfig.Builder apply(MoeConfig base, Integer hidden, Integer ffn, Integer experts,
                                          List<String> notes) {
        if (hidden != null && hidden < 1) {
            throw new IllegalArgumentException("hidden " + hidden + ": must be >= 1");
        }
        if (ffn != null && ffn < 1) {
            throw new IllegalArgumentException("ffn " + ffn + ": must be >= 1");
        }
        if (experts != null && (experts < 2 || experts < base.topK())) {
            throw new IllegalArgumentException("experts " + experts + ": must be >= 2 and >= the model's top-k ("
                    + base.topK() + ")");
        }
        MoeConfig.Builder b = base.toBuilder();
        if (hidden != null) {
            b.hidden(hidden);
        }
        if (ffn != null) {
            b.ffn(ffn);
            if (base.sharedExperts() > 0) {
                int shared = (int) Math.max(1, Math.round((double) base.sharedFfn() * ffn / base.ffn()));
                b.sharedExperts(base.sharedExperts(), shared);
            }
        }
        if (experts != null && experts != base.experts()) {
            b.experts(experts);
            int g = base.expertGroups();
            if (g > 1) {
                int groups = 1;
                for (int d = Math.min(g, experts / 2); d >= 2; d--) {
                    if (experts % d == 0) {
                        groups = d;
                        break;
                    }
                }
                int kept = Math.min(base.limitedGroups(), groups);
                int perGroup = experts / groups;
                while (kept < groups && kept * perGroup < base.topK()) {
                    kept++;
                }
                if (groups != g || kept != base.limitedGroups()) {
                    notes.add("expert groups " + g + " keep " + base.limitedGroups() + " -> " + groups + " keep " + kept
                            + " for " + experts + " experts");
                }
                b.groups(groups, kept);
            }
        }
        return b;
    }
}
