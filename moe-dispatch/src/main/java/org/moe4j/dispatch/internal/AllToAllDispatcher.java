package org.moe4j.dispatch.internal;

import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.dispatch.CombineGrads;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;

/**
 * The all-to-all strategy: count exchange, all-to-all-v of units (rows plus meta), regrouping
 * local-expert-major on the expert rank; combine returns one row per slot and sums in k order on
 * the source rank.
 */
public final class AllToAllDispatcher extends AbstractDispatcher {

    /**
     * @param config  settings (strategy ALL_TO_ALL)
     * @param comm    the group
     * @param backend allocates outputs
     * @param kernels the kernels
     */
    public AllToAllDispatcher(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
        super(config, comm, backend, kernels);
    }

    private static final class A2aCtx extends Ctx {
        Buffer weights;                 // [T, K] copy of topkWeights
        DispatchKernels.SendPlan send;
        long[] unitsTo;                 // units sent to each rank
        long[] unitsFrom;               // units received from each rank
        long[] slotsTo;                 // slot rows returned by each rank (to us)
        long[] slotsFrom;               // slot rows we return to each rank
        Buffer returned;                // [J_send, H] y rows back at the source (weighting after the trip)
        Buffer expertOutput;            // caller's y, kept when weighting before the trip

        A2aCtx(AbstractDispatcher owner, Dims dims, DType xDtype, int[] groupOffsets, int[] tokensPerLocalExpert) {
            super(owner, dims, xDtype, groupOffsets, tokensPerLocalExpert);
        }
    }

