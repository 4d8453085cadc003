package org.moe4j.dispatch;

import org.moe4j.core.buffer.Buffer;

/**
 * Collective communication among the {@link #size()} ranks of an expert-parallel group.
 *
 * <p>Every method is a collective: all ranks call the same methods in the same order (a rank that
 * never joins makes the others fail after the implementation's timeout; a rank that fails makes
 * the others fail with its cause). Payloads are {@link Buffer}s, so a device implementation (NCCL)
 * fits the same interface; calls are ordered like a stream: when a method returns, its output is
 * ready for the next operation issued by this rank, and its input may be reused.
 *
 * <p>Row-based operations treat dimension 0 of a buffer as rows; one row is
 * {@code byteSize / dim(0)} bytes (a 1-D buffer has one element per row). Row counts are host
 * arrays, as NCCL needs them on the host; they come from a preceding {@link #allToAll} of counts.
 *
 * <p>Reductions are deterministic: the result is the sum in rank order {@code ((b0 + b1) + b2) ...}
 * computed in fp32 for floating types (BF16/F16 rounded once at the end), identical on every rank.
 */
public interface Communicator extends AutoCloseable {
    /**
     * Returns this rank, {@code 0 .. size-1}.
     * @return this rank, {@code 0 .. size-1}
     */
    int rank();

    /**
     * Returns number of ranks {@code W}.
     * @return number of ranks {@code W}
     */
    int size();

    /**
     * Equal-size all-to-all: block {@code d} of {@code send} goes to rank {@code d}, block {@code s}
     * of {@code recv} comes from rank {@code s}. Typically used for counts.
     *
     * @param send {@code [W, n...]}
     * @param recv {@code [W, n...]}, same dtype and shape as {@code send}
     * @throws IllegalArgumentException on shape or dtype mismatch
     * @throws CommunicatorException    if the collective fails on any rank
     */
    void allToAll(Buffer send, Buffer recv);

    /**
     * Variable all-to-all of rows: the first {@code sendRows[0]} rows of {@code send} go to rank 0,
     * the next {@code sendRows[1]} to rank 1, and so on; {@code recv} holds the rows from rank 0,
     * then rank 1, ... Rank {@code s}'s {@code sendRows[d]} must equal rank {@code d}'s
     * {@code recvRows[s]}.
     *
     * @param send     {@code [sum(sendRows), ...]}
     * @param sendRows rows sent to each rank, length {@code W}
     * @param recv     {@code [sum(recvRows), ...]}, same dtype and row size as {@code send}
     * @param recvRows rows received from each rank, length {@code W}
     * @throws IllegalArgumentException on shape, dtype or count mismatch
     * @throws CommunicatorException    if the collective fails on any rank
     */
    void allToAllV(Buffer send, long[] sendRows, Buffer recv, long[] recvRows);

    /**
     * In-place all-reduce in rank order.
     *
     * @param buffer data of the same dtype and shape on every rank (F32, BF16, F16, I32, I64)
     * @param op     the reduction
     * @throws CommunicatorException if the collective fails on any rank
     */
    void allReduce(Buffer buffer, ReduceOp op);

    /**
     * All-gather of equal-size blocks: {@code recv} holds rank 0's {@code send}, then rank 1's, ...
     *
     * @param send {@code [n, ...]}
     * @param recv {@code [W * n, ...]}
     * @throws CommunicatorException if the collective fails on any rank
     */
    void allGather(Buffer send, Buffer recv);

    /**
     * All-gather of rows with per-rank row counts.
     *
     * @param send     {@code [recvRows[rank], ...]}
     * @param recv     {@code [sum(recvRows), ...]}
     * @param recvRows rows contributed by each rank, length {@code W}, the same on every rank
     * @throws CommunicatorException if the collective fails on any rank
     */
    void allGatherV(Buffer send, Buffer recv, long[] recvRows);

    /**
     * Reduce-scatter of rows: every rank contributes {@code sum(rows)} rows; rank {@code r}
     * receives the rank-order reduction of block {@code r} (its {@code rows[r]} rows).
     *
     * @param send {@code [sum(rows), ...]}
     * @param rows block sizes in rows, length {@code W}, the same on every rank
     * @param recv {@code [rows[rank], ...]}
     * @param op   the reduction
     * @throws CommunicatorException if the collective fails on any rank
     */
    void reduceScatterV(Buffer send, long[] rows, Buffer recv, ReduceOp op);

    /**
     * Returns once every rank has called it.
     *
     * @throws CommunicatorException if the collective fails on any rank
     */
    void barrier();

    /** Releases this rank's resources; not a collective. Idempotent. */
    @Override
    void close();
}
