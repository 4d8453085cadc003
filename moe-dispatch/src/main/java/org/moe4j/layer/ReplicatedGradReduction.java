package org.moe4j.layer;

import java.util.ArrayList;
import java.util.List;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.Communicator;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.experts.ExpertKernels.GemmSpec;
import org.moe4j.experts.TokenBlockTree;

/**
 * Reduces the gradient of a replicated parameter (gate and its bias, shared experts and their gate) over the
 * tokens of all ranks
 * on the fixed {@link TokenBlockTree}: each rank reduces the tree nodes inside its own tokens, the
 * ranks all-gather those node values, and every rank evaluates the rest of the tree identically, so
 * the gradient is the same bits for any world size (see {@link TokenBlockTree} for the condition) and
 * on every rank.
 */
final class ReplicatedGradReduction {
    private final Communicator comm;
    private final boolean exchange;
    private final Backend backend;
    private final ExpertKernels kernels;
    /** The layer's kept device tables, used where the kernels read a kept leaf-bounds table. */
    private final KeptTables tables;
    /** Every rank has this rank's token count (the dispatcher refuses anything else): no count exchange. */
    private boolean equalTokens;

    /**
     * @param comm     the layer's communicator
     * @param exchange reduce over all ranks (else over this rank's tokens only)
     * @param backend  allocates the node buffers
     * @param kernels  kernels with {@link ExpertKernels#supportsTokenBlockTree()}
     * @param tables   the layer's kept tables (leaf bounds and the ones column live there where the kernels
     *                 {@linkplain ExpertKernels#usesLeafBounds() read kept tables}: a backward uploads nothing)
     */
    ReplicatedGradReduction(Communicator comm, boolean exchange, Backend backend, ExpertKernels kernels,
            KeptTables tables) {
        this.comm = comm;
        this.exchange = exchange && comm.size() > 1;
        this.backend = backend;
        this.kernels = kernels;
        this.tables = tables;
    }

    /** Constant tables kept by the layer in its backend's memory, one per key (not closed by users). */
    @FunctionalInterface
    interface KeptTables {
        /**
         * Returns the table kept under {@code key}, made from {@code values} (closed by the callee) on first use.
         *
         * @param key    identifies the table's contents
         * @param values makes the host values when the table does not exist yet
         * @return the kept table (do not close)
         */
        Buffer get(Object key, java.util.function.Supplier<HostBuffer> values);
    }

    /** Key of a kept leaf-bounds table: the segment offsets it was made from. */
    private record LeafBoundsKey(List<Integer> segmentOffsets) {
    }

    /** Key of a kept column of ones. */
    private record OnesKey(long tokens) {
    }

    /**
     * Declares that every rank's backward has as many tokens as this rank's (a static-shape dispatch
     * without {@code chunkRows} refuses a step where they differ), so {@link #plan} makes the layout
     * without all-gathering the counts through the host.
     */
    void assumeEqualTokens() {
        equalTokens = true;
    }

    /** The tree layout of one backward: this rank's node segments and how to combine every rank's nodes. */
    static final class Plan implements AutoCloseable {
        private final Buffer segmentOffsets; // I32 [myNodes + 1], rows of this rank's tokens
        private final Buffer leafBounds;     // I32 [leaves + 1] kept by the layer, or null where the kernels upload them
        private final int myNodes;
        private final long[] nodesPerRank;
        private final int totalNodes;
        private final int[] combine;

        private Plan(Buffer segmentOffsets, Buffer leafBounds, int myNodes, long[] nodesPerRank, int totalNodes,
                int[] combine) {
            this.segmentOffsets = segmentOffsets;
            this.leafBounds = leafBounds;
            this.myNodes = myNodes;
            this.nodesPerRank = nodesPerRank;
            this.totalNodes = totalNodes;
            this.combine = combine;
        }

        @Override
        public void close() {
            segmentOffsets.close();
        }
    }

    /**
     * Lays out the tree of one backward. A collective when exchanging: every rank's token count is
     * all-gathered.
     *
     * @param tokens this rank's tokens
     * @return the plan (caller closes)
     */
    Plan plan(long tokens) {
        long[] counts = !exchange ? new long[] {tokens} : equalTokens ? equal(tokens) : gatherCounts(tokens);
        int rank = exchange ? comm.rank() : 0;
        long[] first = new long[counts.length + 1];
        for (int r = 0; r < counts.length; r++) {
            first[r + 1] = Math.addExact(first[r], TokenBlockTree.blocks(counts[r]));
        }
        long total = first[counts.length];
        long[] nodesPerRank = new long[counts.length];
        List<TokenBlockTree.Node> all = new ArrayList<>();
        List<TokenBlockTree.Node> mine = List.of();
        for (int r = 0; r < counts.length; r++) {
            List<TokenBlockTree.Node> nodes = TokenBlockTree.cover(first[r], first[r + 1], total);
            nodesPerRank[r] = nodes.size();
            all.addAll(nodes);
            if (r == rank) {
                mine = nodes;
            }
        }
        int[] offsets = new int[mine.size() + 1];
        for (int i = 0; i < mine.size(); i++) {
            TokenBlockTree.Node n = mine.get(i);
            offsets[i] = Math.toIntExact((n.firstBlock() - first[rank]) * TokenBlockTree.BLOCK);
            offsets[i + 1] = Math.toIntExact(Math.min((n.endBlock(total) - first[rank]) * TokenBlockTree.BLOCK, tokens));
        }
        int[] combine = total == 0 ? new int[0] : TokenBlockTree.combinePlan(all, total);
        // a host table: the tree kernels lay out their leaves from the offsets on the host, so a device copy
        // would only be read back again (a device→host read per backward on a device backend)
        Buffer off = HostBuffer.ofInts(offsets, offsets.length);
        Buffer bounds = null;
        if (kernels.usesLeafBounds()) { // a device table kept per layout: the backward uploads nothing
            List<Integer> key = java.util.Arrays.stream(offsets).boxed().toList();
            bounds = tables.get(new LeafBoundsKey(key), () -> {
                int[] b = TokenBlockTree.leafBounds(offsets, TokenBlockTree.BLOCK);
                return HostBuffer.ofInts(b, b.length);
            });
        }
        return new Plan(off, bounds, mine.size(), nodesPerRank, all.size(), combine);
    }

