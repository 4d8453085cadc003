package org.moe4j.bench.train;

import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import org.moe4j.bench.cli.MoeCli;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.HfConfigImport;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.MoeConfigJson;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code moe train}: the CPU training demo.
 *
 * <p>Every option is validated before anything is written; a bad value is a one-line usage error
 * (exit status 2). The model's own routing and balancing recipe (expert-bias coefficient, aux losses)
 * is kept unless a flag overrides it, and the run header says where every value came from.
 */
@Command(name = "train", mixinStandardHelpOptions = true,
        description = {"Train an MoE layer on the CPU: a student layer learns to imitate a fixed random teacher MoE",
                "(whose routing is skewed), with W in-process expert-parallel ranks. Logs loss, tokens/s, load",
                "imbalance (max/mean tokens per expert), dropped tokens and the expert-bias range; writes",
                "metrics.json, loss.png and expert_load.png into the output directory.",
                "The model comes from one of --preset (default deepseek-v3-tiny), --config or --moe-config;",
                "its routing and balancing recipe is kept unless --bias-coeff / --no-bias override it."})
public final class TrainCommand implements Callable<Integer> {
    /** The preset used when no model option is given. */
    public static final String DEFAULT_PRESET = "deepseek-v3-tiny";
    /** Largest weight footprint (student + teacher, fp32 bytes per process) the demo accepts. */
    static final long MAX_WEIGHT_BYTES = 4L << 30;

    /** How progress is shown. */
    public enum Progress {
        /** a progress bar on a terminal, one line per interval otherwise */
        auto,
        /** a progress bar redrawn in place (carriage returns) */
        bar,
        /** one plain line per interval: no carriage returns, no padding, no escape codes */
        lines,
        /** the header and the summary only */
        none
    }

    @Spec
    CommandSpec spec;

    @Option(names = "--preset", paramLabel = "NAME",
            description = "a built-in model: ${COMPLETION-CANDIDATES} (default: " + DEFAULT_PRESET + ")",
            completionCandidates = PresetNames.class)
    String preset;

    @Option(names = "--config", paramLabel = "FILE",
            description = "a Hugging Face config.json to take the layer from (instead of --preset)")
    Path config;

    @Option(names = "--moe-config", paramLabel = "FILE",
            description = "a moe4j MoeConfig JSON file (docs/config.md; instead of --preset)")
    Path moeConfig;

    @Option(names = "--hidden", paramLabel = "N", description = "scale the model down: hidden size")
    Integer hidden;

    @Option(names = "--ffn", paramLabel = "N",
            description = "scale the model down: routed expert intermediate size (shared experts scale with it)")
    Integer ffn;

    @Option(names = "--experts", paramLabel = "N",
            description = "scale the model down: routed experts (expert groups are adjusted to stay valid)")
    Integer experts;

    @Option(names = "--ranks", paramLabel = "W", description = "expert-parallel in-process ranks (default: 4, "
            + "or the --moe-config file's expertParallel when above 1)")
    Integer ranks;

    @Option(names = "--steps", defaultValue = "400", description = "optimiser steps (default: ${DEFAULT-VALUE})")
    int steps;

    @Option(names = "--tokens", defaultValue = "256", description = "tokens per rank per step (default: ${DEFAULT-VALUE})")
    int tokens;

    @Option(names = "--lr", defaultValue = "3e-3", description = "AdamW learning rate (default: ${DEFAULT-VALUE})")
    double lr;

    @Option(names = "--bias-coeff", paramLabel = "C",
            description = "expert-bias update step (aux-loss-free balancing); default: the model's own")
    Double biasCoeff;

    @Option(names = "--no-bias", description = "disable the expert bias (no load balancing by bias)")
    boolean noBias;

    @Option(names = "--teacher-skew", defaultValue = "1.0",
            description = "how unevenly the teacher routes (fixed selection bias, in mean scores; default: ${DEFAULT-VALUE})")
    double teacherSkew;

