package org.moe4j.optim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.moe4j.core.buffer.HostBuffer;

class AdamWTest {
    static final double TOL = 1e-6;

    @Test
    void stepsMatchTheTorchAdamWFormulaWithDecayOnMatricesOnly() {
        float[] w = {0.5f, -1.0f, 2.0f, 0.25f};
        float[] b = {0.1f, -0.2f};
        try (var wv = HostBuffer.ofFloats(w, 2, 2); var wg = HostBuffer.ofFloats(new float[4], 2, 2);
             var bv = HostBuffer.ofFloats(b, 2); var bg = HostBuffer.ofFloats(new float[2], 2);
             var opt = new AdamW(List.of(new Parameter("w", wv, wg), new Parameter("b", bv, bg)),
                     new AdamW.Options(0.1, 0.9, 0.99, 1e-8, 0.5))) {
            double[] p = {0.5, -1.0, 2.0, 0.25, 0.1, -0.2};
            double[] m = new double[6], v = new double[6];
            for (int step = 1; step <= 3; step++) {
                double[] g = new double[6];
                for (int i = 0; i < 6; i++) {
                    g[i] = 0.3 * (i + 1) * (step % 2 == 0 ? -1 : 1);
                }
                for (int i = 0; i < 4; i++) {
                    wg.setFloat(i, (float) g[i]);
                }
                bg.setFloat(0, (float) g[4]);
                bg.setFloat(1, (float) g[5]);
                opt.step();
                for (int i = 0; i < 6; i++) {
                    if (i < 4) {
                        p[i] *= 1 - 0.1 * 0.5;
                    }
                    m[i] = 0.9 * m[i] + 0.1 * g[i];
                    v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
                    double mh = m[i] / (1 - Math.pow(0.9, step));
                    double vh = v[i] / (1 - Math.pow(0.99, step));
                    p[i] -= 0.1 * mh / (Math.sqrt(vh) + 1e-8);
                }
            }
            for (int i = 0; i < 4; i++) {
                assertEquals(p[i], wv.getFloat(i), TOL * 10, "w[" + i + "]");
            }
            assertEquals(p[4], bv.getFloat(0), TOL * 10);
            assertEquals(p[5], bv.getFloat(1), TOL * 10);
            assertEquals(3, opt.steps());
            opt.zeroGrad();
            assertTrue(wg.getFloat(0) == 0f);
        }
    }

    @Test
    void badHyperParametersAreRefused() {
        var e = assertThrows(IllegalArgumentException.class, () -> new AdamW.Options(0.1, 1.0, 0.9, 1e-8, 0));
        assertTrue(e.getMessage().contains("beta1=1.0"), e.getMessage());
    }
}
