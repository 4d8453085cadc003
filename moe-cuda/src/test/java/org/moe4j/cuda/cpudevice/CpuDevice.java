package org.moe4j.cuda.cpudevice;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.moe4j.cuda.Cuda;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.CudaDevice;
import org.moe4j.cuda.CudaException;
import org.moe4j.cuda.CudaModule;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * Helpers of the CPU device's own tests (native/cpudevice, {@code @Tag("cpudevice")}): the check
 * that the loaded libcuda is the CPU device, the module of planted kernels
 * (native/cpudevice/test/planted.cu), and raw device memory.
 *
 * <p>The planted kernels exist only in libmoe4j_cpudevice.so. Their module is loaded from a small
 * text image that lists the kernel names: the CPU device's {@code cuModuleLoadData} finds a
 * module's kernels by scanning the image bytes for the names of the kernels it was built with. That
 * works only on the CPU device (a real driver refuses such an image). {@code CudaModule} loads
 * only class-path fatbins, so the module object is made through its private constructor.
 */
final class CpuDevice {
    /** The name cuDeviceGetName reports for the CPU device. */
    static final String NAME = "moe4j CPU device";
    /** Family name of the planted kernels. */
    static final String FAMILY = "planted";
    /** Every kernel of native/cpudevice/test/planted.cu. */
    static final List<String> KERNELS = List.of("moe4jtest_block_sum_ok", "moe4jtest_block_sum_nosync",
            "moe4jtest_tail_off_by_one", "moe4jtest_mbar_never", "moe4jtest_int_param", "moe4jtest_mma_tile",
            "moe4jtest_mma_wrong_fragment", "moe4jtest_big_smem", "moe4jtest_bounds128");

    private CpuDevice() {
    }

    /** Skips the calling test (JUnit assumption, naming why) unless the loaded libcuda is the CPU device. */
    static void assumeCpuDevice() {
        String lib = System.getProperty("moe4j.cuda.lib");
        assumeTrue(lib != null && !lib.isBlank(), "not on the CPU device: -Dmoe4j.cuda.lib is not set (these tests need "
                + "-Dmoe4j.cuda.lib=<out>/libmoe4j_cpudevice.so, built by native/cpudevice/build.sh)");
        String name;
        try {
            Cuda.init();
            name = CudaDevice.query(0).name();
        } catch (RuntimeException | LinkageError e) {
            assumeTrue(false, "not on the CPU device: libcuda from -Dmoe4j.cuda.lib=" + lib + " does not work: " + e);
            return;
        }
        assumeTrue(name.contains(NAME), "not on the CPU device: device 0 is '" + name + "' (libcuda " + lib + "), not the "
                + NAME);
    }

    /** @return the module image: the kernel names, NUL-terminated text (the CPU device scans it for names) */
    static byte[] image() {
        String text = "moe4j CPU device test module: " + String.join("\n", KERNELS) + "\n";
        byte[] b = text.getBytes(StandardCharsets.US_ASCII);
        return java.util.Arrays.copyOf(b, b.length + 1);
    }

    /**
     * Loads the planted kernels into {@code ctx}.
     *
     * @return the module; close it before the context
     */
    static CudaModule loadPlanted(CudaContext ctx) {
        return CudaModule.load(ctx, FAMILY, image());
    }

    // ---- raw device memory (cuda_h, so that the tests control every byte and every call) ----

    /** @return a device allocation of {@code bytes} */
    static long alloc(CudaContext ctx, long bytes) {
        ctx.makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.JAVA_LONG);
            CudaException.check(cuda_h.cuMemAlloc_v2(out, bytes), "cuMemAlloc_v2(" + bytes + ")");
            return out.get(ValueLayout.JAVA_LONG, 0);
        }
    }

    /** @return the driver's status of cuMemFree (not thrown: after a fault the context refuses it) */
    static int free(CudaContext ctx, long address) {
        ctx.makeCurrent();
        return cuda_h.cuMemFree_v2(address);
    }

    static void upload(CudaContext ctx, long dst, float[] v) {
        try (Arena a = Arena.ofConfined()) {
            upload(ctx, dst, a.allocateFrom(ValueLayout.JAVA_FLOAT, v));
        }
    }

    static void upload(CudaContext ctx, long dst, short[] v) {
        try (Arena a = Arena.ofConfined()) {
            upload(ctx, dst, a.allocateFrom(ValueLayout.JAVA_SHORT, v));
        }
    }

    private static void upload(CudaContext ctx, long dst, MemorySegment src) {
        ctx.makeCurrent();
        CudaException.check(cuda_h.cuMemcpyHtoDAsync_v2(dst, src, src.byteSize(), MemorySegment.NULL), "cuMemcpyHtoDAsync_v2");
        CudaException.check(cuda_h.cuCtxSynchronize(), "cuCtxSynchronize");
    }

    static float[] download(CudaContext ctx, long src, int n) {
        ctx.makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment dst = a.allocate(ValueLayout.JAVA_FLOAT, n);
            CudaException.check(cuda_h.cuMemcpyDtoHAsync_v2(dst, src, dst.byteSize(), MemorySegment.NULL), "cuMemcpyDtoHAsync_v2");
            CudaException.check(cuda_h.cuCtxSynchronize(), "cuCtxSynchronize");
            return dst.toArray(ValueLayout.JAVA_FLOAT);
        }
    }
}
