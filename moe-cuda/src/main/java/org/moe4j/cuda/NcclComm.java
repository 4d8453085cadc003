package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.NativeLibraries;
import org.moe4j.cuda.internal.ffi.nccl.nccl_h;

/**
 * One rank's NCCL communicator: a thin, checked wrapper of the NCCL calls moe4j uses (all-reduce,
 * all-gather, reduce-scatter, grouped send/recv). Buffers are {@link DeviceBuffer}s; counts are
 * element counts of the buffer's dtype. Every call is queued on the given stream.
 *
 * <p>Bootstrap: rank 0 calls {@link #uniqueId()} and hands the 128 bytes to every rank (torchrun
 * style, over {@code MASTER_ADDR:MASTER_PORT} or in-process), then each rank calls
 * {@link #initRank}. NCCL refuses two ranks on one GPU.
 */
public final class NcclComm implements AutoCloseable {
    /** Reduction operators ({@code ncclRedOp_t}). */
    public enum ReduceOp {
        /** Sum. */ SUM(nccl_h.ncclSum),
        /** Product. */ PROD(nccl_h.ncclProd),
        /** Maximum. */ MAX(nccl_h.ncclMax),
        /** Minimum. */ MIN(nccl_h.ncclMin),
        /** Mean over ranks. */ AVG(nccl_h.ncclAvg);

        final int code;

        ReduceOp(int code) {
            this.code = code;
        }
    }

    private final CudaContext context;
    private final MemorySegment handle; // ncclComm_t
    private final int rank;
    private final int worldSize;
    private volatile boolean closed;

    private NcclComm(CudaContext context, MemorySegment handle, int rank, int worldSize) {
        this.context = context;
        this.handle = handle;
        this.rank = rank;
        this.worldSize = worldSize;
    }

