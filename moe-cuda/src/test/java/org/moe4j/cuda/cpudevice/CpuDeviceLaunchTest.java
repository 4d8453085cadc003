package org.moe4j.cuda.cpudevice;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.CudaEvent;
import org.moe4j.cuda.CudaException;
import org.moe4j.cuda.CudaFunction;
import org.moe4j.cuda.CudaModule;
import org.moe4j.cuda.CudaStream;
import org.moe4j.cuda.Launch;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;
import org.moe4j.cuda.kernels.internal.TensorMaps;

/**
 * The CPU device's launch checks and numerics, and its driver API rules, with the planted kernels
 * of native/cpudevice/test/planted.cu. Nothing here faults a kernel (a fault would make the context's
 * error sticky): those tests are in {@link CpuDeviceFaultTest}.
 */
@Tag("cpudevice")
class CpuDeviceLaunchTest {
    private static final int INVALID_VALUE = 1;
    private static final int INVALID_HANDLE = 400;
    private static final int LAUNCH_OUT_OF_RESOURCES = 701;

    private static CudaContext ctx;
    private static CudaModule module;

    @BeforeAll
    static void open() {
        CpuDevice.assumeCpuDevice();
        ctx = CudaContext.open(0);
        module = CpuDevice.loadPlanted(ctx);
    }

    @AfterAll
    static void close() {
        if (module != null) {
            module.close();
        }
        if (ctx != null) {
            ctx.synchronize(); // nothing here may leave a sticky error behind
            ctx.close();
        }
    }

    @Test
    void moduleLoadRefusesBadInputAndLeavesTheContextUsable() {
        assertThrows(NullPointerException.class, () -> CudaModule.load(null, "x", new byte[] {1}));
        assertThrows(NullPointerException.class, () -> CudaModule.load(ctx, null, new byte[] {1}));
        IllegalArgumentException empty = assertThrows(IllegalArgumentException.class, () -> CudaModule.load(ctx, "x", new byte[0]));
        assertTrue(empty.getMessage().contains("module x: empty kernel image"), empty.getMessage());
        assertThrows(IllegalArgumentException.class, () -> CudaModule.load(ctx, "x", null));
        // an image without any kernel the device knows: the driver refuses it, and nothing is sticky
        CudaException bad = assertThrows(CudaException.class, () -> CudaModule.load(ctx, "garbage", "no kernels here\0".getBytes()));
        assertTrue(bad.getMessage().contains("CUDA_ERROR_INVALID_IMAGE"), bad.getMessage());
        try (CudaModule m = CpuDevice.loadPlanted(ctx)) {
            assertTrue(m.function("moe4jtest_block_sum_ok") != null, "the context still loads and finds kernels");
        }
    }

    @Test
    void argumentSizesAreCheckedAgainstTheKernelsParametersBeforeLaunch() {
        CudaFunction f = module.function("moe4jtest_int_param");
        assertArrayEquals(new long[] {4, 8}, f.parameterSizes());
        long out = CpuDevice.alloc(ctx, 64 * 4);
        try {
            float[] sentinel = new float[64];
            Arrays.fill(sentinel, -7f);
            CpuDevice.upload(ctx, out, sentinel);

            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> Launch.of(f).grid(1).block(64).arg(64L).argPointer(out).launch());
            assertTrue(e.getMessage().contains("moe4jtest_int_param: argument 0 is 8 bytes (long), the kernel's parameter 0 "
                    + "is 4 bytes: pass an int"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> Launch.of(f).grid(1).block(64).arg(64).launch());
            assertTrue(e.getMessage().contains("moe4jtest_int_param: 1 argument passed, the kernel takes 2 parameters"),
                    e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> Launch.of(f).grid(1).block(64).arg(64).arg(1).launch());
            assertTrue(e.getMessage().contains("argument 1 is 4 bytes (int), the kernel's parameter 1 is 8 bytes: pass a long"),
                    e.getMessage());
            assertArrayEquals(sentinel, CpuDevice.download(ctx, out, 64), "nothing may have been launched");

            Launch.of(f).grid(1).block(64).arg(64).argPointer(out).launch();
            float[] got = CpuDevice.download(ctx, out, 64);
            for (int i = 0; i < 64; i++) {
                assertEquals(i, got[i]);
            }
        } finally {
            assertEquals(0, CpuDevice.free(ctx, out));
        }
    }

