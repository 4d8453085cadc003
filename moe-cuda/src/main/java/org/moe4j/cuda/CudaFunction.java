package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/** One kernel of a {@link CudaModule}; launch it with {@link Launch}. */
public final class CudaFunction {
    private final CudaModule module;
    private final String name;
    private final MemorySegment handle; // CUfunction
    /** Parameter sizes from cuFuncGetParamInfo, once queried; {@link #NO_PARAM_INFO} when the driver cannot tell. */
    private volatile long[] paramSizes;

    /**
     * The dynamic shared-memory limit this object set; the driver's default (48 KiB, which launches
     * may use without raising it) until then.
     */
    private volatile int dynamicSmemLimit = DEFAULT_DYNAMIC_SMEM;
    private final Object smemLock = new Object();
    private int smemAttributeCalls; // guarded by smemLock

    private static final long[] NO_PARAM_INFO = new long[0];
    /** Dynamic shared memory every kernel may use without {@code cuFuncSetAttribute}. */
    static final int DEFAULT_DYNAMIC_SMEM = 48 * 1024;

    CudaFunction(CudaModule module, String name, MemorySegment handle) {
        this.module = module;
        this.name = name;
        this.handle = handle;
    }

    /**
     * Returns the kernel's name.
     * @return the kernel's name
     */
    public String name() {
        return name;
    }

    /**
     * Returns its module.
     * @return its module
     */
    public CudaModule module() {
        return module;
    }

    /**
     * Returns the {@code CUfunction} handle.
     * @return the {@code CUfunction} handle
     * @throws BufferClosedException when the module was closed
     */
    public MemorySegment handle() {
        if (module.isClosed()) {
            throw new BufferClosedException("CudaFunction " + name + " (module " + module.family() + ")");
        }
        return handle;
    }

    /**
     * Returns its value.
     * @param attribute a {@code CU_FUNC_ATTRIBUTE_*} constant of {@code cuda_h}
     * @return its value
     */
    public int attribute(int attribute) {
        MemorySegment h = handle();
        module.context().makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.JAVA_INT);
            CudaException.check(cuda_h.cuFuncGetAttribute(out, attribute, h), "cuFuncGetAttribute(" + name + ", " + attribute + ")");
            return out.get(ValueLayout.JAVA_INT, 0);
        }
    }

    /**
     * Returns registers per thread.
     * @return registers per thread
     */
    public int registers() {
        return attribute(cuda_h.CU_FUNC_ATTRIBUTE_NUM_REGS);
    }

    /**
     * Returns the largest block this kernel can be launched with.
     * @return the largest block this kernel can be launched with
     */
    public int maxThreadsPerBlock() {
        return attribute(cuda_h.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    }

    /**
     * Returns local (spill) memory per thread in bytes.
     * @return local (spill) memory per thread in bytes
     */
    public int localBytes() {
        return attribute(cuda_h.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES);
    }

    /**
     * Sets the kernel's dynamic shared-memory limit ({@code cuFuncSetAttribute}, every call): allows
     * launches with more than 48 KiB. Launchers use {@link #ensureMaxDynamicSharedMemory(int)}, which
     * calls the driver only when the limit must rise.
     *
     * @param bytes the largest dynamic shared memory a launch will ask for
     * @throws CudaException when the driver refuses it (above the device's opt-in maximum)
     */
    public void setMaxDynamicSharedMemory(int bytes) {
        synchronized (smemLock) {
            setAttribute(bytes);
            dynamicSmemLimit = bytes;
        }
    }

    /**
     * Makes sure launches may ask for {@code bytes} of dynamic shared memory: the driver is called
     * once per function and limit ({@code cuFuncSetAttribute} is a host call that should not sit in
     * every launch, nor inside event-timed windows); a later, larger request raises the limit, a
     * smaller one costs a volatile read. Thread-safe.
     *
     * @param bytes the dynamic shared memory a launch will ask for
     * @throws CudaException when the driver refuses it (above the device's opt-in maximum)
     */
    public void ensureMaxDynamicSharedMemory(int bytes) {
        if (bytes <= dynamicSmemLimit) {
            return;
        }
        synchronized (smemLock) {
            if (bytes > dynamicSmemLimit) {
                setAttribute(bytes);
                dynamicSmemLimit = bytes;
            }
        }
    }

    /** @return how often this object called {@code cuFuncSetAttribute} (for tests) */
    int smemAttributeCalls() {
        synchronized (smemLock) {
            return smemAttributeCalls;
        }
    }

    private void setAttribute(int bytes) { // under smemLock
        smemAttributeCalls++;
        MemorySegment h = handle();
        module.context().makeCurrent();
        CudaException.check(cuda_h.cuFuncSetAttribute(h, cuda_h.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
                "cuFuncSetAttribute(" + name + ", MAX_DYNAMIC_SHARED_SIZE_BYTES, " + bytes + ")");
    }

    /**
     * The byte size of each kernel parameter, in declaration order, from {@code cuFuncGetParamInfo}
     * (CUDA 12.4+ drivers), queried once and cached. {@link Launch#launch()} checks its arguments
     * against it.
     *
     * @return the sizes (a copy), or {@code null} when the driver cannot tell (symbol missing, or
     *         {@code CUDA_ERROR_NOT_SUPPORTED}): then launches are not checked
     * @throws CudaException when the driver fails otherwise
     */
    public long[] parameterSizes() {
        long[] s = paramSizesCached();
        return s == null ? null : s.clone();
    }

    /** @return the cached sizes (not copied), or null when unknown */
    long[] paramSizesCached() {
        long[] s = paramSizes;
        if (s == null) {
            s = paramSizes = queryParamSizes();
        }
        return s == NO_PARAM_INFO ? null : s;
    }

    private long[] queryParamSizes() {
        MemorySegment h = handle();
        if (cuda_h.symbolLookup().find("cuFuncGetParamInfo").isEmpty()) {
            return NO_PARAM_INFO; // driver older than CUDA 12.4
        }
        module.context().makeCurrent();
        List<Long> sizes = new ArrayList<>();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment offset = a.allocate(ValueLayout.JAVA_LONG); // required (only the size is optional)
            MemorySegment size = a.allocate(ValueLayout.JAVA_LONG);
            for (long i = 0;; i++) {
                int rc = cuda_h.cuFuncGetParamInfo(h, i, offset, size);
                if (rc == cuda_h.CUDA_ERROR_INVALID_VALUE) {
                    break; // past the last parameter
                }
                if (rc == cuda_h.CUDA_ERROR_NOT_SUPPORTED) {
                    return NO_PARAM_INFO;
                }
                CudaException.check(rc, "cuFuncGetParamInfo(" + name + ", " + i + ")");
                sizes.add(size.get(ValueLayout.JAVA_LONG, 0));
            }
        }
        long[] out = new long[sizes.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = sizes.get(i);
        }
        return out;
    }

    @Override
    public String toString() {
        return "CudaFunction[" + module.family() + "/" + name + "]";
    }
}
