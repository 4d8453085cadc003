package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;

/** The kernelParams array that Launch hands to cuLaunchKernel, checked without a GPU. */
@SuppressWarnings("restricted") // FFM native access is this class's purpose
class LaunchPackingTest {
    @Test
    void argumentsArePackedInOrderAsPointersToTheirValues() {
        Launch l = Launch.forPacking().arg(7).arg(1L << 40).arg(2.5f).arg(-0.125).argPointer(0xdead_beef_00L);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment params = l.pack(a).reinterpret(5 * ValueLayout.ADDRESS.byteSize());
            assertEquals(7, slot(params, 0, 4).get(ValueLayout.JAVA_INT, 0));
            assertEquals(1L << 40, slot(params, 1, 8).get(ValueLayout.JAVA_LONG, 0));
            assertEquals(2.5f, slot(params, 2, 4).get(ValueLayout.JAVA_FLOAT, 0));
            assertEquals(-0.125, slot(params, 3, 8).get(ValueLayout.JAVA_DOUBLE, 0));
            assertEquals(0xdead_beef_00L, slot(params, 4, 8).get(ValueLayout.JAVA_LONG, 0));
            for (int i = 0; i < 5; i++) {
                long addr = params.getAtIndex(ValueLayout.ADDRESS, i).address();
                long align = i == 0 || i == 2 ? 4 : 8;
                assertEquals(0, addr % align, "argument " + i + " slot is naturally aligned");
            }
        }
    }

    @Test
    void structArgumentsAreCopiedByValueIntoAnAlignedSlot() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment map = a.allocate(128, 64);
            for (int i = 0; i < 128; i++) {
                map.set(ValueLayout.JAVA_BYTE, i, (byte) (i * 3));
            }
            Launch l = Launch.forPacking().arg(1).argStruct(map, 64).arg(2);
            map.fill((byte) 0); // copied when added: later changes do not reach the launch
            MemorySegment params = l.pack(a).reinterpret(3 * ValueLayout.ADDRESS.byteSize());
            MemorySegment slot = slot(params, 1, 128);
            assertEquals(0, slot.address() % 64, "CUtensorMap slot aligned to 64 bytes");
            for (int i = 0; i < 128; i++) {
                assertEquals((byte) (i * 3), slot.get(ValueLayout.JAVA_BYTE, i), "byte " + i);
            }
            assertEquals(2, slot(params, 2, 4).get(ValueLayout.JAVA_INT, 0));
        }
        assertThrows(IllegalArgumentException.class, () -> Launch.forPacking().argStruct(MemorySegment.ofArray(new byte[0]), 8));
    }

    private static MemorySegment slot(MemorySegment params, int i, long size) {
        return params.getAtIndex(ValueLayout.ADDRESS, i).reinterpret(size);
    }

    @Test
    void noArgumentsPackAsNull() {
        try (Arena a = Arena.ofConfined()) {
            assertEquals(MemorySegment.NULL, Launch.forPacking().pack(a));
        }
    }

    @Test
    void badLaunchShapesAreRefusedNamingTheValue() {
        IllegalArgumentException grid = assertThrows(IllegalArgumentException.class,
                () -> Launch.forPacking().grid(0).block(32).validate());
        assertTrue(grid.getMessage().contains("grid [0, 1, 1] must be >= 1"), grid.getMessage());
        IllegalArgumentException block = assertThrows(IllegalArgumentException.class,
                () -> Launch.forPacking().grid(1).block(64, 32, 1).validate());
        assertTrue(block.getMessage().contains("block [64, 32, 1]") && block.getMessage().contains("at most 1024 threads"),
                block.getMessage());
        IllegalArgumentException smem = assertThrows(IllegalArgumentException.class,
                () -> Launch.forPacking().sharedMemory(-1).validate());
        assertTrue(smem.getMessage().contains("shared memory -1"), smem.getMessage());
    }
}