    @Option(names = "--seed", defaultValue = "1", description = "seed of weights and data (default: ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--dispatch", defaultValue = "all-to-all",
            description = "dispatch strategy: all-to-all | all-gather | static-all-to-all, or any registered one"
                    + " (default: ${DEFAULT-VALUE}, or the --moe-config file's)")
    String dispatch;

    @Option(names = "--chunk-rows", defaultValue = "0",
            description = "static-all-to-all: rows per (source, destination) chunk (0 = not set; default: ${DEFAULT-VALUE})")
    int chunkRows;

    @Option(names = "--chunk-factor", defaultValue = "0",
            description = "static-all-to-all: chunk rows = ceil(factor * tokens * topK / ranks) (0 = not set; default: the"
                    + " exact worst case tokens * topK)")
    double chunkFactor;

    @Option(names = "--out", paramLabel = "DIR", description = "output directory (default: runs/<timestamp>)")
    Path out;

    @Option(names = "--progress", defaultValue = "auto",
            description = "${COMPLETION-CANDIDATES}: bar on a terminal, plain lines when redirected (default: ${DEFAULT-VALUE})")
    Progress progress;

    @Option(names = "--quiet", description = "no progress, header and summary only (same as --progress none)")
    boolean quiet;

    /** Creates the command (picocli instantiates it). */
    public TrainCommand() {
    }

    /** The names {@code --preset} accepts (for the usage text). */
    static final class PresetNames implements Iterable<String> {
        @Override
        public java.util.Iterator<String> iterator() {
            return presetNames().iterator();
        }
    }

    static List<String> presetNames() {
        List<String> names = new java.util.ArrayList<>(Presets.NAMES);
        names.addAll(HfConfigImport.PRESETS);
        return names;
    }

    /**
     * A validated run: the layer config, where each of its values came from, and the run settings.
     *
     * @param model    what the layer was taken from (preset name or file)
     * @param config   the layer config, expert parallelism included
     * @param settings the trainer settings
     * @param origin   for each header entry, where its value came from (e.g. {@code preset}, {@code --lr})
     * @param notes    adjustments made while scaling the model down
     */
    record Plan(String model, MoeConfig config, Trainer.Settings settings, Map<String, String> origin,
                List<String> notes) {
    }

    private MoeCli.UsageException usage(String message) {
        return new MoeCli.UsageException(spec.commandLine(), message);
    }

    private String given(String option, String otherwise) {
        return spec.commandLine().getParseResult() != null
                && spec.commandLine().getParseResult().hasMatchedOption(option) ? option : otherwise;
    }