    private long[] equal(long tokens) {
        long[] out = new long[comm.size()];
        java.util.Arrays.fill(out, tokens);
        return out;
    }

    private long[] gatherCounts(long tokens) {
        try (HostBuffer h = HostBuffer.allocate(DType.I64, 1); HostBuffer all = HostBuffer.allocate(DType.I64, comm.size())) {
            h.segment().set(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0, tokens);
            try (Buffer send = backend.upload(h); Buffer recv = backend.allocate(DType.I64, Shape.of(comm.size()))) {
                comm.allGather(send, recv); // staged: the communicator works in the backend's memory
                recv.copyTo(all);
            }
            long[] out = new long[comm.size()];
            for (int r = 0; r < out.length; r++) {
                out[r] = all.getLong(r);
            }
            return out;
        }
    }

    /**
     * The node values of one replicated gradient from every rank, ready to be added to the gradient
     * without any further collective (so a backward can finish all its collectives before it changes
     * any state).
     */
    final class Gathered implements AutoCloseable {
        private final Buffer nodes; // [nodes of every rank, M, N]
        private final int[] combine;

        private Gathered(Buffer nodes, int[] combine) {
            this.nodes = nodes;
            this.combine = combine;
        }

        /**
         * Adds the root of the tree to {@code grad} (once: the node rows are consumed).
         *
         * @param grad F32 with {@code M·N} elements
         */
        void addTo(Buffer grad) {
            kernels.combineTreeNodes(nodes, combine, grad, true);
        }

        @Override
        public void close() {
            nodes.close();
        }
    }

    /**
     * The node values of a plain sum over tokens, {@code Σ_tokens a[t]} (e.g. a bias gradient), on the same
     * tree: {@code aᵀ · 1} with a column of ones, so each block's partial adds its rows in ascending order
     * from zero exactly as a bias-gradient loop would. A collective when exchanging.
     *
     * @param plan the plan of this backward
     * @param a    F32 {@code [tokens, M]}
     * @return the node values of an {@code [M, 1]} gradient (caller closes), or null when no rank has tokens
     */
    Gathered gatherSum(Plan plan, Buffer a) {
        long tokens = a.shape().dim(0);
        if (kernels.usesLeafBounds()) { // a device table kept per token count: nothing uploaded per backward
            return gather(plan, a, tables.get(new OnesKey(tokens), () -> ones(tokens)), false);
        }
        try (HostBuffer h = ones(tokens); Buffer ones = backend.upload(h)) { // staged: a constant column made on the host
            return gather(plan, a, ones, false);
        }
    }

    /** F32 {@code [tokens, 1]} of ones (caller closes). */
    private static HostBuffer ones(long tokens) {
        HostBuffer h = HostBuffer.allocate(DType.F32, tokens, 1);
        for (long t = 0; t < tokens; t++) {
            h.setFloat(t, 1f);
        }
        return h;
    }

    /**
     * Reduces this rank's tree nodes of {@code Σ_tokens a[t]ᵀ · b[t]} and, when exchanging, all-gathers
     * every rank's nodes (a collective). Changes no gradient: see {@link Gathered#addTo}.
     *
     * @param plan the plan of this backward
     * @param a    F32 {@code [tokens, M]}
     * @param b    F32 or BF16 {@code [tokens, N]}
     * @param bf16 round F32 operands to bf16 (the experts' compute dtype)
     * @return the node values (caller closes), or null when no rank has tokens
     */
    Gathered gather(Plan plan, Buffer a, Buffer b, boolean bf16) {
        if (plan.totalNodes == 0) {
            return null;
        }
        long m = a.shape().dim(1);
        long n = b.shape().dim(1);
        Buffer local = backend.allocate(DType.F32, Shape.of(plan.myNodes, m, n));
        try {
            GemmSpec spec = new GemmSpec(false, bf16);
            if (plan.leafBounds != null) {
                kernels.groupedWeightGradTree(a, b, plan.segmentOffsets, TokenBlockTree.BLOCK, plan.leafBounds, local, spec);
            } else {
                kernels.groupedWeightGradTree(a, b, plan.segmentOffsets, TokenBlockTree.BLOCK, local, spec);
            }
            if (!exchange) {
                Gathered g = new Gathered(local, plan.combine);
                local = null;
                return g;
            }
            Buffer all = backend.allocate(DType.F32, Shape.of(plan.totalNodes, m, n));
            try {
                comm.allGatherV(local, all, plan.nodesPerRank);
            } catch (RuntimeException e) {
                all.close();
                throw e;
            }
            return new Gathered(all, plan.combine);
        } catch (RuntimeException e) {
            if (local != null) { // a failed close must not hide why the gather failed
                try {
                    local.close();
                } catch (RuntimeException closing) {
                    e.addSuppressed(closing);
                }
                local = null;
            }
            throw e;
        } finally {
            if (local != null) {
                local.close();
            }
        }
    }
}
