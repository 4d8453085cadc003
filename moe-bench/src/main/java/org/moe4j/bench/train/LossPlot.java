package org.moe4j.bench.train;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.FontMetrics;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.AffineTransform;
import java.awt.geom.Path2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.ToIntFunction;
import javax.imageio.ImageIO;

/**
 * A line plot of a metric over steps, drawn with Java2D so that its axes are always readable: the y
 * axis is linear with 1-2-5 ticks, or logarithmic with ticks labelled at 1, 2 and 5 times a power of
 * ten when the values span a decade or more; the x axis gets as many round step numbers as fit
 * without two labels touching, at any step count.
 */
public final class LossPlot {
    /** Image width in pixels. */
    public static final int WIDTH = 800;
    /** Image height in pixels. */
    public static final int HEIGHT = 500;
    private static final int LEFT = 80;
    private static final int RIGHT = 24;
    private static final int TOP = 44;
    private static final int BOTTOM = 64;
    /** Minimum free space between two x labels, in pixels. */
    static final int LABEL_GAP = 12;

    /**
     * The ticks of one axis.
     *
     * @param log    whether the axis is logarithmic
     * @param min    lower end of the axis
     * @param max    upper end of the axis
     * @param values tick positions in data units, ascending, inside {@code [min, max]}
     * @param labels the label of each tick
     */
    public record Axis(boolean log, double min, double max, double[] values, String[] labels) {
    }

    private LossPlot() {
    }

    /**
     * Chooses the y axis for values in {@code [lo, hi]}: logarithmic with 1-2-5 labels when
     * {@code lo > 0} and {@code hi / lo >= 10}, linear with round ticks otherwise.
     *
     * @param lo smallest finite value
     * @param hi largest finite value
     * @return the axis, with at least two labelled ticks
     * @throws IllegalArgumentException if a bound is not finite or {@code lo > hi}
     */
    public static Axis yAxis(double lo, double hi) {
        if (!Double.isFinite(lo) || !Double.isFinite(hi) || lo > hi) {
            throw new IllegalArgumentException("axis range [" + lo + ", " + hi + "] must be finite and ordered");
        }
        if (lo > 0 && hi / lo >= 10) {
            return logAxis(lo, hi);
        }
        return linearAxis(lo, hi, 8);
    }

    /**
     * A linear axis over {@code [lo, hi]} widened to round ends, with at most {@code maxTicks} ticks
     * spaced 1, 2 or 5 times a power of ten.
     *
     * @param lo       lower end of the data
     * @param hi       upper end of the data
     * @param maxTicks most ticks wanted (at least 2)
     * @return the axis
     * @throws IllegalArgumentException if a bound is not finite, {@code lo > hi} or {@code maxTicks < 2}
     */
    public static Axis linearAxis(double lo, double hi, int maxTicks) {
        if (!Double.isFinite(lo) || !Double.isFinite(hi) || lo > hi || maxTicks < 2) {
            throw new IllegalArgumentException("linear axis [" + lo + ", " + hi + "] with " + maxTicks + " ticks");
        }
        if (hi - lo < Math.max(Math.abs(hi), 1e-300) * 1e-9) {
            double pad = lo == 0 ? 1 : Math.abs(lo) * 0.1;
            lo -= pad;
            hi += pad;
        }
        BigDecimal step = niceStep((hi - lo) / (maxTicks - 1));
        long first = (long) Math.floor(lo / step.doubleValue());
        long last = (long) Math.ceil(hi / step.doubleValue());
        while (last - first + 1 > maxTicks) {
            step = niceStep(step.doubleValue() * 1.01);
            first = (long) Math.floor(lo / step.doubleValue());
            last = (long) Math.ceil(hi / step.doubleValue());
        }
        int n = (int) (last - first + 1);
        double[] v = new double[n];
        String[] l = new String[n];
        for (int i = 0; i < n; i++) {
            BigDecimal d = step.multiply(BigDecimal.valueOf(first + i));
            v[i] = d.doubleValue();
            l[i] = format(d);
        }
        return new Axis(false, v[0], v[n - 1], v, l);
    }

