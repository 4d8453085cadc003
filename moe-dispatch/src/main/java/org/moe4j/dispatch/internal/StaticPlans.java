package org.moe4j.dispatch.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.spi.StaticPlanArgs;

/**
 * Host reference of the static-shape (equal-split) plans of {@link DispatchKernels}: the CPU kernels
 * run it on their buffers; a device backend without its own kernels stages through it.
 */
public final class StaticPlans {
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final int META = DispatchKernels.META_FIXED;

    private StaticPlans() {
    }

    /**
     * See {@link DispatchKernels#buildStaticSendPlan}; every argument in host memory.
     *
     * @param topkIdx     I32 {@code [T, K]}
     * @param topkWeights F32 {@code [T, K]}
     * @param experts     {@code E}
     * @param world       {@code W}
     * @param rank        this rank
     * @param capacity    rows per destination chunk {@code C}
     * @param policy      which slots an over-full chunk keeps
     * @param plan        outputs
     * @throws IllegalArgumentException on an expert id outside {@code [0, E)} other than -1 or a mis-sized
     *                                  output (before any output is written)
     */
    public static void buildSendPlan(HostBuffer topkIdx, HostBuffer topkWeights, int experts, int world, int rank,
            int capacity, DropPolicy policy, DispatchKernels.StaticSendPlan plan) {
        int tokens = topkIdx.shape().dimInt(0);
        int k = topkIdx.shape().dimInt(1);
        int local = experts / world;
        int width = META + 2 * k;
        StaticPlanArgs.requireSendPlan(tokens, k, world, capacity, plan);
        int[] idx = topkIdx.toIntArray();
        float[] w = topkWeights.toFloatArray();
        // slots per destination, expert-major then token order (the count-exchange send order)
        List<List<Integer>> perExpert = new ArrayList<>(experts);
        for (int e = 0; e < experts; e++) {
            perExpert.add(new ArrayList<>());
        }
        for (int s = 0; s < idx.length; s++) {
            int e = idx[s];
            if (e == -1) {
                continue;
            }
            if (e < 0 || e >= experts) {
                throw new IllegalArgumentException("topkIdx[" + s / k + ", " + s % k + "] = " + e + " is outside [0, "
                        + experts + ") (use -1 for no expert)");
            }
            perExpert.get(e).add(s);
        }
        MemorySegment sendToken = host(plan.sendToken()).segment();
        MemorySegment meta = host(plan.sendMeta()).segment();
        MemorySegment returnSlot = host(plan.returnSlot()).segment();
        MemorySegment slotReturnRow = host(plan.slotReturnRow()).segment();
        MemorySegment dropped = host(plan.dropped()).segment();
        slotReturnRow.fill((byte) 0xFF);
        int[] row = new int[width];
        for (int d = 0; d < world; d++) {
            int total = 0;
            for (int e = d * local; e < (d + 1) * local; e++) {
                total += perExpert.get(e).size();
            }
            boolean[] keep = null; // null: every slot fits
            if (total > capacity) {
                keep = keepMask(perExpert, d * local, (d + 1) * local, total, capacity, policy, w);
            }
            int p = 0;
            int i = 0;
            for (int e = d * local; e < (d + 1) * local; e++) {
                for (int s : perExpert.get(e)) {
                    if (keep == null || keep[i]) {
                        long r = (long) d * capacity + p++;
                        Arrays.fill(row, -1);
                        row[0] = rank;
                        row[1] = s / k;
                        row[META + s % k] = e;
                        for (int j = 0; j < k; j++) {
                            row[META + k + j] = j == s % k ? Float.floatToRawIntBits(w[s]) : 0;
                        }
                        MemorySegment.copy(row, 0, meta, ValueLayout.JAVA_INT_UNALIGNED, r * width * 4, width);
                        sendToken.setAtIndex(I32, r, s / k);
                        returnSlot.setAtIndex(I32, r, s);
                        slotReturnRow.setAtIndex(I32, s, (int) r);
                    }
                    i++;
                }
            }
            // padding: no source, no expert, weight 0
            Arrays.fill(row, -1);
            Arrays.fill(row, META + k, width, 0);
            for (; p < capacity; p++) {
                long r = (long) d * capacity + p;
                MemorySegment.copy(row, 0, meta, ValueLayout.JAVA_INT_UNALIGNED, r * width * 4, width);
                sendToken.setAtIndex(I32, r, -1);
                returnSlot.setAtIndex(I32, r, -1);
            }
            dropped.setAtIndex(I32, d, Math.max(0, total - capacity));
        }
    }

