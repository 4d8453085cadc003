package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * Device memory and launch set-up without hidden synchronisation, on the real driver (or the CPU
 * device): the pool's driver calls seen through a counting wrapper of the production binding —
 * {@code close()} queues {@code cuMemFreeAsync} on the buffer's stream and never calls
 * {@code cuMemFree_v2} (which synchronises the device) — and {@code cuFuncSetAttribute} called once per
 * function and shared-memory limit.
 */
@Tag("gpu")
class StreamOrderedMemoryGpuTest {
    static CudaContext ctx;

    @BeforeAll
    static void open() {
        ctx = GpuTestSupport.openIfAvailable();
    }

    @AfterAll
    static void close() {
        GpuTestSupport.closeIfOpen(ctx);
    }

    @BeforeEach
    void gpu() {
        GpuTestSupport.assumeGpu();
    }

    /** The production driver binding, every call recorded as {@code name@stream}. */
    static final class Counting implements DevicePool.Driver {
        final List<String> calls = Collections.synchronizedList(new ArrayList<>());

        private static String s(MemorySegment stream) {
            return Long.toHexString(stream.address());
        }

        @Override
        public boolean hasStreamOrderedAllocator() {
            return DevicePool.CUDA.hasStreamOrderedAllocator();
        }

        @Override
        public int memAllocAsync(MemorySegment out, long bytes, MemorySegment stream) {
            calls.add("cuMemAllocAsync@" + s(stream));
            return DevicePool.CUDA.memAllocAsync(out, bytes, stream);
        }

        @Override
        public int memFreeAsync(long address, MemorySegment stream) {
            calls.add("cuMemFreeAsync@" + s(stream));
            return DevicePool.CUDA.memFreeAsync(address, stream);
        }

        @Override
        public int memAlloc(MemorySegment out, long bytes) {
            calls.add("cuMemAlloc_v2");
            return DevicePool.CUDA.memAlloc(out, bytes);
        }

        @Override
        public int memFree(long address) {
            calls.add("cuMemFree_v2");
            return DevicePool.CUDA.memFree(address);
        }

        @Override
        public int memsetD8Async(long address, byte value, long bytes, MemorySegment stream) {
            calls.add("cuMemsetD8Async@" + s(stream));
            return DevicePool.CUDA.memsetD8Async(address, value, bytes, stream);
        }
    }

    @Test
    void closeQueuesAStreamOrderedFreeOnTheLegacyStreamAndNeverCallsCuMemFree() {
        Counting d = new Counting();
        float[] data = {1, -2, 3.5f, 4, 5, 6, 7, 8, 9};
        try (DevicePool pool = DevicePool.create(ctx, ctx.defaultStream(), d); HostBuffer h = HostBuffer.allocate(DType.F32, 9);
                HostBuffer back = HostBuffer.allocate(DType.F32, 9)) {
            assertTrue(d.hasStreamOrderedAllocator(), "the driver exports cuMemAllocAsync/cuMemFreeAsync (CUDA 11.2+)");
            for (int i = 0; i < data.length; i++) {
                h.setFloat(i, data[i]);
            }
            DeviceBuffer zero = pool.allocate(DType.F32, Shape.of(9));
            DeviceBuffer copy = pool.copyOf(h);
            try (HostBuffer z = zero.toHost()) {
                for (long i = 0; i < 9; i++) {
                    assertEquals(0f, z.getFloat(i), "allocate() zeroes, in stream order");
                }
            }
            zero.copyFrom(copy);
            zero.copyTo(back);
            for (int i = 0; i < data.length; i++) {
                assertEquals(data[i], back.getFloat(i));
            }
            assertEquals(Boolean.TRUE, ((DevicePool.DriverMemory) pool.memory()).streamOrdered());
            d.calls.clear();
            zero.close();
            copy.close();
            assertEquals(List.of("cuMemFreeAsync@0", "cuMemFreeAsync@0"), d.calls, "close() must not synchronise (cuMemFree_v2)");
            assertThrows(BufferClosedException.class, zero::address);
        }
        assertEquals(0, d.calls.stream().filter(c -> c.startsWith("cuMemFree_v2") || c.startsWith("cuMemAlloc_v2")).count(), d.calls.toString());
    }

    @Test
    void aPoolOnItsOwnStreamAllocatesZeroesAndFreesThere() {
        Counting d = new Counting();
        try (CudaStream s = ctx.createStream()) {
            String h = Long.toHexString(s.handle().address());
            try (DevicePool pool = DevicePool.create(ctx, s, d)) {
                assertEquals(s, pool.stream());
                DeviceBuffer b = pool.allocate(DType.I32, Shape.of(1000));
                s.synchronize();
                try (HostBuffer z = b.toHost()) {
                    assertEquals(0, z.getInt(999));
                }
                b.close();
                s.synchronize();
            }
            assertEquals(List.of("cuMemAllocAsync@" + h, "cuMemsetD8Async@" + h, "cuMemFreeAsync@" + h), d.calls);
        }
    }

