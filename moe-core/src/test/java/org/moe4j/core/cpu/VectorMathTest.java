package org.moe4j.core.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.junit.jupiter.api.Test;

/** {@link VectorMath#exp}: close to {@code Math.exp}, the same bits for every species and every call. */
class VectorMathTest {
    /** Largest error against the correctly rounded value, in ulps. */
    static final int MAX_ULPS = 2;
    /** Below this the result may flush to 0 (a true value under 2e-38, documented). */
    static final float ACCURATE_FROM = -86.5f;

    static float[] exp(VectorSpecies<Float> s, float[] in) {
        float[] out = new float[in.length];
        for (int i = 0; i < in.length; i += s.length()) {
            VectorMath.exp(FloatVector.fromArray(s, in, i)).intoArray(out, i);
        }
        return out;
    }

    @Test
    void expIsAccurateAndTheSameBitsForEverySpeciesAndCall() {
        long seed = System.nanoTime();
        Random r = new Random(seed);
        float[] in = new float[4096];
        for (int i = 0; i < in.length; i++) {
            in[i] = (float) (r.nextDouble() * 180 - 90);
        }
        in[0] = -87.5f;
        in[1] = 89f;
        in[2] = 0f;
        in[3] = Float.NaN;
        float[] want = exp(FloatVector.SPECIES_128, in);
        assertEquals(0f, want[0], "below -87: 0");
        assertEquals(Float.POSITIVE_INFINITY, want[1], "above 88.7: +Inf");
        assertEquals(1f, want[2]);
        assertTrue(Float.isNaN(want[3]), "NaN stays NaN");
        for (int i = 4; i < in.length; i++) {
            float exact = (float) Math.exp(in[i]);
            if (in[i] > ACCURATE_FROM && in[i] < 88.7f) { // the documented range
                assertTrue(Math.abs(want[i] - exact) <= MAX_ULPS * Math.ulp(exact),
                        "exp(" + in[i] + ") = " + want[i] + ", Math.exp " + exact + " (seed " + seed + ")");
            }
        }
        for (VectorSpecies<Float> s : java.util.List.of(FloatVector.SPECIES_64, FloatVector.SPECIES_256,
                FloatVector.SPECIES_512, FloatVector.SPECIES_PREFERRED)) {
            for (int call = 0; call < 20; call++) { // interpreted first, compiled later
                float[] got = exp(s, in);
                for (int i = 0; i < in.length; i++) {
                    assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]),
                            s + " call " + call + " exp(" + in[i] + ") (seed " + seed + ")");
                }
            }
        }
    }
}
