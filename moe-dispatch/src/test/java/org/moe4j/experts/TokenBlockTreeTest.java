package org.moe4j.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.experts.ExpertKernels.GemmSpec;
import org.moe4j.experts.TokenBlockTree.Node;
import org.moe4j.experts.internal.CpuExpertKernels;

class TokenBlockTreeTest {
    static final int B = TokenBlockTree.BLOCK;

    @Test
    void coverTilesTheRangeWithAlignedNodes() {
        assertEquals(List.of(new Node(3, 0)), TokenBlockTree.cover(0, 5, 5), "one rank: the root");
        assertEquals(List.of(new Node(2, 1)), TokenBlockTree.cover(4, 8, 16));
        assertEquals(List.of(new Node(0, 1), new Node(1, 1), new Node(0, 4)), TokenBlockTree.cover(1, 5, 16));
        assertEquals(List.of(new Node(2, 1)), TokenBlockTree.cover(4, 6, 6), "truncated last node");
        assertEquals(List.of(), TokenBlockTree.cover(3, 3, 6));
        for (long total = 1; total < 40; total++) {
            for (long a = 0; a <= total; a++) {
                for (long b = a; b <= total; b++) {
                    long pos = a;
                    for (Node n : TokenBlockTree.cover(a, b, total)) {
                        assertEquals(pos, n.firstBlock(), "contiguous cover of [" + a + ", " + b + ") of " + total);
                        assertTrue(n.level() <= TokenBlockTree.rootLevel(total));
                        pos = n.endBlock(total);
                    }
                    assertEquals(b, pos);
                }
            }
        }
        assertThrows(IllegalArgumentException.class, () -> TokenBlockTree.cover(2, 1, 4));
        assertThrows(IllegalArgumentException.class, () -> TokenBlockTree.cover(0, 5, 4));
        assertThrows(IllegalArgumentException.class, () -> TokenBlockTree.blocks(-1));
    }

    @Test
    void combinePlanRefusesNodesThatDoNotTileTheBlocks() {
        assertThrows(IllegalArgumentException.class, () -> TokenBlockTree.combinePlan(List.of(new Node(1, 0)), 3));
        assertThrows(IllegalArgumentException.class,
                () -> TokenBlockTree.combinePlan(List.of(new Node(1, 0), new Node(0, 1), new Node(0, 2)), 3));
        assertThrows(IllegalArgumentException.class,
                () -> TokenBlockTree.combinePlan(List.of(new Node(0, 0), new Node(0, 0)), 1));
        assertArrayEquals(new int[] {0}, TokenBlockTree.combinePlan(List.of(new Node(2, 0)), 3));
        // ((P0 + P1) + P2): node (1,0) at position 1, leaf 2 at position 0
        assertArrayEquals(new int[] {1, 0, 1}, TokenBlockTree.combinePlan(List.of(new Node(0, 2), new Node(1, 0)), 3));
    }

