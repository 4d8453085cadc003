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
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.markers.SeriesMarkers;
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
     * @param dir      output directory (exists)
     * @param preset   preset or config file name
     * @param cfg      the layer config
     * @param settings run settings
     * @param steps    per-step metrics
     * @param seconds  wall time of the run
     * @throws IOException on write errors
     */
    public static void write(Path dir, String preset, MoeConfig cfg, Trainer.Settings settings, List<Trainer.Step> steps,
                             double seconds) throws IOException {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("preset", preset);
        root.put("config", cfg);
        root.put("steps", settings.steps());
        root.put("tokensPerRank", settings.tokensPerRank());
        root.put("ranks", cfg.expertParallel());
        root.put("lr", settings.lr());
        root.put("seed", settings.seed());
        root.put("seconds", seconds);
        int window = Math.max(1, steps.size() / 10);
        Map<String, Object> summary = new LinkedHashMap<>();
        summary.put("firstLoss", steps.get(0).loss());
        summary.put("finalLoss", tailMean(steps, window, Trainer.Step::loss));
        summary.put("meanImbalanceLast10pct", tailMean(steps, window, Trainer.Step::imbalance));
        summary.put("meanTokensPerSecond", tailMean(steps, steps.size(), Trainer.Step::tokensPerSecond));
        summary.put("droppedTotal", steps.stream().mapToLong(Trainer.Step::dropped).sum());
        root.put("summary", summary);
        root.put("metrics", steps);
        new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValue(dir.resolve("metrics.json").toFile(), root);

        System.setProperty("java.awt.headless", "true");
        double[] xs = steps.stream().mapToDouble(Trainer.Step::step).toArray();
        XYChart loss = new XYChartBuilder().width(800).height(500).title("moe train: student vs teacher")
                .xAxisTitle("step").yAxisTitle("loss (MSE / mean teacher²)").build();
        loss.getStyler().setYAxisLogarithmic(true);
        loss.addSeries("loss", xs, steps.stream().mapToDouble(Trainer.Step::loss).toArray()).setMarker(SeriesMarkers.NONE);
        BitmapEncoder.saveBitmap(loss, dir.resolve("loss.png").toString(), BitmapEncoder.BitmapFormat.PNG);

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
                .title("expert load over steps (1.0 = perfectly balanced)").xAxisTitle("step").yAxisTitle("expert").build();
        hm.getStyler().setShowValue(false);
        hm.getStyler().setMin(0);
        hm.getStyler().setMax(3);
        hm.getStyler().setRangeColors(new java.awt.Color[] {new java.awt.Color(30, 60, 160), java.awt.Color.WHITE,
                new java.awt.Color(200, 30, 30)});
        hm.getStyler().setXAxisLabelRotation(90);
        hm.getStyler().setXAxisTickMarkSpacingHint(60);
        List<Integer> xl = new java.util.ArrayList<>();
        List<Integer> yl = new java.util.ArrayList<>();
        List<Number[]> cells = new java.util.ArrayList<>();
        for (int c = 0; c < cols; c++) {
            xl.add(xIdx[c]);
            for (int e = 0; e < experts; e++) {
                cells.add(new Number[] {c, e, heat[c][e]});
            }
        }
        for (int e = 0; e < experts; e++) {
            yl.add(yIdx[e]);
        }
        hm.addSeries("load", xl, yl, cells);
        BitmapEncoder.saveBitmap(hm, dir.resolve("expert_load.png").toString(), BitmapEncoder.BitmapFormat.PNG);
    }
}
