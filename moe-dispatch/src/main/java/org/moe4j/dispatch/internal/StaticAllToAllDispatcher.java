package org.moe4j.dispatch.internal;

import static org.moe4j.core.buffer.Handover.closeAll;

import java.util.Arrays;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.dispatch.CombineGrads;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;

/**
 * The static-shape (equal-split) all-to-all: every (source, destination) chunk has {@code C} rows,
 * known before the step from the token count and {@link org.moe4j.core.config.DispatchOptions}; the
 * routing travels with the rows as meta (padding rows carry no expert), the receiver builds counts,
 * group offsets and the local-expert-major layout on the device, and every collective has fixed
 * splits. Nothing is read back to the host (when the kernels keep the plans on the device, see
 * {@link DispatchKernels#staticPlansOnDevice()}), so a step can be captured as a CUDA graph.
 *
 * <p>The expert input has a static {@code P = W*C + L*(alignment-1)} rows; the groups occupy the
 * first {@code groupOffsets[L]} of them, the rest are zero and belong to no group. Whenever no chunk
 * overflows, every output and gradient is bitwise the count-exchange all-to-all's: the same rows in
 * the same order meet the same kernels. Slots that do not fit are dropped by the drop policy: they
 * add nothing to the output, get zero gradients, and are counted by {@link DispatchResult#overflow()}.
 *
 * <p>Where the kernels defer the routing check ({@link DispatchKernels#staticPlanCheckDeferred()}, the
 * CUDA kernels), bad expert ids and non-finite weights are not refused in {@code dispatch} (that would
 * be a host read): the rank sends nothing that step, and {@link DispatchResult#overflow()},
 * {@code groupOffsets()} or {@code tokensPerLocalExpert()} throw the refusal.
 */
public final class StaticAllToAllDispatcher extends AbstractDispatcher {

    /**
     * @param config  settings (strategy static-all-to-all)
     * @param comm    the group
     * @param backend allocates outputs
     * @param kernels the kernels
     * @throws IllegalArgumentException if the experts do not divide evenly over the ranks
     */
    public StaticAllToAllDispatcher(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
        super(config, comm, backend, kernels);
    }

    private int verifiedTokens = -1; // the [T, K] last found equal on every rank (without chunkRows)
    private int verifiedTopK = -1;

    private final class StaticCtx extends Ctx {
        int capacity;                   // C
        long[] splits;                  // C for every rank
        Buffer weights;                 // F32 [T, K]
        DispatchKernels.StaticSendPlan send;
        Buffer offsets;                 // I32 [L+1] on the device
        Buffer perLocal;                // I32 [L] on the device
        Buffer returned;                // [N, H] y rows back at the source, after combine
        Buffer fault;                   // I32 [3] the send plan's fault record (deferred input check)

        StaticCtx(Dims dims, DType xDtype) {
            super(StaticAllToAllDispatcher.this, dims, xDtype, null, null);
        }

        @Override
        public int[] groupOffsets() {
            checkFault();
            return readInts(offsets);
        }

        @Override
        public int[] tokensPerLocalExpert() {
            checkFault();
            return readInts(perLocal);
        }

        /**
         * Reports a refusal that the device-side plan deferred (a host read, only where the kernels
         * defer the check: host kernels refuse eagerly in dispatch).
         */
        void checkFault() {
            check();
            if (kernels.staticPlanCheckDeferred()) {
                IllegalArgumentException bad = org.moe4j.dispatch.spi.StaticPlanArgs.refusal(readInts(fault), dims.topK(), experts);
                if (bad != null) {
                    throw bad;
                }
            }
        }

        @Override
        public int rows() {
            return expertInput.shape().dimInt(0);
        }

        @Override
        public int localExperts() {
            return StaticAllToAllDispatcher.this.localExperts;
        }

        @Override
        public Buffer groupOffsetsBuffer() {
            check();
            return offsets;
        }

        @Override
        public long overflow() {
            checkFault();
            return Arrays.stream(readInts(send.dropped())).asLongStream().sum();
        }
    }

    /** @return true when a step reads nothing back to the host (the kernels build the plans on the device) */
    public boolean hostSyncFree() {
        return kernels.staticPlansOnDevice();
    }

