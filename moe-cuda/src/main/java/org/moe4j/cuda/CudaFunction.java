package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/** One kernel of a {@link CudaModule}; launch it with {@link Launch}. */
public final class CudaFunction {
    private final CudaModule module;
    private final String name;
    private final MemorySegment handle; // CUfunction

    CudaFunction(CudaModule module, String name, MemorySegment handle) {
        this.module = module;
        this.name = name;
        this.handle = handle;
    }

    /** @return the kernel's name */
    public String name() {
        return name;
    }

    /** @return its module */
    public CudaModule module() {
        return module;
    }

    /**
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

    /** @return registers per thread */
    public int registers() {
        return attribute(cuda_h.CU_FUNC_ATTRIBUTE_NUM_REGS);
    }

    /** @return the largest block this kernel can be launched with */
    public int maxThreadsPerBlock() {
        return attribute(cuda_h.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    }

    /** @return local (spill) memory per thread in bytes */
    public int localBytes() {
        return attribute(cuda_h.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES);
    }

    /**
     * Allows launches with more than 48 KiB of dynamic shared memory.
     *
     * @param bytes the largest dynamic shared memory a launch will ask for
     */
    public void setMaxDynamicSharedMemory(int bytes) {
        MemorySegment h = handle();
        module.context().makeCurrent();
        CudaException.check(cuda_h.cuFuncSetAttribute(h, cuda_h.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
                "cuFuncSetAttribute(" + name + ", MAX_DYNAMIC_SHARED_SIZE_BYTES, " + bytes + ")");
    }

    @Override
    public String toString() {
        return "CudaFunction[" + module.family() + "/" + name + "]";
    }
}