    /**
     * Which of a chunk's {@code total} slots (in send order) to keep: {@code capacity} of them, the
     * lowest token indices ({@link DropPolicy#BY_POSITION}) or the highest weights
     * ({@link DropPolicy#BY_SCORE}, ties to the lower token, then the lower slot).
     */
    private static boolean[] keepMask(List<List<Integer>> perExpert, int from, int to, int total, int capacity,
            DropPolicy policy, float[] w) {
        long[] order = new long[total]; // (priority key, index in send order)
        int[] slots = new int[total];
        int i = 0;
        for (int e = from; e < to; e++) {
            for (int s : perExpert.get(e)) {
                slots[i++] = s;
            }
        }
        Integer[] ix = new Integer[total];
        for (int j = 0; j < total; j++) {
            ix[j] = j;
        }
        java.util.Comparator<Integer> bySlot = java.util.Comparator.comparingInt(j -> slots[j]);
        java.util.Comparator<Integer> cmp = switch (policy) {
            case BY_POSITION -> bySlot;
            case BY_SCORE -> java.util.Comparator.<Integer>comparingDouble(j -> -w[slots[j]]).thenComparing(bySlot);
        };
        Arrays.sort(ix, cmp);
        boolean[] keep = new boolean[total];
        for (int j = 0; j < capacity; j++) {
            keep[ix[j]] = true;
        }
        return keep;
    }

    /**
     * See {@link DispatchKernels#buildStaticRecvPlan}; every argument in host memory.
     *
     * @param meta                 I32 {@code [W*C, 2+2K]} received units, padding rows carry no expert
     * @param firstExpert          global id of local expert 0
     * @param alignment            group alignment
     * @param groupOffsets         out I32 {@code [L+1]}
     * @param tokensPerLocalExpert out I32 {@code [L]}
     * @param plan                 outputs: slot arrays {@code [W*C]}, row arrays {@code [P]}
     * @throws IllegalArgumentException on mis-sized outputs or more rows than the row arrays hold
     */
    public static void buildRecvPlan(HostBuffer meta, int firstExpert, int alignment, HostBuffer groupOffsets,
            HostBuffer tokensPerLocalExpert, DispatchKernels.RecvPlan plan) {
        int units = meta.shape().dimInt(0);
        int width = meta.shape().dimInt(1);
        int k = (width - META) / 2;
        int localExperts = tokensPerLocalExpert.shape().dimInt(0);
        StaticPlanArgs.requireRecvPlan(units, groupOffsets, tokensPerLocalExpert, plan);
        long rowsMax = plan.rowSrcRank().numel();
        MemorySegment m = meta.segment();
        int[] counts = new int[localExperts];
        for (int u = 0; u < units; u++) {
            for (int j = 0; j < k; j++) {
                int l = m.getAtIndex(I32, (long) u * width + META + j) - firstExpert;
                if (l >= 0 && l < localExperts) {
                    counts[l]++;
                }
            }
        }
        int[] off = new int[localExperts + 1];
        for (int l = 0; l < localExperts; l++) {
            long next = off[l] + ((long) counts[l] + alignment - 1) / alignment * alignment;
            if (next > rowsMax) {
                throw new IllegalArgumentException("buildStaticRecvPlan: " + next + " expert-input rows exceed the "
                        + rowsMax + " rows of the plan");
            }
            off[l + 1] = (int) next;
        }
        MemorySegment.copy(off, 0, groupOffsets.segment(), ValueLayout.JAVA_INT, 0, off.length);
        MemorySegment.copy(counts, 0, tokensPerLocalExpert.segment(), ValueLayout.JAVA_INT, 0, counts.length);
        MemorySegment slotUnit = host(plan.slotUnit()).segment();
        MemorySegment slotUnitSlot = host(plan.slotUnitSlot()).segment();
        MemorySegment slotExpertRow = host(plan.slotExpertRow()).segment();
        MemorySegment slotWeight = host(plan.slotWeight()).segment();
        MemorySegment rowSrcRank = host(plan.rowSrcRank()).segment();
        MemorySegment rowSrcIndex = host(plan.rowSrcIndex()).segment();
        MemorySegment rowTopkSlot = host(plan.rowTopkSlot()).segment();
        slotUnit.fill((byte) 0xFF);
        slotUnitSlot.fill((byte) 0xFF);
        slotExpertRow.fill((byte) 0xFF);
        slotWeight.fill((byte) 0);
        rowSrcRank.fill((byte) 0xFF);
        rowSrcIndex.fill((byte) 0xFF);
        rowTopkSlot.fill((byte) 0xFF);
        int[] cursor = Arrays.copyOf(off, localExperts);
        for (int u = 0; u < units; u++) {
            long base = (long) u * width;
            for (int j = 0; j < k; j++) {
                int l = m.getAtIndex(I32, base + META + j) - firstExpert;
                if (l < 0 || l >= localExperts) {
                    continue;
                }
                int row = cursor[l]++;
                slotUnit.setAtIndex(I32, u, u);
                slotUnitSlot.setAtIndex(I32, u, u * k + j);
                slotExpertRow.setAtIndex(I32, u, row);
                slotWeight.setAtIndex(F32, u, Float.intBitsToFloat(m.getAtIndex(I32, base + META + k + j)));
                rowSrcRank.setAtIndex(I32, row, m.getAtIndex(I32, base));
                rowSrcIndex.setAtIndex(I32, row, m.getAtIndex(I32, base + 1));
                rowTopkSlot.setAtIndex(I32, row, j);
            }
        }
    }

    private static HostBuffer host(org.moe4j.core.buffer.Buffer b) {
        if (b instanceof HostBuffer h) {
            return h;
        }
        throw new IllegalArgumentException("static plans on the host need host buffers but got " + b.getClass()
                .getSimpleName() + " on " + b.device());
    }
}