    @Override
    public DispatchResult dispatch(Buffer x, Buffer topkIdx, Buffer topkWeights) {
        Dims dims = validate(x, topkIdx, topkWeights);
        int t = dims.tokens();
        int h = dims.hidden();
        int k = dims.topK();
        requireSameShapeOnEveryRank(t, k);
        int width = DispatchKernels.META_FIXED + 2 * k;
        int cap = config.chunkCapacity(t, k, world);
        long n = (long) world * cap;
        long rowsMax = n + (long) localExperts * (config.groupAlignment() - 1);
        if (rowsMax > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("static all-to-all: " + rowsMax + " expert-input rows (" + world + " x "
                    + cap + " + padding) overflow an I32 index");
        }
        StaticCtx c = new StaticCtx(dims, x.dtype());
        Buffer sendX = null;
        Buffer recvX = null;
        Buffer recvMeta = null;
        try {
            c.capacity = cap;
            c.splits = new long[world];
            Arrays.fill(c.splits, cap);
            c.send = new DispatchKernels.StaticSendPlan(c.own(scratch(DType.I32, n)), c.own(scratch(DType.I32, n, width)),
                    c.own(scratch(DType.I32, n)), c.own(scratch(DType.I32, (long) t * k)), c.own(scratch(DType.I32, world)));
            c.fault = c.own(scratch(DType.I32, DispatchKernels.STATIC_FAULT_SIZE));
            kernels.buildStaticSendPlanDeferred(topkIdx, topkWeights, experts, world, rank, cap, config.dropPolicy(),
                    c.send, c.fault);
            countStaged();
            c.weights = c.own(scratch(DType.F32, t, k));
            kernels.copyRows(topkWeights, null, c.weights, null, null);
            sendX = scratch(x.dtype(), n, h);
            kernels.copyRows(x, c.send.sendToken(), sendX, null, null); // padding rows: zero
            recvX = scratch(x.dtype(), n, h);
            recvMeta = scratch(DType.I32, n, width);
            comm.allToAllV(sendX, c.splits, recvX, c.splits);
            comm.allToAllV(c.send.sendMeta(), c.splits, recvMeta, c.splits);

            c.offsets = c.own(scratch(DType.I32, localExperts + 1));
            c.perLocal = c.own(scratch(DType.I32, localExperts));
            c.recv = new DispatchKernels.RecvPlan(c.own(scratch(DType.I32, n)), c.own(scratch(DType.I32, n)),
                    c.own(scratch(DType.I32, n)), c.own(scratch(DType.F32, n)), c.own(scratch(DType.I32, rowsMax)),
                    c.own(scratch(DType.I32, rowsMax)), c.own(scratch(DType.I32, rowsMax)));
            kernels.buildStaticRecvPlan(recvMeta, firstExpert, config.groupAlignment(), c.offsets, c.perLocal, c.recv);
            countStaged();
            c.expertInput = c.own(scratch(x.dtype(), rowsMax, h));
            ws.zeroRows(c.expertInput, 0, rowsMax);
            kernels.copyRows(recvX, c.recv.slotUnit(), c.expertInput, c.recv.slotExpertRow(), null);
            StaticCtx done = c;
            c = null;
            return done;
        } finally {
            if (c != null) {
                c.close();
            }
            release(sendX, recvX, recvMeta);
        }
    }

    /**
     * Without {@code chunkRows} the capacity {@code C} follows this rank's own {@code T} (and
     * {@code K}), and the fixed splits only line up when every rank computes the same {@code C}:
     * uneven token counts would hang or corrupt an NCCL all-to-all. So whenever {@code (T, K)}
     * changes, the ranks all-gather theirs once (a collective every rank reaches at the same call) and
     * every rank refuses the call, naming each rank's counts, if they differ. Nothing is allocated or
     * sent before the check; the verified shape is cached, so a fixed batch shape pays it once.
     */
    private void requireSameShapeOnEveryRank(int tokens, int topK) {
        if (world == 1 || config.options().chunkRows() > 0 || (tokens == verifiedTokens && topK == verifiedTopK)) {
            return;
        }
        int[] all;
        Buffer send = scratchInts(new int[] {tokens, topK});
        Buffer recv = scratch(DType.I32, 2L * world);
        try {
            comm.allGather(send, recv);
            if (recv instanceof org.moe4j.core.buffer.HostBuffer hb) {
                all = hb.toIntArray();
            } else {
                all = readInts(recv); // counted: a device→host read, once per new shape
            }
        } finally {
            release(send, recv);
        }
        boolean same = true;
        for (int r = 0; r < world; r++) {
            same &= all[2 * r] == tokens && all[2 * r + 1] == topK;
        }
        if (!same) {
            StringBuilder m = new StringBuilder("static all-to-all without chunkRows: the ranks' token counts differ (");
            for (int r = 0; r < world; r++) {
                m.append(r == 0 ? "" : ", ").append("rank ").append(r).append(": T=").append(all[2 * r])
                        .append(", K=").append(all[2 * r + 1]);
            }
            m.append("); the chunk capacity C follows T and K, so every rank must dispatch the same [T, K],"
                    + " or set chunkRows to fix C; nothing was sent");
            throw new IllegalArgumentException(m.toString());
        }
        verifiedTokens = tokens;
        verifiedTopK = topK;
    }

