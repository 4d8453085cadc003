package org.moe4j.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.LocalGroup;

/** step(Communicator): a non-finite gradient on one rank makes every rank skip, so replicas stay equal. */
class AdamWCollectiveSkipTest {

    private record Outcome(AdamW.StepReport first, AdamW.StepReport second, float[] gate, long skipped) {
    }

    @Test
    void nanInOneRanksExpertGradientSkipsTheStepOnEveryRank() {
        List<Outcome> out = LocalGroup.run(2, Duration.ofSeconds(30), comm -> {
            try (HostBuffer gate = HostBuffer.ofFloats(new float[] {1, 2, 3, 4}, 2, 2);
                 HostBuffer gateGrad = HostBuffer.ofFloats(new float[] {0.5f, -0.5f, 0.25f, 1}, 2, 2);
                 HostBuffer expert = HostBuffer.ofFloats(new float[] {1, 1}, 2);
                 HostBuffer expertGrad = HostBuffer.ofFloats(new float[] {0.1f, 0.2f}, 2);
                 AdamW opt = new AdamW(List.of(new Parameter("gate", gate, gateGrad),
                         new Parameter("expert", expert, expertGrad)), AdamW.Options.defaults(0.1))) {
                if (comm.rank() == 1) {
                    expertGrad.setFloat(1, Float.NaN); // rank-local: expert grads are not all-reduced
                }
                AdamW.StepReport first = opt.step(comm);
                expertGrad.setFloat(1, 0.2f);
                AdamW.StepReport second = opt.step(comm);
                return new Outcome(first, second, gate.toFloatArray(), opt.skippedSteps());
            }
        });
        for (int r = 0; r < 2; r++) {
            AdamW.StepReport first = out.get(r).first();
            assertFalse(first.applied(), "rank " + r + " must skip");
            assertEquals(1, first.nonFiniteRanks(), "rank " + r);
            assertEquals(0, first.step(), "rank " + r);
            assertTrue(out.get(r).second().applied(), "rank " + r);
            assertEquals(1, out.get(r).skipped(), "rank " + r);
        }
        assertNull(out.get(0).first().nonFiniteParameter());
        assertEquals("expert", out.get(1).first().nonFiniteParameter());
        assertEquals(1, out.get(1).first().nonFiniteIndex());
        assertArrayEquals(out.get(0).gate(), out.get(1).gate(), "replicated weights must stay identical");
    }

    @Test
    void aClosedOptimiserOnOneRankFailsEveryRankWithoutHangingOrUpdating() {
        List<float[]> out = LocalGroup.run(2, Duration.ofSeconds(30), comm -> {
            try (HostBuffer w = HostBuffer.ofFloats(new float[] {1, 2}, 2);
                 HostBuffer g = HostBuffer.ofFloats(new float[] {0.5f, 0.5f}, 2)) {
                AdamW opt = new AdamW(List.of(new Parameter("w", w, g)), AdamW.Options.defaults(0.1));
                if (comm.rank() == 0) {
                    opt.close();
                }
                IllegalStateException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                        () -> opt.step(comm));
                assertTrue(e.getMessage().startsWith("AdamW.step: "), e.getMessage());
                opt.close();
                return w.toFloatArray();
            }
        });
        assertArrayEquals(new float[] {1, 2}, out.get(1), "no rank may update");
    }
}
