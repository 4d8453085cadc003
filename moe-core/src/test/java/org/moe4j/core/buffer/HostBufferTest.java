package org.moe4j.core.buffer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;

class HostBufferTest {
    @Test
    void allocationIsZeroedAlignedAndDescribed() {
        try (HostBuffer b = HostBuffer.allocate(DType.F32, 3, 5)) {
            assertEquals(Shape.of(3, 5), b.shape());
            assertEquals(60, b.byteSize());
            assertEquals(Device.CPU, b.device());
            assertEquals(0, b.segment().address() % HostBuffer.ALIGNMENT);
            assertArrayEquals(new float[15], b.toFloatArray());
            assertTrue(b.ownsMemory());
            assertEquals("HostBuffer[F32 [3, 5]]", b.describe());
        }
    }

    @Test
    void closingTwiceIsHarmlessAndAnyUseAfterCloseThrows() {
        HostBuffer b = HostBuffer.ofFloats(new float[] {1, 2, 3, 4}, 2, 2);
        b.close();
        b.close();
        assertTrue(b.isClosed());
        BufferClosedException e = assertThrows(BufferClosedException.class, b::segment);
        assertEquals("HostBuffer[F32 [2, 2]] used after close", e.getMessage());
        assertThrows(BufferClosedException.class, () -> b.getFloat(0));
        assertThrows(BufferClosedException.class, () -> b.setFloat(0, 1f));
        assertThrows(BufferClosedException.class, b::toFloatArray);
        assertThrows(BufferClosedException.class, b::copy);
        assertThrows(BufferClosedException.class, () -> b.reshape(4));
        assertEquals("HostBuffer[F32 [2, 2]] (closed)", b.toString());
    }

