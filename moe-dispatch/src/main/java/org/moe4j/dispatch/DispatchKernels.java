package org.moe4j.dispatch;

import org.moe4j.core.buffer.Buffer;

/**
 * The device kernels of dispatch and combine. The CPU reference lives in
 * {@code org.moe4j.dispatch.internal}; a device backend implements the same methods on its buffers.
 * Callers allocate every output (zeroed, through the {@link org.moe4j.core.backend.Backend}).
 *
 * <h2>Vocabulary</h2>
 * <ul>
 *   <li>slot: one {@code (token, k)} entry of {@code topkIdx [T, K]}, flat index {@code t*K + k};
 *       an entry {@code -1} is an empty slot that moves nothing.</li>
 *   <li>unit: one row that travels to an expert rank: a slot, or with per-rank deduplication one
 *       token sent once to a rank that owns several of its experts.</li>
 *   <li>meta: one I32 row per unit, {@code [srcRank, srcIndex, expert_0..expert_{K-1},
 *       weightBits_0..weightBits_{K-1}]} ({@value #META_FIXED} + 2K columns); {@code expert_k} is the
 *       global expert id, or -1 where slot k does not travel with this unit; weights are fp32 bits.</li>
 *   <li>slot row: one {@code (unit, k)} pair at an expert rank, in return order: units in received
 *       order, k ascending inside.</li>
 * </ul>
 * Index buffers are I32; an index {@code -1} means "none" as documented per method.
 */
public interface DispatchKernels {
    /** Columns of a meta row before the per-slot columns. */
    int META_FIXED = 2;

    /**
     * Counts routes per destination and validates every expert id.
     *
     * @param topkIdx       I32 {@code [T, K]}
     * @param experts       {@code E}
     * @param world         {@code W}, divides {@code E}
     * @param perRankDedup  count units as tokens per destination rank instead of slots
     * @param routeCounts   out I32 {@code [W, L+1]}: {@code [d, l]} slots for local expert {@code l} of
     *                      rank {@code d}; {@code [d, L]} units sent to rank {@code d}
     * @throws IllegalArgumentException naming the first entry outside {@code [0, E)} other than -1
     */
    void countRoutes(Buffer topkIdx, int experts, int world, boolean perRankDedup, Buffer routeCounts);