    /**
     * Returns NCCL's version, e.g. {@code 22703} for 2.27.3.
     * @return NCCL's version, e.g. {@code 22703} for 2.27.3
     * @throws NativeLibraryException when libnccl cannot be found
     */
    public static int version() {
        NativeLibraries.nccl();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ValueLayout.JAVA_INT);
            NcclException.check(nccl_h.ncclGetVersion(v), "ncclGetVersion");
            return v.get(ValueLayout.JAVA_INT, 0);
        }
    }

    /**
     * Returns a fresh unique id (128 bytes) for a new communicator; rank 0 makes it and shares it.
     * @return a fresh unique id (128 bytes) for a new communicator; rank 0 makes it and shares it
     * @throws NativeLibraryException when libnccl cannot be found
     */
    public static byte[] uniqueId() {
        NativeLibraries.nccl();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment id = a.allocate(nccl_h.ncclUniqueId);
            NcclException.check(nccl_h.ncclGetUniqueId(id), "ncclGetUniqueId");
            return id.toArray(ValueLayout.JAVA_BYTE);
        }
    }

    /**
     * Joins a communicator (blocks until all {@code worldSize} ranks have joined).
     *
     * @param context   this rank's device context
     * @param worldSize number of ranks
     * @param uniqueId  the 128-byte id from {@link #uniqueId()} on rank 0
     * @param rank      this rank, {@code 0 <= rank < worldSize}
     * @return the communicator
     */
    public static NcclComm initRank(CudaContext context, int worldSize, byte[] uniqueId, int rank) {
        Objects.requireNonNull(context, "context");
        if (uniqueId.length != nccl_h.NCCL_UNIQUE_ID_BYTES) {
            throw new IllegalArgumentException("NCCL unique id must be " + nccl_h.NCCL_UNIQUE_ID_BYTES + " bytes, got " + uniqueId.length);
        }
        if (worldSize < 1 || rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException("rank " + rank + " of world size " + worldSize + ": need 0 <= rank < worldSize");
        }
        NativeLibraries.nccl();
        context.makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            MemorySegment id = a.allocate(nccl_h.ncclUniqueId);
            MemorySegment.copy(uniqueId, 0, id, ValueLayout.JAVA_BYTE, 0, uniqueId.length);
            NcclException.check(nccl_h.ncclCommInitRank(out, worldSize, id, rank),
                    "ncclCommInitRank(rank " + rank + " of " + worldSize + " on " + context.location() + ")");
            return new NcclComm(context, out.get(ValueLayout.ADDRESS, 0), rank, worldSize);
        }
    }

    /**
     * Returns this rank.
     * @return this rank
     */
    public int rank() {
        return rank;
    }

    /**
     * Returns number of ranks.
     * @return number of ranks
     */
    public int worldSize() {
        return worldSize;
    }

    /**
     * Returns the matching {@code ncclDataType_t}.
     * @param dtype a moe4j dtype
     * @return the matching {@code ncclDataType_t}
     */
    public static int ncclType(DType dtype) {
        return switch (dtype) {
            case F32 -> nccl_h.ncclFloat32;
            case BF16 -> nccl_h.ncclBfloat16;
            case F16 -> nccl_h.ncclFloat16;
            case I32 -> nccl_h.ncclInt32;
            case I64 -> nccl_h.ncclInt64;
        };
    }

    private MemorySegment comm() {
        if (closed) {
            throw new BufferClosedException("NcclComm rank " + rank + " of " + worldSize);
        }
        context.makeCurrent();
        return handle;
    }

    /** Starts a group: the calls until {@link #groupEnd()} are issued together (needed for send/recv pairs). */
    public static void groupStart() {
        NcclException.check(nccl_h.ncclGroupStart(), "ncclGroupStart");
    }

    /** Ends a group and issues its calls. */
    public static void groupEnd() {
        NcclException.check(nccl_h.ncclGroupEnd(), "ncclGroupEnd");
    }

    private static void sameType(String op, DeviceBuffer a, DeviceBuffer b) {
        if (a.dtype() != b.dtype()) {
            throw new IllegalArgumentException(op + ": dtypes differ (" + a + " vs " + b + ")");
        }
    }

    /**
     * All-reduce of {@code send} into {@code recv} (same dtype and size; may be the same buffer).
     *
     * @param send   input
     * @param recv   output
     * @param op     reduction
     * @param stream stream
     */
    public void allReduce(DeviceBuffer send, DeviceBuffer recv, ReduceOp op, CudaStream stream) {
        sameType("ncclAllReduce", send, recv);
        if (send.numel() != recv.numel()) {
            throw new IllegalArgumentException("ncclAllReduce: sizes differ (" + send + " vs " + recv + ")");
        }
        NcclException.check(nccl_h.ncclAllReduce(send.pointer(), recv.pointer(), send.numel(), ncclType(send.dtype()),
                op.code, comm(), stream.handle()), "ncclAllReduce(" + send.numel() + " x " + send.dtype() + ", rank " + rank + ")");
    }

    /**
     * All-gather: {@code recv} (worldSize × send's size) receives every rank's {@code send} in rank order.
     *
     * @param send   this rank's part
     * @param recv   all parts
     * @param stream stream
     */
    public void allGather(DeviceBuffer send, DeviceBuffer recv, CudaStream stream) {
        sameType("ncclAllGather", send, recv);
        if (recv.numel() != send.numel() * worldSize) {
            throw new IllegalArgumentException("ncclAllGather: recv must hold worldSize (" + worldSize + ") x send (" + send + "), got " + recv);
        }
        NcclException.check(nccl_h.ncclAllGather(send.pointer(), recv.pointer(), send.numel(), ncclType(send.dtype()),
                comm(), stream.handle()), "ncclAllGather(" + send.numel() + " x " + send.dtype() + ", rank " + rank + ")");
    }

    /**
     * Reduce-scatter: reduces {@code send} (worldSize × recv's size) over ranks; rank r keeps part r.
     *
     * @param send   all parts
     * @param recv   this rank's reduced part
     * @param op     reduction
     * @param stream stream
     */
    public void reduceScatter(DeviceBuffer send, DeviceBuffer recv, ReduceOp op, CudaStream stream) {
        sameType("ncclReduceScatter", send, recv);
        if (send.numel() != recv.numel() * worldSize) {
            throw new IllegalArgumentException("ncclReduceScatter: send must hold worldSize (" + worldSize + ") x recv (" + recv + "), got " + send);
        }
        NcclException.check(nccl_h.ncclReduceScatter(send.pointer(), recv.pointer(), recv.numel(), ncclType(send.dtype()),
                op.code, comm(), stream.handle()), "ncclReduceScatter(" + recv.numel() + " x " + send.dtype() + ", rank " + rank + ")");
    }

    /**
     * Sends {@code count} elements starting at {@code buf} to {@code peer} (pair with a recv there; inside a group).
     *
     * @param buf    source (a view selects a part)
     * @param peer   destination rank
     * @param stream stream
     */
    public void send(DeviceBuffer buf, int peer, CudaStream stream) {
        NcclException.check(nccl_h.ncclSend(buf.pointer(), buf.numel(), ncclType(buf.dtype()), peer, comm(), stream.handle()),
                "ncclSend(" + buf.numel() + " x " + buf.dtype() + ", rank " + rank + " to " + peer + ")");
    }

    /**
     * Receives {@code buf.numel()} elements from {@code peer} into {@code buf} (inside a group).
     *
     * @param buf    destination (a view selects a part)
     * @param peer   source rank
     * @param stream stream
     */
    public void recv(DeviceBuffer buf, int peer, CudaStream stream) {
        NcclException.check(nccl_h.ncclRecv(buf.pointer(), buf.numel(), ncclType(buf.dtype()), peer, comm(), stream.handle()),
                "ncclRecv(" + buf.numel() + " x " + buf.dtype() + ", rank " + rank + " from " + peer + ")");
    }

    /**
     * Throws if the communicator hit an asynchronous error (a failed peer, a network error).
     *
     * @throws NcclException naming the error
     */
    public void checkAsyncError() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment r = a.allocate(ValueLayout.JAVA_INT);
            NcclException.check(nccl_h.ncclCommGetAsyncError(comm(), r), "ncclCommGetAsyncError");
            int code = r.get(ValueLayout.JAVA_INT, 0);
            if (code != nccl_h.ncclSuccess && code != nccl_h.ncclInProgress) {
                throw NcclException.of(code, "asynchronous error on rank " + rank + " of " + worldSize);
            }
        }
    }

    /** Aborts pending operations and frees the communicator (use after an error). Idempotent with close. */
    public void abort() {
        if (closed) {
            return;
        }
        closed = true;
        context.makeCurrent();
        NcclException.check(nccl_h.ncclCommAbort(handle), "ncclCommAbort(rank " + rank + ")");
    }

    /** Destroys the communicator after its queued work. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        context.makeCurrent();
        NcclException.check(nccl_h.ncclCommDestroy(handle), "ncclCommDestroy(rank " + rank + ")");
    }
}