    @Test
    void correctBlockSumPassesRacecheckAndIsExact() {
        int blocks = 3;
        int threads = 256;
        float[] in = new float[blocks * threads];
        Random r = new Random(1);
        float[] expect = new float[blocks];
        for (int i = 0; i < in.length; i++) {
            in[i] = r.nextInt(200) - 100; // small integers: every order of summation is exact
            expect[i / threads] += in[i];
        }
        long dIn = CpuDevice.alloc(ctx, in.length * 4L);
        long dOut = CpuDevice.alloc(ctx, blocks * 4L);
        try {
            CpuDevice.upload(ctx, dIn, in);
            Launch.of(module.function("moe4jtest_block_sum_ok")).grid(blocks).block(threads).argPointer(dIn).argPointer(dOut)
                    .launch();
            assertArrayEquals(expect, CpuDevice.download(ctx, dOut, blocks));
        } finally {
            CpuDevice.free(ctx, dIn);
            CpuDevice.free(ctx, dOut);
        }
    }

    @Test
    void mmaFragmentsMatchTheReferenceBitForBitAndAWrongFragmentDoesNot() {
        int m = 16;
        int n = 8;
        int k = 32;
        Random r = new Random(42);
        short[] a = new short[m * k];
        short[] b = new short[n * k];
        for (int i = 0; i < a.length; i++) {
            a[i] = bf16(r.nextFloat() * 4 - 2);
        }
        for (int i = 0; i < b.length; i++) {
            b[i] = bf16(r.nextFloat() * 4 - 2);
        }
        // reference: bf16 products (exact in fp32), summed in fp32 in ascending k from 0
        float[] ref = new float[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                float acc = 0f;
                for (int kk = 0; kk < k; kk++) {
                    acc = acc + f32(a[i * k + kk]) * f32(b[j * k + kk]);
                }
                ref[i * n + j] = acc;
            }
        }
        long dA = CpuDevice.alloc(ctx, a.length * 2L);
        long dB = CpuDevice.alloc(ctx, b.length * 2L);
        long dD = CpuDevice.alloc(ctx, m * n * 4L);
        try {
            CpuDevice.upload(ctx, dA, a);
            CpuDevice.upload(ctx, dB, b);
            Launch.of(module.function("moe4jtest_mma_tile")).block(32).argPointer(dA).argPointer(dB).argPointer(dD).launch();
            float[] good = CpuDevice.download(ctx, dD, m * n);
            for (int i = 0; i < ref.length; i++) {
                assertEquals(Float.floatToRawIntBits(ref[i]), Float.floatToRawIntBits(good[i]),
                        "D[" + i / n + "][" + i % n + "]: " + good[i] + " vs reference " + ref[i]);
            }
            Launch.of(module.function("moe4jtest_mma_wrong_fragment")).block(32).argPointer(dA).argPointer(dB).argPointer(dD)
                    .launch();
            float[] bad = CpuDevice.download(ctx, dD, m * n);
            assertFalse(Arrays.equals(ref, bad), "the planted fragment swap must change the result");
        } finally {
            CpuDevice.free(ctx, dA);
            CpuDevice.free(ctx, dB);
            CpuDevice.free(ctx, dD);
        }
    }

    @Test
    void dynamicSharedMemoryAbove48KbNeedsTheFunctionAttribute() {
        CudaFunction f = module.function("moe4jtest_big_smem");
        int floats = 16384; // 64 KiB
        long out = CpuDevice.alloc(ctx, 4);
        try {
            CudaException e = assertThrows(CudaException.class,
                    () -> Launch.of(f).block(256).sharedMemory(floats * 4).argPointer(out).arg(floats).launch());
            assertEquals(INVALID_VALUE, e.code(), e.getMessage());
            assertTrue(e.getMessage().contains("moe4jtest_big_smem") && e.getMessage().contains("shared 65536 bytes"),
                    e.getMessage());
            ctx.synchronize(); // a refused launch is not a fault: the context still works

            assertThrows(CudaException.class, () -> f.setMaxDynamicSharedMemory(232448 + 1)); // above the opt-in maximum
            f.setMaxDynamicSharedMemory(floats * 4);
            assertEquals(floats * 4, f.attribute(cuda_h.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES));
            Launch.of(f).block(256).sharedMemory(floats * 4).argPointer(out).arg(floats).launch();
            assertEquals(floats - 1, CpuDevice.download(ctx, out, 1)[0]);
        } finally {
            CpuDevice.free(ctx, out);
        }
    }

    @Test
    void launchBoundsAreEnforced() {
        CudaFunction f = module.function("moe4jtest_bounds128");
        assertEquals(128, f.maxThreadsPerBlock());
        long out = CpuDevice.alloc(ctx, 256 * 4);
        try {
            CudaException e = assertThrows(CudaException.class, () -> Launch.of(f).block(256).argPointer(out).launch());
            assertEquals(LAUNCH_OUT_OF_RESOURCES, e.code(), e.getMessage());
            assertTrue(e.getMessage().contains("moe4jtest_bounds128"), e.getMessage());
            Launch.of(f).grid(2).block(128).argPointer(out).launch();
            float[] got = CpuDevice.download(ctx, out, 256);
            for (float v : got) {
                assertEquals(1f, v);
            }
        } finally {
            CpuDevice.free(ctx, out);
        }
    }

    @Test
    void gridAndBlockLimitsAreRefusedByTheDriver() {
        CudaFunction f = module.function("moe4jtest_int_param");
        MemorySegment h = f.handle();
        int[][] bad = { // grid x, y, z, block x, y, z
            {1, 1, 1, 1, 1, 65}, // block z <= 64
            {1, 1, 1, 2048, 1, 1}, // block x <= 1024
            {1, 1, 1, 32, 32, 2}, // 2048 threads > 1024
            {1, 65536, 1, 32, 1, 1}, // grid y <= 65535
            {1, 1, 65536, 32, 1, 1}, // grid z <= 65535
            {0, 1, 1, 32, 1, 1}, // empty grid
            {1, 1, 1, 0, 1, 1}, // empty block
        };
        ctx.makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment n = a.allocateFrom(ValueLayout.JAVA_INT, 0);
            MemorySegment p = a.allocateFrom(ValueLayout.JAVA_LONG, 0L);
            MemorySegment params = a.allocate(ValueLayout.ADDRESS, 2);
            params.setAtIndex(ValueLayout.ADDRESS, 0, n);
            params.setAtIndex(ValueLayout.ADDRESS, 1, p);
            for (int[] c : bad) {
                int rc = cuda_h.cuLaunchKernel(h, c[0], c[1], c[2], c[3], c[4], c[5], 0, MemorySegment.NULL, params,
                        MemorySegment.NULL);
                assertEquals(INVALID_VALUE, rc, "grid/block " + Arrays.toString(c));
            }
            assertEquals(0, cuda_h.cuLaunchKernel(h, 1, 1, 1, 32, 1, 1, 0, MemorySegment.NULL, params, MemorySegment.NULL));
        }
        // through Launch: block z = 65 passes Java's check (65 threads) and the driver refuses it
        CudaException e = assertThrows(CudaException.class, () -> Launch.of(f).block(1, 1, 65).arg(0).argPointer(0).launch());
        assertEquals(INVALID_VALUE, e.code(), e.getMessage());
        ctx.synchronize();
    }

    @Test
    void tensorMapRulesAreChecked() {
        long base = CpuDevice.alloc(ctx, 64 * 64 * 2);
        try (Arena a = Arena.ofConfined()) {
            record Case(String what, long address, long[] dims, long[] strides, int[] box, int[] elem, boolean misalignMap) {
            }
            long[] dims = {64, 64};
            long[] strides = {128};
            int[] box = {64, 64};
            int[] one = {1, 1};
            Case ok = new Case("valid", base, dims, strides, box, one, false);
            Case[] bad = {
                new Case("address not 16-byte aligned", base + 8, dims, strides, box, one, false),
                new Case("stride not a multiple of 16", base, dims, new long[] {136}, box, one, false),
                new Case("box extent above 256", base, new long[] {64, 512}, strides, new int[] {64, 257}, one, false),
                new Case("inner box 256 bytes > 128-byte swizzle", base, new long[] {128, 64}, new long[] {256},
                        new int[] {128, 64}, one, false),
                new Case("zero extent", base, new long[] {64, 0}, strides, box, one, false),
                new Case("element stride above 8", base, dims, strides, box, new int[] {1, 9}, false),
                new Case("CUtensorMap not 64-byte aligned", base, dims, strides, box, one, true),
            };
            ctx.makeCurrent();
            for (Case c : java.util.stream.Stream.concat(java.util.stream.Stream.of(ok), Arrays.stream(bad)).toList()) {
                MemorySegment map = a.allocate(TensorMaps.BYTES + 64, 64);
                if (c.misalignMap()) {
                    map = map.asSlice(16, TensorMaps.BYTES);
                }
                int rank = c.dims().length;
                int rc = TensorMaps.cuTensorMapEncodeTiled(map, TensorMaps.DATA_TYPE_BFLOAT16, rank, c.address(),
                        a.allocateFrom(ValueLayout.JAVA_LONG, c.dims()), a.allocateFrom(ValueLayout.JAVA_LONG, c.strides()),
                        a.allocateFrom(ValueLayout.JAVA_INT, c.box()), a.allocateFrom(ValueLayout.JAVA_INT, c.elem()),
                        TensorMaps.INTERLEAVE_NONE, TensorMaps.SWIZZLE_128B, TensorMaps.L2_PROMOTION_L2_128B,
                        TensorMaps.OOB_FILL_NONE);
                assertEquals(c == ok ? 0 : INVALID_VALUE, rc, c.what());
            }
            // rank 6 is refused too
            MemorySegment map = a.allocate(TensorMaps.BYTES, 64);
            long[] d6 = {64, 2, 2, 2, 2, 2};
            int rc = TensorMaps.cuTensorMapEncodeTiled(map, TensorMaps.DATA_TYPE_BFLOAT16, 6, base,
                    a.allocateFrom(ValueLayout.JAVA_LONG, d6), a.allocateFrom(ValueLayout.JAVA_LONG, 128, 256, 512, 1024, 2048),
                    a.allocateFrom(ValueLayout.JAVA_INT, 64, 1, 1, 1, 1, 1), a.allocateFrom(ValueLayout.JAVA_INT, 1, 1, 1, 1, 1, 1),
                    TensorMaps.INTERLEAVE_NONE, TensorMaps.SWIZZLE_128B, TensorMaps.L2_PROMOTION_L2_128B, TensorMaps.OOB_FILL_NONE);
            assertEquals(INVALID_VALUE, rc, "rank 6");
            // and the typed wrapper encodes the valid layout
            assertEquals(TensorMaps.BYTES, TensorMaps.bf16RowMajor(a, base, 64, 64, 64, 64, 64).byteSize());
        } finally {
            CpuDevice.free(ctx, base);
        }
    }

    @Test
    void streamsAndEventsKeepTheirOrderingSemantics() {
        CudaFunction f = module.function("moe4jtest_int_param");
        int n = 1000;
        long out = CpuDevice.alloc(ctx, n * 4L);
        try (CudaStream s1 = ctx.createStream(); CudaStream s2 = ctx.createStream();
                CudaEvent start = ctx.createEvent(true); CudaEvent end = ctx.createEvent(true);
                CudaEvent later = ctx.createEvent(true); CudaEvent never = ctx.createEvent(true);
                CudaEvent untimed = ctx.createEvent(false); Arena a = Arena.ofConfined()) {
            start.record(s1);
            Launch.of(f).grid(4).block(256).stream(s1).arg(n).argPointer(out).launch();
            end.record(s1);
            untimed.record(s1);
            s2.waitFor(end); // s2's copy is ordered after the kernel on s1
            MemorySegment host = a.allocate(ValueLayout.JAVA_FLOAT, n);
            ctx.makeCurrent();
            assertEquals(0, cuda_h.cuMemcpyDtoHAsync_v2(host, out, n * 4L, s2.handle()));
            s2.synchronize();
            for (int i = 0; i < n; i++) {
                assertEquals(i, host.getAtIndex(ValueLayout.JAVA_FLOAT, i));
            }
            end.synchronize();
            later.record(s2);
            later.synchronize();
            float kernel = end.elapsedMillis(start);
            assertTrue(kernel >= 0, "elapsed " + kernel);
            assertTrue(later.elapsedMillis(start) >= kernel, "a later event is not earlier");
            CudaException e = assertThrows(CudaException.class, () -> never.elapsedMillis(start));
            assertEquals(INVALID_HANDLE, e.code(), "an event never recorded has no time: " + e.getMessage());
            e = assertThrows(CudaException.class, () -> untimed.elapsedMillis(start));
            assertEquals(INVALID_HANDLE, e.code(), "an event without timing has no time: " + e.getMessage());
            ctx.synchronize();
        } finally {
            CpuDevice.free(ctx, out);
        }
    }

    @Test
    void deviceCopiesOutsideAnAllocationAreRefused() {
        long buf = CpuDevice.alloc(ctx, 200); // the allocator rounds to 256 bytes, the allocation is 200
        long other = CpuDevice.alloc(ctx, 200);
        long freed = CpuDevice.alloc(ctx, 64);
        assertEquals(0, CpuDevice.free(ctx, freed));
        ctx.makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment host = a.allocate(512, 16);
            MemorySegment s = MemorySegment.NULL;
            assertEquals(INVALID_VALUE, cuda_h.cuMemcpyHtoDAsync_v2(buf + 196, host, 8, s), "H2D past the end");
            assertEquals(INVALID_VALUE, cuda_h.cuMemcpyHtoDAsync_v2(buf, host, 201, s), "H2D larger than the allocation");
            assertEquals(INVALID_VALUE, cuda_h.cuMemcpyDtoHAsync_v2(host, buf + 100, 101, s), "D2H past the end");
            assertEquals(INVALID_VALUE, cuda_h.cuMemcpyDtoDAsync_v2(other, buf + 8, 200, s), "D2D source past the end");
            assertEquals(INVALID_VALUE, cuda_h.cuMemcpyDtoDAsync_v2(other + 1, buf, 200, s), "D2D destination past the end");
            assertEquals(INVALID_VALUE, cuda_h.cuMemsetD8Async(buf + 200, (byte) 0, 1, s), "memset one byte past the end");
            assertEquals(INVALID_VALUE, cuda_h.cuMemcpyHtoDAsync_v2(freed, host, 4, s), "H2D into freed memory");
            assertEquals(INVALID_VALUE, cuda_h.cuMemcpyDtoDAsync_v2(other, buf - 16, 16, s), "D2D from before the allocation");
            // the exact bounds are allowed, and the refusals left no error behind
            assertEquals(0, cuda_h.cuMemcpyHtoDAsync_v2(buf, host, 200, s));
            assertEquals(0, cuda_h.cuMemcpyDtoDAsync_v2(other, buf, 200, s));
            assertEquals(0, cuda_h.cuMemsetD8Async(buf + 199, (byte) 0, 1, s));
            assertEquals(0, cuda_h.cuCtxSynchronize());
        } finally {
            CpuDevice.free(ctx, buf);
            CpuDevice.free(ctx, other);
        }
    }

    static short bf16(float f) {
        int u = Float.floatToRawIntBits(f);
        u += 0x7fff + ((u >>> 16) & 1); // round to nearest even (finite values only here)
        return (short) (u >>> 16);
    }

    static float f32(short h) {
        return Float.intBitsToFloat((h & 0xffff) << 16);
    }
}
