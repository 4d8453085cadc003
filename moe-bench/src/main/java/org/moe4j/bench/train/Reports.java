package org.moe4j.bench.train;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.HeatMapChart;
import org.knowm.xchart.HeatMapChartBuilder;
import org.moe4j.core.config.MoeConfig;

/** Writes the outputs of {@code moe train}: metrics.json, loss.png, expert_load.png. */
public final class Reports {
    private Reports() {
    }

    /**
     * Mean of a metric over the last {@code n} steps.
     *
     * @param steps metrics
     * @param n     window
     * @param f     metric
     * @return the mean
     */
    public static double tailMean(List<Trainer.Step> steps, int n, java.util.function.ToDoubleFunction<Trainer.Step> f) {
        List<Trainer.Step> tail = steps.subList(Math.max(0, steps.size() - n), steps.size());
        return tail.stream().mapToDouble(f).average().orElse(Double.NaN);
    }

    /**
     * The headline numbers of a run.
     *
     * @param firstLoss      loss of step 1
     * @param finalLoss      mean loss of the last {@code window} steps
     * @param window         how many final steps {@code finalLoss} and {@code finalImbalance} average
     * @param lastLoss       loss of the last step
     * @param finalImbalance mean load imbalance of the last {@code window} steps
     */
    public record Summary(double firstLoss, double finalLoss, int window, double lastLoss, double finalImbalance) {
        /**
         * Returns what {@link #finalLoss()} is, in words (e.g. "mean of the last 40 steps").
         * @return what {@link #finalLoss()} is, in words (e.g. "mean of the last 40 steps")
         */
        public String finalLossWhat() {
            return window == 1 ? "last step" : "mean of the last " + window + " steps";
        }
    }

    /**
     * Computes the summary of a run: the final loss and imbalance are means over the last tenth of
     * the steps (at least one step).
     *
     * @param steps per-step metrics, at least one
     * @return the summary
     * @throws IllegalArgumentException if there are no steps
     */
    public static Summary summary(List<Trainer.Step> steps) {
        if (steps.isEmpty()) {
            throw new IllegalArgumentException("no steps to summarise: a run needs at least one step");
        }
        int window = Math.max(1, steps.size() / 10);
        return new Summary(steps.get(0).loss(), tailMean(steps, window, Trainer.Step::loss), window,
                steps.get(steps.size() - 1).loss(), tailMean(steps, window, Trainer.Step::imbalance));
    }

