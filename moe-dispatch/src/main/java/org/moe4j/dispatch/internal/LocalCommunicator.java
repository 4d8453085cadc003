package org.moe4j.dispatch.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.ReduceOp;
import org.moe4j.dispatch.spi.Rendezvous;

/**
 * One in-process rank of a {@link org.moe4j.dispatch.LocalGroup}: collectives are host memory
 * copies between the ranks' buffers. Each collective is two rendezvous rounds: after the first,
 * every rank reads the others' inputs and writes only its own outputs; the second round makes sure
 * nobody is still reading when the call returns (so inputs may be reused at once).
 */
public final class LocalCommunicator implements Communicator {
    private static final int CHUNK = 8192; // elements per reduction block
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED;

    private final Rendezvous rv;
    private final int rank;
    private volatile boolean closed;

    private record Rows(HostBuffer send, long[] sendRows, HostBuffer recv, long[] recvRows) {
    }

    /**
     * @param rv   the group's rendezvous
     * @param rank this rank
     */
    public LocalCommunicator(Rendezvous rv, int rank) {
        this.rv = rv;
        this.rank = rank;
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
        HostBuffer s = host("allToAll send", send);
        HostBuffer r = host("allToAll recv", recv);
        requireRows("allToAll send", s, size());
        if (r.dtype() != s.dtype() || !r.shape().equals(s.shape())) {
            throw new IllegalArgumentException("allToAll: recv " + r.describe() + " must match send " + s.describe());
        }
        long[] counts = new long[size()];
        Arrays.fill(counts, 1);
        allToAllV(s, counts, r, counts);
    }

