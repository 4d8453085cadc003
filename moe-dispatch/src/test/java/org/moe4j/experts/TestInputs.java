package org.moe4j.experts;

import java.util.Random;

/** Random inputs shared by the expert tests: a seeded generator whose seed is printed, Gaussian arrays. */
final class TestInputs {
    private TestInputs() {
    }

    /** @return a generator seeded from the clock; the seed is printed so that a failure can be replayed */
    static Random seededRandom() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        return new Random(seed);
    }

    /** @return {@code n} standard-normal floats drawn from {@code r} */
    static float[] rand(Random r, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) {
            a[i] = (float) r.nextGaussian();
        }
        return a;
    }
}