    @Override
    public DispatchResult dispatch(Buffer x, Buffer topkIdx, Buffer topkWeights) {
        Dims dims = validate(x, topkIdx, topkWeights);
        int t = dims.tokens();
        int h = dims.hidden();
        int k = dims.topK();
        int width = DispatchKernels.META_FIXED + 2 * k;
        boolean dedup = config.perRankDedup();
        try (Buffer routeCounts = alloc(DType.I32, world, localExperts + 1);
                Buffer recvCounts = alloc(DType.I32, world, localExperts + 1)) {
            kernels.countRoutes(topkIdx, experts, world, dedup, routeCounts); // validates expert ids
            int[] sent = readInts(routeCounts);
            long[] unitsTo = new long[world];
            long[] slotsTo = new long[world];
            for (int d = 0; d < world; d++) {
                int base = d * (localExperts + 1);
                unitsTo[d] = sent[base + localExperts];
                slotsTo[d] = sumExact("routeCounts", sent, base, base + localExperts, 1);
            }
            int units = sumExact("units sent", sent, localExperts, sent.length, localExperts + 1);
            int slots = (int) java.util.Arrays.stream(slotsTo).sum();
            A2aCtx c = null;
            DispatchKernels.SendPlan send = null;
            Buffer sendX = null;
            Buffer recvX = null;
            Buffer recvMeta = null;
            try {
                send = new DispatchKernels.SendPlan(alloc(DType.I32, units),
                        alloc(DType.I32, units, width), alloc(DType.I32, slots), alloc(DType.I32, slots),
                        alloc(DType.I32, (long) t * k));
                kernels.buildSendPlan(topkIdx, topkWeights, experts, world, rank, dedup, send);
                sendX = alloc(x.dtype(), units, h);
                kernels.copyRows(x, send.sendToken(), sendX, null, null);

                // count exchange, then the payload
                comm.allToAll(routeCounts, recvCounts);
                int[] got = readInts(recvCounts);
                long[] unitsFrom = new long[world];
                long[] slotsFrom = new long[world];
                for (int s = 0; s < world; s++) {
                    int base = s * (localExperts + 1);
                    unitsFrom[s] = got[base + localExperts];
                    slotsFrom[s] = sumExact("counts received from rank " + s, got, base, base + localExperts, 1);
                }
                int recvUnits = sumExact("units received", got, localExperts, got.length, localExperts + 1);
                int[] perLocal = new int[localExperts];
                for (int l = 0; l < localExperts; l++) {
                    perLocal[l] = sumExact("rows received for local expert " + l, got, l, got.length, localExperts + 1);
                }
                int recvSlots = sumExact("slot rows received", perLocal, 0, localExperts, 1);
                recvX = alloc(x.dtype(), recvUnits, h);
                recvMeta = alloc(DType.I32, recvUnits, width);
                comm.allToAllV(sendX, unitsTo, recvX, unitsFrom);
                comm.allToAllV(send.sendMeta(), unitsTo, recvMeta, unitsFrom);

                int[] offsets = groupOffsets(perLocal);
                int rows = offsets[localExperts];
                c = new A2aCtx(this, dims, x.dtype(), offsets, perLocal);
                c.send = send;
                c.own(send.sendToken());
                c.own(send.sendMeta());
                c.own(send.returnToken());
                c.own(send.returnSlot());
                c.own(send.slotReturnRow());
                c.unitsTo = unitsTo;
                c.unitsFrom = unitsFrom;
                c.slotsTo = slotsTo;
                c.slotsFrom = slotsFrom;
                c.weights = c.own(alloc(DType.F32, t, k));
                kernels.copyRows(topkWeights, null, c.weights, null, null);
                try (Buffer offs = uploadInts(offsets)) {
                    c.recv = new DispatchKernels.RecvPlan(c.own(alloc(DType.I32, recvSlots)),
                            c.own(alloc(DType.I32, recvSlots)), c.own(alloc(DType.I32, recvSlots)),
                            c.own(alloc(DType.F32, recvSlots)), c.own(alloc(DType.I32, rows)),
                            c.own(alloc(DType.I32, rows)), c.own(alloc(DType.I32, rows)));
                    kernels.buildRecvPlan(recvMeta, firstExpert, offs, c.recv);
                }
                c.expertInput = c.own(alloc(x.dtype(), rows, h));
                kernels.copyRows(recvX, c.recv.slotUnit(), c.expertInput, c.recv.slotExpertRow(), null);
                A2aCtx done = c;
                c = null;
                send = null;
                return done;
            } finally {
                if (c != null) {
                    c.close();
                } else if (send != null) {
                    closeAll(send.sendToken(), send.sendMeta(), send.returnToken(), send.returnSlot(),
                            send.slotReturnRow());
                }
                closeAll(sendX, recvX, recvMeta);
            }
        }
    }

    @Override
    public Buffer combine(DispatchResult d, Buffer expertOutput) {
        A2aCtx c = context(d, A2aCtx.class);
        requireRowsLike("expertOutput", expertOutput, c.rows(), c.dims.hidden());
        int h = c.dims.hidden();
        long recvSlots = c.recv.slotUnit().shape().dim(0);
        long sendSlots = c.send.returnToken().shape().dim(0);
        boolean before = config.weightBeforeReturn();
        DType tripType = before ? DType.F32 : expertOutput.dtype();
        Buffer back = alloc(tripType, recvSlots, h);
        Buffer ret = null;
        Buffer out = null;
        try {
            kernels.copyRows(expertOutput, c.recv.slotExpertRow(), back, null, before ? c.recv.slotWeight() : null);
            ret = alloc(tripType, sendSlots, h);
            comm.allToAllV(back, c.slotsFrom, ret, c.slotsTo);
            out = alloc(c.xDtype, c.dims.tokens(), h);
            kernels.weightedSum(ret, c.send.slotReturnRow(), before ? null : c.weights, out);
            if (c.returned != null) {
                c.owned.remove(c.returned);
                c.returned.close();
                c.returned = null;
            }
            c.yDtype = expertOutput.dtype();
            if (before) {
                c.expertOutput = expertOutput;
            } else {
                c.returned = c.own(ret);
                ret = null;
            }
            Buffer result = out;
            out = null;
            return result;
        } finally {
            closeAll(back, ret, out);
        }
    }

