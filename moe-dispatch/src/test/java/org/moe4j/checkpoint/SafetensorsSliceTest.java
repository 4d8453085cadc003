package org.moe4j.checkpoint;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Tensors are written in slices, so a tensor over 2 GiB (beyond one ByteBuffer) can be saved. */
class SafetensorsSliceTest {
    @Test
    void segmentsAreHandedOverInBoundedSlicesInOrder() throws Exception {
        byte[] data = new byte[10];
        for (int i = 0; i < data.length; i++) {
            data[i] = (byte) (i * 7 + 1);
        }
        for (long slice : new long[] {1, 3, 4, 10, 64}) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            List<Long> offsets = new ArrayList<>();
            SafetensorsWriter.inSlices(MemorySegment.ofArray(data), slice, (b, off) -> {
                assertTrue(b.remaining() <= slice, "slice of " + b.remaining() + " bytes > " + slice);
                assertEquals(out.size(), off, "offset");
                offsets.add(off);
                while (b.hasRemaining()) {
                    out.write(b.get());
                }
            });
            assertArrayEquals(data, out.toByteArray(), "slice " + slice);
            assertEquals((data.length + slice - 1) / slice, offsets.size(), "slice " + slice);
        }
    }

    @Test
    void writersUseSlicesSmallerThanAByteBufferCanHold() {
        assertTrue(SafetensorsWriter.SLICE_BYTES > 0 && SafetensorsWriter.SLICE_BYTES <= Integer.MAX_VALUE);
    }
}
