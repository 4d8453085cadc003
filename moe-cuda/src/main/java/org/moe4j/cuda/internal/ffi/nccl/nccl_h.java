package org.moe4j.cuda.internal.ffi.nccl;

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
 * Bindings for {@code nccl.h} (libnccl), in the shape jextract generates: one static method per C
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
public final class nccl_h {
    private nccl_h() {
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
    /**
     * {@snippet lang=c :
     * typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId;
     * }
     */
    public static final StructLayout ncclUniqueId = MemoryLayout.structLayout(
            MemoryLayout.sequenceLayout(128, ValueLayout.JAVA_BYTE).withName("internal")).withName("ncclUniqueId");

    /** @return the library's symbols, loading it on first use (throws with every place looked when absent) */
    public static SymbolLookup symbolLookup() {
        return org.moe4j.cuda.internal.NativeLibraries.nccl().lookup();
    }

    static MemorySegment findOrThrow(String symbol) {
        return symbolLookup().find(symbol).orElseThrow(() ->
                new UnsatisfiedLinkError("libnccl: symbol " + symbol + " not found (library too old?)"));
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
    /** {@code ncclSuccess = 0} */
    public static final int ncclSuccess = 0;
    /** {@code ncclUnhandledCudaError = 1} */
    public static final int ncclUnhandledCudaError = 1;
    /** {@code ncclSystemError = 2} */
    public static final int ncclSystemError = 2;
    /** {@code ncclInternalError = 3} */
    public static final int ncclInternalError = 3;
    /** {@code ncclInvalidArgument = 4} */
    public static final int ncclInvalidArgument = 4;
    /** {@code ncclInvalidUsage = 5} */
    public static final int ncclInvalidUsage = 5;
    /** {@code ncclRemoteError = 6} */
    public static final int ncclRemoteError = 6;
    /** {@code ncclInProgress = 7} */
    public static final int ncclInProgress = 7;
    /** {@code ncclTimeout = 8} (newer NCCL; older releases end at {@code ncclNumResults = 8}) */
    public static final int ncclTimeout = 8;
    /** {@code ncclInt8 = 0} */
    public static final int ncclInt8 = 0;
    /** {@code ncclUint8 = 1} */
    public static final int ncclUint8 = 1;
    /** {@code ncclInt32 = 2} */
    public static final int ncclInt32 = 2;
    /** {@code ncclUint32 = 3} */
    public static final int ncclUint32 = 3;
    /** {@code ncclInt64 = 4} */
    public static final int ncclInt64 = 4;
    /** {@code ncclUint64 = 5} */
    public static final int ncclUint64 = 5;
    /** {@code ncclFloat16 = 6} */
    public static final int ncclFloat16 = 6;
    /** {@code ncclFloat32 = 7} */
    public static final int ncclFloat32 = 7;
    /** {@code ncclFloat64 = 8} */
    public static final int ncclFloat64 = 8;
    /** {@code ncclBfloat16 = 9} */
    public static final int ncclBfloat16 = 9;
    /** {@code ncclSum = 0} */
    public static final int ncclSum = 0;
    /** {@code ncclProd = 1} */
    public static final int ncclProd = 1;
    /** {@code ncclMax = 2} */
    public static final int ncclMax = 2;
    /** {@code ncclMin = 3} */
    public static final int ncclMin = 3;
    /** {@code ncclAvg = 4} */
    public static final int ncclAvg = 4;
    /** {@code #define NCCL_UNIQUE_ID_BYTES 128} */
    public static final int NCCL_UNIQUE_ID_BYTES = 128;

    private static final class ncclGetVersion {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclGetVersion");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclGetVersion} */
    public static FunctionDescriptor ncclGetVersion$descriptor() {
        return ncclGetVersion.DESC;
    }

    /** @return the downcall handle of {@code ncclGetVersion} */
    public static MethodHandle ncclGetVersion$handle() {
        return ncclGetVersion.HANDLE;
    }

    /** @return the address of {@code ncclGetVersion} */
    public static MemorySegment ncclGetVersion$address() {
        return ncclGetVersion.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclGetVersion(int *version)
     * }
     * @param version out: int, e.g. 22703 for 2.27.3
     * @return the status code
     */
    public static int ncclGetVersion(MemorySegment version) {
        try {
            return (int) ncclGetVersion.HANDLE.invokeExact(version);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclGetUniqueId {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclGetUniqueId");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclGetUniqueId} */
    public static FunctionDescriptor ncclGetUniqueId$descriptor() {
        return ncclGetUniqueId.DESC;
    }

    /** @return the downcall handle of {@code ncclGetUniqueId} */
    public static MethodHandle ncclGetUniqueId$handle() {
        return ncclGetUniqueId.HANDLE;
    }

    /** @return the address of {@code ncclGetUniqueId} */
    public static MemorySegment ncclGetUniqueId$address() {
        return ncclGetUniqueId.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclGetUniqueId(ncclUniqueId *uniqueId)
     * }
     * @param uniqueId out: ncclUniqueId (128 bytes)
     * @return the status code
     */
    public static int ncclGetUniqueId(MemorySegment uniqueId) {
        try {
            return (int) ncclGetUniqueId.HANDLE.invokeExact(uniqueId);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclCommInitRank {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_INT, nccl_h.ncclUniqueId, nccl_h.C_INT);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclCommInitRank");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclCommInitRank} */
    public static FunctionDescriptor ncclCommInitRank$descriptor() {
        return ncclCommInitRank.DESC;
    }

    /** @return the downcall handle of {@code ncclCommInitRank} */
    public static MethodHandle ncclCommInitRank$handle() {
        return ncclCommInitRank.HANDLE;
    }

    /** @return the address of {@code ncclCommInitRank} */
    public static MemorySegment ncclCommInitRank$address() {
        return ncclCommInitRank.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank)
     * }
     * @param comm out: ncclComm_t
     * @param nranks world size
     * @param commId the id, passed by value (a 128-byte segment)
     * @param rank this rank
     * @return the status code
     */
    public static int ncclCommInitRank(MemorySegment comm, int nranks, MemorySegment commId, int rank) {
        try {
            return (int) ncclCommInitRank.HANDLE.invokeExact(comm, nranks, commId, rank);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclSend {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_LONG, nccl_h.C_INT, nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclSend");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclSend} */
    public static FunctionDescriptor ncclSend$descriptor() {
        return ncclSend.DESC;
    }

    /** @return the downcall handle of {@code ncclSend} */
    public static MethodHandle ncclSend$handle() {
        return ncclSend.HANDLE;
    }

    /** @return the address of {@code ncclSend} */
    public static MemorySegment ncclSend$address() {
        return ncclSend.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t stream)
     * }
     * @param sendbuff device pointer
     * @param count elements
     * @param datatype ncclDataType_t
     * @param peer destination rank
     * @param comm communicator
     * @param stream CUstream
     * @return the status code
     */
    public static int ncclSend(MemorySegment sendbuff, long count, int datatype, int peer, MemorySegment comm, MemorySegment stream) {
        try {
            return (int) ncclSend.HANDLE.invokeExact(sendbuff, count, datatype, peer, comm, stream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclRecv {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_LONG, nccl_h.C_INT, nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclRecv");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclRecv} */
    public static FunctionDescriptor ncclRecv$descriptor() {
        return ncclRecv.DESC;
    }

    /** @return the downcall handle of {@code ncclRecv} */
    public static MethodHandle ncclRecv$handle() {
        return ncclRecv.HANDLE;
    }

    /** @return the address of {@code ncclRecv} */
    public static MemorySegment ncclRecv$address() {
        return ncclRecv.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t stream)
     * }
     * @param recvbuff device pointer
     * @param count elements
     * @param datatype ncclDataType_t
     * @param peer source rank
     * @param comm communicator
     * @param stream CUstream
     * @return the status code
     */
    public static int ncclRecv(MemorySegment recvbuff, long count, int datatype, int peer, MemorySegment comm, MemorySegment stream) {
        try {
            return (int) ncclRecv.HANDLE.invokeExact(recvbuff, count, datatype, peer, comm, stream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclGroupStart {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclGroupStart");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclGroupStart} */
    public static FunctionDescriptor ncclGroupStart$descriptor() {
        return ncclGroupStart.DESC;
    }

    /** @return the downcall handle of {@code ncclGroupStart} */
    public static MethodHandle ncclGroupStart$handle() {
        return ncclGroupStart.HANDLE;
    }

    /** @return the address of {@code ncclGroupStart} */
    public static MemorySegment ncclGroupStart$address() {
        return ncclGroupStart.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclGroupStart(void)
     * }
     * @return the status code
     */
    public static int ncclGroupStart() {
        try {
            return (int) ncclGroupStart.HANDLE.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclGroupEnd {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclGroupEnd");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclGroupEnd} */
    public static FunctionDescriptor ncclGroupEnd$descriptor() {
        return ncclGroupEnd.DESC;
    }

    /** @return the downcall handle of {@code ncclGroupEnd} */
    public static MethodHandle ncclGroupEnd$handle() {
        return ncclGroupEnd.HANDLE;
    }

    /** @return the address of {@code ncclGroupEnd} */
    public static MemorySegment ncclGroupEnd$address() {
        return ncclGroupEnd.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclGroupEnd(void)
     * }
     * @return the status code
     */
    public static int ncclGroupEnd() {
        try {
            return (int) ncclGroupEnd.HANDLE.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclAllReduce {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER, nccl_h.C_LONG, nccl_h.C_INT, nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclAllReduce");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclAllReduce} */
    public static FunctionDescriptor ncclAllReduce$descriptor() {
        return ncclAllReduce.DESC;
    }

    /** @return the downcall handle of {@code ncclAllReduce} */
    public static MethodHandle ncclAllReduce$handle() {
        return ncclAllReduce.HANDLE;
    }

    /** @return the address of {@code ncclAllReduce} */
    public static MemorySegment ncclAllReduce$address() {
        return ncclAllReduce.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
     * }
     * @param sendbuff device pointer
     * @param recvbuff device pointer
     * @param count elements
     * @param datatype ncclDataType_t
     * @param op ncclRedOp_t
     * @param comm communicator
     * @param stream CUstream
     * @return the status code
     */
    public static int ncclAllReduce(MemorySegment sendbuff, MemorySegment recvbuff, long count, int datatype, int op, MemorySegment comm, MemorySegment stream) {
        try {
            return (int) ncclAllReduce.HANDLE.invokeExact(sendbuff, recvbuff, count, datatype, op, comm, stream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclAllGather {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER, nccl_h.C_LONG, nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclAllGather");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclAllGather} */
    public static FunctionDescriptor ncclAllGather$descriptor() {
        return ncclAllGather.DESC;
    }

    /** @return the downcall handle of {@code ncclAllGather} */
    public static MethodHandle ncclAllGather$handle() {
        return ncclAllGather.HANDLE;
    }

    /** @return the address of {@code ncclAllGather} */
    public static MemorySegment ncclAllGather$address() {
        return ncclAllGather.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream)
     * }
     * @param sendbuff device pointer
     * @param recvbuff device pointer
     * @param sendcount elements per rank
     * @param datatype ncclDataType_t
     * @param comm communicator
     * @param stream CUstream
     * @return the status code
     */
    public static int ncclAllGather(MemorySegment sendbuff, MemorySegment recvbuff, long sendcount, int datatype, MemorySegment comm, MemorySegment stream) {
        try {
            return (int) ncclAllGather.HANDLE.invokeExact(sendbuff, recvbuff, sendcount, datatype, comm, stream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclReduceScatter {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER, nccl_h.C_LONG, nccl_h.C_INT, nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclReduceScatter");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclReduceScatter} */
    public static FunctionDescriptor ncclReduceScatter$descriptor() {
        return ncclReduceScatter.DESC;
    }

    /** @return the downcall handle of {@code ncclReduceScatter} */
    public static MethodHandle ncclReduceScatter$handle() {
        return ncclReduceScatter.HANDLE;
    }

    /** @return the address of {@code ncclReduceScatter} */
    public static MemorySegment ncclReduceScatter$address() {
        return ncclReduceScatter.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
     * }
     * @param sendbuff device pointer
     * @param recvbuff device pointer
     * @param recvcount elements per rank
     * @param datatype ncclDataType_t
     * @param op ncclRedOp_t
     * @param comm communicator
     * @param stream CUstream
     * @return the status code
     */
    public static int ncclReduceScatter(MemorySegment sendbuff, MemorySegment recvbuff, long recvcount, int datatype, int op, MemorySegment comm, MemorySegment stream) {
        try {
            return (int) ncclReduceScatter.HANDLE.invokeExact(sendbuff, recvbuff, recvcount, datatype, op, comm, stream);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclCommGetAsyncError {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclCommGetAsyncError");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclCommGetAsyncError} */
    public static FunctionDescriptor ncclCommGetAsyncError$descriptor() {
        return ncclCommGetAsyncError.DESC;
    }

    /** @return the downcall handle of {@code ncclCommGetAsyncError} */
    public static MethodHandle ncclCommGetAsyncError$handle() {
        return ncclCommGetAsyncError.HANDLE;
    }

    /** @return the address of {@code ncclCommGetAsyncError} */
    public static MemorySegment ncclCommGetAsyncError$address() {
        return ncclCommGetAsyncError.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError)
     * }
     * @param comm communicator
     * @param asyncError out: ncclResult_t
     * @return the status code
     */
    public static int ncclCommGetAsyncError(MemorySegment comm, MemorySegment asyncError) {
        try {
            return (int) ncclCommGetAsyncError.HANDLE.invokeExact(comm, asyncError);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclCommAbort {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclCommAbort");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclCommAbort} */
    public static FunctionDescriptor ncclCommAbort$descriptor() {
        return ncclCommAbort.DESC;
    }

    /** @return the downcall handle of {@code ncclCommAbort} */
    public static MethodHandle ncclCommAbort$handle() {
        return ncclCommAbort.HANDLE;
    }

    /** @return the address of {@code ncclCommAbort} */
    public static MemorySegment ncclCommAbort$address() {
        return ncclCommAbort.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclCommAbort(ncclComm_t comm)
     * }
     * @param comm communicator
     * @return the status code
     */
    public static int ncclCommAbort(MemorySegment comm) {
        try {
            return (int) ncclCommAbort.HANDLE.invokeExact(comm);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclCommDestroy {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_INT, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclCommDestroy");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclCommDestroy} */
    public static FunctionDescriptor ncclCommDestroy$descriptor() {
        return ncclCommDestroy.DESC;
    }

    /** @return the downcall handle of {@code ncclCommDestroy} */
    public static MethodHandle ncclCommDestroy$handle() {
        return ncclCommDestroy.HANDLE;
    }

    /** @return the address of {@code ncclCommDestroy} */
    public static MemorySegment ncclCommDestroy$address() {
        return ncclCommDestroy.ADDR;
    }

    /**
     * {@snippet lang=c :
     * ncclResult_t ncclCommDestroy(ncclComm_t comm)
     * }
     * @param comm communicator
     * @return the status code
     */
    public static int ncclCommDestroy(MemorySegment comm) {
        try {
            return (int) ncclCommDestroy.HANDLE.invokeExact(comm);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclGetErrorString {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_POINTER, nccl_h.C_INT);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclGetErrorString");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclGetErrorString} */
    public static FunctionDescriptor ncclGetErrorString$descriptor() {
        return ncclGetErrorString.DESC;
    }

    /** @return the downcall handle of {@code ncclGetErrorString} */
    public static MethodHandle ncclGetErrorString$handle() {
        return ncclGetErrorString.HANDLE;
    }

    /** @return the address of {@code ncclGetErrorString} */
    public static MemorySegment ncclGetErrorString$address() {
        return ncclGetErrorString.ADDR;
    }

    /**
     * {@snippet lang=c :
     * const char *ncclGetErrorString(ncclResult_t result)
     * }
     * @param result ncclResult_t
     * @return a static NUL-terminated string (reinterpret before reading)
     */
    public static MemorySegment ncclGetErrorString(int result) {
        try {
            return (MemorySegment) ncclGetErrorString.HANDLE.invokeExact(result);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static final class ncclGetLastError {
        static final FunctionDescriptor DESC = FunctionDescriptor.of(nccl_h.C_POINTER, nccl_h.C_POINTER);
        static final MemorySegment ADDR = nccl_h.findOrThrow("ncclGetLastError");
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(ADDR, DESC);
    }

    /** @return the descriptor of {@code ncclGetLastError} */
    public static FunctionDescriptor ncclGetLastError$descriptor() {
        return ncclGetLastError.DESC;
    }

    /** @return the downcall handle of {@code ncclGetLastError} */
    public static MethodHandle ncclGetLastError$handle() {
        return ncclGetLastError.HANDLE;
    }

    /** @return the address of {@code ncclGetLastError} */
    public static MemorySegment ncclGetLastError$address() {
        return ncclGetLastError.ADDR;
    }

    /**
     * {@snippet lang=c :
     * const char *ncclGetLastError(ncclComm_t comm)
     * }
     * @param comm communicator, or NULL
     * @return a NUL-terminated string (reinterpret before reading)
     */
    public static MemorySegment ncclGetLastError(MemorySegment comm) {
        try {
            return (MemorySegment) ncclGetLastError.HANDLE.invokeExact(comm);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }
}
