package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashSet;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.BufferClosedException;

/** Pool bookkeeping with a fake memory: leak reports, use after close, views. */
class DevicePoolTest {
    /** Hands out fake addresses and records what is allocated, freed and zeroed. */
    static final class FakeMemory implements DevicePool.Memory {
        final Set<Long> allocated = new HashSet<>();
        long next = 0x7f00_0000_0000L;
        int zeroed;

        @Override
        public long allocate(long bytes) {
            long a = next;
            next += (bytes + 255) / 256 * 256;
            allocated.add(a);
            return a;
        }

        @Override
        public void free(long address) {
            assertTrue(allocated.remove(address), "free of an address that is not allocated: " + address);
        }

        @Override
        public void zeroAsync(long address, long bytes) {
            zeroed++;
        }
    }

    @Test
    void closingEveryBufferLeavesNothingLiveAndFreesAll() {
        FakeMemory mem = new FakeMemory();
        try (DevicePool pool = new DevicePool(null, Device.cuda(0), mem)) {
            DeviceBuffer a = pool.allocate(DType.F32, Shape.of(4, 8));
            DeviceBuffer b = pool.allocate(DType.BF16, Shape.of(3));
            assertEquals(2, pool.liveCount());
            assertEquals(128 + 6, pool.liveBytes());
            assertEquals(2, mem.zeroed, "allocate zeroes");
            assertEquals(Device.cuda(0), a.device());
            a.close();
            a.close(); // idempotent
            b.close();
            assertEquals(0, pool.liveCount());
            assertEquals(0, pool.liveBytes());
            assertEquals(134, pool.peakBytes());
        }
        assertTrue(mem.allocated.isEmpty());
    }

    @Test
    void closingAPoolWithLiveBuffersFailsListingThemAndStillFreesTheMemory() {
        FakeMemory mem = new FakeMemory();
        DevicePool pool = new DevicePool(null, Device.cuda(1), mem);
        DeviceBuffer kept = pool.allocate(DType.F32, Shape.of(16, 4));
        pool.allocate(DType.I32, Shape.of(5)).close();
        IllegalStateException e = assertThrows(IllegalStateException.class, pool::close);
        String m = e.getMessage();
        assertTrue(m.startsWith("DevicePool on cuda:1: memory leaked: 1 live buffer(s), 256 bytes: DeviceBuffer#1[F32 [16, 4] cuda:1] allocated at "
                + DevicePoolTest.class.getName() + ".closingAPoolWithLiveBuffersFailsListingThemAndStillFreesTheMemory:"), m);
        assertTrue(kept.isClosed(), "leaked buffers are closed by the pool");
        assertTrue(mem.allocated.isEmpty(), "leaked memory is freed anyway");
        assertThrows(BufferClosedException.class, kept::address);
    }

    @Test
    void useAfterCloseIsATypedExceptionForBuffersViewsAndThePool() {
        DevicePool pool = new DevicePool(null, Device.cuda(0), new FakeMemory());
        DeviceBuffer b = pool.allocate(DType.F32, Shape.of(2, 6));
        DeviceBuffer v = b.reshape(3, 4);
        assertTrue(v.isView());
        assertEquals(b.address(), v.address());
        v.close(); // detaches only
        assertFalse(b.isClosed());
        DeviceBuffer v2 = b.view(DType.F32, Shape.of(4), 8 * 4);
        assertEquals(b.address() + 32, v2.address());
        b.close();
        assertTrue(v2.isClosed(), "a view dies with its owner");
        BufferClosedException e = assertThrows(BufferClosedException.class, v2::address);
        assertTrue(e.getMessage().contains("used after close"), e.getMessage());
        pool.close();
        assertThrows(BufferClosedException.class, () -> pool.allocate(DType.F32, Shape.of(1)));
    }

    @Test
    void viewsThatDoNotFitAreRefused() {
        try (DevicePool pool = new DevicePool(null, Device.cuda(0), new FakeMemory());
             DeviceBuffer b = pool.allocate(DType.F32, Shape.of(8))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> b.view(DType.F32, Shape.of(4), 20));
            assertTrue(e.getMessage().contains("view F32 [4] at byte offset 20 does not fit (16 bytes, have 32)"), e.getMessage());
            IllegalArgumentException r = assertThrows(IllegalArgumentException.class, () -> b.reshape(3, 3));
            assertTrue(r.getMessage().contains("cannot reshape to [3, 3]"), r.getMessage());
        }
    }

    @Test
    void zeroSizedBuffersNeedNoDeviceMemory() {
        FakeMemory mem = new FakeMemory();
        try (DevicePool pool = new DevicePool(null, Device.cuda(0), mem); DeviceBuffer b = pool.allocate(DType.F32, Shape.of(0, 4))) {
            assertEquals(0, b.byteSize());
            assertTrue(mem.allocated.isEmpty());
            assertEquals(0, mem.zeroed);
        }
    }
}