    /**
     * The property the layer relies on: reducing a weight gradient over the nodes of any split of the
     * rows into per-rank ranges (each but the last a multiple of the block), then combining the nodes,
     * gives the bits of the one-range reduction, for any thread count; and it matches a reference sum.
     */
    @Test
    void anySplitOfTheTokensGivesTheBitsOfTheSingleRankTree() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        Random r = new Random(seed);
        for (int trial = 0; trial < 6; trial++) {
            int m = 1 + r.nextInt(20);
            int n = 1 + r.nextInt(150);
            int rows = r.nextInt(13 * B);
            boolean bf16 = trial % 3 == 2;
            float[] a = TestInputs.rand(r, rows * m);
            float[] b = TestInputs.rand(r, rows * n);
            float[] single;
            try (CpuParallel one = new CpuParallel(1)) {
                single = reduce(new CpuExpertKernels(one), a, b, rows, m, n, new long[] {rows}, bf16);
            }
            double[] ref = new double[m * n];
            for (int t = 0; t < rows; t++) {
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        float x = a[t * m + i], y = b[t * n + j];
                        ref[i * n + j] += bf16 ? (double) CpuExpertKernelsTest.round(x) * CpuExpertKernelsTest.round(y)
                                : (double) x * y;
                    }
                }
            }
            if (rows > 0) {
                assertTrue(CpuExpertKernelsTest.relErr(single, ref) < CpuExpertKernelsTest.FP32_TOL, "tree vs reference");
            }
            try (CpuParallel three = new CpuParallel(3)) {
                CpuExpertKernels k = new CpuExpertKernels(three);
                for (int split = 0; split < 4; split++) {
                    int ranks = 1 + r.nextInt(5);
                    long[] counts = new long[ranks];
                    long left = rows;
                    for (int q = 0; q < ranks - 1; q++) {
                        counts[q] = Math.min(left / B, r.nextInt(5)) * B;
                        left -= counts[q];
                    }
                    counts[ranks - 1] = left;
                    float[] got = reduce(k, a, b, rows, m, n, counts, bf16);
                    assertArrayEquals(single, got, 0f, "split " + java.util.Arrays.toString(counts) + " m=" + m + " n=" + n);
                }
            }
        }
    }

    /** What the layer does: per rank, the nodes of its rows; then all nodes combined in rank order. */
    static float[] reduce(CpuExpertKernels k, float[] a, float[] b, int rows, int m, int n, long[] counts, boolean bf16) {
        long total = TokenBlockTree.blocks(rows);
        List<Node> all = new ArrayList<>();
        List<Integer> starts = new ArrayList<>();
        List<Integer> ends = new ArrayList<>();
        long firstBlock = 0;
        int firstRow = 0;
        for (long c : counts) {
            long blocks = TokenBlockTree.blocks(c);
            for (Node node : TokenBlockTree.cover(firstBlock, firstBlock + blocks, total)) {
                all.add(node);
                starts.add(firstRow + (int) ((node.firstBlock() - firstBlock) * B));
                ends.add((int) Math.min(firstRow + (node.endBlock(total) - firstBlock) * B, firstRow + c));
            }
            firstBlock += blocks;
            firstRow += (int) c;
        }
        try (HostBuffer out = HostBuffer.allocate(DType.F32, m, n)) {
            if (total == 0) {
                return out.toFloatArray();
            }
            // all nodes reduced in one call (segments need not start at row 0), as the ranks would each do for theirs
            int[] off = new int[all.size() + 1];
            float[] segA = new float[rows * m];
            float[] segB = new float[rows * n];
            int at = 0;
            for (int i = 0; i < all.size(); i++) {
                int len = ends.get(i) - starts.get(i);
                System.arraycopy(a, starts.get(i) * m, segA, at * m, len * m);
                System.arraycopy(b, starts.get(i) * n, segB, at * n, len * n);
                at += len;
                off[i + 1] = at;
            }
            try (HostBuffer ha = HostBuffer.ofFloats(segA, rows, m); HostBuffer hb = HostBuffer.ofFloats(segB, rows, n);
                 HostBuffer ho = HostBuffer.ofInts(off, off.length);
                 HostBuffer nodes = HostBuffer.allocate(DType.F32, all.size(), m, n)) {
                k.groupedWeightGradTree(ha, hb, ho, B, nodes, new GemmSpec(false, bf16));
                out.copyFrom(new float[m * n]);
                k.combineTreeNodes(nodes, TokenBlockTree.combinePlan(all, total), out, true);
            }
            return out.toFloatArray();
        }
    }

    @Test
    void leafBoundsCutEverySegmentIntoBlocksFromItsFirstRow() {
        // segments [3, 10), [10, 10) (empty), [10, 14) in blocks of 4: 3 7 | - | 10, then the end
        assertArrayEquals(new int[] {3, 7, 10, 14}, TokenBlockTree.leafBounds(new int[] {3, 10, 10, 14}, 4));
        assertArrayEquals(new int[] {0, 64, 128, 150}, TokenBlockTree.leafBounds(new int[] {0, 150}, 64));
        assertArrayEquals(new int[] {5}, TokenBlockTree.leafBounds(new int[] {5}, 1), "no segment: only the end");
        assertThrows(IllegalArgumentException.class, () -> TokenBlockTree.leafBounds(new int[] {0, 8}, 0));
        assertThrows(IllegalArgumentException.class, () -> TokenBlockTree.leafBounds(new int[0], 4));
        assertThrows(IllegalArgumentException.class, () -> TokenBlockTree.leafBounds(new int[] {-1, 8}, 4));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TokenBlockTree.leafBounds(new int[] {0, 8, 4}, 4));
        assertTrue(e.getMessage().contains("segmentOffsets[2]=4 < segmentOffsets[1]=8"), e.getMessage());
    }

    @Test
    void treeKernelRefusesBadArgumentsBeforeWriting() {
        CpuExpertKernels k = new CpuExpertKernels(CpuParallel.common());
        try (HostBuffer a = HostBuffer.allocate(DType.F32, 8, 2); HostBuffer b = HostBuffer.allocate(DType.F32, 8, 3);
             HostBuffer off = HostBuffer.ofInts(new int[] {0, 8}, 2); HostBuffer out = HostBuffer.allocate(DType.F32, 1, 2, 3);
             HostBuffer bad = HostBuffer.ofInts(new int[] {0, 9}, 2)) {
            out.copyFrom(new float[] {1, 2, 3, 4, 5, 6});
            assertThrows(IllegalArgumentException.class, () -> k.groupedWeightGradTree(a, b, off, 0, out, GemmSpec.OVERWRITE));
            assertThrows(IllegalArgumentException.class, () -> k.groupedWeightGradTree(a, b, off, 513, out, GemmSpec.OVERWRITE));
            assertThrows(IllegalArgumentException.class, () -> k.groupedWeightGradTree(a, b, bad, 4, out, GemmSpec.OVERWRITE));
            assertThrows(IllegalArgumentException.class, () -> k.combineTreeNodes(out, new int[] {0, 1}, a, false));
            assertThrows(IllegalArgumentException.class, () -> k.combineTreeNodes(out, new int[] {1}, b, false));
            assertArrayEquals(new float[] {1, 2, 3, 4, 5, 6}, out.toFloatArray(), 0f);
        }
    }
}
