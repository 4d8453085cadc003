package org.moe4j.core.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferAllocator;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.HostBuffer;

class ScratchTest {
    @Test
    void cpuScratchReusesGivenBackMemoryAndClosesTheOldView() {
        try (Scratch s = new CpuBackend().newScratch()) {
            long live = BufferAllocator.root().liveCount();
            HostBuffer a = (HostBuffer) s.take(DType.F32, 16, 4);
            assertEquals(live, BufferAllocator.root().liveCount(), "scratch is not a live allocator buffer");
            a.setFloat(5, 42f);
            long address = a.segment().address();
            s.give(a);
            assertTrue(a.isClosed(), "the caller's reference is dead after give");
            assertThrows(BufferClosedException.class, () -> a.getFloat(0));
            HostBuffer b = (HostBuffer) s.take(DType.F32, 16, 4);
            assertEquals(address, b.segment().address(), "the block is reused");
            HostBuffer c = (HostBuffer) s.take(DType.F32, 16, 4);
            assertFalse(c.segment().address() == b.segment().address(), "buffers taken together never share memory");
            b.setFloat(0, 1f);
            b.setFloat(63, 1f);
            s.zeroRows(b, 0, 16);
            assertEquals(0f, b.getFloat(0));
            assertEquals(0f, b.getFloat(63));
            assertThrows(IllegalArgumentException.class, () -> s.zeroRows(b, 3, 17));
            s.give(b);
            s.give(c);
            s.give(null);
        }
    }

    @Test
    void theDefaultScratchAllocatesFreshZeroedBuffersAndFreesThemOnGive() {
        CpuBackend cpu = new CpuBackend();
        Backend plain = new Backend() {
            public String name() {
                return "plain";
            }

            public int priority() {
                return -1;
            }

            public Availability probe() {
                return Availability.yes("test");
            }

            public Buffer allocate(DType dtype, Shape shape) {
                return cpu.allocate(dtype, shape);
            }
        };
        try (Scratch s = plain.newScratch(); PooledBackend pooled = plain.newPool("test")) {
            Buffer b = s.take(DType.I32, 8);
            assertEquals(8 * 4, b.byteSize());
            assertEquals(0, ((HostBuffer) b).getInt(7), "fresh allocations are zeroed");
            s.zeroRows(b, 2, 4);
            s.give(b);
            assertTrue(b.isClosed());
            assertEquals("plain", pooled.name(), "a backend without pools pools nothing");
            try (Buffer p = pooled.allocate(DType.F32, Shape.of(2))) {
                assertSame(HostBuffer.class, p.getClass());
            }
        }
    }
}
