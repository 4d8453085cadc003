package org.moe4j.bench.train;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.moe4j.core.config.HfConfigImport;
import org.moe4j.core.config.MoeConfig;

/**
 * Demo layer configs derived from the published {@code config.json} of real models
 * ({@link HfConfigImport#PRESETS}) by one scaling rule, {@link #shrink(MoeConfig)}, that keeps each
 * model's routing recipe and routing shape. Preset {@code <model>-tiny} is model {@code <model>} shrunk.
 */
public final class Presets {
    /** Width of every demo layer. */
    public static final int HIDDEN = 64;
    /** Intermediate size of one routed expert in every demo layer. */
    public static final int FFN = 32;
    /** Routed experts a demo layer aims for (fewer when the model has fewer). */
    public static final int TARGET_EXPERTS = 32;
    /** Older demo names, kept as aliases. */
    public static final Map<String, String> ALIASES = Map.of("qwen3-moe-tiny", "qwen3-30b-a3b-tiny",
            "mixtral-tiny", "mixtral-8x7b-tiny");
    /** Preset names accepted by {@code moe train --preset}: every bundled model plus {@code -tiny}. */
    public static final List<String> NAMES;

    static {
        List<String> names = new ArrayList<>();
        for (String p : HfConfigImport.PRESETS) {
            names.add(p + "-tiny");
        }
        names.addAll(List.of("qwen3-moe-tiny", "mixtral-tiny")); // ALIASES, for older scripts
        NAMES = Collections.unmodifiableList(names);
    }

    private Presets() {
    }

    /**
     * Returns a bundled model shrunk by {@link #shrink(MoeConfig)}.
     *
     * @param name one of {@link #NAMES} (or an alias in {@link #ALIASES})
     * @return a builder with the shrunk model (expert parallelism and bias coefficient are set by the caller)
     * @throws IllegalArgumentException for an unknown name, listing the known ones
     */
    public static MoeConfig.Builder of(String name) {
        Objects.requireNonNull(name, "name");
        String n = ALIASES.getOrDefault(name, name);
        if (!NAMES.contains(n) || ALIASES.containsKey(n)) {
            throw new IllegalArgumentException("unknown preset '" + name + "'; choose one of " + String.join(", ", NAMES));
        }
        return shrink(HfConfigImport.preset(n.substring(0, n.length() - "-tiny".length()))).toBuilder();
    }

    /**
     * The scaling rule: {@code hidden} = {@value #HIDDEN}, routed {@code ffn} = {@value #FFN}, each shared
     * expert's intermediate size scaled by the same factor as the routed one (at least 8); the expert
     * groups {@code G}, limited groups and {@code topK} are kept, and the experts become
     * {@code min(E, G · max(2, ceil(}{@value #TARGET_EXPERTS}{@code / G)))} — a multiple of {@code G} with at
     * least 2 experts per group — doubled while {@code topK} exceeds the experts reachable in the limited
     * groups. Score function, group score, norm, scale, bias, aux losses, capacity and
     * {@link MoeConfig#features()} are unchanged; so is the expert-parallel size (the caller sets it).
     *
     * @param model a model's config
     * @return the demo-sized config with the same routing recipe and routing shape
     * @throws IllegalArgumentException if the shrunk config is invalid (cannot happen for a valid model with
     *                                  {@code expertParallel = 1})
     */
    public static MoeConfig shrink(MoeConfig model) {
        Objects.requireNonNull(model, "model");
        int g = model.expertGroups();
        int experts = Math.min(model.experts(), g * Math.max(2, (TARGET_EXPERTS + g - 1) / g));
        while (experts < model.experts() && model.topK() > model.limitedGroups() * (experts / g)) {
            experts = Math.min(model.experts(), experts * 2);
        }
        int sharedFfn = model.sharedExperts() == 0 ? 0
                : Math.max(8, (int) Math.round((double) model.sharedFfn() * FFN / model.ffn()));
        return model.toBuilder().hidden(HIDDEN).ffn(FFN).experts(experts)
                .sharedExperts(model.sharedExperts(), sharedFfn).expertParallel(1).build();
    }
}
