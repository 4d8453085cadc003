package org.moe4j.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

class MinimalTrainingTest {
    @Test
    void readmeExampleTrainsAndTheLossFalls() {
        List<double[]> losses = MinimalTraining.train(60, 32);
        assertEquals(4, losses.size());
        for (int r = 0; r < losses.size(); r++) {
            double[] l = losses.get(r);
            assertTrue(Double.isFinite(l[l.length - 1]), "rank " + r + " loss not finite");
            assertTrue(l[l.length - 1] < 0.5 * l[0], "rank " + r + ": loss " + l[0] + " -> " + l[l.length - 1]);
        }
    }
}