    /**
     * Validates every option and resolves the layer config; changes nothing.
     *
     * @return the plan of the run
     * @throws MoeCli.UsageException naming the bad option and value
     */
    Plan plan() {
        int sources = (preset != null ? 1 : 0) + (config != null ? 1 : 0) + (moeConfig != null ? 1 : 0);
        if (sources > 1) {
            throw usage("--preset, --config and --moe-config each name the model; give only one");
        }
        if (steps < 1) {
            throw usage("--steps " + steps + ": must be >= 1");
        }
        if (tokens < 1 || tokens > (1 << 20)) {
            throw usage("--tokens " + tokens + ": must be in [1, 1048576]");
        }
        if (ranks != null && (ranks < 1 || ranks > 256)) {
            throw usage("--ranks " + ranks + ": must be in [1, 256]");
        }
        if (!(lr > 0) || Double.isInfinite(lr)) {
            throw usage("--lr " + lr + ": must be finite and > 0");
        }
        if (!(teacherSkew >= 0) || Double.isInfinite(teacherSkew)) {
            throw usage("--teacher-skew " + teacherSkew + ": must be finite and >= 0");
        }
        if (biasCoeff != null && (!(biasCoeff >= 0) || biasCoeff.isInfinite())) {
            throw usage("--bias-coeff " + biasCoeff + ": must be finite and >= 0");
        }
        if (biasCoeff != null && noBias) {
            throw usage("--bias-coeff and --no-bias contradict each other; give one");
        }
        for (var e : Map.of("--hidden", hidden == null ? 1 : hidden, "--ffn", ffn == null ? 1 : ffn,
                "--experts", experts == null ? 2 : experts).entrySet()) {
            if (e.getValue() < 1) {
                throw usage(e.getKey() + " " + e.getValue() + ": must be >= 1");
            }
        }
        if (experts != null && experts < 2) {
            throw usage("--experts " + experts + ": must be >= 2");
        }
        if (out != null && Files.exists(out) && !Files.isDirectory(out)) {
            throw usage("--out " + out + ": exists and is not a directory");
        }
        Map<String, String> origin = new LinkedHashMap<>();
        String model;
        String from;
        MoeConfig base;
        try {
            if (config != null) {
                readable("--config", config);
                base = HfConfigImport.read(config, b -> b.expertParallel(1));
                model = config.toString();
                from = "config.json";
            } else if (moeConfig != null) {
                readable("--moe-config", moeConfig);
                base = MoeConfigJson.read(moeConfig);
                model = moeConfig.toString();
                from = "--moe-config";
            } else {
                String name = preset != null ? preset : DEFAULT_PRESET;
                if (Presets.NAMES.contains(name)) {
                    base = Presets.of(name).build();
                } else if (HfConfigImport.PRESETS.contains(name)) {
                    base = HfConfigImport.builder(HfConfigImport.presetJson(name), name).build();
                } else {
                    throw usage("--preset " + name + ": unknown; choose one of " + presetNames());
                }
                model = name;
                from = preset != null ? "--preset" : "default preset";
            }
        } catch (IOException e) {
            throw usage((config != null ? "--config " + config : "--moe-config " + moeConfig) + ": cannot read: " + e);
        } catch (IllegalArgumentException e) {
            throw usage(oneLine(e.getMessage()));
        }
        List<String> notes = new java.util.ArrayList<>();
        MoeConfig.Builder b = ScaleDown.apply(base, hidden, ffn, experts, notes);
        origin.put("layer", from + (hidden != null || ffn != null || experts != null ? " scaled by "
                + String.join(" ", scaleFlags()) : ""));
        origin.put("routing", from + (notes.isEmpty() ? "" : " adjusted"));
        if (noBias) {
            b.expertBiasCoeff(0);
            origin.put("bias", "--no-bias");
        } else if (biasCoeff != null) {
            b.expertBiasCoeff(biasCoeff);
            origin.put("bias", "--bias-coeff");
        } else {
            origin.put("bias", from);
        }
        origin.put("aux", from);
        int w;
        if (ranks != null) {
            w = ranks;
            origin.put("ranks", "--ranks");
        } else if (moeConfig != null && base.expertParallel() > 1) {
            w = base.expertParallel();
            origin.put("ranks", "--moe-config");
        } else {
            w = 4;
            origin.put("ranks", "default");
        }
        boolean dispatchGiven = !given("--dispatch", "").isEmpty() || !given("--chunk-rows", "").isEmpty()
                || !given("--chunk-factor", "").isEmpty();
        if (moeConfig == null || dispatchGiven) {
            try {
                b.dispatch(new DispatchOptions(dispatch, false, false, chunkFactor, chunkRows));
            } catch (IllegalArgumentException e) {
                throw usage("--dispatch " + dispatch + " --chunk-rows " + chunkRows + " --chunk-factor " + chunkFactor
                        + ": " + oneLine(e.getMessage()));
            }
            origin.put("dispatch", dispatchGiven ? "--dispatch" : "default");
        } else {
            origin.put("dispatch", "--moe-config");
        }
        MoeConfig cfg;
        try {
            cfg = b.expertParallel(w).build();
        } catch (IllegalArgumentException e) {
            String m = oneLine(e.getMessage());
            throw usage(m.startsWith("MoeConfig.expertParallel=")
                    ? "--ranks " + w + ": cannot split the " + (experts != null ? experts : base.experts()) + " experts of " + model + " evenly over " + w
                    + " ranks (" + m + ")" : model + ": " + m);
        }
        try {
            org.moe4j.dispatch.Dispatchers.provider(cfg.dispatch().strategy()); // an unknown strategy fails here, by name
        } catch (IllegalArgumentException e) {
            throw usage("--dispatch " + cfg.dispatch().strategy() + ": " + oneLine(e.getMessage()));
        }
        long params = (long) cfg.experts() * 3 * cfg.hidden() * cfg.ffn()
                + (long) cfg.sharedExperts() * 3 * cfg.hidden() * cfg.sharedFfn() + (long) cfg.experts() * cfg.hidden();
        if (params * 2 * Float.BYTES > MAX_WEIGHT_BYTES) {
            throw usage(model + ": " + params + " parameters per layer (" + (params * 8 >> 20)
                    + " MiB for student and teacher) is too big for the CPU demo; scale it down with"
                    + " --hidden, --ffn and --experts");
        }
        for (String o : List.of("--steps", "--tokens", "--lr", "--seed", "--teacher-skew")) {
            origin.put(o, given(o, "default"));
        }
        Trainer.Settings s = new Trainer.Settings(cfg, steps, tokens, lr, seed, teacherSkew);
        return new Plan(model, cfg, s, origin, List.copyOf(notes));
    }

