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
import org.moe4j.dispatch.ReduceOp;

/**
 * The all-gather strategy: every rank gathers all tokens and their routing, takes the rows routed
 * to its local experts (same grouping as all-to-all), and returns results by a reduce-scatter of
 * per-(token, k) slot rows. Each slot row is non-zero on exactly one rank, so the rank-order sum
 * only adds zeros to it and the final k-ordered sum is bitwise the all-to-all one.
 */
public final class AllGatherDispatcher extends AbstractDispatcher {

    /**
     * @param config  settings (strategy ALL_GATHER)
     * @param comm    the group
     * @param backend allocates outputs
     * @param kernels the kernels
     */
    public AllGatherDispatcher(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
        super(config, comm, backend, kernels);
    }

    private static final class AgCtx extends Ctx {
        Buffer weights;      // [T, K]
        long[] tokensOf;     // tokens of each rank
        long[] slotsOf;      // tokens of each rank * K
        long allTokens;      // N
        Buffer slotRow;      // I32 [T*K]: s or -1
        Buffer slotToken;    // I32 [T*K]: s / K or -1
        Buffer mine;         // [T*K, H] y slot rows of our tokens, after combine

        AgCtx(AbstractDispatcher owner, Dims dims, DType xDtype, int[] groupOffsets, int[] tokensPerLocalExpert) {
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
        try (Handover temp = new Handover(); Handover result = new Handover()) {
            Buffer routeCounts = temp.own(alloc(DType.I32, world, localExperts + 1));
            kernels.countRoutes(topkIdx, experts, world, false, routeCounts); // validates expert ids
            Buffer myTokens = temp.own(uploadInts(new int[] {t}));
            Buffer allTokens = temp.own(alloc(DType.I32, world));
            comm.allGather(myTokens, allTokens);
            int[] tokensOf = readInts(allTokens);
            int n = sumExact("tokens over all ranks", tokensOf, 0, world, 1);
            if ((long) n * k > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("all-gather of " + n + " tokens x " + k + " slots overflows an I32 index");
            }
            long[] rowsOf = new long[world];
            long[] slotsOf = new long[world];
            for (int r = 0; r < world; r++) {
                rowsOf[r] = tokensOf[r];
                slotsOf[r] = (long) tokensOf[r] * k;
            }
            Buffer meta = temp.own(alloc(DType.I32, t, width));
            kernels.packUnits(topkIdx, topkWeights, rank, meta);
            Buffer metaAll = temp.own(alloc(DType.I32, n, width));
            comm.allGatherV(meta, metaAll, rowsOf);
            Buffer xAll = temp.own(alloc(x.dtype(), n, h));
            comm.allGatherV(x, xAll, rowsOf);

            Buffer counts = temp.own(alloc(DType.I32, localExperts));
            kernels.countLocal(metaAll, firstExpert, localExperts, counts);
            int[] perLocal = readInts(counts);
            int[] offsets = groupOffsets(perLocal);
            int rows = offsets[localExperts];
            int slots = sumExact("slot rows for local experts", perLocal, 0, localExperts, 1);
            AgCtx c = result.own(new AgCtx(this, dims, x.dtype(), offsets, perLocal));
            c.tokensOf = rowsOf;
            c.slotsOf = slotsOf;
            c.allTokens = n;
            c.weights = c.own(alloc(DType.F32, t, k));
            kernels.copyRows(topkWeights, null, c.weights, null, null);
            c.slotRow = c.own(alloc(DType.I32, (long) t * k));
            c.slotToken = c.own(alloc(DType.I32, (long) t * k));
            kernels.validSlots(topkIdx, c.slotRow, c.slotToken);
            c.groupOffsetsBuffer = c.own(uploadInts(offsets)); // kept: the experts read it too
            c.recv = new DispatchKernels.RecvPlan(c.own(alloc(DType.I32, slots)), c.own(alloc(DType.I32, slots)),
                    c.own(alloc(DType.I32, slots)), c.own(alloc(DType.F32, slots)), c.own(alloc(DType.I32, rows)),
                    c.own(alloc(DType.I32, rows)), c.own(alloc(DType.I32, rows)));
            kernels.buildRecvPlan(metaAll, firstExpert, c.groupOffsetsBuffer, c.recv);
            c.expertInput = c.own(alloc(x.dtype(), rows, h));
            kernels.copyRows(xAll, c.recv.slotUnit(), c.expertInput, c.recv.slotExpertRow(), null);
            return result.release(c);
        }
    }

