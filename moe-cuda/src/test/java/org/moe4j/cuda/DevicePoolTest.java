package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.BufferClosedException;

/**
 * Pool bookkeeping with a fake memory (leak reports, use after close, views), and the pool's driver
 * calls with a recording driver: stream-ordered allocation and free, and the fallback.
 */
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

    /** Records every driver call (name, address, stream) and hands out fake addresses. */
    static final class RecordingDriver implements DevicePool.Driver {
        final List<String> calls = new ArrayList<>();
        final Set<Long> live = new HashSet<>();
        boolean exported = true;
        int allocAsyncStatus;
        long next = 0x7f00_0000_0000L;

        private long hand(MemorySegment out, long bytes) {
            long a = next;
            next += (bytes + 255) / 256 * 256;
            live.add(a);
            out.set(ValueLayout.JAVA_LONG, 0, a);
            return a;
        }

        @Override
        public boolean hasStreamOrderedAllocator() {
            return exported;
        }

        @Override
        public int memAllocAsync(MemorySegment out, long bytes, MemorySegment stream) {
            assertTrue(exported, "cuMemAllocAsync called although the library does not export it");
            if (allocAsyncStatus != 0) {
                calls.add("cuMemAllocAsync(" + bytes + ") -> " + allocAsyncStatus);
                return allocAsyncStatus;
            }
            long a = hand(out, bytes);
            calls.add("cuMemAllocAsync(" + bytes + ", " + Long.toHexString(stream.address()) + ") = " + Long.toHexString(a));
            return 0;
        }

        @Override
        public int memFreeAsync(long address, MemorySegment stream) {
            assertTrue(live.remove(address), "free of an address that is not allocated: " + address);
            calls.add("cuMemFreeAsync(" + Long.toHexString(address) + ", " + Long.toHexString(stream.address()) + ")");
            return 0;
        }

        @Override
        public int memAlloc(MemorySegment out, long bytes) {
            long a = hand(out, bytes);
            calls.add("cuMemAlloc_v2(" + bytes + ") = " + Long.toHexString(a));
            return 0;
        }

        @Override
        public int memFree(long address) {
            assertTrue(live.remove(address), "free of an address that is not allocated: " + address);
            calls.add("cuMemFree_v2(" + Long.toHexString(address) + ")");
            return 0;
        }

        @Override
        public int memsetD8Async(long address, byte value, long bytes, MemorySegment stream) {
            calls.add("cuMemsetD8Async(" + Long.toHexString(address) + ", " + value + ", " + bytes + ", "
                    + Long.toHexString(stream.address()) + ")");
            return 0;
        }

        long count(String fn) {
            return calls.stream().filter(c -> c.startsWith(fn + "(")).count();
        }
    }

    /** A made-up CUstream handle: the pool's stream in these tests. */
    static final MemorySegment STREAM = MemorySegment.ofAddress(0x5eed);

    static DevicePool.DriverMemory driverMemory(RecordingDriver d) {
        return new DevicePool.DriverMemory(() -> { }, d, () -> STREAM, "stream 0x5eed", "cuda:0");
    }

    @Test
    void buffersAreAllocatedZeroedAndFreedInTheOrderOfThePoolsStreamWithoutCuMemFree() {
        RecordingDriver d = new RecordingDriver();
        DevicePool.DriverMemory mem = driverMemory(d);
        DevicePool pool = new DevicePool(null, Device.cuda(0), mem);
        DeviceBuffer a = pool.allocate(DType.F32, Shape.of(4, 8));
        DeviceBuffer b = pool.allocateUninitialized(DType.BF16, Shape.of(3));
        DeviceBuffer kept = pool.allocate(DType.I32, Shape.of(5));
        assertEquals(Boolean.TRUE, mem.streamOrdered());
        long addrA = a.address();
        assertEquals(List.of("cuMemAllocAsync(128, 5eed) = " + Long.toHexString(addrA),
                "cuMemsetD8Async(" + Long.toHexString(addrA) + ", 0, 128, 5eed)",
                "cuMemAllocAsync(6, 5eed) = " + Long.toHexString(b.address()),
                "cuMemAllocAsync(20, 5eed) = " + Long.toHexString(kept.address()),
                "cuMemsetD8Async(" + Long.toHexString(kept.address()) + ", 0, 20, 5eed)"), d.calls);
        d.calls.clear();
        a.close();
        b.close();
        // close() queues the free on the buffer's stream: no cuMemFree_v2, which synchronises the device
        assertEquals(List.of("cuMemFreeAsync(" + Long.toHexString(addrA) + ", 5eed)",
                "cuMemFreeAsync(" + Long.toHexString(b.rawAddress()) + ", 5eed)"), d.calls);
        // the leak report frees the same way
        IllegalStateException e = assertThrows(IllegalStateException.class, pool::close);
        assertTrue(e.getMessage().contains("memory leaked: 1 live buffer(s), 20 bytes"), e.getMessage());
        assertEquals("cuMemFreeAsync(" + Long.toHexString(kept.rawAddress()) + ", 5eed)", d.calls.get(2));
        assertEquals(0, d.count("cuMemFree_v2"));
        assertEquals(0, d.count("cuMemAlloc_v2"));
        assertTrue(d.live.isEmpty());
        assertThrows(BufferClosedException.class, a::address);
    }

    @Test
    void aDriverWithoutTheAsyncSymbolsFallsBackToSynchronousCallsForEveryBuffer() {
        RecordingDriver d = new RecordingDriver();
        d.exported = false;
        DevicePool.DriverMemory mem = driverMemory(d);
        try (DevicePool pool = new DevicePool(null, Device.cuda(0), mem)) {
            pool.allocate(DType.F32, Shape.of(8)).close();
            pool.allocate(DType.F32, Shape.of(2)).close();
            assertEquals(Boolean.FALSE, mem.streamOrdered());
        }
        assertEquals(2, d.count("cuMemAlloc_v2"));
        assertEquals(2, d.count("cuMemFree_v2"));
        assertEquals(0, d.count("cuMemAllocAsync") + d.count("cuMemFreeAsync"));
        assertEquals(2, d.count("cuMemsetD8Async"), "allocate still zeroes");
        assertTrue(d.live.isEmpty());
    }

    @Test
    void notSupportedFromTheFirstAsyncAllocationFallsBackOnceAndForAll() {
        RecordingDriver d = new RecordingDriver();
        d.allocAsyncStatus = 801; // CUDA_ERROR_NOT_SUPPORTED
        DevicePool.DriverMemory mem = driverMemory(d);
        try (DevicePool pool = new DevicePool(null, Device.cuda(0), mem)) {
            for (int i = 0; i < 3; i++) {
                pool.allocate(DType.F32, Shape.of(16)).close();
            }
        }
        assertEquals(1, d.count("cuMemAllocAsync"), "asked once, then never again: " + d.calls);
        assertEquals(3, d.count("cuMemAlloc_v2"));
        assertEquals(3, d.count("cuMemFree_v2"));
        assertEquals(0, d.count("cuMemFreeAsync"));
        assertEquals(Boolean.FALSE, mem.streamOrdered());
    }

    @Test
    void otherAsyncAllocationErrorsAreThrownAndDoNotSwitchToTheFallback() {
        RecordingDriver d = new RecordingDriver();
        d.allocAsyncStatus = 2; // CUDA_ERROR_OUT_OF_MEMORY
        DevicePool.DriverMemory mem = driverMemory(d);
        try (DevicePool pool = new DevicePool(null, Device.cuda(0), mem)) {
            CudaException e = assertThrows(CudaException.class, () -> pool.allocate(DType.F32, Shape.of(1 << 20)));
            assertTrue(e.getMessage().startsWith("cuMemAllocAsync(4194304 bytes on cuda:0, stream 0x5eed) failed: CUDA_ERROR_OUT_OF_MEMORY (2)"),
                    e.getMessage());
            assertEquals(0, pool.liveCount());
            assertEquals(null, mem.streamOrdered(), "undecided after a failure");
            d.allocAsyncStatus = 0;
            pool.allocate(DType.F32, Shape.of(4)).close();
            assertEquals(Boolean.TRUE, mem.streamOrdered());
        }
        assertEquals(0, d.count("cuMemAlloc_v2") + d.count("cuMemFree_v2"));
        assertEquals(1, d.count("cuMemFreeAsync"));
    }
}
