package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.cuda.kernels.GpuParity.assertBitEqual;
import static org.moe4j.cuda.kernels.GpuParity.assertFullyWritten;
import static org.moe4j.cuda.kernels.GpuParity.down;
import static org.moe4j.cuda.kernels.GpuParity.poisoned;
import static org.moe4j.cuda.kernels.GpuParity.poisonedDevice;
import static org.moe4j.cuda.kernels.GpuParity.relError;
import static org.moe4j.cuda.kernels.GpuParity.up;

import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.experts.ExpertKernels.GemmSpec;
import org.moe4j.experts.internal.CpuExpertKernels;

/**
 * {@link CudaExpertKernels} (both bf16 paths, mma and wgmma, and the exact fp32 path) against
 * {@link CpuExpertKernels} on fresh random data with odd, tiny and empty groups; outputs poisoned
 * first; rows outside every group must keep the poison.
 */
@Tag("gpu")
class CudaExpertKernelsGpuTest {
    /** bf16 operands, fp32 accumulation (issue 8's bound). */
    static final double BF16_TOLERANCE = 1e-2;
    /** Same bf16-rounded operands on both sides: only the summation order differs. */
    static final double SAME_OPERANDS_TOLERANCE = 1e-4;
    /** fp32 operands, fp32 FMA in another order. */
    static final double FP32_TOLERANCE = 1e-5;

    final ExpertKernels cpu = new CpuExpertKernels(CpuParallel.common());
    Random rnd;

    @BeforeEach
    void setUp() {
        GpuTestSupport.assumeGpu();
        long seed = System.nanoTime();
        rnd = new Random(seed);
        System.out.println("seed=" + seed);
    }