    private List<String> scaleFlags() {
        List<String> f = new java.util.ArrayList<>();
        if (hidden != null) {
            f.add("--hidden " + hidden);
        }
        if (ffn != null) {
            f.add("--ffn " + ffn);
        }
        if (experts != null) {
            f.add("--experts " + experts);
        }
        return f;
    }

    private void readable(String option, Path file) {
        if (!Files.isRegularFile(file)) {
            throw usage(option + " " + file + ": " + (Files.exists(file) ? "not a regular file" : "no such file"));
        }
        if (!Files.isReadable(file)) {
            throw usage(option + " " + file + ": not readable");
        }
    }

    private static String oneLine(String s) {
        return s == null ? "invalid" : s.replaceAll("\\R+", " ");
    }

    /**
     * The run header: the model, its layer and routing, the balancing recipe and the run settings,
     * each with where its value came from in brackets.
     *
     * @param p the plan
     * @return the header lines
     */
    static List<String> header(Plan p) {
        MoeConfig c = p.config();
        Map<String, String> o = p.origin();
        List<String> lines = new java.util.ArrayList<>();
        lines.add("moe train: " + p.model());
        lines.add(String.format("  layer    hidden %d, %d experts top-%d, ffn %d%s  [%s]", c.hidden(), c.experts(),
                c.topK(), c.ffn(), c.sharedExperts() > 0 ? ", " + c.sharedExperts() + " shared x ffn " + c.sharedFfn() : "",
                o.get("layer")));
        lines.add(String.format("  routing  %s scores%s%s%s  [%s]", c.scoreFunction().name().toLowerCase(java.util.Locale.ROOT),
                c.expertGroups() > 1 ? ", " + c.expertGroups() + " groups keep " + c.limitedGroups() : "",
                c.routeNorm() ? ", route norm" : "", c.routeScale() != 1.0 ? ", scale " + c.routeScale() : "",
                o.get("routing")));
        for (String n : p.notes()) {
            lines.add("           " + n);
        }
        AuxLoss a = c.auxLoss();
        lines.add(String.format("  balance  expert bias %s [%s]; aux losses %s [%s]",
                c.expertBiasCoeff() > 0 ? "coeff " + c.expertBiasCoeff() : "off", o.get("bias"),
                a.any() ? "switch " + a.switchCoeff() + ", seq " + a.seqCoeff() + ", z " + a.zCoeff() : "none",
                o.get("aux")));
        Trainer.Settings s = p.settings();
        lines.add(String.format("  run      %d ranks [%s] x %d tokens [%s], %d steps [%s], lr %s [%s], seed %d [%s],"
                        + " teacher skew %s [%s]", c.expertParallel(), o.get("ranks"), s.tokensPerRank(), o.get("--tokens"),
                s.steps(), o.get("--steps"), s.lr(), o.get("--lr"), s.seed(), o.get("--seed"), s.teacherSkew(),
                o.get("--teacher-skew")));
        DispatchOptions d = c.dispatch();
        lines.add(String.format("  dispatch %s%s [%s]", d.strategy(), d.chunkRows() > 0 ? ", chunk rows " + d.chunkRows()
                : d.chunkFactor() > 0 ? ", chunk factor " + d.chunkFactor() : "", o.get("dispatch")));
        return lines;
    }