    /**
     * With the plans on the device the send-plan kernel checks the routing weights (and expert ids)
     * into the step's fault record, so dispatch itself reads nothing back.
     */
    @Override
    protected boolean weightsCheckedByPlan() {
        return kernels.staticPlanCheckDeferred();
    }

    /** The host-staged default plan kernels read device memory: count them honestly. */
    private void countStaged() {
        if (!kernels.staticPlansOnDevice()) {
            countHostRead();
        }
    }

    @Override
    public Buffer combine(DispatchResult d, Buffer expertOutput) {
        StaticCtx c = context(d, StaticCtx.class);
        requireRowsLike("expertOutput", expertOutput, c.rows(), c.dims.hidden());
        int h = c.dims.hidden();
        long n = c.send.sendToken().numel();
        Buffer back = scratch(expertOutput.dtype(), n, h);
        Buffer ret = null;
        Buffer out = null;
        try {
            kernels.copyRows(expertOutput, c.recv.slotExpertRow(), back, null, null); // padding rows: zero
            ret = scratch(expertOutput.dtype(), n, h);
            comm.allToAllV(back, c.splits, ret, c.splits);
            out = alloc(c.xDtype, c.dims.tokens(), h);
            kernels.weightedSum(ret, c.send.slotReturnRow(), c.weights, out);
            if (c.returned != null) {
                c.owned.remove(c.returned);
                ws.give(c.returned);
            }
            c.returned = c.own(ret);
            ret = null;
            c.yDtype = expertOutput.dtype();
            Buffer result = out;
            out = null;
            return result;
        } finally {
            release(back, ret);
            closeAll(out);
        }
    }

    @Override
    public CombineGrads combineBackward(DispatchResult d, Buffer dOut) {
        StaticCtx c = context(d, StaticCtx.class);
        requireRowsLike("dOut", dOut, c.dims.tokens(), c.dims.hidden());
        if (c.yDtype == null) {
            throw new IllegalStateException("combineBackward needs combine(...) to have run on this DispatchResult");
        }
        int h = c.dims.hidden();
        long n = c.send.sendToken().numel();
        Buffer sendD = scratch(dOut.dtype(), n, h);
        Buffer recvD = null;
        Buffer dY = null;
        Buffer dW = null;
        try {
            kernels.copyRows(dOut, c.send.sendToken(), sendD, null, null);
            recvD = scratch(dOut.dtype(), n, h);
            comm.allToAllV(sendD, c.splits, recvD, c.splits);
            dY = alloc(c.yDtype, c.rows(), h);
            kernels.copyRows(recvD, c.recv.slotUnit(), dY, c.recv.slotExpertRow(), c.recv.slotWeight());
            dW = alloc(DType.F32, c.dims.tokens(), c.dims.topK());
            kernels.rowDots(dOut, c.send.sendToken(), c.returned, null, dW, c.send.returnSlot());
            CombineGrads g = new CombineGrads(dY, dW);
            dY = null;
            dW = null;
            return g;
        } finally {
            release(sendD, recvD);
            closeAll(dY, dW);
        }
    }

    @Override
    public Buffer dispatchBackward(DispatchResult d, Buffer dExpertInput) {
        StaticCtx c = context(d, StaticCtx.class);
        requireRowsLike("dExpertInput", dExpertInput, c.rows(), c.dims.hidden());
        int h = c.dims.hidden();
        long n = c.send.sendToken().numel();
        Buffer back = scratch(dExpertInput.dtype(), n, h);
        Buffer ret = null;
        Buffer dX = null;
        try {
            kernels.copyRows(dExpertInput, c.recv.slotExpertRow(), back, null, null);
            ret = scratch(dExpertInput.dtype(), n, h);
            comm.allToAllV(back, c.splits, ret, c.splits);
            dX = alloc(c.xDtype, c.dims.tokens(), h);
            kernels.weightedSum(ret, c.send.slotReturnRow(), null, dX);
            Buffer result = dX;
            dX = null;
            return result;
        } finally {
            release(back, ret);
            closeAll(dX);
        }
    }
}
