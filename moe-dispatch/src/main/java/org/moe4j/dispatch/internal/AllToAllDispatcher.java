package org.moe4j.dispatch.internal;

import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.Handover;
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
        Buffer slotYRow;                // [T*K] W = 1 only: expert-input row of each slot, -1 for empty

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
        if (world == 1) {
            return dispatchSelf(x, topkIdx, topkWeights, dims);
        }
        try (Handover temp = new Handover(); Handover result = new Handover()) {
            Buffer routeCounts = lend(temp, scratch(DType.I32, world, localExperts + 1));
            Buffer recvCounts = lend(temp, scratch(DType.I32, world, localExperts + 1));
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
            DispatchKernels.SendPlan send = sendPlan(units, width, slots, t, k);
            for (Buffer b : new Buffer[] {send.sendToken(), send.sendMeta(), send.returnToken(), send.returnSlot(),
                    send.slotReturnRow()}) {
                lend(result, b);
            }
            kernels.buildSendPlan(topkIdx, topkWeights, experts, world, rank, dedup, send);
            Buffer sendX = lend(temp, scratch(x.dtype(), units, h));
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
            Buffer recvX = lend(temp, scratch(x.dtype(), recvUnits, h));
            Buffer recvMeta = lend(temp, scratch(DType.I32, recvUnits, width));
            comm.allToAllV(sendX, unitsTo, recvX, unitsFrom);
            comm.allToAllV(send.sendMeta(), unitsTo, recvMeta, unitsFrom);

            int[] offsets = groupOffsets(perLocal);
            int rows = offsets[localExperts];
            A2aCtx c = result.own(new A2aCtx(this, dims, x.dtype(), offsets, perLocal));
            result.releaseAll(); // the send plan is owned by the context from here on
            result.own(c);
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
            c.weights = c.own(scratch(DType.F32, t, k));
            kernels.copyRows(topkWeights, null, c.weights, null, null);
            recvPlan(c, recvMeta, recvSlots, rows);
            c.expertInput = c.own(scratch(x.dtype(), rows, h));
            zeroPadding(c);
            kernels.copyRows(recvX, c.recv.slotUnit(), c.expertInput, c.recv.slotExpertRow(), null);
            return result.release(c);
        }
    }

    /** Owns a scratch buffer in {@code h}: given back to the scratch pool unless released. */
    private Buffer lend(Handover h, Buffer b) {
        return h.own(b, ws::give);
    }

    private DispatchKernels.SendPlan sendPlan(int units, int width, int slots, int t, int k) {
        return new DispatchKernels.SendPlan(scratch(DType.I32, units), scratch(DType.I32, units, width),
                scratch(DType.I32, slots), scratch(DType.I32, slots), scratch(DType.I32, (long) t * k));
    }

    private void recvPlan(A2aCtx c, Buffer meta, long recvSlots, int rows) {
        c.recv = new DispatchKernels.RecvPlan(c.own(scratch(DType.I32, recvSlots)),
                c.own(scratch(DType.I32, recvSlots)), c.own(scratch(DType.I32, recvSlots)),
                c.own(scratch(DType.F32, recvSlots)), c.own(scratch(DType.I32, rows)),
                c.own(scratch(DType.I32, rows)), c.own(scratch(DType.I32, rows)));
        c.groupOffsetsBuffer = c.own(scratchInts(c.groupOffsets)); // kept: the experts read it too
        kernels.buildRecvPlan(meta, firstExpert, c.groupOffsetsBuffer, c.recv);
    }

    /** Padding rows of the (recycled, not zeroed) expert input must read as zero. */
    private void zeroPadding(A2aCtx c) {
        for (int l = 0; l < localExperts; l++) {
            ws.zeroRows(c.expertInput, (long) c.groupOffsets[l] + c.tokensPerLocalExpert[l], c.groupOffsets[l + 1]);
        }
    }

    /**
     * W = 1: no exchange at all. The unit order equals the received order, so slot row {@code r} of
     * the receive plan is returned row {@code r} of the send plan; rows go straight from {@code x}
     * into the expert input, and combine reads the expert output in place. Same operations on the
     * same values as the general path, hence bitwise the same results.
     */
    private DispatchResult dispatchSelf(Buffer x, Buffer topkIdx, Buffer topkWeights, Dims dims) {
        int t = dims.tokens();
        int h = dims.hidden();
        int k = dims.topK();
        int width = DispatchKernels.META_FIXED + 2 * k;
        boolean dedup = config.perRankDedup();
        int[] sent;
        Buffer routeCounts = scratch(DType.I32, 1, localExperts + 1);
        try {
            kernels.countRoutes(topkIdx, experts, 1, dedup, routeCounts); // validates expert ids
            sent = readInts(routeCounts);
        } finally {
            ws.give(routeCounts);
        }
        int units = sent[localExperts];
        int[] perLocal = java.util.Arrays.copyOf(sent, localExperts);
        int slots = sumExact("routeCounts", perLocal, 0, localExperts, 1);
        int[] offsets = groupOffsets(perLocal);
        int rows = offsets[localExperts];
        try (Handover result = new Handover()) {
            A2aCtx c = result.own(new A2aCtx(this, dims, x.dtype(), offsets, perLocal));
            DispatchKernels.SendPlan send = sendPlan(units, width, slots, t, k);
            c.send = send;
            c.own(send.sendToken());
            c.own(send.sendMeta());
            c.own(send.returnToken());
            c.own(send.returnSlot());
            c.own(send.slotReturnRow());
            kernels.buildSendPlan(topkIdx, topkWeights, experts, 1, rank, dedup, send);
            c.unitsTo = new long[] {units};
            c.unitsFrom = new long[] {units};
            c.slotsTo = new long[] {slots};
            c.slotsFrom = new long[] {slots};
            c.weights = c.own(scratch(DType.F32, t, k));
            kernels.copyRows(topkWeights, null, c.weights, null, null);
            recvPlan(c, send.sendMeta(), slots, rows);
            c.slotYRow = c.own(scratch(DType.I32, (long) t * k));
            kernels.composeIndex(c.recv.slotExpertRow(), send.slotReturnRow(), c.slotYRow);
            c.expertInput = c.own(scratch(x.dtype(), rows, h));
            zeroPadding(c);
            kernels.copyRows(x, send.returnToken(), c.expertInput, c.recv.slotExpertRow(), null);
            return result.release(c);
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
        if (c.slotYRow != null) {
            return combineSelf(c, expertOutput, before);
        }
        DType tripType = before ? DType.F32 : expertOutput.dtype();
        try (Handover h2 = new Handover()) {
            Buffer back = lend(h2, scratch(tripType, recvSlots, h));
            kernels.copyRows(expertOutput, c.recv.slotExpertRow(), back, null, before ? c.recv.slotWeight() : null);
            Buffer ret = lend(h2, scratch(tripType, sendSlots, h));
            comm.allToAllV(back, c.slotsFrom, ret, c.slotsTo);
            Buffer out = h2.own(alloc(c.xDtype, c.dims.tokens(), h));
            kernels.weightedSum(ret, c.send.slotReturnRow(), before ? null : c.weights, out);
            keepForBackward(c, expertOutput, before, before ? null : h2.release(ret)); // ret: now the context's
            return h2.release(out);
        }
    }

    /**
     * Records what {@link #combineBackward} needs: the caller's expert output when the weights were
     * applied before the return trip, otherwise {@code returned} (a workspace buffer the context then owns).
     */
    private void keepForBackward(A2aCtx c, Buffer expertOutput, boolean before, Buffer returned) {
        dropReturned(c);
        c.yDtype = expertOutput.dtype();
        if (before) {
            c.expertOutput = expertOutput;
        } else {
            c.returned = c.own(returned);
        }
    }

    private void dropReturned(A2aCtx c) {
        if (c.returned != null) {
            c.owned.remove(c.returned);
            ws.give(c.returned);
            c.returned = null;
        }
    }

    /**
     * W = 1: the weighted sum reads the expert output in place ({@code w * y} rounded to fp32 either
     * way, so weighting before the "trip" changes nothing). Unless the caller keeps {@code y} open
     * (weightBeforeReturn), one sequential copy of it is kept for {@link #combineBackward}, in
     * expert-input row order.
     */
    private Buffer combineSelf(A2aCtx c, Buffer expertOutput, boolean before) {
        int h = c.dims.hidden();
        try (Handover h2 = new Handover()) {
            Buffer out = h2.own(alloc(c.xDtype, c.dims.tokens(), h));
            kernels.weightedSum(expertOutput, c.slotYRow, c.weights, out);
            Buffer keep = null;
            if (!before) {
                keep = lend(h2, scratch(expertOutput.dtype(), c.rows(), h));
                kernels.copyRows(expertOutput, null, keep, null, null);
            }
            keepForBackward(c, expertOutput, before, h2.release(keep)); // owned by the context (or null)
            return h2.release(out);
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
        if (c.slotYRow != null) {
            return combineBackwardSelf(c, dOut);
        }
        long units = c.send.sendToken().shape().dim(0);
        long recvUnits = java.util.Arrays.stream(c.unitsFrom).sum();
        try (Handover h2 = new Handover()) {
            Buffer sendD = lend(h2, scratch(dOut.dtype(), units, h));
            kernels.copyRows(dOut, c.send.sendToken(), sendD, null, null);
            Buffer recvD = lend(h2, scratch(dOut.dtype(), recvUnits, h));
            comm.allToAllV(sendD, c.unitsTo, recvD, c.unitsFrom);
            Buffer dY = h2.own(alloc(c.yDtype, c.rows(), h));
            kernels.copyRows(recvD, c.recv.slotUnit(), dY, c.recv.slotExpertRow(), c.recv.slotWeight());
            Buffer dW = h2.own(alloc(DType.F32, c.dims.tokens(), c.dims.topK()));
            if (c.expertOutput == null) {
                kernels.rowDots(dOut, c.send.returnToken(), c.returned, null, dW, c.send.returnSlot());
            } else {
                // y stayed on the expert rank: dot products there, scalars back
                long recvSlots = c.recv.slotUnit().shape().dim(0);
                Buffer dots = lend(h2, scratch(DType.F32, recvSlots));
                kernels.rowDots(recvD, c.recv.slotUnit(), c.expertOutput, c.recv.slotExpertRow(), dots, null);
                Buffer dotsBack = lend(h2, scratch(DType.F32, c.send.returnSlot().shape().dim(0)));
                comm.allToAllV(dots, c.slotsFrom, dotsBack, c.slotsTo);
                kernels.scatterValues(dotsBack, c.send.returnSlot(), dW);
            }
            return new CombineGrads(h2.release(dY), h2.release(dW));
        }
    }

    /** W = 1: {@code dY} straight from {@code dOut}, dot products against the kept (or caller's) y. */
    private CombineGrads combineBackwardSelf(A2aCtx c, Buffer dOut) {
        try (Handover h2 = new Handover()) {
            Buffer dY = h2.own(alloc(c.yDtype, c.rows(), c.dims.hidden()));
            kernels.copyRows(dOut, c.send.returnToken(), dY, c.recv.slotExpertRow(), c.recv.slotWeight());
            Buffer dW = h2.own(alloc(DType.F32, c.dims.tokens(), c.dims.topK()));
            Buffer y = c.expertOutput != null ? c.expertOutput : c.returned;
            kernels.rowDots(dOut, c.send.returnToken(), y, c.recv.slotExpertRow(), dW, c.send.returnSlot());
            return new CombineGrads(h2.release(dY), h2.release(dW));
        }
    }

    @Override
    public Buffer dispatchBackward(DispatchResult d, Buffer dExpertInput) {
        A2aCtx c = context(d, A2aCtx.class);
        requireRowsLike("dExpertInput", dExpertInput, c.rows(), c.dims.hidden());
        int h = c.dims.hidden();
        long recvSlots = c.recv.slotUnit().shape().dim(0);
        long sendSlots = c.send.returnToken().shape().dim(0);
        try (Handover h2 = new Handover()) {
            if (c.slotYRow != null) {
                Buffer dX = h2.own(alloc(c.xDtype, c.dims.tokens(), h));
                kernels.weightedSum(dExpertInput, c.slotYRow, null, dX);
                return h2.release(dX);
            }
            Buffer back = lend(h2, scratch(dExpertInput.dtype(), recvSlots, h));
            kernels.copyRows(dExpertInput, c.recv.slotExpertRow(), back, null, null);
            Buffer ret = lend(h2, scratch(dExpertInput.dtype(), sendSlots, h));
            comm.allToAllV(back, c.slotsFrom, ret, c.slotsTo);
            Buffer dX = h2.own(alloc(c.xDtype, c.dims.tokens(), h));
            kernels.weightedSum(ret, c.send.slotReturnRow(), null, dX);
            return h2.release(dX);
        }
    }
}
