package org.moe4j.cuda.comm;

import java.lang.foreign.MemorySegment;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.comm.internal.RankOrderReduce;
import org.moe4j.cuda.comm.internal.RowLayout;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.ReduceOp;

/**
 * Test double: does the reductions the way the device communicators do (gather every rank's input,
 * then {@link RankOrderReduce} on the host) on top of a host communicator's gathers.
 */
final class HostReducingCommunicator implements Communicator {
    private final Communicator inner;

    HostReducingCommunicator(Communicator inner) {
        this.inner = inner;
    }

    @Override
    public int rank() {
        return inner.rank();
    }

    @Override
    public int size() {
        return inner.size();
    }

    @Override
    public void allToAll(Buffer send, Buffer recv) {
        inner.allToAll(send, recv);
    }

    @Override
    public void allToAllV(Buffer send, long[] sendRows, Buffer recv, long[] recvRows) {
        inner.allToAllV(send, sendRows, recv, recvRows);
    }

    @Override
    public void allReduce(Buffer buffer, ReduceOp op) {
        HostBuffer b = (HostBuffer) buffer;
        long n = b.numel();
        try (HostBuffer flat = HostBuffer.wrap(b.dtype(), Shape.of(n), b.segment());
             HostBuffer all = HostBuffer.allocate(b.dtype(), Shape.of(size() * n))) {
            inner.allGather(flat, all);
            RankOrderReduce.reduce(b.dtype(), op, all.segment(), size(), n, b.segment());
        }
    }

    @Override
    public void allGather(Buffer send, Buffer recv) {
        inner.allGather(send, recv);
    }

    @Override
    public void allGatherV(Buffer send, Buffer recv, long[] recvRows) {
        inner.allGatherV(send, recv, recvRows);
    }

    @Override
    public void reduceScatterV(Buffer send, long[] rows, Buffer recv, ReduceOp op) {
        HostBuffer s = (HostBuffer) send;
        HostBuffer r = (HostBuffer) recv;
        int w = size();
        long rowElems = RowLayout.rowElements(s);
        long mine = rows[rank()] * rowElems;
        long[] ones = new long[w];
        long[] mineEach = new long[w];
        for (int p = 0; p < w; p++) {
            ones[p] = rows[p] * rowElems;
            mineEach[p] = mine;
        }
        try (HostBuffer flat = HostBuffer.wrap(s.dtype(), Shape.of(s.numel()), s.segment());
             HostBuffer all = HostBuffer.allocate(s.dtype(), Shape.of(w * mine))) {
            inner.allToAllV(flat, ones, all, mineEach);
            MemorySegment out = r.segment();
            RankOrderReduce.reduce(s.dtype(), op, all.segment(), w, mine, out);
        }
    }

    @Override
    public void barrier() {
        inner.barrier();
    }

    @Override
    public void close() {
        inner.close();
    }
}