    @Test
    void theContextsPoolUsesTheStreamOrderedAllocatorAndReportsLeaks() {
        DevicePool pool = ctx.createPool();
        assertTrue(pool.stream().isDefault());
        DeviceBuffer b = pool.allocate(DType.BF16, Shape.of(3, 7));
        assertEquals(Boolean.TRUE, ((DevicePool.DriverMemory) pool.memory()).streamOrdered(),
                "cuMemAllocAsync works here; the synchronous fallback is only for drivers without it");
        IllegalStateException e = assertThrows(IllegalStateException.class, pool::close);
        assertTrue(e.getMessage().contains("memory leaked: 1 live buffer(s), 42 bytes"), e.getMessage());
        assertTrue(b.isClosed());
        ctx.synchronize();
    }

    /**
     * On a GPU: closing a buffer while queued kernels still read it returns at once (the free is
     * queued behind them), so an event recorded right after the close has not completed yet. With a
     * synchronising cuMemFree the queue would be empty by then and the event complete. The CPU device
     * runs everything eagerly, so this needs real hardware.
     */
    @Test
    void closeReturnsWhileKernelsThatReadTheBufferAreStillRunning() {
        org.junit.jupiter.api.Assumptions.assumeFalse(ctx.device().name().contains("moe4j CPU device"),
                "the CPU device executes every stream operation eagerly: nothing is still running to observe");
        long n = 64L << 20; // 256 MiB of floats; 200 passes of saxpy take tens of milliseconds on an H200
        try (CudaModule m = ctx.loadModule("smoke"); DevicePool pool = ctx.createPool();
                CudaEvent after = ctx.createEvent(false)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            DeviceBuffer x = pool.allocate(DType.F32, Shape.of(n));
            DeviceBuffer y = pool.allocate(DType.F32, Shape.of(n));
            for (int i = 0; i < 200; i++) {
                Launch.of(saxpy).grid(65535).block(256).stream(ctx.defaultStream()).arg(n).arg(1.0f).arg(x).arg(y).launch();
            }
            x.close(); // queued behind the 200 launches that read it
            after.record(ctx.defaultStream());
            int status = org.moe4j.cuda.comm.internal.CudaQuery.cuEventQuery(after.handle());
            assertEquals(org.moe4j.cuda.comm.internal.CudaQuery.CUDA_ERROR_NOT_READY, status,
                    "close() waited for the kernels (the work was done when it returned)");
            y.close();
            ctx.synchronize();
        }
    }

    @Test
    void dynamicSharedMemoryLimitIsSetOncePerFunctionAndRaisedOnlyForLargerRequests() throws Exception {
        try (CudaModule m = ctx.loadModule("smoke")) {
            CudaFunction f = m.function("moe4j_saxpy");
            f.ensureMaxDynamicSharedMemory(16 * 1024); // within the default 48 KiB: no driver call
            assertEquals(0, f.smemAttributeCalls());
            f.ensureMaxDynamicSharedMemory(64 * 1024);
            f.ensureMaxDynamicSharedMemory(64 * 1024);
            f.ensureMaxDynamicSharedMemory(50 * 1024);
            assertEquals(1, f.smemAttributeCalls());
            assertEquals(64 * 1024, f.attribute(cuda_h.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES));
            ExecutorService pool = Executors.newFixedThreadPool(8);
            try {
                CountDownLatch go = new CountDownLatch(1);
                List<Future<?>> fs = new ArrayList<>();
                for (int t = 0; t < 8; t++) {
                    fs.add(pool.submit(() -> {
                        go.await();
                        for (int i = 0; i < 100; i++) {
                            f.ensureMaxDynamicSharedMemory(96 * 1024);
                        }
                        return null;
                    }));
                }
                go.countDown();
                for (Future<?> x : fs) {
                    x.get();
                }
            } finally {
                pool.shutdown();
            }
            assertEquals(2, f.smemAttributeCalls(), "raised once for 8 threads x 100 requests");
            assertEquals(96 * 1024, f.attribute(cuda_h.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES));
            int tooMuch = ctx.device().maxSharedMemoryOptin() + 1;
            assertThrows(CudaException.class, () -> f.ensureMaxDynamicSharedMemory(tooMuch));
            f.ensureMaxDynamicSharedMemory(96 * 1024);
            assertEquals(3, f.smemAttributeCalls(), "the refused request left the limit where it was");
            f.setMaxDynamicSharedMemory(60 * 1024); // explicit: always calls the driver, may lower
            f.ensureMaxDynamicSharedMemory(80 * 1024);
            assertEquals(5, f.smemAttributeCalls());
            assertEquals(80 * 1024, f.attribute(cuda_h.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES));
        }
    }
}
