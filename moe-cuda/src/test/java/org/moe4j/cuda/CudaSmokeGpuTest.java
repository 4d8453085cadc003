package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.HostBuffer;

/**
 * GPU smoke tests: driver, memory, the fatbin pipeline, streams/events, NCCL at world size 1, leak
 * checks. Skipped (assumption, with the probe's reason) where no usable GPU is present.
 */
@Tag("gpu")
class CudaSmokeGpuTest {
    /** fp32 results of a different summation order than Java's sequential loop. */
    static final double FP32_TOLERANCE = 1e-6;

    static CudaContext ctx;
    long seed;
    Random rnd;

    @BeforeAll
    static void open() {
        ctx = GpuTestSupport.openIfAvailable();
    }

    @AfterAll
    static void close() {
        GpuTestSupport.closeIfOpen(ctx);
    }

    @BeforeEach
    void seed() {
        GpuTestSupport.assumeGpu();
        seed = System.nanoTime();
        rnd = new Random(seed);
        System.out.println("seed=" + seed);
    }

    private HostBuffer randomFloats(long... dims) {
        HostBuffer h = HostBuffer.allocate(DType.F32, dims);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) rnd.nextGaussian());
        }
        return h;
    }

    @Test
    void deviceQueryReportsNameComputeCapabilityAndMemory() {
        CudaDevice d = ctx.device();
        System.out.println(d.describe() + ", driver CUDA " + Cuda.driverVersion() + ", " + d.l2CacheBytes() / (1 << 20)
                + " MiB L2, " + d.maxSharedMemoryOptin() / 1024 + " KiB smem opt-in");
        assertFalse(d.name().isBlank());
        assertTrue(d.major() >= 9, "kernels are built for sm_90a: " + d.computeCapability());
        assertTrue(d.totalMemory() > (1L << 30));
        assertTrue(d.multiprocessors() > 0);
        CudaContext.MemoryInfo m = ctx.memoryInfo();
        assertTrue(m.free() > 0 && m.free() <= m.total(), m.toString());
        assertTrue(Cuda.deviceCount() >= 1);
        assertEquals("cuda", Backends.choose("cuda").name());
    }

    @Test
    void hostToDeviceToHostRoundTripPreservesRandomDataOfEveryDtype() {
        try (DevicePool pool = ctx.createPool()) {
            for (DType dt : DType.values()) {
                for (long n : new long[] {0, 1, 7, 4099, 1 << 20}) {
                    try (HostBuffer src = HostBuffer.allocate(dt, n); HostBuffer back = HostBuffer.allocate(dt, n)) {
                        byte[] bytes = new byte[(int) src.byteSize()];
                        rnd.nextBytes(bytes);
                        java.lang.foreign.MemorySegment.copy(bytes, 0, src.segment(), java.lang.foreign.ValueLayout.JAVA_BYTE, 0, bytes.length);
                        try (DeviceBuffer d = pool.copyOf(src); DeviceBuffer d2 = pool.allocate(dt, Shape.of(n))) {
                            d2.copyFrom(d);
                            d2.copyTo(back);
                            assertEquals(Device.cuda(ctx.device().ordinal()), d.device());
                        }
                        assertArrayEquals(bytes, back.segment().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE), dt + " x " + n);
                    }
                }
            }
            assertEquals(0, pool.liveCount());
        }
    }

    @Test
    void allocateZeroesAndBackendAllocatesDeviceBuffers() {
        Buffer b = Backends.choose("cuda").allocate(DType.F32, Shape.of(3, 5));
        try (b) {
            assertTrue(b instanceof DeviceBuffer);
            try (HostBuffer h = ((DeviceBuffer) b).toHost()) {
                for (long i = 0; i < h.numel(); i++) {
                    assertEquals(0f, h.getFloat(i));
                }
            }
        }
    }

    @Test
    void saxpyKernelFromTheFatbinMatchesJava() {
        int n = 1_000_003;
        float alpha = (float) rnd.nextGaussian();
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke"); CudaStream s = ctx.createStream();
             HostBuffer x = randomFloats(n); HostBuffer y = randomFloats(n)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            assertTrue(saxpy.registers() > 0);
            try (DeviceBuffer dx = pool.copyOf(x); DeviceBuffer dy = pool.copyOf(y); HostBuffer out = HostBuffer.allocate(DType.F32, n)) {
                Launch.of(saxpy).grid(Math.min((n + 255) / 256, 65535)).block(256).stream(s)
                        .arg((long) n).arg(alpha).arg(dx).arg(dy).launch();
                dy.copyToAsync(out, s);
                s.synchronize();
                for (int i = 0; i < n; i++) {
                    float want = Math.fma(alpha, x.getFloat(i), y.getFloat(i));
                    assertEquals(want, out.getFloat(i), 0f, "element " + i);
                }
            }
        }
    }

    @Test
    void rowSumKernelMatchesJavaWithinFp32Tolerance() {
        int rows = 37;
        int cols = 5000;
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke");
             HostBuffer in = randomFloats(rows, cols); HostBuffer ref = HostBuffer.allocate(DType.F32, rows)) {
            for (int r = 0; r < rows; r++) {
                double sum = 0;
                for (int c = 0; c < cols; c++) {
                    sum += in.getFloat((long) r * cols + c);
                }
                ref.setFloat(r, (float) sum);
            }
            try (DeviceBuffer din = pool.copyOf(in); DeviceBuffer dout = pool.allocate(DType.F32, Shape.of(rows))) {
                Launch.of(m.function("moe4j_row_sum")).grid(rows).block(256).arg(rows).arg(cols).arg(din).arg(dout).launch();
                try (HostBuffer first = dout.toHost()) {
                    double err = GpuTestSupport.relativeError(first, ref);
                    assertTrue(err < FP32_TOLERANCE, "relative error " + err);
                    dout.zero();
                    Launch.of(m.function("moe4j_row_sum")).grid(rows).block(256).arg(rows).arg(cols).arg(din).arg(dout).launch();
                    try (HostBuffer second = dout.toHost()) {
                        assertArrayEquals(first.toFloatArray(), second.toFloatArray(), "row sums are run-to-run identical");
                    }
                }
            }
        }
    }

    @Test
    void missingKernelAndBadLaunchAreReportedByName() {
        try (CudaModule m = ctx.loadModule("smoke")) {
            CudaException e = assertThrows(CudaException.class, () -> m.function("no_such_kernel"));
            assertTrue(e.getMessage().startsWith("cuModuleGetFunction(no_such_kernel in org/moe4j/cuda/kernels/smoke.fatbin) failed: CUDA_ERROR_NOT_FOUND"),
                    e.getMessage());
            CudaFunction f = m.function("moe4j_row_sum");
            CudaException big = assertThrows(CudaException.class,
                    () -> Launch.of(f).grid(1).block(32).sharedMemory(64 << 20).arg(0).arg(0).argPointer(0).argPointer(0).launch());
            assertTrue(big.getMessage().startsWith("cuLaunchKernel(moe4j_row_sum, grid [1, 1, 1], block [32, 1, 1], shared 67108864 bytes, 4 args) failed"),
                    big.getMessage());
        }
    }

    @Test
    void eventsOrderWorkAcrossStreamsAndTimeIt() {
        int n = 1 << 22;
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke");
             CudaStream producer = ctx.createStream(); CudaStream consumer = ctx.createStream();
             CudaEvent start = ctx.createEvent(true); CudaEvent done = ctx.createEvent(true);
             PinnedHostBuffer out = PinnedHostBuffer.allocate(ctx, DType.F32, Shape.of(n));
             PinnedHostBuffer ones = PinnedHostBuffer.allocate(ctx, DType.F32, Shape.of(n))) {
            for (int i = 0; i < n; i++) {
                ones.host().setFloat(i, 1f);
            }
            CudaFunction saxpy = m.function("moe4j_saxpy");
            try (DeviceBuffer x = pool.allocate(DType.F32, Shape.of(n)); DeviceBuffer y = pool.allocate(DType.F32, Shape.of(n))) {
                start.record(producer);
                x.copyFromAsync(ones.host(), producer);
                int rounds = 50;
                for (int r = 0; r < rounds; r++) {
                    Launch.of(saxpy).grid(1024).block(256).stream(producer).arg((long) n).arg(1f).arg(x).arg(y).launch();
                }
                done.record(producer);
                consumer.waitFor(done);
                y.copyToAsync(out.host(), consumer);
                consumer.synchronize();
                for (int i = 0; i < n; i += 4097) {
                    assertEquals(rounds, out.host().getFloat(i), 0f, "element " + i + " saw every producer launch");
                }
                float ms = done.elapsedMillis(start);
                System.out.println("50 saxpy launches over " + n + " floats: " + ms + " ms");
                assertTrue(ms >= 0, "elapsed " + ms);
            }
        }
    }

    @Test
    void ncclWorldSizeOneAllReduceAllGatherAndSendRecvToSelf() {
        int version;
        try {
            version = NcclComm.version();
        } catch (NativeLibraryException e) {
            assumeTrue(false, "libnccl not found: " + e.getMessage());
            return;
        }
        System.out.println("NCCL " + version);
        int n = 10_001;
        try (DevicePool pool = ctx.createPool(); CudaStream s = ctx.createStream();
             NcclComm comm = NcclComm.initRank(ctx, 1, NcclComm.uniqueId(), 0); HostBuffer x = randomFloats(n)) {
            assertEquals(1, comm.worldSize());
            try (DeviceBuffer send = pool.copyOf(x); DeviceBuffer recv = pool.allocate(DType.F32, Shape.of(n));
                 DeviceBuffer gathered = pool.allocate(DType.F32, Shape.of(n)); DeviceBuffer self = pool.allocate(DType.F32, Shape.of(n))) {
                comm.allReduce(send, recv, NcclComm.ReduceOp.SUM, s);
                comm.allGather(send, gathered, s);
                NcclComm.groupStart();
                comm.send(send, 0, s);
                comm.recv(self, 0, s);
                NcclComm.groupEnd();
                s.synchronize();
                comm.checkAsyncError();
                float[] want = x.toFloatArray();
                for (DeviceBuffer b : new DeviceBuffer[] {recv, gathered, self}) {
                    try (HostBuffer h = b.toHost()) {
                        assertArrayEquals(want, h.toFloatArray(), "world size 1 returns the input unchanged");
                    }
                }
            }
        }
    }

    @Test
    void poolCloseWithALiveBufferReportsTheLeakAndFreesIt() {
        // freed memory stays in the driver's memory pool for reuse (CudaContext keeps it): give it back
        // first, so that the allocation below has to take new memory from the device
        ctx.releaseCachedMemory();
        long freeBefore = ctx.memoryInfo().free();
        DevicePool pool = ctx.createPool();
        DeviceBuffer leaked = pool.allocate(DType.F32, Shape.of(64 << 20)); // 256 MiB
        assertTrue(ctx.memoryInfo().free() < freeBefore);
        IllegalStateException e = assertThrows(IllegalStateException.class, pool::close);
        assertTrue(e.getMessage().contains("memory leaked: 1 live buffer(s), 268435456 bytes"), e.getMessage());
        assertTrue(leaked.isClosed());
        assertThrows(BufferClosedException.class, leaked::address);
        // the free is stream-ordered (cuMemFreeAsync) and the pool keeps what is freed: release it
        ctx.releaseCachedMemory();
        assertTrue(ctx.memoryInfo().free() >= freeBefore - (32L << 20), "the leaked memory was given back");
    }
}
