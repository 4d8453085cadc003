package org.moe4j.bench.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.SplittableRandom;
import java.util.function.ToIntFunction;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The loss plot's axes are labelled at any scale and its x labels never touch. */
class LossPlotTest {
    /** A generous label width: 8 px per character. */
    private static final ToIntFunction<String> WIDTH = s -> 8 * s.length();

    @Test
    void yAxisHasAtLeastTwoDistinctLabelsInsideTheDataAtAnyScale() {
        long seed = System.nanoTime();
        SplittableRandom rnd = new SplittableRandom(seed);
        for (int i = 0; i < 5000; i++) {
            double lo = Math.pow(10, rnd.nextDouble(-9, 6));
            double hi = lo * Math.pow(10, rnd.nextDouble(0, 12));
            if (rnd.nextInt(4) == 0) {
                lo = -lo;
            }
            LossPlot.Axis a = LossPlot.yAxis(lo, hi);
            String what = "seed " + seed + " range [" + lo + ", " + hi + "] -> " + java.util.Arrays.toString(a.labels());
            assertTrue(a.values().length >= 2 && a.values().length <= 16, what);
            assertEquals(a.values().length, new HashSet<>(java.util.Arrays.asList(a.labels())).size(), what);
            for (int t = 0; t < a.values().length; t++) {
                assertTrue(a.values()[t] >= a.min() && a.values()[t] <= a.max(), what);
                assertTrue(t == 0 || a.values()[t] > a.values()[t - 1], what);
                assertEquals(a.values()[t], Double.parseDouble(a.labels()[t]), Math.abs(a.values()[t]) * 1e-9, what);
                assertTrue(a.labels()[t].length() <= 10, "short labels: " + what);
            }
            if (a.log()) {
                for (String l : a.labels()) {
                    char lead = l.replace("0", "").replace(".", "").charAt(0);
                    assertTrue(lead == '1' || lead == '2' || lead == '5', "1-2-5 labels: " + what);
                }
            }
        }
    }

    @Test
    void logScaleIsUsedFromOneDecadeUp() {
        assertTrue(LossPlot.yAxis(0.02, 2.0).log());
        assertTrue(!LossPlot.yAxis(0.3, 0.5).log(), "within a decade the axis is linear (log would have no labels)");
        assertTrue(!LossPlot.yAxis(0, 5).log(), "zero cannot be on a log axis");
        assertTrue(!LossPlot.yAxis(1, 1).log(), "a constant still gets an axis");
    }

    @Test
    void xLabelsNeverOverlapAtAnyStepCount() {
        for (long last : new long[] {1, 2, 3, 7, 10, 99, 100, 101, 400, 999, 12_345, 100_000, 7_654_321, 2_000_000_000L}) {
            LossPlot.Axis a = LossPlot.xAxis(1, last, 696, WIDTH);
            double scale = 696 / (a.max() - a.min());
            assertTrue(a.values().length >= 2, "last " + last);
            for (int i = 1; i < a.values().length; i++) {
                double gap = (a.values()[i] - a.values()[i - 1]) * scale;
                double need = (WIDTH.applyAsInt(a.labels()[i]) + WIDTH.applyAsInt(a.labels()[i - 1])) / 2.0;
                assertTrue(gap >= need, "last " + last + ": labels " + a.labels()[i - 1] + " and " + a.labels()[i]
                        + " touch");
            }
        }
    }

    @Test
    void writesAPngAndRefusesNoData(@TempDir Path dir) throws Exception {
        double[] x = new double[400];
        double[] y = new double[400];
        for (int i = 0; i < x.length; i++) {
            x[i] = i + 1;
            y[i] = 2.0 * Math.exp(-i / 80.0) + 0.3;
        }
        y[17] = Double.NaN;
        Path f = dir.resolve("loss.png");
        LossPlot.write(f, "t", "loss", "final", x, y);
        assertTrue(Files.size(f) > 1000);
        assertEquals(LossPlot.WIDTH, javax.imageio.ImageIO.read(f.toFile()).getWidth());
        assertThrows(IllegalArgumentException.class, () -> LossPlot.write(dir.resolve("e.png"), "t", "y", "", new double[0],
                new double[0]));
        assertThrows(IllegalArgumentException.class, () -> LossPlot.write(dir.resolve("n.png"), "t", "y", "",
                new double[] {1}, new double[] {Double.NaN}));
        assertTrue(!Files.exists(dir.resolve("e.png")) && !Files.exists(dir.resolve("n.png")), "nothing written on refusal");
    }

    @Test
    void reportsRefuseARunWithoutSteps() {
        assertThrows(IllegalArgumentException.class, () -> Reports.summary(java.util.List.of()));
    }
}
