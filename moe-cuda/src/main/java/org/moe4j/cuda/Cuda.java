package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.cuda.internal.NativeLibraries;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * Process-wide driver state: loads libcuda and calls {@code cuInit} once. A failure (no library, no
 * driver, stub library) is remembered and rethrown unchanged on every later call.
 */
public final class Cuda {
    private static final Object LOCK = new Object();
    private static volatile boolean initialised;
    private static volatile RuntimeException failure;

    private Cuda() {
    }

    /**
     * Loads libcuda and initialises the driver (idempotent).
     *
     * @throws NativeLibraryException when libcuda cannot be found or loaded
     * @throws CudaException          when {@code cuInit} fails (e.g. no driver, stub library)
     */
    public static void init() {
        if (initialised) {
            return;
        }
        synchronized (LOCK) {
            if (initialised) {
                return;
            }
            if (failure != null) {
                throw failure;
            }
            try {
                NativeLibraries.cuda();
                CudaException.check(cuda_h.cuInit(0), "cuInit(0)");
                initialised = true;
            } catch (NativeLibraryException | CudaException e) {
                failure = e;
                throw e;
            } catch (LinkageError e) {
                failure = new NativeLibraryException("libcuda: " + e.getMessage(), e);
                throw failure;
            }
        }
    }

    /**
     * Returns the number of CUDA devices visible to this process.
     * @return the number of CUDA devices visible to this process
     * @throws NativeLibraryException when libcuda cannot be loaded
     * @throws CudaException          when the driver fails
     */
    public static int deviceCount() {
        init();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment n = a.allocate(ValueLayout.JAVA_INT);
            CudaException.check(cuda_h.cuDeviceGetCount(n), "cuDeviceGetCount");
            return n.get(ValueLayout.JAVA_INT, 0);
        }
    }

    /**
     * Returns the driver's CUDA version, e.g. {@code "13.0"}.
     * @return the driver's CUDA version, e.g. {@code "13.0"}
     * @throws CudaException when the driver fails
     */
    public static String driverVersion() {
        init();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment n = a.allocate(ValueLayout.JAVA_INT);
            CudaException.check(cuda_h.cuDriverGetVersion(n), "cuDriverGetVersion");
            int v = n.get(ValueLayout.JAVA_INT, 0);
            return v / 1000 + "." + (v % 1000) / 10;
        }
    }
}
