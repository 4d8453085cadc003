package org.moe4j.cuda.comm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.comm.internal.RowLayout;

class RowLayoutTest {

    private static String refused(long[] counts, int world, HostBuffer b) {
        return assertThrows(IllegalArgumentException.class, () -> RowLayout.checkCounts("allToAllV sendRows", counts, world, b))
                .getMessage();
    }

    @Test
    void rowsAreDimensionZeroAndRowBytesTheRest() {
        try (HostBuffer b = HostBuffer.allocate(DType.BF16, 6, 4, 3)) {
            assertEquals(6, RowLayout.rows(b));
            assertEquals(12, RowLayout.rowElements(b));
            assertEquals(24, RowLayout.rowBytes(b));
            assertEquals(3, RowLayout.prefix(new long[] {1, 2, 3}, 2));
        }
    }

    @Test
    void badCountsAreRefusedNamingTheProblem() {
        try (HostBuffer b = HostBuffer.allocate(DType.F32, 5, 2)) {
            RowLayout.checkCounts("ok", new long[] {2, 3}, 2, b);
            assertTrue(refused(new long[] {5}, 2, b).contains("allToAllV sendRows: expected 2 counts but got 1"));
            assertTrue(refused(new long[] {6, -1}, 2, b).contains("allToAllV sendRows[1] is negative (-1)"));
            assertTrue(refused(new long[] {2, 2}, 2, b).contains("allToAllV sendRows sum to 4 rows but the buffer"));
            assertTrue(refused(null, 2, b).contains("allToAllV sendRows must not be null"));
        }
    }
}
