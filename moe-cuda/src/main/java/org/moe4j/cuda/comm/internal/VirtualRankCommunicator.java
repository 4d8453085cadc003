package org.moe4j.cuda.comm.internal;

import java.util.Arrays;
import java.util.Objects;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.CudaStream;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.ReduceOp;
import org.moe4j.dispatch.spi.Rendezvous;

/**
 * One rank of a {@link org.moe4j.cuda.comm.VirtualRankGroup}. Each collective: synchronize the
 * context (every rank's queued writes to its inputs are done), exchange buffer handles through the
 * group's {@link Rendezvous}, read the peers' inputs with copies on this rank's stream into this
 * rank's outputs only, synchronize the stream, and meet again so that nobody returns (and reuses
 * an input) while a peer still reads it.
 *
 * <p>A group of one rank needs no coordination: there each collective (after the same argument
 * checks) is a stream-ordered device copy, or nothing, on the receiving buffer's pool stream (the CUDA
 * backend's compute stream for its buffers), with no host synchronisation, so a one-rank layer step
 * can be captured as a CUDA graph. Its output is then ready in that stream's order (the backend's
 * kernels and the synchronous copies, which run on the legacy stream, see it).
 */
public final class VirtualRankCommunicator implements Communicator {
    private final Rendezvous rv;
    private final int rank;
    private final CudaContext context;
    private final CudaStream stream;
    private volatile boolean closed;

    private record Rows(DeviceBuffer send, long[] sendRows, DeviceBuffer recv, long[] recvRows) {
    }

    /**
     * @param rv      the group's rendezvous
     * @param rank    this rank
     * @param context the shared device
     */
    public VirtualRankCommunicator(Rendezvous rv, int rank, CudaContext context) {
        this.rv = rv;
        this.rank = rank;
        this.context = context;
        this.stream = context.createStream();
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return rv.world();
    }

    @Override
    public void allToAll(Buffer send, Buffer recv) {
        DeviceBuffer s = device("allToAll send", send);
        DeviceBuffer r = device("allToAll recv", recv);
        if (RowLayout.rows(s) != size()) {
            throw new IllegalArgumentException("allToAll send: expected dim 0 = " + size() + " (one block per rank) but got "
                    + s.shape());
        }
        if (r.dtype() != s.dtype() || !r.shape().equals(s.shape())) {
            throw new IllegalArgumentException("allToAll: recv " + r.describe() + " must match send " + s.describe());
        }
        long[] ones = new long[size()];
        Arrays.fill(ones, 1);
        allToAllV(s, ones, r, ones);
    }

