package org.moe4j.cuda.kernels;

import static org.moe4j.cuda.kernels.Kernels.blocks;
import static org.moe4j.cuda.kernels.Kernels.dev;
import static org.moe4j.cuda.kernels.Kernels.dtypeCode;
import static org.moe4j.cuda.kernels.Kernels.ptr;
import static org.moe4j.cuda.kernels.Kernels.rows;
import static org.moe4j.cuda.kernels.Kernels.width;

import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.spi.DispatchArgs;
import org.moe4j.dispatch.spi.StaticPlanArgs;

/**
 * {@link DispatchKernels} on the GPU ({@code native/permute.cu}). Same contract and results as the
 * CPU reference: plans are exact integer orderings (stable by key, no atomics on positions), fp32
 * row copies and weighted sums are bit-identical, dot products agree within rounding.
 *
 * <p>Host synchronisation happens only where the contract needs a host decision: the bad-id check
 * of {@link #countRoutes} and of the eager {@link #buildStaticSendPlan}, and the explicit host
 * copies. The static-shape plans ({@link #buildStaticSendPlanDeferred}, {@link #buildStaticRecvPlan})
 * are built entirely on the device: {@link #staticPlansOnDevice()} is true.
 */
public final class CudaDispatchKernels implements DispatchKernels {
    /** Entries per chunk of the key ordering (a multiple of 32). */
    static final int ORDER_CHUNK = 1024;

    private final Kernels k;

    /**
     * Creates a new {@code CudaDispatchKernels}.
     * @param backend the cuda backend
     */
    public CudaDispatchKernels(Backend backend) {
        this.k = new Kernels(backend, "permute");
    }

    @Override
    public void countRoutes(Buffer topkIdx, int experts, int world, boolean perRankDedup, Buffer routeCounts) {
        int tokens = rows(topkIdx);
        int topK = topkIdx.shape().dimInt(1);
        int local = experts / world;
        DeviceBuffer counts = dev("routeCounts", routeCounts);
        counts.zeroAsync(k.stream());
        try (DeviceBuffer bad = k.scratch(DType.I32, 1); HostBuffer badHost = HostBuffer.ofInts(new int[] {Integer.MAX_VALUE}, 1)) {
            bad.copyFromAsync(badHost, k.stream());
            if (tokens > 0) {
                k.launch("moe_count_routes").grid(blocks(tokens, 256)).block(256).sharedMemory(world * (local + 1) * 4)
                        .arg(dev("topkIdx", topkIdx)).arg(tokens).arg(topK).arg(experts).arg(world).arg(perRankDedup ? 1 : 0)
                        .arg(counts).arg(bad).launch();
            }
            bad.copyToAsync(badHost, k.stream());
            k.stream().synchronize();
            int flat = badHost.getInt(0);
            if (flat != Integer.MAX_VALUE) {
                int t = flat / topK;
                int j = flat % topK;
                try (HostBuffer one = HostBuffer.allocate(DType.I32, org.moe4j.core.Shape.of(1))) {
                    dev("topkIdx", topkIdx).view(DType.I32, org.moe4j.core.Shape.of(1), (long) flat * 4).copyTo(one);
                    throw new IllegalArgumentException("topkIdx[" + t + ", " + j + "] = " + one.getInt(0) + " is outside [0, "
                            + experts + ") (use -1 for no expert)");
                }
            }
        }
    }

