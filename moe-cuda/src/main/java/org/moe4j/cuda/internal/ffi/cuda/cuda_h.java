package org.moe4j.cuda.internal.ffi.cuda;

import java.lang.foreign.AddressLayout;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/**
 * Bindings for {@code cuda.h}, the CUDA driver API (libcuda), in the shape jextract generates: one static method per C
 * function keeping its C name, with {@code name$handle()}, {@code name$descriptor()} and
 * {@code name$address()} companions, each backed by a lazily initialised holder class, so a symbol is
 * looked up and linked only when first used. Written by hand on hosts without jextract; the command
 * that regenerates the full header is kept in {@code native/jextract.sh}.
 *
 * <p>Nothing here checks status codes or manages memory: callers go through the typed wrappers in
 * {@code org.moe4j.cuda}. The library is located by {@code NativeLibraries} the first time any
 * symbol is needed; call {@link #symbolLookup()} first to get a clear error when it is missing.
 */
@SuppressWarnings({"unused", "restricted"})
public final class cuda_h {
    private cuda_h() {
    }

    /** {@code int}. */
    public static final ValueLayout.OfInt C_INT = ValueLayout.JAVA_INT;
    /** {@code long} and {@code size_t} on LP64. */
    public static final ValueLayout.OfLong C_LONG = ValueLayout.JAVA_LONG;
    /** {@code long long}. */
    public static final ValueLayout.OfLong C_LONG_LONG = ValueLayout.JAVA_LONG;
    /** {@code char}. */
    public static final ValueLayout.OfByte C_CHAR = ValueLayout.JAVA_BYTE;
    /** {@code float}. */
    public static final ValueLayout.OfFloat C_FLOAT = ValueLayout.JAVA_FLOAT;
    /** Any data pointer. */
    public static final AddressLayout C_POINTER = ValueLayout.ADDRESS;

    /** @return the library's symbols, loading it on first use (throws with every place looked when absent) */
    public static SymbolLookup symbolLookup() {
        return org.moe4j.cuda.internal.NativeLibraries.cuda().lookup();
    }

    static MemorySegment findOrThrow(String symbol) {
        return symbolLookup().find(symbol).orElseThrow(() ->
                new UnsatisfiedLinkError("libcuda: symbol " + symbol + " not found (library too old?)"));
    }