    @Override
    public void allToAllV(Buffer send, long[] sendRows, Buffer recv, long[] recvRows) {
        HostBuffer s = host("allToAllV send", send);
        HostBuffer r = host("allToAllV recv", recv);
        long rowBytes = rowBytes(s);
        checkCounts("allToAllV sendRows", sendRows, s);
        checkCounts("allToAllV recvRows", recvRows, r);
        if (r.dtype() != s.dtype() || rowBytes(r) != rowBytes) {
            throw new IllegalArgumentException("allToAllV: recv " + r.describe() + " and send " + s.describe()
                    + " differ in dtype or row size");
        }
        Object[] all = rv.exchange(rank, "allToAllV", new Rows(s, sendRows.clone(), r, recvRows.clone()));
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            if (p.send.dtype() != r.dtype() || rowBytes(p.send) != rowBytes) {
                fail("allToAllV: rank " + src + " sends " + p.send.describe() + " but rank " + rank + " receives into "
                        + r.describe());
            }
            if (p.sendRows[rank] != recvRows[src]) {
                fail("allToAllV: rank " + src + " sends " + p.sendRows[rank] + " rows to rank " + rank
                        + " but rank " + rank + " expects " + recvRows[src]);
            }
        }
        long dstOff = 0;
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            long srcOff = 0;
            for (int d = 0; d < rank; d++) {
                srcOff += p.sendRows[d];
            }
            long bytes = recvRows[src] * rowBytes;
            if (bytes > 0) {
                MemorySegment.copy(p.send.segment(), srcOff * rowBytes, r.segment(), dstOff * rowBytes, bytes);
            }
            dstOff += recvRows[src];
        }
        rv.exchange(rank, "allToAllV/done", null);
    }

    @Override
    public void allReduce(Buffer buffer, ReduceOp op) {
        HostBuffer b = host("allReduce buffer", buffer);
        Object[] all = rv.exchange(rank, "allReduce", b);
        for (int r = 0; r < size(); r++) {
            HostBuffer o = (HostBuffer) all[r];
            if (o.dtype() != b.dtype() || !o.shape().equals(b.shape())) {
                fail("allReduce: rank " + r + " has " + o.describe() + " but rank 0 has " + ((HostBuffer) all[0]).describe());
            }
        }
        HostBuffer tmp = HostBuffer.allocate(b.dtype(), b.shape());
        try {
            MemorySegment[] srcs = new MemorySegment[size()];
            for (int r = 0; r < size(); r++) {
                srcs[r] = ((HostBuffer) all[r]).segment();
            }
            reduce(b.dtype(), op, srcs, 0, b.numel(), tmp.segment(), 0);
            rv.exchange(rank, "allReduce/done", null);
            MemorySegment.copy(tmp.segment(), 0, b.segment(), 0, b.byteSize());
        } finally {
            tmp.close();
        }
    }

    @Override
    public void allGather(Buffer send, Buffer recv) {
        HostBuffer s = host("allGather send", send);
        long[] rows = new long[size()];
        Arrays.fill(rows, s.shape().rank() == 0 ? 1 : s.shape().dim(0));
        allGatherV(send, recv, rows);
    }

    @Override
    public void allGatherV(Buffer send, Buffer recv, long[] recvRows) {
        HostBuffer s = host("allGatherV send", send);
        HostBuffer r = host("allGatherV recv", recv);
        checkCounts("allGatherV recvRows", recvRows, r);
        if (rows(s) != recvRows[rank]) {
            throw new IllegalArgumentException("allGatherV: send has " + rows(s) + " rows but recvRows[" + rank + "] = "
                    + recvRows[rank]);
        }
        long rowBytes = rowBytes(r);
        Object[] all = rv.exchange(rank, "allGatherV", new Rows(s, null, r, recvRows.clone()));
        long off = 0;
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            if (p.send.dtype() != r.dtype() || rowBytes(p.send) != rowBytes) {
                fail("allGatherV: rank " + src + " sends " + p.send.describe() + " but rank " + rank + " receives into "
                        + r.describe());
            }
            if (!Arrays.equals(p.recvRows, recvRows)) {
                fail("allGatherV: ranks disagree on recvRows: rank " + src + " has " + Arrays.toString(p.recvRows)
                        + ", rank " + rank + " has " + Arrays.toString(recvRows));
            }
            long bytes = recvRows[src] * rowBytes;
            if (bytes > 0) {
                MemorySegment.copy(p.send.segment(), 0, r.segment(), off * rowBytes, bytes);
            }
            off += recvRows[src];
        }
        rv.exchange(rank, "allGatherV/done", null);
    }

    @Override
    public void reduceScatterV(Buffer send, long[] rows, Buffer recv, ReduceOp op) {
        HostBuffer s = host("reduceScatterV send", send);
        HostBuffer r = host("reduceScatterV recv", recv);
        checkCounts("reduceScatterV rows", rows, s);
        if (rows(r) != rows[rank] || r.dtype() != s.dtype()) {
            throw new IllegalArgumentException("reduceScatterV: recv " + r.describe() + " must be " + s.dtype() + " with "
                    + rows[rank] + " rows (rows[" + rank + "])");
        }
        Object[] all = rv.exchange(rank, "reduceScatterV", new Rows(s, rows.clone(), r, null));
        long rowBytes = rowBytes(s);
        MemorySegment[] srcs = new MemorySegment[size()];
        for (int src = 0; src < size(); src++) {
            Rows p = (Rows) all[src];
            if (!Arrays.equals(p.sendRows, rows) || p.send.dtype() != s.dtype()
                    || rowBytes(p.send) != rowBytes) {
                fail("reduceScatterV: rank " + src + " sends " + p.send.describe() + " in blocks "
                        + Arrays.toString(p.sendRows) + " but rank " + rank + " has " + s.describe() + " in blocks "
                        + Arrays.toString(rows));
            }
            srcs[src] = p.send.segment();
        }
        long first = 0;
        for (int d = 0; d < rank; d++) {
            first += rows[d];
        }
        long elemsPerRow = rowBytes / s.dtype().byteSize();
        HostBuffer tmp = HostBuffer.allocate(r.dtype(), r.shape());
        try {
            reduce(s.dtype(), op, srcs, first * elemsPerRow, rows[rank] * elemsPerRow, tmp.segment(), 0);
            rv.exchange(rank, "reduceScatterV/done", null);
            MemorySegment.copy(tmp.segment(), 0, r.segment(), 0, r.byteSize());
        } finally {
            tmp.close();
        }
    }

    @Override
    public void barrier() {
        rv.exchange(rank, "barrier", null);
    }

    @Override
    public void close() {
        closed = true;
    }

    private void fail(String message) {
        rv.fail(message, null);
        throw new CommunicatorException("rank " + rank + ": " + message);
    }

    private HostBuffer host(String what, Buffer b) {
        if (closed) {
            throw new IllegalStateException("communicator of rank " + rank + " is closed");
        }
        if (b instanceof HostBuffer h) {
            return h;
        }
        throw new IllegalArgumentException(what + ": LocalGroup needs host buffers but got " + b.getClass().getSimpleName()
                + " on " + b.device());
    }

    private static long rows(HostBuffer b) {
        return b.shape().rank() == 0 ? 1 : b.shape().dim(0);
    }

    private static long rowBytes(HostBuffer b) {
        long[] dims = b.shape().dims();
        long n = b.dtype().byteSize();
        for (int i = 1; i < dims.length; i++) {
            n = Math.multiplyExact(n, dims[i]);
        }
        return n;
    }

    private static void requireRows(String what, HostBuffer b, long rows) {
        if (rows(b) != rows) {
            throw new IllegalArgumentException(what + ": expected dim 0 = " + rows + " (one block per rank) but got "
                    + b.shape());
        }
    }

    private void checkCounts(String what, long[] counts, HostBuffer b) {
        if (counts.length != size()) {
            throw new IllegalArgumentException(what + ": expected " + size() + " counts but got " + counts.length);
        }
        long sum = 0;
        for (int i = 0; i < counts.length; i++) {
            if (counts[i] < 0) {
                throw new IllegalArgumentException(what + "[" + i + "] is negative (" + counts[i] + ")");
            }
            sum = Math.addExact(sum, counts[i]);
        }
        if (sum != rows(b)) {
            throw new IllegalArgumentException(what + " sum to " + sum + " rows but the buffer " + b.describe() + " has "
                    + rows(b));
        }
    }

    /** dst[dstOff + i] = op over ranks in rank order of srcs[r][srcOff + i], element offsets. */
    private static void reduce(DType dtype, ReduceOp op, MemorySegment[] srcs, long srcOff, long n,
            MemorySegment dst, long dstOff) {
        switch (dtype) {
            case F32, BF16, F16 -> {
                float[] acc = new float[(int) Math.min(CHUNK, Math.max(n, 1))];
                float[] tmp = new float[acc.length];
                for (long base = 0; base < n; base += acc.length) {
                    int len = (int) Math.min(acc.length, n - base);
                    loadFloats(dtype, srcs[0], srcOff + base, acc, len);
                    for (int r = 1; r < srcs.length; r++) {
                        loadFloats(dtype, srcs[r], srcOff + base, tmp, len);
                        if (op == ReduceOp.SUM) {
                            for (int i = 0; i < len; i++) {
                                acc[i] += tmp[i];
                            }
                        } else {
                            for (int i = 0; i < len; i++) {
                                acc[i] = Math.max(acc[i], tmp[i]);
                            }
                        }
                    }
                    storeFloats(dtype, dst, dstOff + base, acc, len);
                }
            }
            case I32 -> {
                for (long i = 0; i < n; i++) {
                    int a = srcs[0].getAtIndex(I32, srcOff + i);
                    for (int r = 1; r < srcs.length; r++) {
                        int v = srcs[r].getAtIndex(I32, srcOff + i);
                        a = op == ReduceOp.SUM ? a + v : Math.max(a, v);
                    }
                    dst.setAtIndex(I32, dstOff + i, a);
                }
            }
            case I64 -> {
                for (long i = 0; i < n; i++) {
                    long a = srcs[0].getAtIndex(I64, srcOff + i);
                    for (int r = 1; r < srcs.length; r++) {
                        long v = srcs[r].getAtIndex(I64, srcOff + i);
                        a = op == ReduceOp.SUM ? a + v : Math.max(a, v);
                    }
                    dst.setAtIndex(I64, dstOff + i, a);
                }
            }
            default -> throw new IllegalArgumentException("reduction of " + dtype + " is not supported");
        }
    }

    private static void loadFloats(DType dtype, MemorySegment s, long off, float[] out, int len) {
        if (dtype == DType.F32) {
            MemorySegment.copy(s, F32, off * 4, out, 0, len);
            return;
        }
        for (int i = 0; i < len; i++) {
            short bits = s.getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, off + i);
            out[i] = dtype == DType.BF16 ? DType.bf16ToF32(bits) : DType.f16ToF32(bits);
        }
    }

    private static void storeFloats(DType dtype, MemorySegment s, long off, float[] in, int len) {
        if (dtype == DType.F32) {
            MemorySegment.copy(in, 0, s, F32, off * 4, len);
            return;
        }
        for (int i = 0; i < len; i++) {
            short bits = dtype == DType.BF16 ? DType.f32ToBf16(in[i]) : DType.f32ToF16(in[i]);
            s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, off + i, bits);
        }
    }
}