    private static Axis logAxis(double lo, double hi) {
        int d0 = (int) Math.floor(Math.log10(lo) + 1e-12);
        int d1 = (int) Math.ceil(Math.log10(hi) - 1e-12);
        int decades = d1 - d0;
        int[] mantissas = decades <= 4 ? new int[] {1, 2, 5} : new int[] {1};
        int every = Math.max(1, (decades + 7) / 8);
        List<BigDecimal> ticks = new ArrayList<>();
        for (int d = d0; d <= d1; d++) {
            if ((d - d0) % every != 0) {
                continue;
            }
            for (int m : mantissas) {
                BigDecimal t = BigDecimal.valueOf(m).scaleByPowerOfTen(d);
                if (t.doubleValue() >= lo * (1 - 1e-12) && t.doubleValue() <= hi * (1 + 1e-12)) {
                    ticks.add(t);
                }
            }
        }
        if (ticks.size() < 2) { // cannot happen for hi / lo >= 10; a linear axis is still labelled
            return linearAxis(lo, hi, 8);
        }
        double[] v = new double[ticks.size()];
        String[] l = new String[ticks.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = ticks.get(i).doubleValue();
            l[i] = format(ticks.get(i));
        }
        return new Axis(true, lo / 1.05, hi * 1.05, v, l);
    }

    /**
     * Round step numbers for an x axis from {@code first} to {@code last}, as many as fit in
     * {@code pixels} without two labels closer than {@value #LABEL_GAP} pixels.
     *
     * @param first      first step
     * @param last       last step ({@code >= first})
     * @param pixels     width of the axis in pixels
     * @param labelWidth width in pixels of a label text
     * @return the axis; its labels never overlap
     * @throws IllegalArgumentException if {@code last < first} or {@code pixels < 1}
     */
    public static Axis xAxis(long first, long last, int pixels, ToIntFunction<String> labelWidth) {
        if (last < first || pixels < 1) {
            throw new IllegalArgumentException("x axis [" + first + ", " + last + "] over " + pixels + " pixels");
        }
        for (int maxTicks = Math.max(2, pixels / 30); ; maxTicks--) {
            Axis a = linearAxis(first, Math.max(last, first + 1), Math.max(2, maxTicks));
            if (a.values.length <= 2 || fits(a, pixels, labelWidth)) {
                return a;
            }
        }
    }

    private static boolean fits(Axis a, int pixels, ToIntFunction<String> labelWidth) {
        double scale = pixels / (a.max - a.min);
        for (int i = 1; i < a.values.length; i++) {
            double gap = (a.values[i] - a.values[i - 1]) * scale;
            double need = (labelWidth.applyAsInt(a.labels[i - 1]) + labelWidth.applyAsInt(a.labels[i])) / 2.0;
            if (gap < need + LABEL_GAP) {
                return false;
            }
        }
        return true;
    }

    /** The smallest of 1, 2, 5 times a power of ten that is at least {@code raw}, exactly. */
    private static BigDecimal niceStep(double raw) {
        int k = (int) Math.floor(Math.log10(raw));
        for (int m : new int[] {1, 2, 5, 10}) {
            BigDecimal c = BigDecimal.valueOf(m).scaleByPowerOfTen(k);
            if (c.doubleValue() >= raw * (1 - 1e-9)) {
                return c;
            }
        }
        return BigDecimal.TEN.scaleByPowerOfTen(k);
    }

    private static String format(BigDecimal d) {
        BigDecimal s = d.stripTrailingZeros();
        double a = Math.abs(d.doubleValue());
        if (a != 0 && (a < 1e-4 || a >= 1e7)) {
            BigDecimal m = s.movePointLeft(s.precision() - s.scale() - 1);
            return m.toPlainString() + "e" + (s.precision() - s.scale() - 1);
        }
        return s.scale() <= 0 ? s.toBigInteger().toString() : s.toPlainString();
    }