    HostBuffer gaussian(DType t, float scale, long... dims) {
        HostBuffer h = HostBuffer.allocate(t, dims);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, scale * (float) rnd.nextGaussian());
        }
        return h;
    }

    /** Group sizes with empty, single-row, odd and multi-tile groups; offsets start at `lead`. */
    int[] offsets(int groups, int lead) {
        int[] sizes = new int[groups];
        for (int g = 0; g < groups; g++) {
            sizes[g] = switch (g % 5) {
                case 0 -> 0;
                case 1 -> 1;
                case 2 -> 1 + rnd.nextInt(37);
                case 3 -> 129 + rnd.nextInt(200);
                default -> rnd.nextInt(300);
            };
        }
        int[] off = new int[groups + 1];
        off[0] = lead;
        for (int g = 0; g < groups; g++) {
            off[g + 1] = off[g] + sizes[g];
        }
        return off;
    }

    /**
     * The GEMM paths this run covers: -Dmoe4j.gpu.gemmPaths=mma (or wgmma) selects one, so that the GPU
     * verification (scripts/gpu-run.sh) runs every mma case before any wgmma case; default both.
     */
    static final List<String> PATHS = List.of(System.getProperty("moe4j.gpu.gemmPaths", "mma,wgmma").split(","));

    CudaExpertKernels gpu(String path) {
        Assumptions.assumeTrue(PATHS.contains(path), () -> "GEMM path " + path + " not selected (-Dmoe4j.gpu.gemmPaths=" + PATHS + ")");
        if (path.equals("wgmma")) {
            Assumptions.assumeTrue(GpuParity.backend().context().device().major() == 9
                    && GpuParity.backend().context().device().minor() == 0, "wgmma needs compute capability 9.0");
        }
        return new CudaExpertKernels(GpuParity.backend(), path);
    }

    @ParameterizedTest
    @ValueSource(strings = {"mma", "wgmma"})
    void bf16GroupedMatmulMatchesTheCpuWithinBf16Bounds(String path) {
        CudaExpertKernels gpu = gpu(path);
        int groups = 7;
        int lead = 3;
        int[] off = offsets(groups, lead);
        int rows = off[groups] + 5; // rows outside every group at both ends
        int k = GpuParity.SMALL ? 136 : 1032;
        int n = GpuParity.SMALL ? 200 : 776;
        for (boolean accumulate : new boolean[] {false, true}) {
            try (HostBuffer a = gaussian(DType.BF16, 1f, rows, k); HostBuffer b = gaussian(DType.BF16, 0.05f, groups, k, n);
                    HostBuffer o = HostBuffer.ofInts(off, groups + 1); HostBuffer outCpu = poisoned(DType.F32, rows, n);
                    DeviceBuffer dA = up(a); DeviceBuffer dB = up(b); DeviceBuffer dO = up(o);
                    DeviceBuffer dOut = poisonedDevice(DType.F32, rows, n)) {
                if (accumulate) {
                    for (long i = 0; i < outCpu.numel(); i++) {
                        outCpu.setFloat(i, 0.5f);
                    }
                    dOut.copyFrom(outCpu);
                }
                GemmSpec spec = new GemmSpec(accumulate, true);
                cpu.groupedMatmul(a, b, o, outCpu, spec);
                gpu.groupedMatmul(dA, dB, dO, dOut, spec);
                try (HostBuffer got = down(dOut)) {
                    checkGroupRows("groupedMatmul " + path, got, outCpu, off, rows, n, accumulate);
                }
            }
        }
    }

    /** Rows inside groups within tolerance and written; rows outside keep exactly what was there. */
    private static void checkGroupRows(String what, HostBuffer got, HostBuffer ref, int[] off, int rows, int n, boolean acc) {
        int groups = off.length - 1;
        try (HostBuffer gIn = HostBuffer.allocate(DType.F32, Math.max(1, off[groups] - off[0]), n);
                HostBuffer rIn = HostBuffer.allocate(DType.F32, Math.max(1, off[groups] - off[0]), n)) {
            for (long i = 0; i < (long) (off[groups] - off[0]) * n; i++) {
                gIn.setFloat(i, got.getFloat((long) off[0] * n + i));
                rIn.setFloat(i, ref.getFloat((long) off[0] * n + i));
            }
            if (!acc) {
                assertFullyWritten(what + " group rows", gIn);
            }
            double err = relError(gIn, rIn);
            assertTrue(err < SAME_OPERANDS_TOLERANCE && err < BF16_TOLERANCE, what + ": relative error " + err);
        }
        for (int r = 0; r < rows; r++) {
            if (r < off[0] || r >= off[groups]) {
                for (int j = 0; j < n; j++) {
                    assertTrue(Float.floatToRawIntBits(got.getFloat((long) r * n + j))
                            == Float.floatToRawIntBits(ref.getFloat((long) r * n + j)), what + ": row " + r + " outside the groups changed");
                }
            }
        }
    }

    @Test
    void fp32GroupedMatmulAndWeightGradAreExactFp32() {
        CudaExpertKernels gpu = gpu("mma");
        int groups = 6;
        int[] off = offsets(groups, 0);
        int rows = off[groups];
        int k = 100;
        int n = 90;
        try (HostBuffer a = gaussian(DType.F32, 1f, rows, k); HostBuffer b = gaussian(DType.F32, 0.1f, groups, k, n);
                HostBuffer o = HostBuffer.ofInts(off, groups + 1); HostBuffer outCpu = poisoned(DType.F32, rows, n);
                DeviceBuffer dA = up(a); DeviceBuffer dB = up(b); DeviceBuffer dO = up(o);
                DeviceBuffer dOut = poisonedDevice(DType.F32, rows, n)) {
            cpu.groupedMatmul(a, b, o, outCpu, GemmSpec.OVERWRITE);
            gpu.groupedMatmul(dA, dB, dO, dOut, GemmSpec.OVERWRITE);
            try (HostBuffer got = down(dOut)) {
                assertFullyWritten("fp32 groupedMatmul", got);
                assertTrue(relError(got, outCpu) < FP32_TOLERANCE, "fp32 groupedMatmul " + relError(got, outCpu));
            }
            try (HostBuffer dy = gaussian(DType.F32, 1f, rows, n); HostBuffer wCpu = poisoned(DType.F32, groups, n, k);
                    DeviceBuffer dDy = up(dy); DeviceBuffer dWg = poisonedDevice(DType.F32, groups, n, k)) {
                cpu.groupedWeightGrad(dy, a, o, wCpu, GemmSpec.OVERWRITE);
                gpu.groupedWeightGrad(dDy, dA, dO, dWg, GemmSpec.OVERWRITE);
                try (HostBuffer got = down(dWg)) {
                    assertFullyWritten("fp32 weight grad (empty groups give zeros)", got);
                    assertTrue(relError(got, wCpu) < FP32_TOLERANCE, "fp32 weight grad " + relError(got, wCpu));
                }
            }
        }
    }

    /**
     * The token-block tree on the GPU: close to the CPU tree, and the nodes of a split of the rows
     * (what the ranks of a layer reduce), combined by the GPU, give the single-segment result bit for bit.
     */
    @ParameterizedTest
    @ValueSource(strings = {"F32", "BF16"})
    void weightGradTreeOfAnySplitGivesTheBitsOfOneSegment(String dtype) {
        CudaExpertKernels gpu = gpu("mma");
        boolean bf16 = dtype.equals("BF16");
        int block = org.moe4j.experts.TokenBlockTree.BLOCK;
        int rows = 5 * block + 17;
        int m = 24;
        int n = 40;
        // per "rank": 2 blocks, 1 block, the rest; their tree nodes, as MoeLayer computes them
        long total = org.moe4j.experts.TokenBlockTree.blocks(rows);
        long[] firstBlocks = {0, 2, 3, total};
        java.util.List<org.moe4j.experts.TokenBlockTree.Node> nodes = new java.util.ArrayList<>();
        for (int r = 0; r < 3; r++) {
            nodes.addAll(org.moe4j.experts.TokenBlockTree.cover(firstBlocks[r], firstBlocks[r + 1], total));
        }
        int[] segOff = new int[nodes.size() + 1];
        for (int i = 0; i < nodes.size(); i++) {
            segOff[i] = (int) (nodes.get(i).firstBlock() * block);
            segOff[i + 1] = (int) Math.min(nodes.get(i).endBlock(total) * block, rows);
        }
        int[] plan = org.moe4j.experts.TokenBlockTree.combinePlan(nodes, total);
        GemmSpec spec = new GemmSpec(false, bf16);
        try (HostBuffer a = gaussian(DType.F32, 1f, rows, m); HostBuffer b = gaussian(DType.F32, 1f, rows, n);
                HostBuffer one = HostBuffer.ofInts(new int[] {0, rows}, 2); HostBuffer split = HostBuffer.ofInts(segOff, segOff.length);
                HostBuffer cpuOut = poisoned(DType.F32, 1, m, n);
                DeviceBuffer dA = up(a); DeviceBuffer dB = up(b); DeviceBuffer dOne = up(one); DeviceBuffer dSplit = up(split);
                DeviceBuffer whole = poisonedDevice(DType.F32, 1, m, n);
                DeviceBuffer parts = poisonedDevice(DType.F32, nodes.size(), m, n);
                DeviceBuffer combined = poisonedDevice(DType.F32, m, n)) {
            cpu.groupedWeightGradTree(a, b, one, block, cpuOut, spec);
            gpu.groupedWeightGradTree(dA, dB, dOne, block, whole, spec);
            gpu.groupedWeightGradTree(dA, dB, dSplit, block, parts, spec);
            gpu.combineTreeNodes(parts, plan, combined, false);
            try (HostBuffer w = down(whole); HostBuffer c = down(combined)) {
                assertFullyWritten("tree weight grad", w);
                double tol = bf16 ? SAME_OPERANDS_TOLERANCE : FP32_TOLERANCE;
                assertTrue(relError(w, cpuOut) < tol, "tree vs the CPU tree " + relError(w, cpuOut));
                assertArrayEquals(w.toFloatArray(), c.toFloatArray(), 0f, "split nodes combined vs one segment");
            }
            // the same nodes from a leaf-bounds table the caller keeps on the device (what a layer lends):
            // bitwise the uploading call's; a table of the wrong size is refused before anything is written
            int[] bounds = org.moe4j.experts.TokenBlockTree.leafBounds(segOff, block);
            try (HostBuffer hb = HostBuffer.ofInts(bounds, bounds.length);
                    HostBuffer shortB = HostBuffer.ofInts(java.util.Arrays.copyOf(bounds, bounds.length - 1), bounds.length - 1);
                    DeviceBuffer kept = up(hb); DeviceBuffer keptShort = up(shortB);
                    DeviceBuffer fromKept = poisonedDevice(DType.F32, nodes.size(), m, n);
                    DeviceBuffer uploaded = poisonedDevice(DType.F32, nodes.size(), m, n)) {
                assertTrue(gpu.usesLeafBounds());
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> gpu.groupedWeightGradTree(dA, dB, split, block, keptShort, fromKept, spec));
                assertTrue(e.getMessage().contains("leafBounds"), e.getMessage());
                try (HostBuffer untouched = down(fromKept)) {
                    for (long i = 0; i < untouched.numel(); i++) {
                        assertEquals(GpuParity.POISON, untouched.segment().getAtIndex(
                                java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED, i), "refused call wrote element " + i);
                    }
                }
                gpu.groupedWeightGradTree(dA, dB, split, block, kept, fromKept, spec);
                gpu.groupedWeightGradTree(dA, dB, split, block, uploaded, spec); // parts was consumed by the combine
                try (HostBuffer p = down(uploaded); HostBuffer k = down(fromKept)) {
                    assertFullyWritten("tree nodes from kept leaf bounds", k);
                    assertArrayEquals(p.toFloatArray(), k.toFloatArray(), 0f, "kept leaf bounds vs uploaded ones");
                }
            }
        }
    }

    /** Rows outside every group hold NaN: a kernel that reads past a group's rows would spread it. */
    static void nanOutsideGroups(HostBuffer h, int[] off, int rows, int cols) {
        int groups = off.length - 1;
        for (int r = 0; r < rows; r++) {
            if (r < off[0] || r >= off[groups]) {
                for (int c = 0; c < cols; c++) {
                    h.setFloat((long) r * cols + c, Float.NaN);
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"mma", "wgmma"})
    void bf16WeightGradMatchesTheCpuIncludingEmptyGroupsAndAccumulate(String path) {
        CudaExpertKernels gpu = gpu(path);
        int groups = 5;
        int[] off = offsets(groups, 2);
        int rows = off[groups] + 3;
        int m = GpuParity.SMALL ? 136 : 520;
        int n = GpuParity.SMALL ? 72 : 264;
        for (boolean accumulate : new boolean[] {false, true}) {
            try (HostBuffer a = gaussian(DType.BF16, 1f, rows, m); HostBuffer b = gaussian(DType.F32, 1f, rows, n);
                    HostBuffer o = HostBuffer.ofInts(off, groups + 1); HostBuffer outCpu = poisoned(DType.F32, groups, m, n)) {
                nanOutsideGroups(a, off, rows, m);
                nanOutsideGroups(b, off, rows, n);
                try (DeviceBuffer dA = up(a); DeviceBuffer dB = up(b); DeviceBuffer dO = up(o);
                        DeviceBuffer dOut = poisonedDevice(DType.F32, groups, m, n)) {
                    if (accumulate) {
                        for (long i = 0; i < outCpu.numel(); i++) {
                            outCpu.setFloat(i, -1f);
                        }
                        dOut.copyFrom(outCpu);
                    }
                    GemmSpec spec = new GemmSpec(accumulate, true);
                    cpu.groupedWeightGrad(a, b, o, outCpu, spec);
                    gpu.groupedWeightGrad(dA, dB, dO, dOut, spec);
                    try (HostBuffer got = down(dOut)) {
                        assertFullyWritten("weight grad", got);
                        double err = relError(got, outCpu);
                        assertTrue(err < SAME_OPERANDS_TOLERANCE, path + " bf16 weight grad accumulate=" + accumulate + ": " + err);
                    }
                }
            }
        }
    }

    /**
     * groupedMatmulTransposedB (b stored [groups, N, K], the forward's weight layout) against the CPU,
     * and bit for bit against transpose + groupedMatmul on the same path (the SPI's contract).
     */
    @ParameterizedTest
    @ValueSource(strings = {"mma", "wgmma"})
    void transposedBMatchesTheCpuAndTransposePlusMatmulBitForBit(String path) {
        CudaExpertKernels gpu = gpu(path);
        int groups = 6;
        int[] off = offsets(groups, 1);
        int rows = off[groups] + 2;
        int k = GpuParity.SMALL ? 72 : 1000;
        int n = GpuParity.SMALL ? 136 : 392;
        for (boolean accumulate : new boolean[] {false, true}) {
            try (HostBuffer a = gaussian(DType.BF16, 1f, rows, k); HostBuffer b = gaussian(DType.BF16, 0.05f, groups, n, k);
                    HostBuffer o = HostBuffer.ofInts(off, groups + 1); HostBuffer outCpu = poisoned(DType.F32, rows, n);
                    DeviceBuffer dA = up(a); DeviceBuffer dB = up(b); DeviceBuffer dO = up(o);
                    DeviceBuffer dBt = poisonedDevice(DType.BF16, groups, k, n);
                    DeviceBuffer dOut = poisonedDevice(DType.F32, rows, n); DeviceBuffer dOut2 = poisonedDevice(DType.F32, rows, n)) {
                if (accumulate) {
                    for (long i = 0; i < outCpu.numel(); i++) {
                        outCpu.setFloat(i, 0.25f);
                    }
                    dOut.copyFrom(outCpu);
                    dOut2.copyFrom(outCpu);
                }
                GemmSpec spec = new GemmSpec(accumulate, true);
                cpu.groupedMatmulTransposedB(a, b, o, outCpu, spec);
                gpu.groupedMatmulTransposedB(dA, dB, dO, dOut, spec);
                gpu.transpose(dB, dBt);
                gpu.groupedMatmul(dA, dBt, dO, dOut2, spec);
                try (HostBuffer got = down(dOut); HostBuffer got2 = down(dOut2)) {
                    checkGroupRows("groupedMatmulTransposedB " + path, got, outCpu, off, rows, n, accumulate);
                    assertBitEqual(path + ": transposedB vs transpose + groupedMatmul", got2, got);
                }
            }
        }
    }

    /** moe_gg_dx_wgmma's second operand pair: out = a1 . b1_g + a2 . b2_g in one kernel (dX = dG.W1 + dU.W3). */
    @Test
    void wgmmaDxWithTwoPairsMatchesTheCpu() {
        CudaExpertKernels gpu = gpu("wgmma");
        int groups = 4;
        int[] off = offsets(groups, 0);
        int rows = off[groups];
        int k = GpuParity.SMALL ? 72 : 328;
        int n = GpuParity.SMALL ? 136 : 264;
        try (HostBuffer a1 = gaussian(DType.BF16, 1f, rows, k); HostBuffer b1 = gaussian(DType.BF16, 0.05f, groups, k, n);
                HostBuffer a2 = gaussian(DType.BF16, 1f, rows, k); HostBuffer b2 = gaussian(DType.BF16, 0.05f, groups, k, n);
                HostBuffer o = HostBuffer.ofInts(off, groups + 1); HostBuffer outCpu = poisoned(DType.F32, rows, n);
                DeviceBuffer dA1 = up(a1); DeviceBuffer dB1 = up(b1); DeviceBuffer dA2 = up(a2); DeviceBuffer dB2 = up(b2);
                DeviceBuffer dO = up(o); DeviceBuffer dOut = poisonedDevice(DType.F32, rows, n)) {
            cpu.groupedMatmul(a1, b1, o, outCpu, new GemmSpec(false, true));
            cpu.groupedMatmul(a2, b2, o, outCpu, new GemmSpec(true, true));
            try (CudaExpertKernels.WgmmaMaps maps = gpu.dxMaps(dA1, dB1, dA2, dB2, rows, k, n, groups)) {
                gpu.launchDxWgmma(maps, dO, rows, n, k, groups, dOut, false);
                try (HostBuffer got = down(dOut)) {
                    checkGroupRows("dx two pairs", got, outCpu, off, rows, n, false);
                }
            }
        }
    }

    @Test
    void transposeAndSwigluMatchTheCpu() {
        CudaExpertKernels gpu = gpu("mma");
        try (HostBuffer src = gaussian(DType.F32, 1f, 3, 45, 70); HostBuffer tc = poisoned(DType.BF16, 3, 70, 45);
                DeviceBuffer dSrc = up(src); DeviceBuffer dT = poisonedDevice(DType.BF16, 3, 70, 45)) {
            cpu.transpose(src, tc);
            gpu.transpose(dSrc, dT);
            try (HostBuffer got = down(dT)) {
                assertBitEqual("transpose F32 -> BF16", tc, got);
            }
        }
        int n = 10007;
        try (HostBuffer g = gaussian(DType.F32, 3f, n); HostBuffer u = gaussian(DType.F32, 1f, n); HostBuffer d = gaussian(DType.F32, 1f, n);
                HostBuffer oc = poisoned(DType.F32, n); HostBuffer dgc = poisoned(DType.F32, n); HostBuffer duc = poisoned(DType.F32, n);
                DeviceBuffer dG = up(g); DeviceBuffer dU = up(u); DeviceBuffer dD = up(d);
                DeviceBuffer og = poisonedDevice(DType.F32, n); DeviceBuffer dgg = poisonedDevice(DType.F32, n);
                DeviceBuffer dug = poisonedDevice(DType.F32, n)) {
            cpu.swigluForward(g, u, oc);
            gpu.swigluForward(dG, dU, og);
            cpu.swigluBackward(g, u, d, dgc, duc);
            gpu.swigluBackward(dG, dU, dD, dgg, dug);
            try (HostBuffer a = down(og); HostBuffer b = down(dgg); HostBuffer c = down(dug)) {
                assertTrue(relError(a, oc) < 1e-6, "swiglu " + relError(a, oc));
                assertTrue(relError(b, dgc) < 1e-6, "dGate " + relError(b, dgc));
                assertTrue(relError(c, duc) < 1e-6, "dUp " + relError(c, duc));
            }
        }
    }

    @Test
    void badOffsetsAreRefusedBeforeAnythingIsWritten() {
        CudaExpertKernels gpu = gpu("mma");
        try (HostBuffer a = gaussian(DType.BF16, 1f, 10, 16); HostBuffer b = gaussian(DType.BF16, 1f, 2, 16, 8);
                HostBuffer o = HostBuffer.ofInts(new int[] {0, 6, 4}, 3);
                DeviceBuffer dA = up(a); DeviceBuffer dB = up(b); DeviceBuffer dOut = poisonedDevice(DType.F32, 10, 8)) {
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> gpu.groupedMatmul(dA, dB, o, dOut, GemmSpec.OVERWRITE));
            assertTrue(e.getMessage().contains("groupOffsets must not decrease"), e.getMessage());
            try (HostBuffer got = down(dOut)) {
                for (float v : got.toFloatArray()) {
                    assertTrue(Float.isNaN(v), "output must stay untouched after a refused call");
                }
            }
        }
    }
}
