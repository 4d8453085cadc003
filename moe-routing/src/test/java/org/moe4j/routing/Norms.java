package org.moe4j.routing;

/** Relative-norm comparisons, as DESIGN.md section 3 asks. */
final class Norms {
    private Norms() {
    }

    /** @return ‖a − b‖ / ‖b‖ (‖a − b‖ when b is zero) */
    static double relErr(float[] a, float[] b) {
        if (a.length != b.length) {
            throw new AssertionError("length " + a.length + " != " + b.length);
        }
        double d = 0;
        double n = 0;
        for (int i = 0; i < a.length; i++) {
            double x = (double) a[i] - b[i];
            d += x * x;
            n += (double) b[i] * b[i];
        }
        return n == 0 ? Math.sqrt(d) : Math.sqrt(d / n);
    }

    static double relErr(double a, double b) {
        return b == 0 ? Math.abs(a) : Math.abs(a - b) / Math.abs(b);
    }
}
