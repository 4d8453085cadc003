package org.moe4j.cuda.kernels;

import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.DispatchKernels;

/**
 * Test helper: the given kernels with the static-shape plans of the {@link DispatchKernels} defaults
 * (host-staged, {@link #staticPlansOnDevice()} false) — the reference the device-side plans are
 * compared with, and a kernel set that CUDA-graph capture must refuse.
 *
 * @param k the kernels every other method goes to
 */
public record HostStagedStaticPlans(DispatchKernels k) implements DispatchKernels {
    @Override
    public void countRoutes(Buffer topkIdx, int experts, int world, boolean perRankDedup, Buffer routeCounts) {
        k.countRoutes(topkIdx, experts, world, perRankDedup, routeCounts);
    }

    @Override
    public void buildSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank,
            boolean perRankDedup, SendPlan plan) {
        k.buildSendPlan(topkIdx, topkWeights, experts, world, rank, perRankDedup, plan);
    }

    @Override
    public void packUnits(Buffer topkIdx, Buffer topkWeights, int rank, Buffer meta) {
        k.packUnits(topkIdx, topkWeights, rank, meta);
    }

    @Override
    public void countLocal(Buffer meta, int firstExpert, int localExperts, Buffer counts) {
        k.countLocal(meta, firstExpert, localExperts, counts);
    }

    @Override
    public void buildRecvPlan(Buffer meta, int firstExpert, Buffer groupOffsets, RecvPlan plan) {
        k.buildRecvPlan(meta, firstExpert, groupOffsets, plan);
    }

    @Override
    public void validSlots(Buffer topkIdx, Buffer slotRow, Buffer slotToken) {
        k.validSlots(topkIdx, slotRow, slotToken);
    }

    @Override
    public void composeIndex(Buffer table, Buffer index, Buffer out) {
        k.composeIndex(table, index, out);
    }

    @Override
    public void copyRows(Buffer src, Buffer srcIndex, Buffer dst, Buffer dstIndex, Buffer weights) {
        k.copyRows(src, srcIndex, dst, dstIndex, weights);
    }

    @Override
    public void weightedSum(Buffer rows, Buffer slotRow, Buffer weights, Buffer out) {
        k.weightedSum(rows, slotRow, weights, out);
    }

    @Override
    public void rowDots(Buffer a, Buffer aIndex, Buffer b, Buffer bIndex, Buffer out, Buffer outIndex) {
        k.rowDots(a, aIndex, b, bIndex, out, outIndex);
    }

    @Override
    public void scatterValues(Buffer src, Buffer index, Buffer dst) {
        k.scatterValues(src, index, dst);
    }

    @Override
    public void copyToHost(Buffer src, HostBuffer dst) {
        k.copyToHost(src, dst);
    }

    @Override
    public void copyFromHost(HostBuffer src, Buffer dst) {
        k.copyFromHost(src, dst);
    }
}