    @Override
    public Integer call() throws IOException {
        Plan p = plan();
        org.moe4j.core.JvmRequirements.requireVectorApi("moe train's CPU kernels");
        PrintWriter w = spec.commandLine().getOut();
        Path dir = out != null ? out
                : Path.of("runs", LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
        Files.createDirectories(dir);
        header(p).forEach(w::println);
        w.flush();
        Progress mode = quiet ? Progress.none : progress == Progress.auto ? (terminal() ? Progress.bar : Progress.lines)
                : progress;
        int total = p.settings().steps();
        int logEvery = Math.max(1, total / 10);
        long t0 = System.nanoTime();
        List<Trainer.Step> metrics = Trainer.run(p.settings(), st -> {
            boolean log = st.step() % logEvery == 0 || st.step() == 1 || st.step() == total;
            switch (mode) {
                case bar -> {
                    if (log) {
                        w.print("\r" + line(st) + " ".repeat(20) + "\n");
                    }
                    w.print("\r" + bar(st, total));
                }
                case lines -> {
                    if (log) {
                        w.println(line(st));
                    }
                }
                case none, auto -> { }
                default -> throw new IllegalStateException("progress mode " + mode);
            }
            w.flush();
        });
        double secs = (System.nanoTime() - t0) / 1e9;
        Reports.Summary sum = Reports.write(dir, p.model(), p.config(), p.settings(), metrics, secs);
        if (mode == Progress.bar) {
            w.println();
        }
        w.printf("done in %.1f s: loss %.4f (step 1) -> %.4f (%s; last step %.4f), imbalance %.2f (mean of the same"
                        + " steps)%n", secs, sum.firstLoss(), sum.finalLoss(), sum.finalLossWhat(), sum.lastLoss(),
                sum.finalImbalance());
        w.println("outputs in " + dir.toAbsolutePath() + ": metrics.json, loss.png, expert_load.png");
        w.flush();
        return 0;
    }

    private static boolean terminal() {
        java.io.Console c = System.console();
        return c != null && c.isTerminal() && System.getenv("TERM") != null && !"dumb".equals(System.getenv("TERM"));
    }

    static String line(Trainer.Step st) {
        return String.format("step %4d  loss %.4f  %7.0f tok/s  imbalance %.2f  dropped %d  bias [%+.4f, %+.4f]",
                st.step(), st.loss(), st.tokensPerSecond(), st.imbalance(), st.dropped(), st.biasMin(), st.biasMax());
    }

    static String bar(Trainer.Step s, int total) {
        int width = 30;
        int done = (int) ((long) s.step() * width / total);
        return String.format("[%s%s] %4d/%d  loss %.4f  %7.0f tok/s", "#".repeat(done), ".".repeat(width - done),
                s.step(), total, s.loss(), s.tokensPerSecond());
    }
}