    static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) {
            return r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        return new IllegalStateException("unexpected checked exception from a downcall", t);
    }
    /** {@code CUDA_SUCCESS = 0} */
    public static final int CUDA_SUCCESS = 0;
    /** {@code CUDA_ERROR_INVALID_VALUE = 1} */
    public static final int CUDA_ERROR_INVALID_VALUE = 1;
    /** {@code CUDA_ERROR_NOT_READY = 600} */
    public static final int CUDA_ERROR_NOT_READY = 600;
    /** {@code CUDA_ERROR_NOT_SUPPORTED = 801} */
    public static final int CUDA_ERROR_NOT_SUPPORTED = 801;
    /** {@code CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900} */
    public static final int CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900;
    /** {@code CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901} */
    public static final int CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901;
    /** {@code CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906} */
    public static final int CUDA_ERROR_STREAM_CAPTURE_IMPLICIT = 906;
    /** {@code CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE = 910} */
    public static final int CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE = 910;
    /** {@code CU_STREAM_CAPTURE_MODE_GLOBAL = 0} */
    public static final int CU_STREAM_CAPTURE_MODE_GLOBAL = 0;
    /** {@code CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1} */
    public static final int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
    /** {@code CU_STREAM_CAPTURE_STATUS_NONE = 0} */
    public static final int CU_STREAM_CAPTURE_STATUS_NONE = 0;
    /** {@code CU_STREAM_CAPTURE_STATUS_ACTIVE = 1} */
    public static final int CU_STREAM_CAPTURE_STATUS_ACTIVE = 1;
    /** {@code CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2} */
    public static final int CU_STREAM_CAPTURE_STATUS_INVALIDATED = 2;
    /** {@code CU_STREAM_DEFAULT = 0x0} */
    public static final int CU_STREAM_DEFAULT = 0;
    /** {@code CU_STREAM_NON_BLOCKING = 0x1} */
    public static final int CU_STREAM_NON_BLOCKING = 1;
    /** {@code CU_EVENT_DEFAULT = 0x0} */
    public static final int CU_EVENT_DEFAULT = 0;
    /** {@code CU_EVENT_BLOCKING_SYNC = 0x1} */
    public static final int CU_EVENT_BLOCKING_SYNC = 1;
    /** {@code CU_EVENT_DISABLE_TIMING = 0x2} */
    public static final int CU_EVENT_DISABLE_TIMING = 2;
    /** {@code CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1} */
    public static final int CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
    /** {@code CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16} */
    public static final int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    /** {@code CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33} */
    public static final int CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33;
    /** {@code CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38} */
    public static final int CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38;
    /** {@code CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75} */
    public static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    /** {@code CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76} */
    public static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    /** {@code CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97} */
    public static final int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
    /** {@code CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0} */
    public static final int CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
    /** {@code CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1} */
    public static final int CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1;
    /** {@code CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3} */
    public static final int CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3;
    /** {@code CU_FUNC_ATTRIBUTE_NUM_REGS = 4} */
    public static final int CU_FUNC_ATTRIBUTE_NUM_REGS = 4;
    /** {@code CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8} */
    public static final int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

    private static final class cuInit {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuInit");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuInit} */
    public static FunctionDescriptor cuInit$descriptor() {
        return cuInit.DESC;
    }

    /** @return the downcall handle of {@code cuInit} */
    public static MethodHandle cuInit$handle() {
        return cuInit.HANDLE;
    }

    /** @return the address of {@code cuInit} */
    public static MemorySegment cuInit$address() {
        return cuInit.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuInit(unsigned int Flags)
     * }
     * @param Flags must be 0
     * @return the status code
     */
    public static int cuInit(int Flags) {
        try {
            return (int) cuInit.HANDLE.invokeExact(Flags);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDriverGetVersion {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDriverGetVersion");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDriverGetVersion} */
    public static FunctionDescriptor cuDriverGetVersion$descriptor() {
        return cuDriverGetVersion.DESC;
    }

    /** @return the downcall handle of {@code cuDriverGetVersion} */
    public static MethodHandle cuDriverGetVersion$handle() {
        return cuDriverGetVersion.HANDLE;
    }

    /** @return the address of {@code cuDriverGetVersion} */
    public static MemorySegment cuDriverGetVersion$address() {
        return cuDriverGetVersion.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDriverGetVersion(int *driverVersion)
     * }
     * @param driverVersion out: int, e.g. 13000 for 13.0
     * @return the status code
     */
    public static int cuDriverGetVersion(MemorySegment driverVersion) {
        try {
            return (int) cuDriverGetVersion.HANDLE.invokeExact(driverVersion);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDeviceGetCount {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDeviceGetCount");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDeviceGetCount} */
    public static FunctionDescriptor cuDeviceGetCount$descriptor() {
        return cuDeviceGetCount.DESC;
    }

    /** @return the downcall handle of {@code cuDeviceGetCount} */
    public static MethodHandle cuDeviceGetCount$handle() {
        return cuDeviceGetCount.HANDLE;
    }

    /** @return the address of {@code cuDeviceGetCount} */
    public static MemorySegment cuDeviceGetCount$address() {
        return cuDeviceGetCount.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDeviceGetCount(int *count)
     * }
     * @param count out: int
     * @return the status code
     */
    public static int cuDeviceGetCount(MemorySegment count) {
        try {
            return (int) cuDeviceGetCount.HANDLE.invokeExact(count);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDeviceGet {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDeviceGet");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDeviceGet} */
    public static FunctionDescriptor cuDeviceGet$descriptor() {
        return cuDeviceGet.DESC;
    }

    /** @return the downcall handle of {@code cuDeviceGet} */
    public static MethodHandle cuDeviceGet$handle() {
        return cuDeviceGet.HANDLE;
    }

    /** @return the address of {@code cuDeviceGet} */
    public static MemorySegment cuDeviceGet$address() {
        return cuDeviceGet.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDeviceGet(CUdevice *device, int ordinal)
     * }
     * @param device out: CUdevice (int)
     * @param ordinal device index
     * @return the status code
     */
    public static int cuDeviceGet(MemorySegment device, int ordinal) {
        try {
            return (int) cuDeviceGet.HANDLE.invokeExact(device, ordinal);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDeviceGetName {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDeviceGetName");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDeviceGetName} */
    public static FunctionDescriptor cuDeviceGetName$descriptor() {
        return cuDeviceGetName.DESC;
    }

    /** @return the downcall handle of {@code cuDeviceGetName} */
    public static MethodHandle cuDeviceGetName$handle() {
        return cuDeviceGetName.HANDLE;
    }

    /** @return the address of {@code cuDeviceGetName} */
    public static MemorySegment cuDeviceGetName$address() {
        return cuDeviceGetName.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
     * }
     * @param name out: NUL-terminated chars
     * @param len capacity of name
     * @param dev the device
     * @return the status code
     */
    public static int cuDeviceGetName(MemorySegment name, int len, int dev) {
        try {
            return (int) cuDeviceGetName.HANDLE.invokeExact(name, len, dev);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDeviceGetAttribute {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDeviceGetAttribute");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDeviceGetAttribute} */
    public static FunctionDescriptor cuDeviceGetAttribute$descriptor() {
        return cuDeviceGetAttribute.DESC;
    }

    /** @return the downcall handle of {@code cuDeviceGetAttribute} */
    public static MethodHandle cuDeviceGetAttribute$handle() {
        return cuDeviceGetAttribute.HANDLE;
    }

    /** @return the address of {@code cuDeviceGetAttribute} */
    public static MemorySegment cuDeviceGetAttribute$address() {
        return cuDeviceGetAttribute.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
     * }
     * @param pi out: int
     * @param attrib CUdevice_attribute
     * @param dev the device
     * @return the status code
     */
    public static int cuDeviceGetAttribute(MemorySegment pi, int attrib, int dev) {
        try {
            return (int) cuDeviceGetAttribute.HANDLE.invokeExact(pi, attrib, dev);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDeviceTotalMem_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDeviceTotalMem_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDeviceTotalMem_v2} */
    public static FunctionDescriptor cuDeviceTotalMem_v2$descriptor() {
        return cuDeviceTotalMem_v2.DESC;
    }

    /** @return the downcall handle of {@code cuDeviceTotalMem_v2} */
    public static MethodHandle cuDeviceTotalMem_v2$handle() {
        return cuDeviceTotalMem_v2.HANDLE;
    }

    /** @return the address of {@code cuDeviceTotalMem_v2} */
    public static MemorySegment cuDeviceTotalMem_v2$address() {
        return cuDeviceTotalMem_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
     * }
     * @param bytes out: size_t
     * @param dev the device
     * @return the status code
     */
    public static int cuDeviceTotalMem_v2(MemorySegment bytes, int dev) {
        try {
            return (int) cuDeviceTotalMem_v2.HANDLE.invokeExact(bytes, dev);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDevicePrimaryCtxRetain {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDevicePrimaryCtxRetain");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDevicePrimaryCtxRetain} */
    public static FunctionDescriptor cuDevicePrimaryCtxRetain$descriptor() {
        return cuDevicePrimaryCtxRetain.DESC;
    }

    /** @return the downcall handle of {@code cuDevicePrimaryCtxRetain} */
    public static MethodHandle cuDevicePrimaryCtxRetain$handle() {
        return cuDevicePrimaryCtxRetain.HANDLE;
    }

    /** @return the address of {@code cuDevicePrimaryCtxRetain} */
    public static MemorySegment cuDevicePrimaryCtxRetain$address() {
        return cuDevicePrimaryCtxRetain.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
     * }
     * @param pctx out: CUcontext
     * @param dev the device
     * @return the status code
     */
    public static int cuDevicePrimaryCtxRetain(MemorySegment pctx, int dev) {
        try {
            return (int) cuDevicePrimaryCtxRetain.HANDLE.invokeExact(pctx, dev);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDevicePrimaryCtxRelease_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDevicePrimaryCtxRelease_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuDevicePrimaryCtxRelease_v2} */
    public static FunctionDescriptor cuDevicePrimaryCtxRelease_v2$descriptor() {
        return cuDevicePrimaryCtxRelease_v2.DESC;
    }

    /** @return the downcall handle of {@code cuDevicePrimaryCtxRelease_v2} */
    public static MethodHandle cuDevicePrimaryCtxRelease_v2$handle() {
        return cuDevicePrimaryCtxRelease_v2.HANDLE;
    }

    /** @return the address of {@code cuDevicePrimaryCtxRelease_v2} */
    public static MemorySegment cuDevicePrimaryCtxRelease_v2$address() {
        return cuDevicePrimaryCtxRelease_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
     * }
     * @param dev the device
     * @return the status code
     */
    public static int cuDevicePrimaryCtxRelease_v2(int dev) {
        try {
            return (int) cuDevicePrimaryCtxRelease_v2.HANDLE.invokeExact(dev);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuCtxSetCurrent {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuCtxSetCurrent");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuCtxSetCurrent} */
    public static FunctionDescriptor cuCtxSetCurrent$descriptor() {
        return cuCtxSetCurrent.DESC;
    }

    /** @return the downcall handle of {@code cuCtxSetCurrent} */
    public static MethodHandle cuCtxSetCurrent$handle() {
        return cuCtxSetCurrent.HANDLE;
    }

    /** @return the address of {@code cuCtxSetCurrent} */
    public static MemorySegment cuCtxSetCurrent$address() {
        return cuCtxSetCurrent.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuCtxSetCurrent(CUcontext ctx)
     * }
     * @param ctx the context, or NULL
     * @return the status code
     */
    public static int cuCtxSetCurrent(MemorySegment ctx) {
        try {
            return (int) cuCtxSetCurrent.HANDLE.invokeExact(ctx);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuCtxSynchronize {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuCtxSynchronize");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuCtxSynchronize} */
    public static FunctionDescriptor cuCtxSynchronize$descriptor() {
        return cuCtxSynchronize.DESC;
    }

    /** @return the downcall handle of {@code cuCtxSynchronize} */
    public static MethodHandle cuCtxSynchronize$handle() {
        return cuCtxSynchronize.HANDLE;
    }

    /** @return the address of {@code cuCtxSynchronize} */
    public static MemorySegment cuCtxSynchronize$address() {
        return cuCtxSynchronize.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuCtxSynchronize(void)
     * }
     * @return the status code
     */
    public static int cuCtxSynchronize() {
        try {
            return (int) cuCtxSynchronize.HANDLE.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemGetInfo_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemGetInfo_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemGetInfo_v2} */
    public static FunctionDescriptor cuMemGetInfo_v2$descriptor() {
        return cuMemGetInfo_v2.DESC;
    }

    /** @return the downcall handle of {@code cuMemGetInfo_v2} */
    public static MethodHandle cuMemGetInfo_v2$handle() {
        return cuMemGetInfo_v2.HANDLE;
    }

    /** @return the address of {@code cuMemGetInfo_v2} */
    public static MemorySegment cuMemGetInfo_v2$address() {
        return cuMemGetInfo_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemGetInfo_v2(size_t *free, size_t *total)
     * }
     * @param free out: size_t
     * @param total out: size_t
     * @return the status code
     */
    public static int cuMemGetInfo_v2(MemorySegment free, MemorySegment total) {
        try {
            return (int) cuMemGetInfo_v2.HANDLE.invokeExact(free, total);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemAlloc_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_LONG);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemAlloc_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemAlloc_v2} */
    public static FunctionDescriptor cuMemAlloc_v2$descriptor() {
        return cuMemAlloc_v2.DESC;
    }

    /** @return the downcall handle of {@code cuMemAlloc_v2} */
    public static MethodHandle cuMemAlloc_v2$handle() {
        return cuMemAlloc_v2.HANDLE;
    }

    /** @return the address of {@code cuMemAlloc_v2} */
    public static MemorySegment cuMemAlloc_v2$address() {
        return cuMemAlloc_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
     * }
     * @param dptr out: CUdeviceptr
     * @param bytesize bytes
     * @return the status code
     */
    public static int cuMemAlloc_v2(MemorySegment dptr, long bytesize) {
        try {
            return (int) cuMemAlloc_v2.HANDLE.invokeExact(dptr, bytesize);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemFree_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_LONG_LONG);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemFree_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemFree_v2} */
    public static FunctionDescriptor cuMemFree_v2$descriptor() {
        return cuMemFree_v2.DESC;
    }

    /** @return the downcall handle of {@code cuMemFree_v2} */
    public static MethodHandle cuMemFree_v2$handle() {
        return cuMemFree_v2.HANDLE;
    }

    /** @return the address of {@code cuMemFree_v2} */
    public static MemorySegment cuMemFree_v2$address() {
        return cuMemFree_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemFree_v2(CUdeviceptr dptr)
     * }
     * @param dptr the allocation
     * @return the status code
     */
    public static int cuMemFree_v2(long dptr) {
        try {
            return (int) cuMemFree_v2.HANDLE.invokeExact(dptr);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemAllocAsync {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_LONG, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemAllocAsync");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemAllocAsync} */
    public static FunctionDescriptor cuMemAllocAsync$descriptor() {
        return cuMemAllocAsync.DESC;
    }

    /** @return the downcall handle of {@code cuMemAllocAsync} */
    public static MethodHandle cuMemAllocAsync$handle() {
        return cuMemAllocAsync.HANDLE;
    }

    /** @return the address of {@code cuMemAllocAsync} */
    public static MemorySegment cuMemAllocAsync$address() {
        return cuMemAllocAsync.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
     * }
     * Stream-ordered allocation (CUDA 11.2+ drivers) from the device's current memory pool.
     * @param dptr out: CUdeviceptr
     * @param bytesize bytes
     * @param hStream the stream the allocation is ordered on
     * @return the status code
     */
    public static int cuMemAllocAsync(MemorySegment dptr, long bytesize, MemorySegment hStream) {
        try {
            return (int) cuMemAllocAsync.HANDLE.invokeExact(dptr, bytesize, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemFreeAsync {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_LONG_LONG, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemFreeAsync");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemFreeAsync} */
    public static FunctionDescriptor cuMemFreeAsync$descriptor() {
        return cuMemFreeAsync.DESC;
    }

    /** @return the downcall handle of {@code cuMemFreeAsync} */
    public static MethodHandle cuMemFreeAsync$handle() {
        return cuMemFreeAsync.HANDLE;
    }

    /** @return the address of {@code cuMemFreeAsync} */
    public static MemorySegment cuMemFreeAsync$address() {
        return cuMemFreeAsync.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
     * }
     * Stream-ordered free (CUDA 11.2+ drivers): the memory is released once the stream reaches the call.
     * @param dptr the allocation
     * @param hStream the stream the free is ordered on
     * @return the status code
     */
    public static int cuMemFreeAsync(long dptr, MemorySegment hStream) {
        try {
            return (int) cuMemFreeAsync.HANDLE.invokeExact(dptr, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuDeviceGetDefaultMemPool {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuDeviceGetDefaultMemPool");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /**
     * {@snippet lang=c :
     * CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool_out, CUdevice dev)
     * }
     * The pool cuMemAllocAsync draws from (CUDA 11.2+ drivers).
     * @param pool_out receives the pool
     * @param dev the device
     * @return the status code
     */
    public static int cuDeviceGetDefaultMemPool(MemorySegment pool_out, int dev) {
        try {
            return (int) cuDeviceGetDefaultMemPool.HANDLE.invokeExact(pool_out, dev);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code CU_MEMPOOL_ATTR_RELEASE_THRESHOLD} (value type {@code cuuint64_t}). */
    public static final int CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4;

    private static final class cuMemPoolSetAttribute {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemPoolSetAttribute");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
     * }
     * @param pool the pool
     * @param attr a {@code CU_MEMPOOL_ATTR_*} constant
     * @param value points to the attribute's value
     * @return the status code
     */
    public static int cuMemPoolSetAttribute(MemorySegment pool, int attr, MemorySegment value) {
        try {
            return (int) cuMemPoolSetAttribute.HANDLE.invokeExact(pool, attr, value);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemPoolTrimTo {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_LONG);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemPoolTrimTo");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
     * }
     * @param pool the pool
     * @param minBytesToKeep bytes the pool may keep
     * @return the status code
     */
    public static int cuMemPoolTrimTo(MemorySegment pool, long minBytesToKeep) {
        try {
            return (int) cuMemPoolTrimTo.HANDLE.invokeExact(pool, minBytesToKeep);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemsetD8Async {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_LONG_LONG, cuda_h.C_CHAR, cuda_h.C_LONG, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemsetD8Async");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemsetD8Async} */
    public static FunctionDescriptor cuMemsetD8Async$descriptor() {
        return cuMemsetD8Async.DESC;
    }

    /** @return the downcall handle of {@code cuMemsetD8Async} */
    public static MethodHandle cuMemsetD8Async$handle() {
        return cuMemsetD8Async.HANDLE;
    }

    /** @return the address of {@code cuMemsetD8Async} */
    public static MemorySegment cuMemsetD8Async$address() {
        return cuMemsetD8Async.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream)
     * }
     * @param dstDevice destination
     * @param uc byte value
     * @param N bytes
     * @param hStream stream
     * @return the status code
     */
    public static int cuMemsetD8Async(long dstDevice, byte uc, long N, MemorySegment hStream) {
        try {
            return (int) cuMemsetD8Async.HANDLE.invokeExact(dstDevice, uc, N, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemcpyHtoDAsync_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_LONG_LONG, cuda_h.C_POINTER, cuda_h.C_LONG, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemcpyHtoDAsync_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemcpyHtoDAsync_v2} */
    public static FunctionDescriptor cuMemcpyHtoDAsync_v2$descriptor() {
        return cuMemcpyHtoDAsync_v2.DESC;
    }

    /** @return the downcall handle of {@code cuMemcpyHtoDAsync_v2} */
    public static MethodHandle cuMemcpyHtoDAsync_v2$handle() {
        return cuMemcpyHtoDAsync_v2.HANDLE;
    }

    /** @return the address of {@code cuMemcpyHtoDAsync_v2} */
    public static MemorySegment cuMemcpyHtoDAsync_v2$address() {
        return cuMemcpyHtoDAsync_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream)
     * }
     * @param dstDevice destination
     * @param srcHost source host memory
     * @param ByteCount bytes
     * @param hStream stream
     * @return the status code
     */
    public static int cuMemcpyHtoDAsync_v2(long dstDevice, MemorySegment srcHost, long ByteCount, MemorySegment hStream) {
        try {
            return (int) cuMemcpyHtoDAsync_v2.HANDLE.invokeExact(dstDevice, srcHost, ByteCount, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemcpyDtoHAsync_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_LONG_LONG, cuda_h.C_LONG, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemcpyDtoHAsync_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemcpyDtoHAsync_v2} */
    public static FunctionDescriptor cuMemcpyDtoHAsync_v2$descriptor() {
        return cuMemcpyDtoHAsync_v2.DESC;
    }

    /** @return the downcall handle of {@code cuMemcpyDtoHAsync_v2} */
    public static MethodHandle cuMemcpyDtoHAsync_v2$handle() {
        return cuMemcpyDtoHAsync_v2.HANDLE;
    }

    /** @return the address of {@code cuMemcpyDtoHAsync_v2} */
    public static MemorySegment cuMemcpyDtoHAsync_v2$address() {
        return cuMemcpyDtoHAsync_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
     * }
     * @param dstHost destination host memory
     * @param srcDevice source
     * @param ByteCount bytes
     * @param hStream stream
     * @return the status code
     */
    public static int cuMemcpyDtoHAsync_v2(MemorySegment dstHost, long srcDevice, long ByteCount, MemorySegment hStream) {
        try {
            return (int) cuMemcpyDtoHAsync_v2.HANDLE.invokeExact(dstHost, srcDevice, ByteCount, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemcpyDtoDAsync_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_LONG_LONG, cuda_h.C_LONG_LONG, cuda_h.C_LONG, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemcpyDtoDAsync_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemcpyDtoDAsync_v2} */
    public static FunctionDescriptor cuMemcpyDtoDAsync_v2$descriptor() {
        return cuMemcpyDtoDAsync_v2.DESC;
    }

    /** @return the downcall handle of {@code cuMemcpyDtoDAsync_v2} */
    public static MethodHandle cuMemcpyDtoDAsync_v2$handle() {
        return cuMemcpyDtoDAsync_v2.HANDLE;
    }

    /** @return the address of {@code cuMemcpyDtoDAsync_v2} */
    public static MemorySegment cuMemcpyDtoDAsync_v2$address() {
        return cuMemcpyDtoDAsync_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
     * }
     * @param dstDevice destination
     * @param srcDevice source
     * @param ByteCount bytes
     * @param hStream stream
     * @return the status code
     */
    public static int cuMemcpyDtoDAsync_v2(long dstDevice, long srcDevice, long ByteCount, MemorySegment hStream) {
        try {
            return (int) cuMemcpyDtoDAsync_v2.HANDLE.invokeExact(dstDevice, srcDevice, ByteCount, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemAllocHost_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_LONG);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemAllocHost_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemAllocHost_v2} */
    public static FunctionDescriptor cuMemAllocHost_v2$descriptor() {
        return cuMemAllocHost_v2.DESC;
    }

    /** @return the downcall handle of {@code cuMemAllocHost_v2} */
    public static MethodHandle cuMemAllocHost_v2$handle() {
        return cuMemAllocHost_v2.HANDLE;
    }

    /** @return the address of {@code cuMemAllocHost_v2} */
    public static MemorySegment cuMemAllocHost_v2$address() {
        return cuMemAllocHost_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
     * }
     * @param pp out: void*
     * @param bytesize bytes
     * @return the status code
     */
    public static int cuMemAllocHost_v2(MemorySegment pp, long bytesize) {
        try {
            return (int) cuMemAllocHost_v2.HANDLE.invokeExact(pp, bytesize);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuMemFreeHost {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuMemFreeHost");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuMemFreeHost} */
    public static FunctionDescriptor cuMemFreeHost$descriptor() {
        return cuMemFreeHost.DESC;
    }

    /** @return the downcall handle of {@code cuMemFreeHost} */
    public static MethodHandle cuMemFreeHost$handle() {
        return cuMemFreeHost.HANDLE;
    }

    /** @return the address of {@code cuMemFreeHost} */
    public static MemorySegment cuMemFreeHost$address() {
        return cuMemFreeHost.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuMemFreeHost(void *p)
     * }
     * @param p pinned memory from cuMemAllocHost
     * @return the status code
     */
    public static int cuMemFreeHost(MemorySegment p) {
        try {
            return (int) cuMemFreeHost.HANDLE.invokeExact(p);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuStreamCreate {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuStreamCreate");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuStreamCreate} */
    public static FunctionDescriptor cuStreamCreate$descriptor() {
        return cuStreamCreate.DESC;
    }

    /** @return the downcall handle of {@code cuStreamCreate} */
    public static MethodHandle cuStreamCreate$handle() {
        return cuStreamCreate.HANDLE;
    }

    /** @return the address of {@code cuStreamCreate} */
    public static MemorySegment cuStreamCreate$address() {
        return cuStreamCreate.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
     * }
     * @param phStream out: CUstream
     * @param Flags CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING
     * @return the status code
     */
    public static int cuStreamCreate(MemorySegment phStream, int Flags) {
        try {
            return (int) cuStreamCreate.HANDLE.invokeExact(phStream, Flags);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuStreamSynchronize {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuStreamSynchronize");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuStreamSynchronize} */
    public static FunctionDescriptor cuStreamSynchronize$descriptor() {
        return cuStreamSynchronize.DESC;
    }

    /** @return the downcall handle of {@code cuStreamSynchronize} */
    public static MethodHandle cuStreamSynchronize$handle() {
        return cuStreamSynchronize.HANDLE;
    }

    /** @return the address of {@code cuStreamSynchronize} */
    public static MemorySegment cuStreamSynchronize$address() {
        return cuStreamSynchronize.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuStreamSynchronize(CUstream hStream)
     * }
     * @param hStream stream
     * @return the status code
     */
    public static int cuStreamSynchronize(MemorySegment hStream) {
        try {
            return (int) cuStreamSynchronize.HANDLE.invokeExact(hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuStreamBeginCapture_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuStreamBeginCapture_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuStreamBeginCapture_v2} */
    public static FunctionDescriptor cuStreamBeginCapture_v2$descriptor() {
        return cuStreamBeginCapture_v2.DESC;
    }

    /** @return the downcall handle of {@code cuStreamBeginCapture_v2} */
    public static MethodHandle cuStreamBeginCapture_v2$handle() {
        return cuStreamBeginCapture_v2.HANDLE;
    }

    /** @return the address of {@code cuStreamBeginCapture_v2} */
    public static MemorySegment cuStreamBeginCapture_v2$address() {
        return cuStreamBeginCapture_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
     * }
     * @param hStream stream
     * @param mode CU_STREAM_CAPTURE_MODE_GLOBAL (0), _THREAD_LOCAL (1) or _RELAXED (2)
     * @return the status code
     */
    public static int cuStreamBeginCapture_v2(MemorySegment hStream, int mode) {
        try {
            return (int) cuStreamBeginCapture_v2.HANDLE.invokeExact(hStream, mode);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuStreamEndCapture {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuStreamEndCapture");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuStreamEndCapture} */
    public static FunctionDescriptor cuStreamEndCapture$descriptor() {
        return cuStreamEndCapture.DESC;
    }

    /** @return the downcall handle of {@code cuStreamEndCapture} */
    public static MethodHandle cuStreamEndCapture$handle() {
        return cuStreamEndCapture.HANDLE;
    }

    /** @return the address of {@code cuStreamEndCapture} */
    public static MemorySegment cuStreamEndCapture$address() {
        return cuStreamEndCapture.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuStreamEndCapture(CUstream hStream, CUgraph *phGraph)
     * }
     * @param hStream stream
     * @param phGraph out: CUgraph
     * @return the status code
     */
    public static int cuStreamEndCapture(MemorySegment hStream, MemorySegment phGraph) {
        try {
            return (int) cuStreamEndCapture.HANDLE.invokeExact(hStream, phGraph);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuStreamIsCapturing {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuStreamIsCapturing");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuStreamIsCapturing} */
    public static FunctionDescriptor cuStreamIsCapturing$descriptor() {
        return cuStreamIsCapturing.DESC;
    }

    /** @return the downcall handle of {@code cuStreamIsCapturing} */
    public static MethodHandle cuStreamIsCapturing$handle() {
        return cuStreamIsCapturing.HANDLE;
    }

    /** @return the address of {@code cuStreamIsCapturing} */
    public static MemorySegment cuStreamIsCapturing$address() {
        return cuStreamIsCapturing.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *captureStatus)
     * }
     * @param hStream stream
     * @param captureStatus out: CUstreamCaptureStatus (int)
     * @return the status code
     */
    public static int cuStreamIsCapturing(MemorySegment hStream, MemorySegment captureStatus) {
        try {
            return (int) cuStreamIsCapturing.HANDLE.invokeExact(hStream, captureStatus);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuGraphInstantiateWithFlags {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER, cuda_h.C_LONG_LONG);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuGraphInstantiateWithFlags");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuGraphInstantiateWithFlags} */
    public static FunctionDescriptor cuGraphInstantiateWithFlags$descriptor() {
        return cuGraphInstantiateWithFlags.DESC;
    }

    /** @return the downcall handle of {@code cuGraphInstantiateWithFlags} */
    public static MethodHandle cuGraphInstantiateWithFlags$handle() {
        return cuGraphInstantiateWithFlags.HANDLE;
    }

    /** @return the address of {@code cuGraphInstantiateWithFlags} */
    public static MemorySegment cuGraphInstantiateWithFlags$address() {
        return cuGraphInstantiateWithFlags.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags)
     * }
     * @param phGraphExec out: CUgraphExec
     * @param hGraph graph
     * @param flags instantiate flags (0)
     * @return the status code
     */
    public static int cuGraphInstantiateWithFlags(MemorySegment phGraphExec, MemorySegment hGraph, long flags) {
        try {
            return (int) cuGraphInstantiateWithFlags.HANDLE.invokeExact(phGraphExec, hGraph, flags);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuGraphLaunch {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuGraphLaunch");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuGraphLaunch} */
    public static FunctionDescriptor cuGraphLaunch$descriptor() {
        return cuGraphLaunch.DESC;
    }

    /** @return the downcall handle of {@code cuGraphLaunch} */
    public static MethodHandle cuGraphLaunch$handle() {
        return cuGraphLaunch.HANDLE;
    }

    /** @return the address of {@code cuGraphLaunch} */
    public static MemorySegment cuGraphLaunch$address() {
        return cuGraphLaunch.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
     * }
     * @param hGraphExec executable graph
     * @param hStream stream
     * @return the status code
     */
    public static int cuGraphLaunch(MemorySegment hGraphExec, MemorySegment hStream) {
        try {
            return (int) cuGraphLaunch.HANDLE.invokeExact(hGraphExec, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuGraphExecUpdate_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuGraphExecUpdate_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuGraphExecUpdate_v2} */
    public static FunctionDescriptor cuGraphExecUpdate_v2$descriptor() {
        return cuGraphExecUpdate_v2.DESC;
    }

    /** @return the downcall handle of {@code cuGraphExecUpdate_v2} */
    public static MethodHandle cuGraphExecUpdate_v2$handle() {
        return cuGraphExecUpdate_v2.HANDLE;
    }

    /** @return the address of {@code cuGraphExecUpdate_v2} */
    public static MemorySegment cuGraphExecUpdate_v2$address() {
        return cuGraphExecUpdate_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuGraphExecUpdate_v2(CUgraphExec hGraphExec, CUgraph hGraph, CUgraphExecUpdateResultInfo *resultInfo)
     * }
     * @param hGraphExec executable graph
     * @param hGraph graph with the new parameters
     * @param resultInfo out: CUgraphExecUpdateResultInfo (int result, then two node pointers)
     * @return the status code
     */
    public static int cuGraphExecUpdate_v2(MemorySegment hGraphExec, MemorySegment hGraph, MemorySegment resultInfo) {
        try {
            return (int) cuGraphExecUpdate_v2.HANDLE.invokeExact(hGraphExec, hGraph, resultInfo);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuGraphExecDestroy {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuGraphExecDestroy");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuGraphExecDestroy} */
    public static FunctionDescriptor cuGraphExecDestroy$descriptor() {
        return cuGraphExecDestroy.DESC;
    }

    /** @return the downcall handle of {@code cuGraphExecDestroy} */
    public static MethodHandle cuGraphExecDestroy$handle() {
        return cuGraphExecDestroy.HANDLE;
    }

    /** @return the address of {@code cuGraphExecDestroy} */
    public static MemorySegment cuGraphExecDestroy$address() {
        return cuGraphExecDestroy.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuGraphExecDestroy(CUgraphExec hGraphExec)
     * }
     * @param hGraphExec executable graph
     * @return the status code
     */
    public static int cuGraphExecDestroy(MemorySegment hGraphExec) {
        try {
            return (int) cuGraphExecDestroy.HANDLE.invokeExact(hGraphExec);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuGraphDestroy {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuGraphDestroy");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuGraphDestroy} */
    public static FunctionDescriptor cuGraphDestroy$descriptor() {
        return cuGraphDestroy.DESC;
    }

    /** @return the downcall handle of {@code cuGraphDestroy} */
    public static MethodHandle cuGraphDestroy$handle() {
        return cuGraphDestroy.HANDLE;
    }

    /** @return the address of {@code cuGraphDestroy} */
    public static MemorySegment cuGraphDestroy$address() {
        return cuGraphDestroy.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuGraphDestroy(CUgraph hGraph)
     * }
     * @param hGraph graph
     * @return the status code
     */
    public static int cuGraphDestroy(MemorySegment hGraph) {
        try {
            return (int) cuGraphDestroy.HANDLE.invokeExact(hGraph);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuStreamDestroy_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuStreamDestroy_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuStreamDestroy_v2} */
    public static FunctionDescriptor cuStreamDestroy_v2$descriptor() {
        return cuStreamDestroy_v2.DESC;
    }

    /** @return the downcall handle of {@code cuStreamDestroy_v2} */
    public static MethodHandle cuStreamDestroy_v2$handle() {
        return cuStreamDestroy_v2.HANDLE;
    }

    /** @return the address of {@code cuStreamDestroy_v2} */
    public static MemorySegment cuStreamDestroy_v2$address() {
        return cuStreamDestroy_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuStreamDestroy_v2(CUstream hStream)
     * }
     * @param hStream stream
     * @return the status code
     */
    public static int cuStreamDestroy_v2(MemorySegment hStream) {
        try {
            return (int) cuStreamDestroy_v2.HANDLE.invokeExact(hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuStreamWaitEvent {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuStreamWaitEvent");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuStreamWaitEvent} */
    public static FunctionDescriptor cuStreamWaitEvent$descriptor() {
        return cuStreamWaitEvent.DESC;
    }

    /** @return the downcall handle of {@code cuStreamWaitEvent} */
    public static MethodHandle cuStreamWaitEvent$handle() {
        return cuStreamWaitEvent.HANDLE;
    }

    /** @return the address of {@code cuStreamWaitEvent} */
    public static MemorySegment cuStreamWaitEvent$address() {
        return cuStreamWaitEvent.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
     * }
     * @param hStream stream
     * @param hEvent event
     * @param Flags 0
     * @return the status code
     */
    public static int cuStreamWaitEvent(MemorySegment hStream, MemorySegment hEvent, int Flags) {
        try {
            return (int) cuStreamWaitEvent.HANDLE.invokeExact(hStream, hEvent, Flags);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuEventCreate {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuEventCreate");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuEventCreate} */
    public static FunctionDescriptor cuEventCreate$descriptor() {
        return cuEventCreate.DESC;
    }

    /** @return the downcall handle of {@code cuEventCreate} */
    public static MethodHandle cuEventCreate$handle() {
        return cuEventCreate.HANDLE;
    }

    /** @return the address of {@code cuEventCreate} */
    public static MemorySegment cuEventCreate$address() {
        return cuEventCreate.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
     * }
     * @param phEvent out: CUevent
     * @param Flags CU_EVENT_* flags
     * @return the status code
     */
    public static int cuEventCreate(MemorySegment phEvent, int Flags) {
        try {
            return (int) cuEventCreate.HANDLE.invokeExact(phEvent, Flags);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuEventRecord {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuEventRecord");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuEventRecord} */
    public static FunctionDescriptor cuEventRecord$descriptor() {
        return cuEventRecord.DESC;
    }

    /** @return the downcall handle of {@code cuEventRecord} */
    public static MethodHandle cuEventRecord$handle() {
        return cuEventRecord.HANDLE;
    }

    /** @return the address of {@code cuEventRecord} */
    public static MemorySegment cuEventRecord$address() {
        return cuEventRecord.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
     * }
     * @param hEvent event
     * @param hStream stream
     * @return the status code
     */
    public static int cuEventRecord(MemorySegment hEvent, MemorySegment hStream) {
        try {
            return (int) cuEventRecord.HANDLE.invokeExact(hEvent, hStream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuEventSynchronize {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuEventSynchronize");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuEventSynchronize} */
    public static FunctionDescriptor cuEventSynchronize$descriptor() {
        return cuEventSynchronize.DESC;
    }

    /** @return the downcall handle of {@code cuEventSynchronize} */
    public static MethodHandle cuEventSynchronize$handle() {
        return cuEventSynchronize.HANDLE;
    }

    /** @return the address of {@code cuEventSynchronize} */
    public static MemorySegment cuEventSynchronize$address() {
        return cuEventSynchronize.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuEventSynchronize(CUevent hEvent)
     * }
     * @param hEvent event
     * @return the status code
     */
    public static int cuEventSynchronize(MemorySegment hEvent) {
        try {
            return (int) cuEventSynchronize.HANDLE.invokeExact(hEvent);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuEventElapsedTime_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuEventElapsedTime_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuEventElapsedTime_v2} */
    public static FunctionDescriptor cuEventElapsedTime_v2$descriptor() {
        return cuEventElapsedTime_v2.DESC;
    }

    /** @return the downcall handle of {@code cuEventElapsedTime_v2} */
    public static MethodHandle cuEventElapsedTime_v2$handle() {
        return cuEventElapsedTime_v2.HANDLE;
    }

    /** @return the address of {@code cuEventElapsedTime_v2} */
    public static MemorySegment cuEventElapsedTime_v2$address() {
        return cuEventElapsedTime_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd)
     * }
     * @param pMilliseconds out: float
     * @param hStart start event
     * @param hEnd end event
     * @return the status code
     */
    public static int cuEventElapsedTime_v2(MemorySegment pMilliseconds, MemorySegment hStart, MemorySegment hEnd) {
        try {
            return (int) cuEventElapsedTime_v2.HANDLE.invokeExact(pMilliseconds, hStart, hEnd);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuEventDestroy_v2 {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuEventDestroy_v2");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuEventDestroy_v2} */
    public static FunctionDescriptor cuEventDestroy_v2$descriptor() {
        return cuEventDestroy_v2.DESC;
    }

    /** @return the downcall handle of {@code cuEventDestroy_v2} */
    public static MethodHandle cuEventDestroy_v2$handle() {
        return cuEventDestroy_v2.HANDLE;
    }

    /** @return the address of {@code cuEventDestroy_v2} */
    public static MemorySegment cuEventDestroy_v2$address() {
        return cuEventDestroy_v2.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuEventDestroy_v2(CUevent hEvent)
     * }
     * @param hEvent event
     * @return the status code
     */
    public static int cuEventDestroy_v2(MemorySegment hEvent) {
        try {
            return (int) cuEventDestroy_v2.HANDLE.invokeExact(hEvent);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuModuleLoadData {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuModuleLoadData");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuModuleLoadData} */
    public static FunctionDescriptor cuModuleLoadData$descriptor() {
        return cuModuleLoadData.DESC;
    }

    /** @return the downcall handle of {@code cuModuleLoadData} */
    public static MethodHandle cuModuleLoadData$handle() {
        return cuModuleLoadData.HANDLE;
    }

    /** @return the address of {@code cuModuleLoadData} */
    public static MemorySegment cuModuleLoadData$address() {
        return cuModuleLoadData.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuModuleLoadData(CUmodule *module, const void *image)
     * }
     * @param module out: CUmodule
     * @param image fatbin, cubin or NUL-terminated PTX
     * @return the status code
     */
    public static int cuModuleLoadData(MemorySegment module, MemorySegment image) {
        try {
            return (int) cuModuleLoadData.HANDLE.invokeExact(module, image);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuModuleUnload {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuModuleUnload");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuModuleUnload} */
    public static FunctionDescriptor cuModuleUnload$descriptor() {
        return cuModuleUnload.DESC;
    }

    /** @return the downcall handle of {@code cuModuleUnload} */
    public static MethodHandle cuModuleUnload$handle() {
        return cuModuleUnload.HANDLE;
    }

    /** @return the address of {@code cuModuleUnload} */
    public static MemorySegment cuModuleUnload$address() {
        return cuModuleUnload.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuModuleUnload(CUmodule hmod)
     * }
     * @param hmod module
     * @return the status code
     */
    public static int cuModuleUnload(MemorySegment hmod) {
        try {
            return (int) cuModuleUnload.HANDLE.invokeExact(hmod);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuModuleGetFunction {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuModuleGetFunction");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuModuleGetFunction} */
    public static FunctionDescriptor cuModuleGetFunction$descriptor() {
        return cuModuleGetFunction.DESC;
    }

    /** @return the downcall handle of {@code cuModuleGetFunction} */
    public static MethodHandle cuModuleGetFunction$handle() {
        return cuModuleGetFunction.HANDLE;
    }

    /** @return the address of {@code cuModuleGetFunction} */
    public static MemorySegment cuModuleGetFunction$address() {
        return cuModuleGetFunction.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
     * }
     * @param hfunc out: CUfunction
     * @param hmod module
     * @param name NUL-terminated kernel name
     * @return the status code
     */
    public static int cuModuleGetFunction(MemorySegment hfunc, MemorySegment hmod, MemorySegment name) {
        try {
            return (int) cuModuleGetFunction.HANDLE.invokeExact(hfunc, hmod, name);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuFuncGetAttribute {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuFuncGetAttribute");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuFuncGetAttribute} */
    public static FunctionDescriptor cuFuncGetAttribute$descriptor() {
        return cuFuncGetAttribute.DESC;
    }

    /** @return the downcall handle of {@code cuFuncGetAttribute} */
    public static MethodHandle cuFuncGetAttribute$handle() {
        return cuFuncGetAttribute.HANDLE;
    }

    /** @return the address of {@code cuFuncGetAttribute} */
    public static MemorySegment cuFuncGetAttribute$address() {
        return cuFuncGetAttribute.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc)
     * }
     * @param pi out: int
     * @param attrib CUfunction_attribute
     * @param hfunc function
     * @return the status code
     */
    public static int cuFuncGetAttribute(MemorySegment pi, int attrib, MemorySegment hfunc) {
        try {
            return (int) cuFuncGetAttribute.HANDLE.invokeExact(pi, attrib, hfunc);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuFuncSetAttribute {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT, cuda_h.C_INT);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuFuncSetAttribute");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuFuncSetAttribute} */
    public static FunctionDescriptor cuFuncSetAttribute$descriptor() {
        return cuFuncSetAttribute.DESC;
    }

    /** @return the downcall handle of {@code cuFuncSetAttribute} */
    public static MethodHandle cuFuncSetAttribute$handle() {
        return cuFuncSetAttribute.HANDLE;
    }

    /** @return the address of {@code cuFuncSetAttribute} */
    public static MemorySegment cuFuncSetAttribute$address() {
        return cuFuncSetAttribute.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value)
     * }
     * @param hfunc function
     * @param attrib CUfunction_attribute
     * @param value value
     * @return the status code
     */
    public static int cuFuncSetAttribute(MemorySegment hfunc, int attrib, int value) {
        try {
            return (int) cuFuncSetAttribute.HANDLE.invokeExact(hfunc, attrib, value);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuFuncGetParamInfo {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_LONG, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuFuncGetParamInfo");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuFuncGetParamInfo} */
    public static FunctionDescriptor cuFuncGetParamInfo$descriptor() {
        return cuFuncGetParamInfo.DESC;
    }

    /** @return the downcall handle of {@code cuFuncGetParamInfo} */
    public static MethodHandle cuFuncGetParamInfo$handle() {
        return cuFuncGetParamInfo.HANDLE;
    }

    /** @return the address of {@code cuFuncGetParamInfo} */
    public static MemorySegment cuFuncGetParamInfo$address() {
        return cuFuncGetParamInfo.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuFuncGetParamInfo(CUfunction func, size_t paramIndex, size_t *paramOffset, size_t *paramSize)
     * }
     * CUDA 12.4+ drivers; returns {@code CUDA_ERROR_INVALID_VALUE} for an index past the last parameter.
     * Look the symbol up first ({@code symbolLookup().find("cuFuncGetParamInfo")}) where an older
     * driver must be tolerated: the first call throws {@link UnsatisfiedLinkError} when it is missing.
     * @param func function
     * @param paramIndex parameter index, from 0
     * @param paramOffset out: size_t, the parameter's offset in the parameter buffer (may be NULL)
     * @param paramSize out: size_t, the parameter's size in bytes (may be NULL)
     * @return the status code
     */
    public static int cuFuncGetParamInfo(MemorySegment func, long paramIndex, MemorySegment paramOffset, MemorySegment paramSize) {
        try {
            return (int) cuFuncGetParamInfo.HANDLE.invokeExact(func, paramIndex, paramOffset, paramSize);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuLaunchKernel {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_POINTER, cuda_h.C_POINTER, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuLaunchKernel");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuLaunchKernel} */
    public static FunctionDescriptor cuLaunchKernel$descriptor() {
        return cuLaunchKernel.DESC;
    }

    /** @return the downcall handle of {@code cuLaunchKernel} */
    public static MethodHandle cuLaunchKernel$handle() {
        return cuLaunchKernel.HANDLE;
    }

    /** @return the address of {@code cuLaunchKernel} */
    public static MemorySegment cuLaunchKernel$address() {
        return cuLaunchKernel.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra)
     * }
     * @param f function
     * @param gridDimX grid x
     * @param gridDimY grid y
     * @param gridDimZ grid z
     * @param blockDimX block x
     * @param blockDimY block y
     * @param blockDimZ block z
     * @param sharedMemBytes dynamic shared memory
     * @param hStream stream
     * @param kernelParams void*[] of argument addresses
     * @param extra NULL
     * @return the status code
     */
    public static int cuLaunchKernel(MemorySegment f, int gridDimX, int gridDimY, int gridDimZ, int blockDimX, int blockDimY, int blockDimZ, int sharedMemBytes, MemorySegment hStream, MemorySegment kernelParams, MemorySegment extra) {
        try {
            return (int) cuLaunchKernel.HANDLE.invokeExact(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams, extra);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuGetErrorName {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuGetErrorName");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuGetErrorName} */
    public static FunctionDescriptor cuGetErrorName$descriptor() {
        return cuGetErrorName.DESC;
    }

    /** @return the downcall handle of {@code cuGetErrorName} */
    public static MethodHandle cuGetErrorName$handle() {
        return cuGetErrorName.HANDLE;
    }

    /** @return the address of {@code cuGetErrorName} */
    public static MemorySegment cuGetErrorName$address() {
        return cuGetErrorName.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuGetErrorName(CUresult error, const char **pStr)
     * }
     * @param error CUresult
     * @param pStr out: const char*
     * @return the status code
     */
    public static int cuGetErrorName(int error, MemorySegment pStr) {
        try {
            return (int) cuGetErrorName.HANDLE.invokeExact(error, pStr);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class cuGetErrorString {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(cuda_h.C_INT, cuda_h.C_INT, cuda_h.C_POINTER);
        static final MemorySegment ADDR = cuda_h.findOrThrow("cuGetErrorString");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code cuGetErrorString} */
    public static FunctionDescriptor cuGetErrorString$descriptor() {
        return cuGetErrorString.DESC;
    }

    /** @return the downcall handle of {@code cuGetErrorString} */
    public static MethodHandle cuGetErrorString$handle() {
        return cuGetErrorString.HANDLE;
    }

    /** @return the address of {@code cuGetErrorString} */
    public static MemorySegment cuGetErrorString$address() {
        return cuGetErrorString.ADDR;
    }

    /**
     * {@snippet lang=c :
     * CUresult cuGetErrorString(CUresult error, const char **pStr)
     * }
     * @param error CUresult
     * @param pStr out: const char*
     * @return the status code
     */
    public static int cuGetErrorString(int error, MemorySegment pStr) {
        try {
            return (int) cuGetErrorString.HANDLE.invokeExact(error, pStr);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }
}
