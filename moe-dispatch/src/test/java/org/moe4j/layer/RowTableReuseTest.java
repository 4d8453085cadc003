package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.dispatch.LocalGroup;

/**
 * The {@code [0, tokens]} table of the router-bias kernels is made once per token count and kept by
 * the layer (so a step after warm-up uploads nothing for it): it outlives the caller's step scopes,
 * a layer that has seen more token counts than it keeps gives the same step, and a repeated token
 * count allocates it only on its first step.
 */
class RowTableReuseTest {
    private static final long SEED = 4242;
    private static final int TOKENS = 6;
    /** More distinct token counts than the layer keeps tables for (8), so the kept tables are replaced. */
    private static final int OTHER_COUNTS = 10;
    /** Allocations counted for making one table: the host table and its upload. */
    private static final long TABLE_ALLOCATIONS = 2;

    static MoeConfig config() {
        return MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(12).routerBias(true).build();
    }

    /** y then dX of one forward and backward at {@code tokens}, inside a step scope the caller closes. */
    static float[][] step(MoeLayer layer, int tokens, int draw) {
        int h = layer.config().hidden();
        try (BufferScope _ = layer.newScope();
             HostBuffer x = HostBuffer.ofFloats(ExactResumeTest.data(SEED, draw, tokens * h), tokens, h);
             HostBuffer dy = HostBuffer.ofFloats(ExactResumeTest.data(SEED + 1, draw, tokens * h), tokens, h)) {
            MoeLayer.Forward f = layer.forward(x);
            float[] y;
            try (HostBuffer yh = f.output().toHost()) {
                y = yh.toFloatArray();
            }
            try (Buffer dx = layer.backward(f.context(), dy); HostBuffer dxh = dx.toHost()) {
                return new float[][] {y, dxh.toFloatArray()};
            }
        }
    }

    @Test
    void aKeptTableOutlivesTheStepScopeAndGivesTheSameStep() {
        List<float[][]> out = LocalGroup.run(1, comm -> {
            try (MoeLayer fresh = MoeLayer.builder(config(), comm).seed(7).build();
                 MoeLayer used = MoeLayer.builder(config(), comm).seed(7).build()) {
                step(used, TOKENS, 0); // makes the table; its step scope is closed after
                float[][] again = step(used, TOKENS, 1); // the kept table, after that scope closed
                float[][] once = step(fresh, TOKENS, 1);
                return new float[][] {once[0], again[0], once[1], again[1]};
            }
        });
        float[][] r = out.get(0);
        assertArrayEquals(r[0], r[1], "y of a step on the kept table vs a fresh layer's");
        assertArrayEquals(r[2], r[3], "dX of a step on the kept table vs a fresh layer's");
    }

    @Test
    void moreTokenCountsThanKeptGiveTheSameStep() {
        List<float[][]> out = LocalGroup.run(1, comm -> {
            try (MoeLayer fresh = MoeLayer.builder(config(), comm).seed(7).build();
                 MoeLayer used = MoeLayer.builder(config(), comm).seed(7).build()) {
                for (int t = 1; t <= OTHER_COUNTS + 1; t++) {
                    step(used, TOKENS + t, 100 + t); // every table replaced at least once
                }
                float[][] again = step(used, TOKENS, 1);
                float[][] once = step(fresh, TOKENS, 1);
                return new float[][] {once[0], again[0], once[1], again[1]};
            }
        });
        float[][] r = out.get(0);
        assertArrayEquals(r[0], r[1], "y after " + OTHER_COUNTS + " other token counts vs a fresh layer's");
        assertArrayEquals(r[2], r[3], "dX after " + OTHER_COUNTS + " other token counts vs a fresh layer's");
    }

    @Test
    void aRepeatedTokenCountAllocatesItsTableOnlyOnce() {
        long[] perStep = LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(), comm).seed(7).build()) {
                long[] n = new long[4];
                for (int s = 0; s < n.length; s++) {
                    long before = layer.allocator().allocationCount();
                    step(layer, TOKENS, s);
                    n[s] = layer.allocator().allocationCount() - before;
                }
                return n;
            }
        }).get(0);
        for (int s = 2; s < perStep.length; s++) {
            assertEquals(perStep[1], perStep[s], "allocations of step " + s + " vs step 1 (same token count)");
        }
        // before the tables were kept, every step made the host table and its upload twice (forward, backward)
        assertEquals(perStep[1] + TABLE_ALLOCATIONS, perStep[0],
                "only the first step makes the [0, tokens] table (host table + upload) that the later steps reuse");
    }
}