    @Override
    public CombineGrads combineBackward(DispatchResult d, Buffer dOut) {
        A2aCtx c = context(d, A2aCtx.class);
        requireRowsLike("dOut", dOut, c.dims.tokens(), c.dims.hidden());
        if (c.yDtype == null) {
            throw new IllegalStateException("combineBackward needs combine(...) to have run on this DispatchResult");
        }
        if (c.expertOutput != null && c.expertOutput.isClosed()) {
            throw new IllegalStateException("combineBackward with weightBeforeReturn needs the expert output passed to "
                    + "combine(...) to stay open, but it was closed");
        }
        int h = c.dims.hidden();
        long units = c.send.sendToken().shape().dim(0);
        long recvUnits = java.util.Arrays.stream(c.unitsFrom).sum();
        Buffer sendD = alloc(dOut.dtype(), units, h);
        Buffer recvD = null;
        Buffer dY = null;
        Buffer dW = null;
        Buffer dots = null;
        Buffer dotsBack = null;
        try {
            kernels.copyRows(dOut, c.send.sendToken(), sendD, null, null);
            recvD = alloc(dOut.dtype(), recvUnits, h);
            comm.allToAllV(sendD, c.unitsTo, recvD, c.unitsFrom);
            dY = alloc(c.yDtype, c.rows(), h);
            kernels.copyRows(recvD, c.recv.slotUnit(), dY, c.recv.slotExpertRow(), c.recv.slotWeight());
            dW = alloc(DType.F32, c.dims.tokens(), c.dims.topK());
            if (c.expertOutput == null) {
                kernels.rowDots(dOut, c.send.returnToken(), c.returned, null, dW, c.send.returnSlot());
            } else {
                // y stayed on the expert rank: dot products there, scalars back
                long recvSlots = c.recv.slotUnit().shape().dim(0);
                dots = alloc(DType.F32, recvSlots);
                kernels.rowDots(recvD, c.recv.slotUnit(), c.expertOutput, c.recv.slotExpertRow(), dots, null);
                dotsBack = alloc(DType.F32, c.send.returnSlot().shape().dim(0));
                comm.allToAllV(dots, c.slotsFrom, dotsBack, c.slotsTo);
                kernels.scatterValues(dotsBack, c.send.returnSlot(), dW);
            }
            CombineGrads g = new CombineGrads(dY, dW);
            dY = null;
            dW = null;
            return g;
        } finally {
            closeAll(sendD, recvD, dY, dW, dots, dotsBack);
        }
    }

    @Override
    public Buffer dispatchBackward(DispatchResult d, Buffer dExpertInput) {
        A2aCtx c = context(d, A2aCtx.class);
        requireRowsLike("dExpertInput", dExpertInput, c.rows(), c.dims.hidden());
        int h = c.dims.hidden();
        long recvSlots = c.recv.slotUnit().shape().dim(0);
        long sendSlots = c.send.returnToken().shape().dim(0);
        Buffer back = alloc(dExpertInput.dtype(), recvSlots, h);
        Buffer ret = null;
        Buffer dX = null;
        try {
            kernels.copyRows(dExpertInput, c.recv.slotExpertRow(), back, null, null);
            ret = alloc(dExpertInput.dtype(), sendSlots, h);
            comm.allToAllV(back, c.slotsFrom, ret, c.slotsTo);
            dX = alloc(c.xDtype, c.dims.tokens(), h);
            kernels.weightedSum(ret, c.send.slotReturnRow(), null, dX);
            Buffer result = dX;
            dX = null;
            return result;
        } finally {
            closeAll(back, ret, dX);
        }
    }

    static void closeAll(Buffer... buffers) {
        for (Buffer b : buffers) {
            if (b != null) {
                b.close();
            }
        }
    }
}