    @Test
    void wrapDoesNotFreeTheWrappedMemory() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seg = arena.allocate(16, 64);
            seg.setAtIndex(ValueLayout.JAVA_INT, 2, 42);
            HostBuffer w = HostBuffer.wrap(DType.I32, Shape.of(4), seg);
            assertFalse(w.ownsMemory());
            assertEquals(42, w.getInt(2));
            w.close();
            assertTrue(w.isClosed());
            assertThrows(BufferClosedException.class, () -> w.getInt(2));
            assertEquals(42, seg.getAtIndex(ValueLayout.JAVA_INT, 2), "memory still alive after the wrapper closed");
        }
    }

    @Test
    void wrapRefusesASegmentOfTheWrongSize() {
        try (Arena arena = Arena.ofConfined()) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> HostBuffer.wrap(DType.F32, Shape.of(2, 3), arena.allocate(20)));
            assertEquals("segment of 20 bytes cannot hold F32 [2, 3] (24 bytes)", e.getMessage());
        }
    }

    @Test
    void reshapeIsAViewThatSharesBytesAndDiesWithItsOwner() {
        HostBuffer owner = HostBuffer.ofFloats(new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
        HostBuffer view = owner.reshape(3, 2);
        assertEquals(Shape.of(3, 2), view.shape());
        assertFalse(view.ownsMemory());
        view.setFloat(5, 60f);
        assertEquals(60f, owner.getFloat(5), "write through the view is seen by the owner");
        view.close();
        assertEquals(60f, owner.getFloat(5), "closing a view does not free the owner");
        HostBuffer view2 = owner.reshape(6);
        owner.close();
        assertTrue(view2.isClosed());
        assertThrows(BufferClosedException.class, () -> view2.getFloat(0));
        try (HostBuffer other = HostBuffer.allocate(DType.F32, 2, 3)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> other.reshape(4, 2));
            assertEquals("cannot reshape [2, 3] (6 elements) to [4, 2]", e.getMessage());
        }
    }

    @Test
    void narrowDtypesRoundOnStoreAndWidenOnLoad() {
        try (HostBuffer b = HostBuffer.of(DType.BF16, new float[] {1f, 1.00390625f, 1.01171875f}, 3);
                HostBuffer h = HostBuffer.of(DType.F16, new float[] {65504f, 70000f}, 2)) {
            assertEquals(6, b.byteSize(), "3 elements of 2 bytes");
            // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even -> 1; 1 + 3*2^-8 ties up to 1 + 2^-6
            assertArrayEquals(new float[] {1f, 1f, 1.015625f}, b.toFloatArray());
            assertEquals(65504f, h.getFloat(0));
            assertEquals(Float.POSITIVE_INFINITY, h.getFloat(1));
        }
    }

    @Test
    void intAccessorsWorkOnlyOnIntegerBuffers() {
        try (HostBuffer i = HostBuffer.ofInts(new int[] {3, -1, 7}, 3); HostBuffer f = HostBuffer.allocate(DType.F32, 2)) {
            assertArrayEquals(new int[] {3, -1, 7}, i.toIntArray());
            i.setInt(1, 9);
            assertEquals(9, i.getLong(1));
            assertEquals(9f, i.getFloat(1));
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> f.getInt(0));
            assertEquals("HostBuffer[F32 [2]]: getInt needs I32", e.getMessage());
            e = assertThrows(IllegalStateException.class, () -> i.setFloat(0, 1f));
            assertEquals("HostBuffer[I32 [3]]: setFloat on an integer buffer", e.getMessage());
        }
    }

    @Test
    void copyIsIndependentAndLengthMismatchNamesBothCounts() {
        try (HostBuffer a = HostBuffer.ofFloats(new float[] {1, 2}, 2); HostBuffer c = a.copy()) {
            a.setFloat(0, 10f);
            assertEquals(1f, c.getFloat(0));
            a.zero();
            assertArrayEquals(new float[2], a.toFloatArray());
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> HostBuffer.ofFloats(new float[] {1, 2, 3}, 2, 2));
        assertEquals("data has 3 elements but shape [2, 2] needs 4", e.getMessage());
    }

    @Test
    void requireNamesBufferAndMismatch() {
        try (HostBuffer b = HostBuffer.allocate(DType.I32, 4, 2)) {
            b.require("topkIdx", DType.I32, 4, 2);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> b.require("topkWeights", DType.F32, 4, 2));
            assertEquals("topkWeights: expected dtype F32 but got I32", e.getMessage());
        }
    }

    @Test
    void emptyBuffersAreValid() {
        try (HostBuffer b = HostBuffer.allocate(DType.F32, 0, 16)) {
            assertEquals(0, b.byteSize());
            assertEquals(0, b.toFloatArray().length);
        }
    }

    @Test
    void copyFromCopyToAndToHostMoveEveryByte() {
        try (HostBuffer a = HostBuffer.ofFloats(new float[] {1f, -0f, Float.NaN, 7.5f}, 2, 2);
             HostBuffer b = HostBuffer.allocate(DType.F32, 4);
             HostBuffer c = HostBuffer.allocate(DType.F32, 2, 2)) {
            b.copyFrom(a); // same dtype and element count; shapes may differ
            assertArrayEquals(a.segment().toArray(ValueLayout.JAVA_BYTE), b.segment().toArray(ValueLayout.JAVA_BYTE));
            b.copyTo(c);
            assertArrayEquals(a.segment().toArray(ValueLayout.JAVA_BYTE), c.segment().toArray(ValueLayout.JAVA_BYTE));
            Buffer asBuffer = a;
            try (HostBuffer h = asBuffer.toHost()) {
                assertEquals(a.shape(), h.shape());
                assertFalse(h.segment().address() == a.segment().address());
                assertArrayEquals(a.segment().toArray(ValueLayout.JAVA_BYTE), h.segment().toArray(ValueLayout.JAVA_BYTE));
            }
            asBuffer.zero();
            assertArrayEquals(new float[4], a.toFloatArray());
        }
    }

    @Test
    void copyFromRefusesAnotherDtypeOrSizeNamingBoth() {
        try (HostBuffer a = HostBuffer.allocate(DType.F32, 4);
             HostBuffer wrongType = HostBuffer.allocate(DType.I32, 4);
             HostBuffer wrongSize = HostBuffer.allocate(DType.F32, 5)) {
            var e = assertThrows(IllegalArgumentException.class, () -> a.copyFrom(wrongType));
            assertTrue(e.getMessage().contains("dtype and element count must match (F32 x 4 vs I32 x 4)"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> a.copyTo(wrongSize));
            assertTrue(e.getMessage().contains("F32 x 5 vs F32 x 4"), e.getMessage());
        }
    }

    @Test
    void aBufferWithoutHostCopiesSaysSoByName() {
        Buffer opaque = new Buffer() {
            @Override
            public DType dtype() {
                return DType.F32;
            }

            @Override
            public Shape shape() {
                return Shape.of(1);
            }

            @Override
            public Device device() {
                return Device.CPU;
            }

            @Override
            public boolean isClosed() {
                return false;
            }

            @Override
            public void close() {
            }
        };
        try (HostBuffer h = HostBuffer.allocate(DType.F32, 1)) {
            var e = assertThrows(UnsupportedOperationException.class, () -> opaque.copyFrom(h));
            assertTrue(e.getMessage().contains("does not support copyFrom(HostBuffer)"), e.getMessage());
            assertThrows(UnsupportedOperationException.class, opaque::toHost);
        }
    }
}