    @Override
    public void allToAllV(Buffer send, long[] sendRows, Buffer recv, long[] recvRows) {
        DeviceBuffer s = device("allToAllV send", send);
        DeviceBuffer r = device("allToAllV recv", recv);
        RowLayout.checkCounts("allToAllV sendRows", sendRows, size(), s);
        RowLayout.checkCounts("allToAllV recvRows", recvRows, size(), r);
        long rowBytes = RowLayout.rowBytes(s);
        if (r.dtype() != s.dtype() || RowLayout.rowBytes(r) != rowBytes) {
            throw new IllegalArgumentException("allToAllV: recv " + r.describe() + " and send " + s.describe()
                    + " differ in dtype or row size");
        }
        if (size() == 1) {
            if (sendRows[0] != recvRows[0]) {
                throw new IllegalArgumentException("allToAllV: rank 0 sends " + sendRows[0] + " rows to itself but"
                        + " expects " + recvRows[0]);
            }
            copyRows(s, 0, r, 0, recvRows[0], r.pool().stream());
            return;
        }
        context.synchronize();
        Object[] all = rv.exchange(rank, "allToAllV", new Rows(s, sendRows.clone(), r, recvRows.clone()));
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            if (p.send.dtype() != r.dtype() || RowLayout.rowBytes(p.send) != rowBytes) {
                fail("allToAllV: rank " + src + " sends " + p.send.describe() + " but rank " + rank + " receives into "
                        + r.describe());
            }
            if (p.sendRows[rank] != recvRows[src]) {
                fail("allToAllV: rank " + src + " sends " + p.sendRows[rank] + " rows to rank " + rank + " but rank "
                        + rank + " expects " + recvRows[src]);
            }
        }
        long dstRow = 0;
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            copyRows(p.send, RowLayout.prefix(p.sendRows, rank), r, dstRow, recvRows[src], stream);
            dstRow += recvRows[src];
        }
        stream.synchronize();
        rv.exchange(rank, "allToAllV/done", null);
    }

    @Override
    public void allReduce(Buffer buffer, ReduceOp op) {
        DeviceBuffer b = device("allReduce buffer", buffer);
        Objects.requireNonNull(op, "op");
        if (size() == 1) {
            return; // the reduction over one rank is its own value
        }
        context.synchronize();
        Object[] all = rv.exchange(rank, "allReduce", b);
        for (int r = 0; r < size(); r++) {
            DeviceBuffer o = (DeviceBuffer) all[r];
            if (o.dtype() != b.dtype() || !o.shape().equals(b.shape())) {
                fail("allReduce: rank " + r + " has " + o.describe() + " but rank 0 has " + ((DeviceBuffer) all[0]).describe());
            }
        }
        long n = b.numel();
        try (HostBuffer gathered = HostBuffer.allocate(b.dtype(), Shape.of(size() * n));
             HostBuffer result = HostBuffer.allocate(b.dtype(), b.shape())) {
            for (int r = 0; r < size(); r++) {
                toHost((DeviceBuffer) all[r], 0, n, gathered, r * n);
            }
            stream.synchronize();
            RankOrderReduce.reduce(b.dtype(), op, gathered.segment(), size(), n, result.segment());
            rv.exchange(rank, "allReduce/done", null);
            b.copyFromAsync(result, stream);
            stream.synchronize();
        }
    }

    @Override
    public void allGather(Buffer send, Buffer recv) {
        DeviceBuffer s = device("allGather send", send);
        long[] rows = new long[size()];
        Arrays.fill(rows, RowLayout.rows(s));
        allGatherV(send, recv, rows);
    }

    @Override
    public void allGatherV(Buffer send, Buffer recv, long[] recvRows) {
        DeviceBuffer s = device("allGatherV send", send);
        DeviceBuffer r = device("allGatherV recv", recv);
        RowLayout.checkCounts("allGatherV recvRows", recvRows, size(), r);
        if (RowLayout.rows(s) != recvRows[rank]) {
            throw new IllegalArgumentException("allGatherV: send has " + RowLayout.rows(s) + " rows but recvRows[" + rank
                    + "] = " + recvRows[rank]);
        }
        long rowBytes = RowLayout.rowBytes(r);
        if (size() == 1) {
            if (s.dtype() != r.dtype() || RowLayout.rowBytes(s) != rowBytes) {
                throw new IllegalArgumentException("allGatherV: send " + s.describe() + " and recv " + r.describe()
                        + " differ in dtype or row size");
            }
            copyRows(s, 0, r, 0, recvRows[0], r.pool().stream());
            return;
        }
        context.synchronize();
        Object[] all = rv.exchange(rank, "allGatherV", new Rows(s, null, r, recvRows.clone()));
        long dstRow = 0;
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            if (p.send.dtype() != r.dtype() || RowLayout.rowBytes(p.send) != rowBytes) {
                fail("allGatherV: rank " + src + " sends " + p.send.describe() + " but rank " + rank + " receives into "
                        + r.describe());
            }
            if (!Arrays.equals(p.recvRows, recvRows)) {
                fail("allGatherV: ranks disagree on recvRows: rank " + src + " has " + Arrays.toString(p.recvRows)
                        + ", rank " + rank + " has " + Arrays.toString(recvRows));
            }
            copyRows(p.send, 0, r, dstRow, recvRows[src], stream);
            dstRow += recvRows[src];
        }
        stream.synchronize();
        rv.exchange(rank, "allGatherV/done", null);
    }

    @Override
    public void reduceScatterV(Buffer send, long[] rows, Buffer recv, ReduceOp op) {
        DeviceBuffer s = device("reduceScatterV send", send);
        DeviceBuffer r = device("reduceScatterV recv", recv);
        Objects.requireNonNull(op, "op");
        RowLayout.checkCounts("reduceScatterV rows", rows, size(), s);
        if (RowLayout.rows(r) != rows[rank] || r.dtype() != s.dtype() || RowLayout.rowBytes(r) != RowLayout.rowBytes(s)) {
            throw new IllegalArgumentException("reduceScatterV: recv " + r.describe() + " must be " + s.dtype() + " with "
                    + rows[rank] + " rows (rows[" + rank + "]) of the send row size");
        }
        if (size() == 1) {
            copyRows(s, 0, r, 0, rows[0], r.pool().stream()); // the reduction over one rank is its own value
            return;
        }
        context.synchronize();
        Object[] all = rv.exchange(rank, "reduceScatterV", new Rows(s, rows.clone(), r, null));
        long rowBytes = RowLayout.rowBytes(s);
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            if (!Arrays.equals(p.sendRows, rows) || p.send.dtype() != s.dtype() || RowLayout.rowBytes(p.send) != rowBytes) {
                fail("reduceScatterV: rank " + src + " sends " + p.send.describe() + " in blocks "
                        + Arrays.toString(p.sendRows) + " but rank " + rank + " has " + s.describe() + " in blocks "
                        + Arrays.toString(rows));
            }
        }
        long rowElems = RowLayout.rowElements(s);
        long first = RowLayout.prefix(rows, rank) * rowElems;
        long n = rows[rank] * rowElems;
        try (HostBuffer gathered = HostBuffer.allocate(s.dtype(), Shape.of(size() * n));
             HostBuffer result = HostBuffer.allocate(r.dtype(), r.shape())) {
            for (int src = 0; src < size(); src++) {
                toHost(((Rows) all[src]).send, first, n, gathered, src * n);
            }
            stream.synchronize();
            RankOrderReduce.reduce(s.dtype(), op, gathered.segment(), size(), n, result.segment());
            rv.exchange(rank, "reduceScatterV/done", null);
            r.copyFromAsync(result, stream);
            stream.synchronize();
        }
    }

    @Override
    public void barrier() {
        checkOpen();
        if (size() == 1) {
            return;
        }
        rv.exchange(rank, "barrier", null);
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        stream.close();
    }

    private static void copyRows(DeviceBuffer from, long fromRow, DeviceBuffer to, long toRow, long rows, CudaStream on) {
        if (rows == 0) {
            return;
        }
        long rowElems = RowLayout.rowElements(to);
        long elems = rows * rowElems;
        long size = to.dtype().byteSize();
        try (DeviceBuffer src = from.view(from.dtype(), Shape.of(elems), fromRow * rowElems * size);
             DeviceBuffer dst = to.view(to.dtype(), Shape.of(elems), toRow * rowElems * size)) {
            dst.copyFromAsync(src, on);
        }
    }

    /** Queues a copy of elements {@code [first, first + n)} of {@code from} to {@code host} at element {@code at}. */
    private void toHost(DeviceBuffer from, long first, long n, HostBuffer host, long at) {
        if (n == 0) {
            return;
        }
        long size = from.dtype().byteSize();
        try (DeviceBuffer src = from.view(from.dtype(), Shape.of(n), first * size);
             HostBuffer dst = HostBuffer.wrap(host.dtype(), Shape.of(n), host.segment().asSlice(at * size, n * size))) {
            src.copyToAsync(dst, stream);
        }
    }

    private void fail(String message) {
        rv.fail(message, null);
        throw new CommunicatorException("rank " + rank + ": " + message);
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("communicator of virtual rank " + rank + " is closed");
        }
    }

    private DeviceBuffer device(String what, Buffer b) {
        checkOpen();
        Objects.requireNonNull(b, what);
        if (b instanceof DeviceBuffer d) {
            if (!d.device().equals(context.location())) {
                throw new IllegalArgumentException(what + ": " + d.describe() + " is not on the group's device "
                        + context.location());
            }
            return d;
        }
        throw new IllegalArgumentException(what + ": VirtualRankGroup needs device buffers but got "
                + b.getClass().getSimpleName() + " on " + b.device());
    }
}
