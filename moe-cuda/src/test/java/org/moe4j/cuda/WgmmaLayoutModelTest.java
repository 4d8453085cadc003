package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A CPU model of the Hopper grouped GEMM's shared-memory contract, checked against the real
 * descriptor code: a host program built by nvcc from {@code native/grouped_gemm_wgmma.cuh} prints
 * the matrix descriptors that the consumers pass to {@code wgmma} ({@code desc_a}, {@code desc_b})
 * for every consumer, k16 step and operand layout. The model writes tagged global matrices into a
 * shared-memory image the way the producer's bulk tensor copies place them (boxes of 128-byte rows,
 * 128-byte swizzle: chunk {@code c} of row {@code r} at chunk {@code c ^ (r % 8)}), then reads every
 * operand element back through each descriptor with the PTX ISA's canonical layouts
 * (K-major: {@code ((8,m),(T,2k)):((8T,SBO),(1,T))}; MN-major: {@code ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))},
 * T = 8 bf16) and asserts it is the element the GEMM needs. It cannot prove the hardware agrees with
 * the documentation; it does catch a wrong LBO/SBO, k step, box placement or transpose choice
 * before a GPU sees the kernel. Skipped (by assumption) where nvcc is not installed.
 */
class WgmmaLayoutModelTest {
    /** Any 1024-byte aligned shared address for the stage (the kernel aligns its ring to 1024). */
    static final int STAGE = 0x8400;
    static final int BK = 64;

    static Map<String, Long> desc = new HashMap<>();
    static Map<String, Integer> consts = new HashMap<>();

    @TempDir
    static Path work;

    @BeforeAll
    static void buildAndRunHostProgram() throws Exception {
        Path nvcc = KernelStaticCheckTest.findTool("nvcc");
        Path nativeDir = KernelStaticCheckTest.findNativeDir();
        assumeTrue(nvcc != null && nativeDir != null, "nvcc or native/ not found: layout model skipped");
        Path src = work.resolve("wgmma_desc_dump.cu");
        Files.writeString(src, """
                #include <cstdio>
                #include "grouped_gemm_wgmma.cuh"
                using namespace moe_wg;
                int main() {
                    const uint32_t stage = %d;
                    printf("const BK %%d\\nconst A_BYTES %%d\\nconst B_BYTES %%d\\nconst BOX_BYTES %%d\\nconst STAGE_BYTES %%d\\n",
                           BK, A_BYTES, B_BYTES, BOX_BYTES, STAGE_BYTES);
                    for (int kk = 0; kk < BK / 16; ++kk) {
                        for (int c = 0; c < 2; ++c) {
                            printf("A_K_%%d_%%d %%llu\\n", c, kk, (unsigned long long)desc_a<false>(stage, c, kk));
                            printf("A_MN_%%d_%%d %%llu\\n", c, kk, (unsigned long long)desc_a<true>(stage, c, kk));
                            printf("B_K_%%d_%%d %%llu\\n", c, kk, (unsigned long long)desc_b<false>(stage, c, kk));
                            printf("B_MN_%%d_%%d %%llu\\n", c, kk, (unsigned long long)desc_b<true>(stage, c, kk));
                        }
                    }
                    return 0;
                }
                """.formatted(STAGE));
        Path exe = work.resolve("wgmma_desc_dump");
        KernelStaticCheckTest.run(List.of(nvcc.toString(), "-std=c++17", "-I", nativeDir.toString(), "-o", exe.toString(),
                src.toString()));
        String out = KernelStaticCheckTest.run(List.of(exe.toString()));
        for (String line : out.split("\\R")) {
            String[] p = line.trim().split("\\s+");
            if (p.length == 3 && p[0].equals("const")) {
                consts.put(p[1], Integer.parseInt(p[2]));
            } else if (p.length == 2) {
                desc.put(p[0], Long.parseUnsignedLong(p[1]));
            }
        }
        assertEquals(BK, consts.get("BK"), "the model assumes BK = 64");
    }

    /** Shared memory image, one int (an element tag) per 2-byte bf16 slot; -1 = never written. */
    static final class Smem {
        final int[] slots = new int[(STAGE + 2 * 32768) / 2];

        Smem() {
            java.util.Arrays.fill(slots, -1);
        }

        static int swizzle(int addr) {
            return addr ^ (((addr >> 7) & 7) << 4);
        }

        /** A bulk tensor copy of a box of 64 inner elements x rows outer, tag(inner, outer), to {@code base}. */
        void box(int base, int rows, java.util.function.IntBinaryOperator tag) {
            assertEquals(0, base % 1024, "boxes start 1024-byte aligned");
            for (int j = 0; j < rows; j++) {
                for (int i = 0; i < 64; i++) {
                    slots[swizzle(base + j * 128 + i * 2) / 2] = tag.applyAsInt(i, j);
                }
            }
        }