    /** Slot rows of every token, non-zero only for our local experts' slots, reduce-scattered to their owners. */
    private Buffer slotsToOwners(AgCtx c, Buffer rows) {
        int h = c.dims.hidden();
        try (Handover ho = new Handover()) {
            Buffer all = ho.own(alloc(rows.dtype(), c.allTokens * c.dims.topK(), h));
            kernels.copyRows(rows, c.recv.slotExpertRow(), all, c.recv.slotUnitSlot(), null);
            Buffer mine = ho.own(alloc(rows.dtype(), (long) c.dims.tokens() * c.dims.topK(), h));
            comm.reduceScatterV(all, c.slotsOf, mine, ReduceOp.SUM);
            return ho.release(mine);
        }
    }

    @Override
    public Buffer combine(DispatchResult d, Buffer expertOutput) {
        AgCtx c = context(d, AgCtx.class);
        requireRowsLike("expertOutput", expertOutput, c.rows(), c.dims.hidden());
        try (Handover ho = new Handover()) {
            Buffer mine = ho.own(slotsToOwners(c, expertOutput));
            Buffer out = ho.own(alloc(c.xDtype, c.dims.tokens(), c.dims.hidden()));
            kernels.weightedSum(mine, c.slotRow, c.weights, out);
            if (c.mine != null) {
                c.owned.remove(c.mine);
                c.mine.close();
            }
            c.mine = c.own(ho.release(mine));
            c.yDtype = expertOutput.dtype();
            return ho.release(out);
        }
    }

    @Override
    public CombineGrads combineBackward(DispatchResult d, Buffer dOut) {
        AgCtx c = context(d, AgCtx.class);
        requireRowsLike("dOut", dOut, c.dims.tokens(), c.dims.hidden());
        if (c.yDtype == null) {
            throw new IllegalStateException("combineBackward needs combine(...) to have run on this DispatchResult");
        }
        int h = c.dims.hidden();
        try (Handover ho = new Handover()) {
            Buffer dOutAll = ho.own(alloc(dOut.dtype(), c.allTokens, h));
            comm.allGatherV(dOut, dOutAll, c.tokensOf);
            Buffer dY = ho.own(alloc(c.yDtype, c.rows(), h));
            kernels.copyRows(dOutAll, c.recv.slotUnit(), dY, c.recv.slotExpertRow(), c.recv.slotWeight());
            Buffer dW = ho.own(alloc(DType.F32, c.dims.tokens(), c.dims.topK()));
            kernels.rowDots(dOut, c.slotToken, c.mine, c.slotRow, dW, c.slotRow);
            return new CombineGrads(ho.release(dY), ho.release(dW));
        }
    }

    @Override
    public Buffer dispatchBackward(DispatchResult d, Buffer dExpertInput) {
        AgCtx c = context(d, AgCtx.class);
        requireRowsLike("dExpertInput", dExpertInput, c.rows(), c.dims.hidden());
        try (Handover ho = new Handover()) {
            Buffer mine = ho.own(slotsToOwners(c, dExpertInput));
            Buffer dX = ho.own(alloc(c.xDtype, c.dims.tokens(), c.dims.hidden()));
            kernels.weightedSum(mine, c.slotRow, null, dX);
            return ho.release(dX);
        }
    }
}
