package org.moe4j.experts;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The fixed reduction tree over token blocks that makes a sum over tokens independent of how the
 * tokens are split over expert-parallel ranks and threads.
 *
 * <p>The global batch (rank 0's tokens, then rank 1's, ...) is cut into <em>blocks</em> of
 * {@link #BLOCK} consecutive tokens, rank by rank: rank {@code r}'s tokens start a new block and its
 * last block may be shorter. Block {@code j}'s partial sum is reduced over its tokens in ascending
 * order from zero. Partials are combined in the aligned binary tree over the {@code n} blocks: node
 * {@code (level, index)} covers blocks {@code [index·2^level, (index+1)·2^level) ∩ [0, n)}; a leaf is
 * a block partial; an inner node is {@code left + right}, or just {@code left} when its right half
 * lies past {@code n}; the root is node {@code (L, 0)} with {@code 2^L >= n}.
 *
 * <p>A rank reduces the largest aligned nodes that lie inside its own blocks ({@link #cover}: at most
 * about {@code 2·log2(n)}, exactly one when its blocks form one aligned node, as with one rank), the
 * ranks exchange those node values, and each evaluates the nodes above them the same way
 * ({@link #combinePlan}). Every addition is then the one a single rank would do, so the result is
 * bitwise identical for every world size whose block boundaries coincide: <b>whenever every rank
 * except the last holds a multiple of {@link #BLOCK} tokens</b> (the tree itself depends only on
 * the global block sequence). Within a rank the reduction is split over threads by output element
 * only, never by token.
 */
public final class TokenBlockTree {
    /** Tokens per block (leaf) of the tree. */
    public static final int BLOCK = 64;

    private TokenBlockTree() {
    }

    /**
     * One node of the tree.
     *
     * @param level height above the leaves ({@code 0} = one block)
     * @param index position among the nodes of its level
     */
    public record Node(int level, long index) {
        /**
         * Checks the level and index.
         *
         * @throws IllegalArgumentException on a negative or too large level or a negative index
         */
        public Node {
            if (level < 0 || level > 62 || index < 0 || index > (Long.MAX_VALUE >> level) - 1) {
                throw new IllegalArgumentException("TokenBlockTree.Node: invalid level " + level + " / index " + index);
            }
        }

        /**
         * Returns the first block covered.
         * @return the first block covered
         */
        public long firstBlock() {
            return index << level;
        }

        /**
         * Returns one past the last block covered (truncated at {@code totalBlocks}).
         * @param totalBlocks blocks of the whole tree
         * @return one past the last block covered (truncated at {@code totalBlocks})
         */
        public long endBlock(long totalBlocks) {
            return Math.min((index + 1) << level, totalBlocks);
        }
    }

    /**
     * The leaf bounds of {@link ExpertKernels#groupedWeightGradTree}: every segment's rows
     * {@code [off[s], off[s+1])} cut into blocks of {@code blockRows} rows from {@code off[s]}, listed
     * as the first row of each block in segment order, then {@code off[segments]}. Block {@code i} is
     * rows {@code [bounds[i], bounds[i+1])} (the last block of a segment ends where the next begins).
     * A device backend keeps this table in its memory per layout, so a backward uploads nothing.
     *
     * @param segmentOffsets {@code [segments + 1]} row offsets, {@code >= 0} and non-decreasing
     * @param blockRows      rows per block, {@code >= 1}
     * @return {@code [leaves + 1]} row bounds
     * @throws IllegalArgumentException if {@code segmentOffsets} is empty, negative or decreasing, or
     *                                  {@code blockRows < 1}
     */
    public static int[] leafBounds(int[] segmentOffsets, int blockRows) {
        if (blockRows < 1) {
            throw new IllegalArgumentException("TokenBlockTree.leafBounds: blockRows=" + blockRows + " must be >= 1");
        }
        if (segmentOffsets.length == 0 || segmentOffsets[0] < 0) {
            throw new IllegalArgumentException("TokenBlockTree.leafBounds: segmentOffsets must be non-empty and start at"
                    + " a row >= 0 but is " + java.util.Arrays.toString(segmentOffsets));
        }
        long leaves = 0;
        for (int s = 0; s + 1 < segmentOffsets.length; s++) {
            if (segmentOffsets[s + 1] < segmentOffsets[s]) {
                throw new IllegalArgumentException("TokenBlockTree.leafBounds: segmentOffsets[" + (s + 1) + "]="
                        + segmentOffsets[s + 1] + " < segmentOffsets[" + s + "]=" + segmentOffsets[s]);
            }
            leaves += ((long) segmentOffsets[s + 1] - segmentOffsets[s] + blockRows - 1) / blockRows;
        }
        int[] bounds = new int[Math.toIntExact(leaves + 1)];
        int leaf = 0;
        for (int s = 0; s + 1 < segmentOffsets.length; s++) {
            for (long r = segmentOffsets[s]; r < segmentOffsets[s + 1]; r += blockRows) {
                bounds[leaf++] = (int) r;
            }
        }
        bounds[leaf] = segmentOffsets[segmentOffsets.length - 1];
        return bounds;
    }

    /**
     * The number of blocks a rank's tokens fill.
     *
     * @param tokens a token count, {@code >= 0}
     * @return the blocks holding them ({@code ceil(tokens / BLOCK)})
     * @throws IllegalArgumentException on a negative count
     */
    public static long blocks(long tokens) {
        if (tokens < 0) {
            throw new IllegalArgumentException("TokenBlockTree.blocks: negative token count " + tokens);
        }
        return (tokens + BLOCK - 1) / BLOCK;
    }

    /**
     * The height of the tree.
     *
     * @param totalBlocks blocks of the tree, {@code >= 1}
     * @return the root level {@code L}: the smallest with {@code 2^L >= totalBlocks}
     */
    public static int rootLevel(long totalBlocks) {
        return totalBlocks <= 1 ? 0 : 64 - Long.numberOfLeadingZeros(totalBlocks - 1);
    }

    /**
     * The largest aligned nodes whose (truncated) block ranges tile {@code [first, end)}, in block order.
     *
     * @param first       first block of the range
     * @param end         one past its last block
     * @param totalBlocks blocks of the whole tree
     * @return the nodes (empty for an empty range)
     * @throws IllegalArgumentException unless {@code 0 <= first <= end <= totalBlocks}
     */
    public static List<Node> cover(long first, long end, long totalBlocks) {
        if (first < 0 || first > end || end > totalBlocks) {
            throw new IllegalArgumentException("TokenBlockTree.cover: need 0 <= first (" + first + ") <= end (" + end
                    + ") <= totalBlocks (" + totalBlocks + ")");
        }
        List<Node> out = new ArrayList<>();
        int top = rootLevel(totalBlocks);
        long pos = first;
        while (pos < end) {
            int level = 0;
            while (level < top && (pos & ((1L << (level + 1)) - 1)) == 0
                    && Math.min(pos + (1L << (level + 1)), totalBlocks) <= end) {
                level++;
            }
            Node n = new Node(level, pos >> level);
            out.add(n);
            pos = n.endBlock(totalBlocks);
        }
        return out;
    }

    /**
     * How to evaluate the root from node values that tile all blocks: a sequence of pairs
     * {@code (dst, src)} meaning {@code value[dst] += value[src]}, to run in order, followed by the
     * position of the root's value. Positions index {@code nodes}.
     *
     * @param nodes       nodes that tile {@code [0, totalBlocks)}, each once (any order)
     * @param totalBlocks blocks of the tree, {@code >= 1}
     * @return {@code [dst0, src0, dst1, src1, ..., root]}
     * @throws IllegalArgumentException when the nodes do not tile the blocks exactly
     */
    public static int[] combinePlan(List<Node> nodes, long totalBlocks) {
        if (totalBlocks < 1) {
            throw new IllegalArgumentException("TokenBlockTree.combinePlan: totalBlocks must be >= 1, got " + totalBlocks);
        }
        Map<Node, Integer> at = new HashMap<>();
        long covered = 0;
        for (int i = 0; i < nodes.size(); i++) {
            Node n = nodes.get(i);
            if (n.firstBlock() >= totalBlocks || at.put(n, i) != null) {
                throw new IllegalArgumentException("TokenBlockTree.combinePlan: node " + n + " is outside "
                        + totalBlocks + " blocks or given twice");
            }
            covered += n.endBlock(totalBlocks) - n.firstBlock();
        }
        if (covered != totalBlocks) {
            throw new IllegalArgumentException("TokenBlockTree.combinePlan: the nodes cover " + covered + " blocks, not "
                    + totalBlocks);
        }
        List<Integer> plan = new ArrayList<>();
        int root = eval(rootLevel(totalBlocks), 0, totalBlocks, at, plan);
        int[] out = new int[plan.size() + 1];
        for (int i = 0; i < plan.size(); i++) {
            out[i] = plan.get(i);
        }
        out[plan.size()] = root;
        return out;
    }

    private static int eval(int level, long index, long total, Map<Node, Integer> at, List<Integer> plan) {
        Integer given = at.get(new Node(level, index));
        if (given != null) {
            return given;
        }
        if (level == 0) {
            throw new IllegalArgumentException("TokenBlockTree.combinePlan: nodes overlap or leave block " + index
                    + " uncovered");
        }
        int left = eval(level - 1, 2 * index, total, at, plan);
        if (((2 * index + 1) << (level - 1)) < total) {
            int right = eval(level - 1, 2 * index + 1, total, at, plan);
            plan.add(left);
            plan.add(right);
        }
        return left;
    }
}
