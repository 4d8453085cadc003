package org.moe4j.dispatch.spi;

import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.DispatchKernels;

/**
 * {@link StaticPlanArgs}: the fault record reads back as the same refusal text the eager checks use
 * (expert id out of range, non-finite weight), an accepted record as no refusal, and malformed
 * arguments (wrong record length, bad sizes, a mis-sized plan output) are refused naming the value.
 */
class StaticPlanArgsTest {
    @Test
    void faultRecordsBecomeTheEagerRefusalTexts() {
        assertNull(StaticPlanArgs.refusal(new int[] {Integer.MAX_VALUE, 0, 0}, 2, 4));
        assertTrue(StaticPlanArgs.refusal(new int[] {7, 9, 0}, 2, 4).getMessage()
                .contains("topkIdx[3, 1] = 9 is outside [0, 4) (use -1 for no expert)"));
        String nan = StaticPlanArgs.refusal(new int[] {4, 2, Float.floatToRawIntBits(Float.NaN)}, 2, 4).getMessage();
        assertTrue(nan.contains("topkWeights[2, 0] = NaN is not finite (NaN or Inf) for expert 2"), nan);
        assertThrows(IllegalArgumentException.class, () -> StaticPlanArgs.refusal(new int[] {1, 2}, 2, 4));
        assertThrows(IllegalArgumentException.class, () -> StaticPlanArgs.refusal(new int[] {-1, 0, 0}, 2, 4));
        assertThrows(IllegalArgumentException.class, () -> StaticPlanArgs.refusal(new int[] {0, 0, 0}, 0, 4));
        assertThrows(NullPointerException.class, () -> StaticPlanArgs.refusal(null, 2, 4));
    }

    @Test
    void misSizedSendPlansAreRefusedNamingTheOutput() {
        int tokens = 3;
        int topK = 2;
        int world = 2;
        int capacity = 4;
        long n = (long) world * capacity;
        try (HostBuffer token = HostBuffer.allocate(DType.I32, n);
                HostBuffer meta = HostBuffer.allocate(DType.I32, n, DispatchKernels.META_FIXED + 2L * topK);
                HostBuffer ret = HostBuffer.allocate(DType.I32, n);
                HostBuffer slotRow = HostBuffer.allocate(DType.I32, (long) tokens * topK);
                HostBuffer dropped = HostBuffer.allocate(DType.I32, world + 1L)) {
            var plan = new DispatchKernels.StaticSendPlan(token, meta, ret, slotRow, dropped);
            String m = assertThrows(IllegalArgumentException.class,
                    () -> StaticPlanArgs.requireSendPlan(tokens, topK, world, capacity, plan)).getMessage();
            assertTrue(m.startsWith("plan.dropped: expected I32 with 2 elements"), m);
            assertThrows(IllegalArgumentException.class, () -> StaticPlanArgs.requireSendPlan(tokens, topK, world, 0, plan));
            assertThrows(NullPointerException.class, () -> StaticPlanArgs.requireSendPlan(tokens, topK, world, capacity, null));
        }
    }
}