        /** The element wgmma reads at (mn, k) of a 16-deep operand through descriptor d. */
        int read(long d, boolean mnMajor, int mn, int k) {
            assertEquals(1L, d >>> 62, "128-byte swizzle");
            int start = (int) (d & 0x3FFF) << 4;
            int lbo = (int) ((d >>> 16) & 0x3FFF) << 4;
            int sbo = (int) ((d >>> 32) & 0x3FFF) << 4;
            int addr = mnMajor
                    ? start + (mn % 64) * 2 + (mn / 64) * lbo + (k % 8) * 128 + (k / 8) * sbo
                    : start + (mn % 8) * 128 + (mn / 8) * sbo + k * 2;
            return slots[swizzle(addr) / 2];
        }
    }

    /** Tags: operand id in the top bits, then row and column of the global operand (k is one of them). */
    static int tag(int operand, int row, int col) {
        return (operand << 24) | (row << 12) | col;
    }

    private static void check(String what, Smem s, String descKey, boolean mnMajor, int mnExtent,
            java.util.function.IntBinaryOperator expected) {
        for (int kk = 0; kk < BK / 16; kk++) {
            long d = desc.get(descKey.replace("#", Integer.toString(kk)));
            for (int mn = 0; mn < mnExtent; mn++) {
                for (int k = 0; k < 16; k++) {
                    int want = expected.applyAsInt(mn, 16 * kk + k);
                    int got = s.read(d, mnMajor, mn, k);
                    if (got != want) {
                        throw new AssertionError(what + " k16 step " + kk + ": element (mn " + mn + ", k " + k + ") reads tag 0x"
                                + Integer.toHexString(got) + ", expected 0x" + Integer.toHexString(want));
                    }
                }
            }
        }
    }

    @Test
    void forwardOperandsAreKMajorAndReadBack() {
        // A box {64 k, 128 rows} at the stage, B box {64 k, 128 n} after A: tag(op, row, k)
        Smem s = new Smem();
        s.box(STAGE, 128, (i, j) -> tag(1, j, i));
        s.box(STAGE + consts.get("A_BYTES"), 128, (i, j) -> tag(2, j, i));
        for (int c = 0; c < 2; c++) {
            int cw = c;
            check("fwd A consumer " + cw, s, "A_K_" + cw + "_#", false, 64, (m, k) -> tag(1, cw * 64 + m, k));
        }
        check("fwd B", s, "B_K_0_#", false, 128, (n, k) -> tag(2, n, k));
    }

    @Test
    void fusedSwigluReadsTwoSixtyFourRowWeightTiles() {
        Smem s = new Smem();
        s.box(STAGE, 128, (i, j) -> tag(1, j, i));
        s.box(STAGE + consts.get("A_BYTES"), 64, (i, j) -> tag(2, j, i));                          // W1 rows n0..
        s.box(STAGE + consts.get("A_BYTES") + consts.get("B_BYTES") / 2, 64, (i, j) -> tag(3, j, i)); // W3 rows n0..
        check("swiglu W1", s, "B_K_0_#", false, 64, (n, k) -> tag(2, n, k));
        check("swiglu W3", s, "B_K_1_#", false, 64, (n, k) -> tag(3, n, k));
    }

    @Test
    void dxWeightsAreMnMajorBoxesOfSixtyFourColumns() {
        // B [K][N] of one expert: two boxes {64 n, 64 k} for n0 and n0 + 64, tag(op, k, n)
        Smem s = new Smem();
        int box = consts.get("BOX_BYTES");
        s.box(STAGE, 128, (i, j) -> tag(1, j, i));
        for (int h = 0; h < 2; h++) {
            int half = h;
            s.box(STAGE + consts.get("A_BYTES") + half * box, 64, (i, j) -> tag(2, j, half * 64 + i));
        }
        check("dx A consumer 1", s, "A_K_1_#", false, 64, (m, k) -> tag(1, 64 + m, k));
        check("dx B", s, "B_MN_0_#", true, 128, (n, k) -> tag(2, k, n));
    }

    @Test
    void weightGradientOperandsAreMnMajorPerConsumer() {
        // A [rows][M]: boxes {64 m, 64 r} for m0 and m0 + 64; B [rows][N]: the same for n; tag(op, r, col)
        Smem s = new Smem();
        int box = consts.get("BOX_BYTES");
        for (int h = 0; h < 2; h++) {
            int half = h;
            s.box(STAGE + half * box, 64, (i, j) -> tag(1, j, half * 64 + i));
            s.box(STAGE + consts.get("A_BYTES") + half * box, 64, (i, j) -> tag(2, j, half * 64 + i));
        }
        for (int c = 0; c < 2; c++) {
            int cw = c;
            check("wgrad A consumer " + cw, s, "A_MN_" + cw + "_#", true, 64, (m, r) -> tag(1, r, cw * 64 + m));
        }
        check("wgrad B", s, "B_MN_0_#", true, 128, (n, r) -> tag(2, r, n));
    }

    @Test
    void stageGeometryMatchesTheLauncher() {
        // CudaExpertKernels.SMEM_WGMMA = 4 stages of STAGE_BYTES + 1024 bytes of alignment slack
        assertEquals(32768, consts.get("STAGE_BYTES"));
        assertEquals(16384, consts.get("A_BYTES"));
        assertEquals(2 * consts.get("BOX_BYTES"), consts.get("A_BYTES"), "A holds two 64-wide boxes (one per consumer)");
    }
}
