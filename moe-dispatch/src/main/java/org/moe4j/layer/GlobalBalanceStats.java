package org.moe4j.layer;

import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.Communicator;
import org.moe4j.routing.BalanceStats;

/**
 * All-gathers the routers' balance statistics over the ranks of a layer, in rank order, so the
 * auxiliary losses are global means (see {@link org.moe4j.routing.Router.Builder#statsExchange}).
 * Three collectives per call: the segment counts, then the float and the integer statistics.
 */
final class GlobalBalanceStats implements BalanceStats.Exchange {
    private final Communicator comm;
    private final Backend backend;

    GlobalBalanceStats(Communicator comm, Backend backend) {
        this.comm = comm;
        this.backend = backend;
    }

    @Override
    public BalanceStats gather(BalanceStats local) {
        int world = comm.size();
        int experts = local.experts();
        int segs = local.segments();
        long[] rows = new long[world];
        try (HostBuffer mine = HostBuffer.allocate(DType.I64, 1); HostBuffer all = HostBuffer.allocate(DType.I64, world)) {
            mine.segment().set(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0, segs);
            gather(mine, all, null);
            for (int r = 0; r < world; r++) {
                rows[r] = all.getLong(r);
            }
        }
        int total = Math.toIntExact(java.util.Arrays.stream(rows).sum());
        int width = experts + 1;
        float[] probSum = new float[total * experts];
        int[] counts = new int[total * experts];
        int[] valid = new int[total];
        float[] lseSq = new float[total];
        try (HostBuffer f = HostBuffer.allocate(DType.F32, segs, width); HostBuffer i = HostBuffer.allocate(DType.I32, segs, width);
             HostBuffer fAll = HostBuffer.allocate(DType.F32, total, width);
             HostBuffer iAll = HostBuffer.allocate(DType.I32, total, width)) {
            for (int s = 0; s < segs; s++) {
                for (int e = 0; e < experts; e++) {
                    f.setFloat((long) s * width + e, local.probSum()[s * experts + e]);
                    i.setInt((long) s * width + e, local.counts()[s * experts + e]);
                }
                f.setFloat((long) s * width + experts, local.lseSq()[s]);
                i.setInt((long) s * width + experts, local.valid()[s]);
            }
            gather(f, fAll, rows);
            gather(i, iAll, rows);
            for (int s = 0; s < total; s++) {
                for (int e = 0; e < experts; e++) {
                    probSum[s * experts + e] = fAll.getFloat((long) s * width + e);
                    counts[s * experts + e] = iAll.getInt((long) s * width + e);
                }
                lseSq[s] = fAll.getFloat((long) s * width + experts);
                valid[s] = iAll.getInt((long) s * width + experts);
            }
        }
        return new BalanceStats(experts, probSum, counts, valid, lseSq);
    }

    /** All-gather (equal blocks when {@code rows} is null) staged through the backend's memory. */
    private void gather(HostBuffer send, HostBuffer recv, long[] rows) {
        try (Buffer s = backend.upload(send); Buffer r = backend.allocate(recv.dtype(), recv.shape())) {
            if (rows == null) {
                comm.allGather(s, r);
            } else {
                comm.allGatherV(s, r, rows);
            }
            r.copyTo(recv);
        }
    }
}