    @Override
    public void buildSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank, boolean perRankDedup,
            SendPlan plan) {
        int tokens = rows(topkIdx);
        int topK = topkIdx.shape().dimInt(1);
        long slots = (long) tokens * topK;
        int units = rows(plan.sendToken());
        int numKeys = perRankDedup ? world : experts;
        DeviceBuffer idx = dev("topkIdx", topkIdx);
        try (DeviceBuffer keys = k.scratch(DType.I32, Math.max(1, slots));
                DeviceBuffer keyPos = k.scratch(DType.I32, Math.max(1, slots));
                DeviceBuffer slotUnit = k.scratch(DType.I32, Math.max(1, slots));
                DeviceBuffer unitSlots = k.scratch(DType.I32, Math.max(1, units));
                DeviceBuffer unitBase = k.scratch(DType.I32, units + 1)) {
            if (tokens == 0) {
                return;
            }
            k.launch("moe_send_keys").grid(blocks(tokens, 256)).block(256).arg(idx).arg(tokens).arg(topK).arg(experts)
                    .arg(world).arg(perRankDedup ? 1 : 0).arg(keys).launch();
            orderByKey(keys, slots, numKeys, null, null, null, keyPos, null);
            k.launch("moe_send_meta").grid(blocks(tokens, 256)).block(256).arg(idx).arg(dev("topkWeights", topkWeights))
                    .arg(tokens).arg(topK).arg(experts).arg(world).arg(rank).arg(perRankDedup ? 1 : 0).arg(keyPos)
                    .arg(dev("plan.sendToken", plan.sendToken())).arg(dev("plan.sendMeta", plan.sendMeta()))
                    .arg(slotUnit).arg(unitSlots).launch();
            if (units > 0) {
                k.launch("moe_exclusive_scan").grid(1).block(1024).arg(unitSlots).arg(units).arg(unitBase).launch();
            }
            k.launch("moe_send_return").grid(blocks(tokens, 256)).block(256).arg(slotUnit).arg(tokens).arg(topK).arg(unitBase)
                    .arg(dev("plan.returnToken", plan.returnToken())).arg(dev("plan.returnSlot", plan.returnSlot()))
                    .arg(dev("plan.slotReturnRow", plan.slotReturnRow())).launch();
        }
    }

    /**
     * Stable positions by key (see permute.cu): pos[i] = base(key[i]) + earlier entries with the
     * same key; optional totals, key bases (exclusive scan) or given bases, and the inverse map.
     */
    private void orderByKey(DeviceBuffer keys, long n, int numKeys, DeviceBuffer givenBase, DeviceBuffer totals,
            DeviceBuffer keyBase, DeviceBuffer pos, DeviceBuffer inverse) {
        int chunks = blocks(n, ORDER_CHUNK);
        try (DeviceBuffer chunkCounts = k.scratch(DType.I32, (long) chunks * numKeys)) {
            k.launchWithSmem("moe_key_chunk_counts", numKeys * 4).grid(chunks).block(256).arg(keys).arg(n).arg(numKeys)
                    .arg(ORDER_CHUNK).arg(chunkCounts).launch();
            k.launchWithSmem("moe_key_layout", numKeys * 4).grid(1).block(1024).arg(chunkCounts).arg(chunks).arg(numKeys)
                    .argPointer(totals == null ? 0 : totals.address()).argPointer(keyBase == null ? 0 : keyBase.address())
                    .argPointer(givenBase == null ? 0 : givenBase.address()).launch();
            k.launchWithSmem("moe_key_positions", numKeys * 4).grid(chunks).block(32).arg(keys).arg(n).arg(numKeys)
                    .arg(ORDER_CHUNK).arg(chunkCounts).arg(pos).argPointer(inverse == null ? 0 : inverse.address()).launch();
        }
    }

    @Override
    public void packUnits(Buffer topkIdx, Buffer topkWeights, int rank, Buffer meta) {
        int tokens = rows(topkIdx);
        if (tokens == 0) {
            return;
        }
        k.launch("moe_pack_units").grid(blocks(tokens, 256)).block(256).arg(dev("topkIdx", topkIdx))
                .arg(dev("topkWeights", topkWeights)).arg(tokens).arg(topkIdx.shape().dimInt(1)).arg(rank)
                .arg(dev("meta", meta)).launch();
    }

    @Override
    public void countLocal(Buffer meta, int firstExpert, int localExperts, Buffer counts) {
        int units = rows(meta);
        int topK = (meta.shape().dimInt(1) - META_FIXED) / 2;
        DeviceBuffer c = dev("counts", counts);
        c.zeroAsync(k.stream());
        if (units == 0 || topK == 0) {
            return;
        }
        k.launchWithSmem("moe_count_local", localExperts * 4).grid(blocks((long) units * topK, 256)).block(256)
                .arg(dev("meta", meta)).arg(units).arg(topK).arg(firstExpert).arg(localExperts).arg(c).launch();
    }

    @Override
    public void buildRecvPlan(Buffer meta, int firstExpert, Buffer groupOffsets, RecvPlan plan) {
        int units = rows(meta);
        int topK = (meta.shape().dimInt(1) - META_FIXED) / 2;
        int localExperts = groupOffsets.shape().dimInt(0) - 1;
        long n = (long) units * topK;
        DeviceBuffer rowSrcRank = dev("plan.rowSrcRank", plan.rowSrcRank());
        DeviceBuffer rowSrcIndex = dev("plan.rowSrcIndex", plan.rowSrcIndex());
        DeviceBuffer rowTopkSlot = dev("plan.rowTopkSlot", plan.rowTopkSlot());
        for (DeviceBuffer b : new DeviceBuffer[] {rowSrcRank, rowSrcIndex, rowTopkSlot}) {
            if (b.numel() > 0) {
                k.launch("moe_fill_i32").grid(blocks(b.numel(), 256)).block(256).arg(b).arg(b.numel()).arg(-1).launch();
            }
        }
        if (n == 0) {
            return;
        }
        try (DeviceBuffer groupKey = k.scratch(DType.I32, n); DeviceBuffer validKey = k.scratch(DType.I32, n);
                DeviceBuffer rowPos = k.scratch(DType.I32, n); DeviceBuffer rPos = k.scratch(DType.I32, n);
                DeviceBuffer zero = k.scratch(DType.I32, 1)) {
            DeviceBuffer meta_ = dev("meta", meta);
            k.launch("moe_recv_keys").grid(blocks(n, 256)).block(256).arg(meta_).arg(units).arg(topK).arg(firstExpert)
                    .arg(localExperts).arg(groupKey).arg(validKey).launch();
            orderByKey(groupKey, n, localExperts, dev("groupOffsets", groupOffsets), null, null, rowPos, null);
            orderByKey(validKey, n, 1, zero, null, null, rPos, null);
            k.launch("moe_recv_write").grid(blocks(n, 256)).block(256).arg(meta_).arg(units).arg(topK).arg(rowPos).arg(rPos)
                    .arg(dev("plan.slotUnit", plan.slotUnit())).arg(dev("plan.slotUnitSlot", plan.slotUnitSlot()))
                    .arg(dev("plan.slotExpertRow", plan.slotExpertRow())).arg(dev("plan.slotWeight", plan.slotWeight()))
                    .arg(rowSrcRank).arg(rowSrcIndex).arg(rowTopkSlot).launch();
        }
    }

    @Override
    public void validSlots(Buffer topkIdx, Buffer slotRow, Buffer slotToken) {
        long n = topkIdx.numel();
        if (n == 0) {
            return;
        }
        k.launch("moe_valid_slots").grid(blocks(n, 256)).block(256).arg(dev("topkIdx", topkIdx)).arg(n)
                .arg(topkIdx.shape().dimInt(1)).arg(dev("slotRow", slotRow)).arg(dev("slotToken", slotToken)).launch();
    }

    @Override
    public void composeIndex(Buffer table, Buffer index, Buffer out) {
        long m = DispatchArgs.composeIndexEntries(index, out);
        if (m == 0) {
            return;
        }
        k.launch("moe_compose_index").grid(blocks(m, 256)).block(256).arg(dev("table", table)).arg(table.numel())
                .arg(dev("index", index)).arg(m).arg(dev("out", out)).launch();
    }

    @Override
    public void copyRows(Buffer src, Buffer srcIndex, Buffer dst, Buffer dstIndex, Buffer weights) {
        int h = DispatchArgs.sameRowWidth("copyRows", "src", src, "dst", dst);
        int m = DispatchArgs.visitedRows(src, srcIndex, dstIndex);
        if (m == 0 || h == 0) {
            return;
        }
        k.launch("moe_copy_rows").grid(Math.min(m, 65535)).block(128).arg(dev("src", src)).arg(dtypeCode("src", src.dtype()))
                .argPointer(ptr("srcIndex", srcIndex)).arg(dev("dst", dst)).arg(dtypeCode("dst", dst.dtype()))
                .argPointer(ptr("dstIndex", dstIndex)).argPointer(ptr("weights", weights)).arg(m).arg(h).launch();
    }

    @Override
    public void weightedSum(Buffer rows, Buffer slotRow, Buffer weights, Buffer out) {
        int h = width(rows);
        int tokens = rows(out);
        int topK = tokens == 0 ? 0 : (int) (slotRow.numel() / tokens);
        if (tokens == 0 || h == 0) {
            return;
        }
        k.launch("moe_weighted_sum").grid(Math.min(tokens, 65535)).block(128).arg(dev("rows", rows))
                .arg(dtypeCode("rows", rows.dtype())).arg(dev("slotRow", slotRow)).argPointer(ptr("weights", weights))
                .arg(tokens).arg(topK).arg(h).arg(dev("out", out)).arg(dtypeCode("out", out.dtype())).launch();
    }

    @Override
    public void rowDots(Buffer a, Buffer aIndex, Buffer b, Buffer bIndex, Buffer out, Buffer outIndex) {
        int h = DispatchArgs.sameRowWidth("rowDots", "a", a, "b", b);
        int m = DispatchArgs.visitedRows(a, aIndex, bIndex, outIndex);
        if (m == 0) {
            return;
        }
        k.launch("moe_row_dots").grid(Math.min(m, 65535)).block(256).arg(dev("a", a)).arg(dtypeCode("a", a.dtype()))
                .argPointer(ptr("aIndex", aIndex)).arg(dev("b", b)).arg(dtypeCode("b", b.dtype()))
                .argPointer(ptr("bIndex", bIndex)).arg(dev("out", out)).argPointer(ptr("outIndex", outIndex)).arg(m).arg(h)
                .launch();
    }

    @Override
    public void scatterValues(Buffer src, Buffer index, Buffer dst) {
        long m = index.numel();
        if (m == 0) {
            return;
        }
        k.launch("moe_scatter_values").grid(blocks(m, 256)).block(256).arg(dev("src", src)).arg(dev("index", index)).arg(m)
                .arg(dev("dst", dst)).launch();
    }

    /**
     * The static send plan on the device, eager: the input check runs first and its one-word result is
     * read back (a device→host read), so bad input throws before any output is written, as on the host.
     */
    @Override
    public void buildStaticSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank, int capacity,
            org.moe4j.core.config.DropPolicy policy, StaticSendPlan plan) {
        requireStaticSend(topkIdx, topkWeights, experts, world, capacity, policy, plan);
        try (DeviceBuffer fault = k.scratch(DType.I32, STATIC_FAULT_SIZE)) {
            checkStatic(topkIdx, topkWeights, experts, fault);
            try (HostBuffer h = HostBuffer.allocate(DType.I32, org.moe4j.core.Shape.of(STATIC_FAULT_SIZE))) {
                faultDetail(topkIdx, topkWeights, fault);
                fault.copyToAsync(h, k.stream());
                k.stream().synchronize();
                IllegalArgumentException bad = StaticPlanArgs.refusal(h.toIntArray(), topkIdx.shape().dimInt(1), experts);
                if (bad != null) {
                    throw bad;
                }
            }
            staticSendPlan(topkIdx, topkWeights, experts, world, rank, capacity, policy, plan, fault);
        }
    }

    /**
     * The static send plan on the device without any host read: the input check writes the fault
     * record on the device, and a refused step's plan is all padding (see the interface).
     */
    @Override
    public void buildStaticSendPlanDeferred(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank,
            int capacity, org.moe4j.core.config.DropPolicy policy, StaticSendPlan plan, Buffer fault) {
        requireStaticSend(topkIdx, topkWeights, experts, world, capacity, policy, plan);
        fault.require("fault", DType.I32, STATIC_FAULT_SIZE);
        DeviceBuffer f = dev("fault", fault);
        checkStatic(topkIdx, topkWeights, experts, f);
        staticSendPlan(topkIdx, topkWeights, experts, world, rank, capacity, policy, plan, f);
    }

    private static void requireStaticSend(Buffer topkIdx, Buffer topkWeights, int experts, int world, int capacity,
            org.moe4j.core.config.DropPolicy policy, StaticSendPlan plan) {
        java.util.Objects.requireNonNull(policy, "policy");
        if (capacity < 1 || world < 1 || experts < world || experts % world != 0) {
            throw new IllegalArgumentException("buildStaticSendPlan: capacity " + capacity + ", world " + world
                    + " and experts " + experts + ": need capacity, world >= 1 and experts a positive multiple of world");
        }
        if (topkIdx.dtype() != DType.I32 || topkIdx.shape().rank() != 2) {
            throw new IllegalArgumentException("topkIdx: expected I32 [T, K] but got " + topkIdx.dtype() + " "
                    + topkIdx.shape());
        }
        topkWeights.require("topkWeights", DType.F32, topkIdx.shape().dim(0), topkIdx.shape().dim(1));
        StaticPlanArgs.requireSendPlan(rows(topkIdx), topkIdx.shape().dimInt(1), world, capacity, plan);
    }

    /** fault[0] = lowest refused slot or {@code Integer.MAX_VALUE} (queued; nothing read back). */
    private void checkStatic(Buffer topkIdx, Buffer topkWeights, int experts, DeviceBuffer fault) {
        long n = topkIdx.numel();
        k.launch("moe_fill_i32").grid(1).block(32).arg(fault).arg(1L).arg(Integer.MAX_VALUE).launch();
        if (n > 0) {
            k.launch("moe_static_check").grid(blocks(n, 256)).block(256).arg(dev("topkIdx", topkIdx))
                    .arg(dev("topkWeights", topkWeights)).arg(n).arg(experts).arg(fault).launch();
        }
    }

    /** Fills fault[1..2] from the refused slot (the threshold kernel's block 0 does it in the plan). */
    private void faultDetail(Buffer topkIdx, Buffer topkWeights, DeviceBuffer fault) {
        if (topkIdx.numel() == 0) {
            return;
        }
        try (DeviceBuffer totals = k.scratch(DType.I32, 1); DeviceBuffer thr = k.scratch(DType.I64, 1);
                DeviceBuffer dropped = k.scratch(DType.I32, 1)) {
            // one destination, one expert with no slot: only the fault record is written
            k.launch("moe_static_threshold").grid(1).block(256).arg(dev("topkIdx", topkIdx))
                    .arg(dev("topkWeights", topkWeights)).arg(0L).arg(1).arg(1).arg(1).arg(0).arg(fault).arg(totals)
                    .arg(thr).arg(dropped).launch();
        }
    }

    private void staticSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank, int capacity,
            org.moe4j.core.config.DropPolicy policy, StaticSendPlan plan, DeviceBuffer fault) {
        int topK = topkIdx.shape().dimInt(1);
        long n = topkIdx.numel();
        int policyCode = switch (policy) {
            case BY_POSITION -> 0;
            case BY_SCORE -> 1;
        };
        DeviceBuffer idx = dev("topkIdx", topkIdx);
        DeviceBuffer w = dev("topkWeights", topkWeights);
        DeviceBuffer sendToken = dev("plan.sendToken", plan.sendToken());
        DeviceBuffer sendMeta = dev("plan.sendMeta", plan.sendMeta());
        DeviceBuffer returnSlot = dev("plan.returnSlot", plan.returnSlot());
        DeviceBuffer slotReturnRow = dev("plan.slotReturnRow", plan.slotReturnRow());
        DeviceBuffer dropped = dev("plan.dropped", plan.dropped());
        try (DeviceBuffer keys = k.scratch(DType.I32, Math.max(1, n)); DeviceBuffer pos = k.scratch(DType.I32, Math.max(1, n));
                DeviceBuffer totals = k.scratch(DType.I32, experts); DeviceBuffer keyBase = k.scratch(DType.I32, experts + 1L);
                DeviceBuffer thr = k.scratch(DType.I64, world)) {
            if (n > 0) {
                k.launch("moe_static_send_keys").grid(blocks(n, 256)).block(256).arg(idx).arg(w).arg(n).arg(experts)
                        .arg(world).arg(policyCode).arg(fault).argPointer(0).arg(keys).launch();
                orderByKey(keys, n, experts, null, totals, null, pos, null);
            }
            k.launch("moe_static_threshold").grid(world).block(256).arg(idx).arg(w).arg(n).arg(experts).arg(world)
                    .arg(capacity).arg(policyCode).arg(fault).arg(totals).arg(thr).arg(dropped).launch();
            if (n > 0) {
                k.launch("moe_static_send_keys").grid(blocks(n, 256)).block(256).arg(idx).arg(w).arg(n).arg(experts)
                        .arg(world).arg(policyCode).arg(fault).arg(thr).arg(keys).launch();
                orderByKey(keys, n, experts, null, null, keyBase, pos, null);
                k.launch("moe_static_send_write").grid(blocks(n, 256)).block(256).arg(keys).arg(w).arg(n).arg(topK)
                        .arg(experts).arg(world).arg(rank).arg(capacity).arg(pos).arg(keyBase).arg(sendToken)
                        .arg(sendMeta).arg(returnSlot).arg(slotReturnRow).launch();
            }
            k.launch("moe_static_send_pad").grid(blocks((long) world * capacity, 256)).block(256).arg(keyBase)
                    .arg(experts).arg(world).arg(capacity).arg(topK).arg(sendToken).arg(sendMeta).arg(returnSlot).launch();
        }
    }

    /** The static receive plan on the device (nothing read back). */
    @Override
    public void buildStaticRecvPlan(Buffer meta, int firstExpert, int alignment, Buffer groupOffsets,
            Buffer tokensPerLocalExpert, RecvPlan plan) {
        int units = rows(meta);
        int width = width(meta);
        if (meta.dtype() != DType.I32 || width < META_FIXED + 2 || (width - META_FIXED) % 2 != 0) {
            throw new IllegalArgumentException("meta: expected I32 [units, 2+2K] but got " + meta.dtype() + " " + meta.shape());
        }
        if (alignment < 1) {
            throw new IllegalArgumentException("buildStaticRecvPlan: alignment must be >= 1 but got " + alignment);
        }
        StaticPlanArgs.requireRecvPlan(units, groupOffsets, tokensPerLocalExpert, plan);
        int topK = (width - META_FIXED) / 2;
        int localExperts = tokensPerLocalExpert.shape().dimInt(0);
        long rowsMax = plan.rowSrcRank().numel();
        long need = units + (long) localExperts * (alignment - 1);
        if (rowsMax < need) {
            throw new IllegalArgumentException("buildStaticRecvPlan: the row arrays hold " + rowsMax + " rows but up to "
                    + need + " (units + L*(alignment-1)) may be needed");
        }
        DeviceBuffer counts = dev("tokensPerLocalExpert", tokensPerLocalExpert);
        DeviceBuffer offsets = dev("groupOffsets", groupOffsets);
        countLocal(meta, firstExpert, localExperts, counts);
        k.launch("moe_static_group_offsets").grid(1).block(1).arg(counts).arg(localExperts).arg(alignment).arg(offsets)
                .launch();
        for (Buffer b : new Buffer[] {plan.slotUnit(), plan.slotUnitSlot(), plan.slotExpertRow(), plan.slotWeight(),
                plan.rowSrcRank(), plan.rowSrcIndex(), plan.rowTopkSlot()}) {
            if (b.numel() > 0) {
                int fill = b == plan.slotWeight() ? 0 : -1; // +0.0f for the weights
                k.launch("moe_fill_i32").grid(blocks(b.numel(), 256)).block(256).arg(dev("plan", b)).arg(b.numel())
                        .arg(fill).launch();
            }
        }
        long n = (long) units * topK;
        if (n == 0) {
            return;
        }
        try (DeviceBuffer groupKey = k.scratch(DType.I32, n); DeviceBuffer validKey = k.scratch(DType.I32, n);
                DeviceBuffer rowPos = k.scratch(DType.I32, n)) {
            DeviceBuffer m = dev("meta", meta);
            k.launch("moe_recv_keys").grid(blocks(n, 256)).block(256).arg(m).arg(units).arg(topK).arg(firstExpert)
                    .arg(localExperts).arg(groupKey).arg(validKey).launch();
            orderByKey(groupKey, n, localExperts, offsets, null, null, rowPos, null);
            k.launch("moe_static_recv_write").grid(blocks(n, 256)).block(256).arg(m).arg(units).arg(topK).arg(groupKey)
                    .arg(rowPos).arg(rowsMax).arg(dev("plan.slotUnit", plan.slotUnit()))
                    .arg(dev("plan.slotUnitSlot", plan.slotUnitSlot())).arg(dev("plan.slotExpertRow", plan.slotExpertRow()))
                    .arg(dev("plan.slotWeight", plan.slotWeight())).arg(dev("plan.rowSrcRank", plan.rowSrcRank()))
                    .arg(dev("plan.rowSrcIndex", plan.rowSrcIndex())).arg(dev("plan.rowTopkSlot", plan.rowTopkSlot()))
                    .launch();
        }
    }

    /** True: the deferred send plan records refused routing (ids and weights) in its fault record. */
    @Override
    public boolean staticPlanCheckDeferred() {
        return true;
    }

    /** True: both static plans are built on the device. */
    @Override
    public boolean staticPlansOnDevice() {
        return true;
    }

    @Override
    public void copyToHost(Buffer src, HostBuffer dst) {
        DispatchArgs.requireSameBytes(src, dst);
        dev("src", src).copyToAsync(dst, k.stream());
        k.stream().synchronize();
    }

    @Override
    public void copyFromHost(HostBuffer src, Buffer dst) {
        DispatchArgs.requireSameBytes(src, dst);
        dev("dst", dst).copyFromAsync(src, k.stream());
        k.stream().synchronize();
    }

}