    /**
     * Builds the sender's plan; see {@link SendPlan} for the outputs.
     *
     * @param topkIdx      I32 {@code [T, K]}, validated
     * @param topkWeights  F32 {@code [T, K]}
     * @param experts      {@code E}
     * @param world        {@code W}
     * @param rank         this rank (written into meta)
     * @param perRankDedup one unit per (token, destination rank) instead of one per slot
     * @param plan         outputs, sized from {@link #countRoutes}
     */
    void buildSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank, boolean perRankDedup,
            SendPlan plan);

    /**
     * Writes one meta row per token with every slot present (the all-gather strategy's units).
     *
     * @param topkIdx     I32 {@code [T, K]}
     * @param topkWeights F32 {@code [T, K]}
     * @param rank        source rank written into column 0
     * @param meta        out I32 {@code [T, 2+2K]}
     */
    void packUnits(Buffer topkIdx, Buffer topkWeights, int rank, Buffer meta);

    /**
     * Counts the slots of received units that belong to local experts.
     *
     * @param meta         I32 {@code [R, 2+2K]}
     * @param firstExpert  global id of local expert 0
     * @param localExperts {@code L}
     * @param counts       out I32 {@code [L]}
     */
    void countLocal(Buffer meta, int firstExpert, int localExperts, Buffer counts);

    /**
     * Builds the expert rank's plan: slot rows in return order and the local-expert-major layout.
     *
     * @param meta         I32 {@code [R, 2+2K]}, units in source-rank order
     * @param firstExpert  global id of local expert 0
     * @param groupOffsets I32 {@code [L+1]} padded row offset of each local expert group
     * @param plan         outputs, sized from {@link #countLocal}
     */
    void buildRecvPlan(Buffer meta, int firstExpert, Buffer groupOffsets, RecvPlan plan);

    /**
     * Identity map of a rank's own non-empty slots.
     *
     * @param topkIdx   I32 {@code [T, K]}
     * @param slotRow   out I32 {@code [T*K]}: {@code s}, or -1 for an empty slot
     * @param slotToken out I32 {@code [T*K]}: {@code s / K}, or -1 for an empty slot
     */
    void validSlots(Buffer topkIdx, Buffer slotRow, Buffer slotToken);

    /**
     * Composes two index maps: {@code out[j] = index[j] == -1 ? -1 : table[index[j]]}.
     *
     * @param table I32 {@code [N]}
     * @param index I32 {@code [M]}, entries in {@code [0, N)} or -1
     * @param out   out I32 {@code [M]}
     */
    void composeIndex(Buffer table, Buffer index, Buffer out);

    /**
     * {@code dst[dstIndex[j]] = weights[j] * src[srcIndex[j]]} for {@code j < M}, rows of equal width,
     * converting between floating dtypes (the product in fp32, rounded once to {@code dst}'s dtype).
     * A null index is the identity; {@code M} is the length of a non-null index (else the rows of
     * {@code src}). {@code srcIndex[j] == -1} writes a zero row; {@code dstIndex[j] == -1} writes nothing.
     *
     * @param src      {@code [N, H]}
     * @param srcIndex I32 {@code [M]} or null
     * @param dst      {@code [N', H]}
     * @param dstIndex I32 {@code [M]} or null
     * @param weights  F32 {@code [M]} or null (no scaling)
     */
    void copyRows(Buffer src, Buffer srcIndex, Buffer dst, Buffer dstIndex, Buffer weights);

    /**
     * {@code out[t] = sum_k weights[t,k] * rows[slotRow[t*K+k]]}, k ascending, accumulated in fp32
     * from +0, skipping {@code slotRow == -1}; without weights, the plain sum.
     *
     * @param rows    {@code [N, H]}
     * @param slotRow I32 {@code [T*K]}
     * @param weights F32 {@code [T, K]} or null
     * @param out     {@code [T, H]}
     */
    void weightedSum(Buffer rows, Buffer slotRow, Buffer weights, Buffer out);

    /**
     * {@code out[outIndex[j]] = <a[aIndex[j]], b[bIndex[j]]>} in fp32; a -1 in {@code aIndex} or
     * {@code bIndex} gives 0, a -1 in {@code outIndex} writes nothing. Null indexes are the identity.
     *
     * @param a        {@code [Na, H]}
     * @param aIndex   I32 {@code [M]} or null
     * @param b        {@code [Nb, H]}
     * @param bIndex   I32 {@code [M]} or null
     * @param out      F32, any shape, flat
     * @param outIndex I32 {@code [M]} or null
     */
    void rowDots(Buffer a, Buffer aIndex, Buffer b, Buffer bIndex, Buffer out, Buffer outIndex);

    /**
     * {@code dst[index[j]] = src[j]} for F32 values, flat; {@code index[j] == -1} writes nothing.
     *
     * @param src   F32 {@code [M]}
     * @param index I32 {@code [M]}
     * @param dst   F32, any shape, flat
     */
    void scatterValues(Buffer src, Buffer index, Buffer dst);

    /**
     * Finds the first non-empty slot whose routing weight is NaN or infinite (the dispatcher refuses
     * such weights before anything is sent, as it refuses expert ids out of range). Empty slots
     * ({@code topkIdx == -1}) are not looked at. The default copies both buffers to the host and
     * scans them there; a backend may override it with a device scan.
     *
     * @param topkIdx     I32 {@code [T, K]}
     * @param topkWeights F32 {@code [T, K]}
     * @return the flat slot index {@code t*K + k} of the first non-finite weight, or -1 when none
     */
    default long firstNonFiniteWeight(Buffer topkIdx, Buffer topkWeights) {
        try (org.moe4j.core.buffer.HostBuffer idx = org.moe4j.core.buffer.HostBuffer.allocate(topkIdx.dtype(),
                topkIdx.shape());
             org.moe4j.core.buffer.HostBuffer w = org.moe4j.core.buffer.HostBuffer.allocate(topkWeights.dtype(),
                     topkWeights.shape())) {
            copyToHost(topkIdx, idx);
            copyToHost(topkWeights, w);
            return org.moe4j.dispatch.spi.DispatchArgs.firstNonFiniteWeight(idx.segment(), w.segment(),
                    Math.min(idx.numel(), w.numel()));
        }
    }

    /**
     * Copies a buffer into host memory (small count and index buffers that host logic needs).
     *
     * @param src any buffer of this backend
     * @param dst host buffer of the same dtype and element count
     */
    void copyToHost(Buffer src, org.moe4j.core.buffer.HostBuffer dst);

    /**
     * Copies host memory into a buffer of this backend.
     *
     * @param src host buffer
     * @param dst buffer of the same dtype and element count
     */
    void copyFromHost(org.moe4j.core.buffer.HostBuffer src, Buffer dst);

    /**
     * Builds the sender's plan of the static-shape (equal-split) all-to-all: destination chunk {@code d}
     * is rows {@code [d*C, (d+1)*C)}; it holds the slots routed to rank {@code d} in the count-exchange
     * send order (expert-major, then token order), one unit per slot, then padding rows (meta
     * {@code srcRank = srcIndex = -1}, every expert -1, weights 0; {@code sendToken = returnSlot = -1}).
     * When more than {@code C} slots are routed to a rank, {@code C} are kept by {@code policy}
     * ({@code BY_POSITION}: lowest slot index {@code t*K+k}; {@code BY_SCORE}: highest weight, ties to
     * the lower slot index), the rest are dropped (their {@code slotReturnRow} is -1) and counted in
     * {@code plan.dropped}. Validates every expert id before writing anything.
     *
     * <p>The default stages through host memory (copies every input to the host and every output back:
     * a device→host read); a device backend overrides it and {@link #staticPlansOnDevice()}.
     *
     * @param topkIdx     I32 {@code [T, K]}
     * @param topkWeights F32 {@code [T, K]}
     * @param experts     {@code E}
     * @param world       {@code W}, divides {@code E}
     * @param rank        this rank (written into meta)
     * @param capacity    rows per destination chunk {@code C >= 1}
     * @param policy      which slots an over-full chunk keeps
     * @param plan        outputs
     * @throws IllegalArgumentException naming the first expert id outside {@code [0, E)} other than -1, or a
     *                                  mis-sized output
     */
    default void buildStaticSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank, int capacity,
            org.moe4j.core.config.DropPolicy policy, StaticSendPlan plan) {
        try (org.moe4j.core.buffer.HostBuffer idx = stageIn(topkIdx);
                org.moe4j.core.buffer.HostBuffer w = stageIn(topkWeights);
                StaticSendPlan h = new StaticSendPlan(stageOut(plan.sendToken()), stageOut(plan.sendMeta()),
                        stageOut(plan.returnSlot()), stageOut(plan.slotReturnRow()), stageOut(plan.dropped()))) {
            org.moe4j.dispatch.internal.StaticPlans.buildSendPlan(idx, w, experts, world, rank, capacity, policy, h);
            copyFromHost((org.moe4j.core.buffer.HostBuffer) h.sendToken(), plan.sendToken());
            copyFromHost((org.moe4j.core.buffer.HostBuffer) h.sendMeta(), plan.sendMeta());
            copyFromHost((org.moe4j.core.buffer.HostBuffer) h.returnSlot(), plan.returnSlot());
            copyFromHost((org.moe4j.core.buffer.HostBuffer) h.slotReturnRow(), plan.slotReturnRow());
            copyFromHost((org.moe4j.core.buffer.HostBuffer) h.dropped(), plan.dropped());
        }
    }

    /**
     * Entries of the fault record of {@link #buildStaticSendPlanDeferred}: {@code {slot, expert id,
     * weight bits}}.
     */
    int STATIC_FAULT_SIZE = 3;

    /**
     * {@link #buildStaticSendPlan} with its input check deferred into a fault record instead of an
     * exception, so a device backend builds the plan without reading anything back to the host (a
     * step of the static-shape all-to-all can then be captured as a CUDA graph). The check also covers
     * the routing weights: a non-empty slot with a NaN or infinite weight is refused like an expert id
     * outside {@code [0, E)}. A refused call writes an all-padding plan (nothing is sent from this
     * rank, {@code plan.dropped} is all 0) and the record {@code {lowest refused slot t*K+k, its
     * expert id, its weight's bits}}; an accepted one writes {@code {Integer.MAX_VALUE, 0, 0}}. The
     * caller reads the record when it next synchronises (see
     * {@link org.moe4j.dispatch.spi.StaticPlanArgs#refusal}).
     *
     * <p>The default checks eagerly: it throws as {@link #buildStaticSendPlan} does (host kernels
     * decide without a device sync) and writes the accepted record; it does not look at the weights
     * ({@link #staticPlanCheckDeferred()} is false, so the dispatcher scans them itself) and never
     * records a refusal.
     *
     * @param topkIdx     I32 {@code [T, K]}
     * @param topkWeights F32 {@code [T, K]}
     * @param experts     {@code E}
     * @param world       {@code W}, divides {@code E}
     * @param rank        this rank (written into meta)
     * @param capacity    rows per destination chunk {@code C >= 1}
     * @param policy      which slots an over-full chunk keeps
     * @param plan        outputs
     * @param fault       out I32 {@code [3]}: the fault record
     * @throws IllegalArgumentException on a mis-sized output or fault record (before anything is
     *                                  written), and in the default on refused input
     */
    default void buildStaticSendPlanDeferred(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank,
            int capacity, org.moe4j.core.config.DropPolicy policy, StaticSendPlan plan, Buffer fault) {
        fault.require("fault", org.moe4j.core.DType.I32, STATIC_FAULT_SIZE);
        buildStaticSendPlan(topkIdx, topkWeights, experts, world, rank, capacity, policy, plan);
        try (org.moe4j.core.buffer.HostBuffer ok = org.moe4j.core.buffer.HostBuffer.ofInts(
                new int[] {Integer.MAX_VALUE, 0, 0}, STATIC_FAULT_SIZE)) {
            copyFromHost(ok, fault);
        }
    }

    /**
     * Whether {@link #buildStaticSendPlanDeferred} really defers its input check into the fault record
     * (expert ids and non-finite routing weights, no exception), so the dispatcher leaves out its own
     * {@link #firstNonFiniteWeight} scan (a device→host read on device backends) and reads the fault
     * record where it next reads the step's results.
     *
     * @return false by default (the check is eager); true for kernels whose deferred send plan defers
     */
    default boolean staticPlanCheckDeferred() {
        return false;
    }

    /**
     * Builds the expert rank's plan of the static-shape all-to-all from the received meta (padding rows
     * carry no expert): counts per local expert, padded group offsets and the local-expert-major layout
     * (by source rank, then position in its chunk: the count-exchange order), all on the device. Slot
     * arrays are indexed by received row ({@code slotUnit[u] = u}, -1 for a padding row); row arrays are
     * -1 beyond the real rows.
     *
     * <p>The default stages through host memory, like {@link #buildStaticSendPlan}.
     *
     * @param meta                 I32 {@code [W*C, 2+2K]}
     * @param firstExpert          global id of local expert 0
     * @param alignment            group alignment {@code >= 1}
     * @param groupOffsets         out I32 {@code [L+1]}
     * @param tokensPerLocalExpert out I32 {@code [L]}
     * @param plan                 outputs: slot arrays {@code [W*C]}, row arrays {@code [P]}, {@code P} at
     *                             least the padded row total
     * @throws IllegalArgumentException on mis-sized outputs
     */
    default void buildStaticRecvPlan(Buffer meta, int firstExpert, int alignment, Buffer groupOffsets,
            Buffer tokensPerLocalExpert, RecvPlan plan) {
        try (org.moe4j.core.buffer.HostBuffer m = stageIn(meta);
                org.moe4j.core.buffer.HostBuffer off = stageOut(groupOffsets);
                org.moe4j.core.buffer.HostBuffer tpl = stageOut(tokensPerLocalExpert);
                org.moe4j.core.buffer.HostBuffer a = stageOut(plan.slotUnit());
                org.moe4j.core.buffer.HostBuffer b = stageOut(plan.slotUnitSlot());
                org.moe4j.core.buffer.HostBuffer c = stageOut(plan.slotExpertRow());
                org.moe4j.core.buffer.HostBuffer d = stageOut(plan.slotWeight());
                org.moe4j.core.buffer.HostBuffer e = stageOut(plan.rowSrcRank());
                org.moe4j.core.buffer.HostBuffer f = stageOut(plan.rowSrcIndex());
                org.moe4j.core.buffer.HostBuffer g = stageOut(plan.rowTopkSlot())) {
            org.moe4j.dispatch.internal.StaticPlans.buildRecvPlan(m, firstExpert, alignment, off, tpl,
                    new RecvPlan(a, b, c, d, e, f, g));
            copyFromHost(off, groupOffsets);
            copyFromHost(tpl, tokensPerLocalExpert);
            copyFromHost(a, plan.slotUnit());
            copyFromHost(b, plan.slotUnitSlot());
            copyFromHost(c, plan.slotExpertRow());
            copyFromHost(d, plan.slotWeight());
            copyFromHost(e, plan.rowSrcRank());
            copyFromHost(f, plan.rowSrcIndex());
            copyFromHost(g, plan.rowTopkSlot());
        }
    }

    /**
     * Returns true when {@link #buildStaticSendPlan} and {@link #buildStaticRecvPlan} run where the buffers live without reading device memory back to the host; false for the host-staged defaults (each call then is a device→host read).
     * @return true when {@link #buildStaticSendPlan} and {@link #buildStaticRecvPlan} run where the
     *         buffers live without reading device memory back to the host; false for the host-staged
     *         defaults (each call then is a device→host read)
     */
    default boolean staticPlansOnDevice() {
        return false;
    }

    /**
     * Whether the non-finite routing-weight scan is a device→host read.
     *
     * @return true when {@link #firstNonFiniteWeight} reads device memory back to the host (the
     *         host-staged default copies both buffers and syncs; a device scan still reads its result
     *         back), so the dispatcher counts each call as a device→host read in
     *         {@link Dispatcher#hostReads()}; false only when the buffers already are host memory
     */
    default boolean nonFiniteWeightScanReadsBack() {
        return true;
    }

    private org.moe4j.core.buffer.HostBuffer stageIn(Buffer b) {
        org.moe4j.core.buffer.HostBuffer h = org.moe4j.core.buffer.HostBuffer.allocate(b.dtype(), b.shape());
        try {
            copyToHost(b, h);
        } catch (RuntimeException e) {
            h.close();
            throw e;
        }
        return h;
    }

    private static org.moe4j.core.buffer.HostBuffer stageOut(Buffer b) {
        return org.moe4j.core.buffer.HostBuffer.allocate(b.dtype(), b.shape());
    }

    /**
     * The sender's plan of the static-shape all-to-all ({@code N = W*C} rows, one unit per slot).
     *
     * @param sendToken     I32 {@code [N]}: source token of each row, -1 for padding
     * @param sendMeta      I32 {@code [N, 2+2K]}: meta of each row
     * @param returnSlot    I32 {@code [N]}: slot {@code t*K+k} of each row (rows return in place), -1 for padding
     * @param slotReturnRow I32 {@code [T*K]}: row of each slot, -1 for an empty or dropped slot
     * @param dropped       I32 {@code [W]}: slots routed to each rank that did not fit its chunk
     */
    record StaticSendPlan(Buffer sendToken, Buffer sendMeta, Buffer returnSlot, Buffer slotReturnRow, Buffer dropped)
            implements AutoCloseable {
        /** Closes every buffer of the plan. */
        @Override
        public void close() {
            for (Buffer b : new Buffer[] {sendToken, sendMeta, returnSlot, slotReturnRow, dropped}) {
                if (b != null) {
                    b.close();
                }
            }
        }
    }

    /**
     * The sender's plan.
     *
     * @param sendToken     I32 {@code [U]}: source token of each unit, destination-rank-major
     *                      (then expert-major and token order, or token order with dedup)
     * @param sendMeta      I32 {@code [U, 2+2K]}: meta of each unit
     * @param returnToken   I32 {@code [J]}: source token of each returned slot row
     * @param returnSlot    I32 {@code [J]}: slot {@code t*K+k} of each returned slot row
     * @param slotReturnRow I32 {@code [T*K]}: returned row of each slot, -1 for an empty slot
     */
    record SendPlan(Buffer sendToken, Buffer sendMeta, Buffer returnToken, Buffer returnSlot, Buffer slotReturnRow) {
    }

    /**
     * The expert rank's plan.
     *
     * @param slotUnit      I32 {@code [J]}: received unit of each slot row
     * @param slotUnitSlot  I32 {@code [J]}: {@code unit*K + k} of each slot row
     * @param slotExpertRow I32 {@code [J]}: row of the expert input holding it
     * @param slotWeight    F32 {@code [J]}: its routing weight
     * @param rowSrcRank    I32 {@code [P]}: source rank of each expert-input row (-1 for padding)
     * @param rowSrcIndex   I32 {@code [P]}: source token index (-1 for padding)
     * @param rowTopkSlot   I32 {@code [P]}: top-k slot k (-1 for padding)
     */
    record RecvPlan(Buffer slotUnit, Buffer slotUnitSlot, Buffer slotExpertRow, Buffer slotWeight, Buffer rowSrcRank,
            Buffer rowSrcIndex, Buffer rowTopkSlot) {
    }
}
