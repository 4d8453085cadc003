package org.moe4j.cuda.comm.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.core.DType;
import org.moe4j.dispatch.ReduceOp;

/**
 * The reduction every moe4j communicator promises: element-wise over ranks in rank order
 * {@code ((b0 op b1) op b2) ...}, floating types accumulated in fp32 and rounded once at the end
 * (BF16/F16), so the result is bitwise the same for every implementation and on every rank.
 * Device communicators gather the ranks' inputs and run this on the host.
 */
public final class RankOrderReduce {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED;

    private RankOrderReduce() {
    }

    /**
     * Reduces {@code ranks} consecutive blocks of {@code n} elements of {@code src} (block r is rank
     * r's contribution) into {@code dst[0, n)}.
     *
     * @param dtype element type
     * @param op    the reduction
     * @param src   {@code [ranks * n]} elements, rank-major
     * @param ranks number of blocks
     * @param n     elements per block
     * @param dst   {@code [n]} elements (may not overlap {@code src})
     * @throws IllegalArgumentException for a dtype that cannot be reduced
     */
    public static void reduce(DType dtype, ReduceOp op, MemorySegment src, int ranks, long n, MemorySegment dst) {
        boolean sum = switch (op) {
            case SUM -> true;
            case MAX -> false;
        };
        switch (dtype) {
            case F32, BF16, F16 -> {
                for (long i = 0; i < n; i++) {
                    float acc = load(dtype, src, i);
                    for (int r = 1; r < ranks; r++) {
                        float v = load(dtype, src, r * n + i);
                        acc = sum ? acc + v : Math.max(acc, v);
                    }
                    store(dtype, dst, i, acc);
                }
            }
            case I32 -> {
                for (long i = 0; i < n; i++) {
                    int acc = src.getAtIndex(I32, i);
                    for (int r = 1; r < ranks; r++) {
                        int v = src.getAtIndex(I32, r * n + i);
                        acc = sum ? acc + v : Math.max(acc, v);
                    }
                    dst.setAtIndex(I32, i, acc);
                }
            }
            case I64 -> {
                for (long i = 0; i < n; i++) {
                    long acc = src.getAtIndex(I64, i);
                    for (int r = 1; r < ranks; r++) {
                        long v = src.getAtIndex(I64, r * n + i);
                        acc = sum ? acc + v : Math.max(acc, v);
                    }
                    dst.setAtIndex(I64, i, acc);
                }
            }
        }
    }

    private static float load(DType dtype, MemorySegment s, long i) {
        return switch (dtype) {
            case F32 -> s.getAtIndex(F32, i);
            case BF16 -> DType.bf16ToF32(s.getAtIndex(U16, i));
            case F16 -> DType.f16ToF32(s.getAtIndex(U16, i));
            default -> throw new IllegalArgumentException("not a floating type: " + dtype);
        };
    }

    private static void store(DType dtype, MemorySegment s, long i, float v) {
        switch (dtype) {
            case F32 -> s.setAtIndex(F32, i, v);
            case BF16 -> s.setAtIndex(U16, i, DType.f32ToBf16(v));
            case F16 -> s.setAtIndex(U16, i, DType.f32ToF16(v));
            default -> throw new IllegalArgumentException("not a floating type: " + dtype);
        }
    }
}