    /**
     * Writes metrics.json, loss.png and expert_load.png.
     *
     * @param dir      output directory (exists)
     * @param preset   preset or config file name
     * @param cfg      the layer config
     * @param settings run settings
     * @param steps    per-step metrics, at least one
     * @param seconds  wall time of the run
     * @return the summary written into metrics.json
     * @throws IOException              on write errors
     * @throws IllegalArgumentException if there are no steps (nothing is written then)
     */
    public static Summary write(Path dir, String preset, MoeConfig cfg, Trainer.Settings settings,
                                List<Trainer.Step> steps, double seconds) throws IOException {
        Summary result = summary(steps);
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("preset", preset);
        root.put("config", cfg);
        root.put("steps", settings.steps());
        root.put("tokensPerRank", settings.tokensPerRank());
        root.put("ranks", cfg.expertParallel());
        root.put("lr", settings.lr());
        root.put("seed", settings.seed());
        root.put("seconds", seconds);
        Map<String, Object> summary = new LinkedHashMap<>();
        summary.put("firstLoss", result.firstLoss());
        summary.put("finalLoss", result.finalLoss());
        summary.put("finalLossIs", result.finalLossWhat());
        summary.put("lastLoss", result.lastLoss());
        summary.put("meanImbalanceLast10pct", result.finalImbalance());
        summary.put("meanTokensPerSecond", tailMean(steps, steps.size(), Trainer.Step::tokensPerSecond));
        summary.put("droppedTotal", steps.stream().mapToLong(Trainer.Step::dropped).sum());
        root.put("summary", summary);
        root.put("metrics", steps);
        new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(dir.resolve("metrics.json").toFile(), root);

        System.setProperty("java.awt.headless", "true");
        double[] xs = steps.stream().mapToDouble(Trainer.Step::step).toArray();
        LossPlot.write(dir.resolve("loss.png"), "moe train: student vs teacher", "loss (MSE / mean teacher\u00b2)",
                String.format("first loss %.4g, final loss %.4g (%s), last step %.4g", result.firstLoss(), result.finalLoss(),
                        result.finalLossWhat(), result.lastLoss()),
                xs, steps.stream().mapToDouble(Trainer.Step::loss).toArray());

        int experts = steps.get(0).load().length;
        int cols = Math.min(50, steps.size());
        int[] xIdx = new int[cols];
        int[] yIdx = new int[experts];
        double[][] heat = new double[cols][experts];
        for (int c = 0; c < cols; c++) {
            int from = c * steps.size() / cols;
            int to = (c + 1) * steps.size() / cols;
            xIdx[c] = steps.get(to - 1).step();
            for (int s = from; s < to; s++) {
                int[] l = steps.get(s).load();
                long sum = 0;
                for (int v : l) {
                    sum += v;
                }
                for (int e = 0; e < experts; e++) {
                    heat[c][e] += sum == 0 ? 0 : l[e] * (double) experts / sum / (to - from);
                }
            }
        }
        for (int e = 0; e < experts; e++) {
            yIdx[e] = e;
        }
        HeatMapChart hm = new HeatMapChartBuilder().width(1000).height(500)
                .title("expert load / mean load over steps (white = 1.0, balanced; clipped to [0, 2])").xAxisTitle("step").yAxisTitle("expert").build();
        hm.getStyler().setShowValue(false);
        hm.getStyler().setMin(0);
        hm.getStyler().setMax(2); // diverging scale centred on 1.0 = perfectly balanced
        hm.getStyler().setRangeColors(new java.awt.Color[] {new java.awt.Color(30, 60, 160), java.awt.Color.WHITE,
                new java.awt.Color(200, 30, 30)});
        List<String> xl = new java.util.ArrayList<>();
        List<String> yl = new java.util.ArrayList<>();
        int everyExpert = Math.max(1, (int) Math.ceil(experts * 16.0 / 400)); // rows of a 400 px plot, 16 px a label
        List<Number[]> cells = new java.util.ArrayList<>();
        for (int c = 0; c < cols; c++) {
            xl.add(labelled(c, cols, xIdx) ? String.valueOf(xIdx[c]) : " ".repeat(c + 1)); // unique blank category
            for (int e = 0; e < experts; e++) {
                cells.add(new Number[] {c, e, Math.min(2.0, heat[c][e])});
            }
        }
        for (int e = 0; e < experts; e++) {
            yl.add(e % everyExpert == 0 ? String.valueOf(yIdx[e]) : " ".repeat(e + 1));
        }
        hm.addSeries("load", xl, yl, cells);
        BitmapEncoder.saveBitmap(hm, dir.resolve("expert_load.png").toString(), BitmapEncoder.BitmapFormat.PNG);
        return result;
    }

    /** Heatmap columns are about 16 px wide: label every k-th column so that step numbers never touch. */
    static boolean labelled(int c, int cols, int[] stepOfColumn) {
        int widest = String.valueOf(stepOfColumn[cols - 1]).length() * 8 + LossPlot.LABEL_GAP;
        int every = Math.max(1, (int) Math.ceil(widest / (HEATMAP_PLOT_WIDTH / (double) cols)));
        return (cols - 1 - c) % every == 0;
    }

    /** Approximate width of the heatmap's plot area in pixels (1000 px image less axes and legend). */
    static final int HEATMAP_PLOT_WIDTH = 800;
}