    /**
     * Draws the plot into a PNG file.
     *
     * @param file    the PNG file to write
     * @param title   title line
     * @param yTitle  y axis title
     * @param caption a line under the plot (e.g. what the final value is), or empty
     * @param steps   x values (steps), ascending
     * @param values  y values; non-finite ones are skipped
     * @throws IOException              on write errors
     * @throws IllegalArgumentException if the arrays are empty, of different lengths, or hold no finite value
     */
    public static void write(Path file, String title, String yTitle, String caption, double[] steps, double[] values)
            throws IOException {
        if (steps.length == 0 || steps.length != values.length) {
            throw new IllegalArgumentException("plot needs as many steps as values, at least one: " + steps.length
                    + " steps, " + values.length + " values");
        }
        double lo = Double.POSITIVE_INFINITY;
        double hi = Double.NEGATIVE_INFINITY;
        for (double v : values) {
            if (Double.isFinite(v)) {
                lo = Math.min(lo, v);
                hi = Math.max(hi, v);
            }
        }
        if (lo > hi) {
            throw new IllegalArgumentException("plot '" + title + "': no finite value among " + values.length);
        }
        BufferedImage img = new BufferedImage(WIDTH, HEIGHT, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        try {
            g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
            g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
            g.setColor(Color.WHITE);
            g.fillRect(0, 0, WIDTH, HEIGHT);
            Font font = new Font(Font.SANS_SERIF, Font.PLAIN, 12);
            g.setFont(font);
            FontMetrics fm = g.getFontMetrics();
            int pw = WIDTH - LEFT - RIGHT;
            int ph = HEIGHT - TOP - BOTTOM;
            Axis y = yAxis(lo, hi);
            Axis x = xAxis((long) Math.floor(steps[0]), (long) Math.ceil(steps[steps.length - 1]), pw, fm::stringWidth);
            java.util.function.DoubleUnaryOperator sy = v -> TOP + ph - ph * (y.log
                    ? (Math.log10(v) - Math.log10(y.min)) / (Math.log10(y.max) - Math.log10(y.min))
                    : (v - y.min) / (y.max - y.min));
            java.util.function.DoubleUnaryOperator sx = v -> LEFT + pw * (v - x.min) / (x.max - x.min);
            g.setStroke(new BasicStroke(1f));
            for (int i = 0; i < y.values.length; i++) {
                int py = (int) Math.round(sy.applyAsDouble(y.values[i]));
                g.setColor(new Color(225, 225, 225));
                g.drawLine(LEFT, py, LEFT + pw, py);
                g.setColor(Color.DARK_GRAY);
                g.drawLine(LEFT - 4, py, LEFT, py);
                g.drawString(y.labels[i], LEFT - 7 - fm.stringWidth(y.labels[i]), py + fm.getAscent() / 2 - 1);
            }
            for (int i = 0; i < x.values.length; i++) {
                int px = (int) Math.round(sx.applyAsDouble(x.values[i]));
                g.setColor(new Color(235, 235, 235));
                g.drawLine(px, TOP, px, TOP + ph);
                g.setColor(Color.DARK_GRAY);
                g.drawLine(px, TOP + ph, px, TOP + ph + 4);
                g.drawString(x.labels[i], px - fm.stringWidth(x.labels[i]) / 2, TOP + ph + 6 + fm.getAscent());
            }
            g.setColor(Color.DARK_GRAY);
            g.drawRect(LEFT, TOP, pw, ph);
            Path2D.Double line = new Path2D.Double();
            boolean pen = false;
            for (int i = 0; i < steps.length; i++) {
                if (!Double.isFinite(values[i]) || (y.log && values[i] <= 0)) {
                    pen = false;
                    continue;
                }
                double px = sx.applyAsDouble(steps[i]);
                double py = sy.applyAsDouble(values[i]);
                if (pen) {
                    line.lineTo(px, py);
                } else {
                    line.moveTo(px, py);
                    pen = true;
                }
            }
            g.setColor(new Color(31, 90, 200));
            g.setStroke(new BasicStroke(1.6f));
            g.draw(line);
            g.setColor(Color.BLACK);
            g.setFont(font.deriveFont(Font.BOLD, 14f));
            g.drawString(title, LEFT, TOP - 16);
            g.setFont(font);
            g.drawString("step", LEFT + pw / 2 - fm.stringWidth("step") / 2, TOP + ph + 12 + 2 * fm.getAscent());
            if (!caption.isEmpty()) {
                g.drawString(caption, LEFT, HEIGHT - 8);
            }
            String yt = yTitle + (y.log ? " (log scale)" : "");
            AffineTransform saved = g.getTransform();
            g.rotate(-Math.PI / 2);
            g.drawString(yt, -(TOP + ph / 2 + fm.stringWidth(yt) / 2), 16 + fm.getAscent() / 2);
            g.setTransform(saved);
        } finally {
            g.dispose();
        }
        if (!ImageIO.write(img, "png", file.toFile())) {
            throw new IOException("no PNG writer for " + file);
        }
    }
}
