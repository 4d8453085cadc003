package org.moe4j.cuda.kernels.internal;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import org.junit.jupiter.api.Test;

/** Argument checks of {@link TensorMaps#bf16}: they run before the driver is touched, so no GPU is needed. */
class TensorMapsTest {
    private static IllegalArgumentException refused(long address, long[] dims, long[] strides, int[] box) {
        try (Arena arena = Arena.ofConfined()) {
            return assertThrows(IllegalArgumentException.class, () -> TensorMaps.bf16(arena, address, dims, strides, box));
        }
    }

    @Test
    void misalignedAddressIsRefused() {
        IllegalArgumentException e = refused(0x1008, new long[] {64, 10}, new long[] {128}, new int[] {64, 64});
        assertTrue(e.getMessage().contains("not 16-byte aligned"), e.getMessage());
    }

    @Test
    void strideThatIsNotAMultipleOfSixteenBytesIsRefused() {
        IllegalArgumentException e = refused(0x1000, new long[] {60, 10}, new long[] {120}, new int[] {64, 64});
        assertTrue(e.getMessage().contains("stride 120 bytes"), e.getMessage());
    }

    @Test
    void innerBoxWiderThanTheSwizzleIsRefused() {
        IllegalArgumentException e = refused(0x1000, new long[] {256, 10}, new long[] {512}, new int[] {128, 64});
        assertTrue(e.getMessage().contains("exceeds the 128-byte swizzle"), e.getMessage());
    }

    @Test
    void rankAndArgumentCountsMustAgree() {
        IllegalArgumentException e = refused(0x1000, new long[] {64, 10, 2}, new long[] {128}, new int[] {64, 64, 1});
        assertTrue(e.getMessage().contains("rank 3 needs 2 strides"), e.getMessage());
        refused(0x1000, new long[] {64}, new long[] {}, new int[] {64});
    }
}
