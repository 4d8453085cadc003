package org.moe4j.experts.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.experts.ExpertKernels;

/**
 * CPU implementation of {@link ExpertKernels}: a packed, cache-blocked, register-blocked GEMM on the
 * Vector API, run over output tiles with {@link CpuParallel}.
 *
 * <p>Structure (the classic Goto/BLIS scheme): the output of every group is cut into
 * {@value #MC}×{@code NC} tiles, one task each (so each output element has exactly one owner). A task
 * walks the inner dimension in blocks of {@value #KC}; per block it packs the A block into
 * {@value #MR}-row micro-panels ({@code [k][MR]}, zero padded) and the B block into {@code NR}-column
 * micro-panels ({@code [k][NR]}, {@code NR = 3 × species length}), converting bf16 and rounding as
 * asked, then runs an {@value #MR}×{@code NR} micro-kernel that keeps 18 accumulators in vector
 * registers and adds them into the output once per block. The reduction order over the inner
 * dimension is therefore fixed: ascending within a block, blocks in ascending order. Nothing
 * depends on the thread count.
 */
public final class CpuExpertKernels implements ExpertKernels {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    /** Rows of the micro-kernel. */
    static final int MR = 6;
    /** Vectors per micro-kernel row. */
    static final int NV = 3;
    /** Columns of the micro-kernel. */
    static final int NR = NV * L;
    /** Inner-dimension block (B micro-panel {@code KC × NR} stays in L1). */
    static final int KC = 128;
    /** Output rows per task (multiple of MR). */
    static final int MC = 96;
    /** Output columns per task (multiple of NR). */
    static final int NC = 8 * NR;
    private static final int ELEMENTWISE_CHUNK = 8192;

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ByteOrder LE = ByteOrder.nativeOrder();

    private static final ThreadLocal<Scratch> SCRATCH = ThreadLocal.withInitial(Scratch::new);

    private final CpuParallel parallel;

    /** Uses {@link CpuParallel#common()}. */
    public CpuExpertKernels() {
        this(CpuParallel.common());
    }

    /**
     * @param parallel the thread pool to run on
     */
    public CpuExpertKernels(CpuParallel parallel) {
        this.parallel = parallel;
    }

    /** @return micro-kernel width in floats (for logs and benchmarks) */
    public static int microKernelColumns() {
        return NR;
    }

    private static final class Scratch {
        final float[] a = new float[MC * KC + MR * KC];
        final float[] b = new float[KC * NC];
        final float[] tile = new float[MR * NR];
        final int[] strides = new int[2];
    }

    /** One plain GEMM {@code C[m,n] (+)= Σ_k A(m,k)·B(k,n)} over host memory (element indices). */
    private record Gemm(int m, int n, int k,
                        MemorySegment a, boolean aBf16, long aBase, long aSi, long aSk,
                        MemorySegment b, boolean bBf16, long bBase, long ldb,
                        MemorySegment c, long cBase, long ldc) {
    }

    // ---------------------------------------------------------------- public kernels

    @Override
    public void groupedMatmul(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        HostBuffer ha = floating("a", a, 2);
        HostBuffer hb = floating("b", b, 3);
        HostBuffer ho = f32("out", out, 2);
        int rows = dim(ha, 0);
        int k = dim(ha, 1);
        int groups = dim(hb, 0);
        int n = dim(hb, 2);
        if (dim(hb, 1) != k) {
            throw new IllegalArgumentException("groupedMatmul: a is " + ha.shape() + " but b is " + hb.shape()
                    + " (inner dimensions " + k + " != " + dim(hb, 1) + ")");
        }
        ho.shape().require("groupedMatmul out", rows, n);
        int[] off = offsets(groupOffsets, groups, rows);
        Gemm[] gemms = new Gemm[groups];
        for (int g = 0; g < groups; g++) {
            int m = off[g + 1] - off[g];
            gemms[g] = new Gemm(m, n, k,
                    ha.segment(), ha.dtype() == DType.BF16, (long) off[g] * k, k, 1,
                    hb.segment(), hb.dtype() == DType.BF16, (long) g * k * n, n,
                    ho.segment(), (long) off[g] * n, n);
        }
        run(gemms, spec);
    }

    @Override
    public void groupedWeightGrad(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        HostBuffer ha = floating("a", a, 2);
        HostBuffer hb = floating("b", b, 2);
        HostBuffer ho = f32("out", out, 3);
        int rows = dim(ha, 0);
        int m = dim(ha, 1);
        int n = dim(hb, 1);
        if (dim(hb, 0) != rows) {
            throw new IllegalArgumentException("groupedWeightGrad: a has " + rows + " rows but b has " + dim(hb, 0));
        }
        int groups = dim(ho, 0);
        ho.shape().require("groupedWeightGrad out", groups, m, n);
        int[] off = offsets(groupOffsets, groups, rows);
        Gemm[] gemms = new Gemm[groups];
        for (int g = 0; g < groups; g++) {
            int kk = off[g + 1] - off[g];
            gemms[g] = new Gemm(m, n, kk,
                    ha.segment(), ha.dtype() == DType.BF16, (long) off[g] * m, 1, m,
                    hb.segment(), hb.dtype() == DType.BF16, (long) off[g] * n, n,
                    ho.segment(), (long) g * m * n, n);
        }
        run(gemms, spec);
    }

    @Override
    public void transpose(Buffer src, Buffer dst) {
        HostBuffer hs = floating("src", src, 3);
        HostBuffer hd = floating("dst", dst, 3);
        int g = dim(hs, 0);
        int r = dim(hs, 1);
        int c = dim(hs, 2);
        hd.shape().require("transpose dst", g, c, r);
        MemorySegment s = hs.segment();
        MemorySegment d = hd.segment();
        boolean sBf = hs.dtype() == DType.BF16;
        boolean dBf = hd.dtype() == DType.BF16;
        final int t = 32;
        int rb = (r + t - 1) / t;
        int cb = (c + t - 1) / t;
        parallel.forEachChunk(g * rb, 1, (chunk, from, to) -> {
            for (int task = from; task < to; task++) {
                int gi = task / rb;
                int r0 = (task % rb) * t;
                long base = (long) gi * r * c;
                for (int cbi = 0; cbi < cb; cbi++) {
                    int c0 = cbi * t;
                    for (int i = r0; i < Math.min(r, r0 + t); i++) {
                        for (int j = c0; j < Math.min(c, c0 + t); j++) {
                            long si = base + (long) i * c + j;
                            float v = sBf ? bf16(s.getAtIndex(I16, si)) : s.getAtIndex(F32, si);
                            long di = base + (long) j * r + i;
                            if (dBf) {
                                d.setAtIndex(I16, di, DType.f32ToBf16(v));
                            } else {
                                d.setAtIndex(F32, di, v);
                            }
                        }
                    }
                }
            }
        });
    }

    @Override
    public void swigluForward(Buffer gate, Buffer up, Buffer out) {
        HostBuffer g = f32("gate", gate, -1);
        HostBuffer u = f32("up", up, -1);
        HostBuffer o = f32("out", out, -1);
        sameShape("up", u, g);
        sameShape("out", o, g);
        MemorySegment gs = g.segment();
        MemorySegment us = u.segment();
        MemorySegment os = o.segment();
        int n = Math.toIntExact(g.numel());
        FloatVector one = FloatVector.broadcast(S, 1f);
        parallel.forEachChunk(n, ELEMENTWISE_CHUNK, (chunk, from, to) -> {
            for (int i = from; i < to; i += L) {
                VectorMask<Float> m = S.indexInRange(i, to);
                long byteOff = (long) i * 4;
                FloatVector h = FloatVector.fromMemorySegment(S, gs, byteOff, LE, m);
                FloatVector v = FloatVector.fromMemorySegment(S, us, byteOff, LE, m);
                FloatVector sig = one.div(one.add(h.neg().lanewise(VectorOperators.EXP)));
                h.mul(sig).mul(v).intoMemorySegment(os, byteOff, LE, m);
            }
        });
    }

    @Override
    public void swigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp) {
        HostBuffer g = f32("gate", gate, -1);
        HostBuffer u = f32("up", up, -1);
        HostBuffer d = f32("dOut", dOut, -1);
        HostBuffer dg = f32("dGate", dGate, -1);
        HostBuffer du = f32("dUp", dUp, -1);
        sameShape("up", u, g);
        sameShape("dOut", d, g);
        sameShape("dGate", dg, g);
        sameShape("dUp", du, g);
        MemorySegment gs = g.segment();
        MemorySegment us = u.segment();
        MemorySegment ds = d.segment();
        MemorySegment dgs = dg.segment();
        MemorySegment dus = du.segment();
        int n = Math.toIntExact(g.numel());
        FloatVector one = FloatVector.broadcast(S, 1f);
        parallel.forEachChunk(n, ELEMENTWISE_CHUNK, (chunk, from, to) -> {
            for (int i = from; i < to; i += L) {
                VectorMask<Float> m = S.indexInRange(i, to);
                long byteOff = (long) i * 4;
                FloatVector h = FloatVector.fromMemorySegment(S, gs, byteOff, LE, m);
                FloatVector v = FloatVector.fromMemorySegment(S, us, byteOff, LE, m);
                FloatVector dy = FloatVector.fromMemorySegment(S, ds, byteOff, LE, m);
                FloatVector sig = one.div(one.add(h.neg().lanewise(VectorOperators.EXP)));
                FloatVector silu = h.mul(sig);
                // silu'(h) = σ(h)·(1 + h·(1 − σ(h)))
                FloatVector dsilu = sig.mul(one.add(h.mul(one.sub(sig))));
                dy.mul(v).mul(dsilu).intoMemorySegment(dgs, byteOff, LE, m);
                dy.mul(silu).intoMemorySegment(dus, byteOff, LE, m);
            }
        });
    }

    // ---------------------------------------------------------------- GEMM driver

    private void run(Gemm[] gemms, GemmSpec spec) {
        int tasks = 0;
        for (Gemm g : gemms) {
            tasks += blocks(g.m, MC) * blocks(g.n, NC);
        }
        int[] taskGemm = new int[tasks];
        int[] taskM0 = new int[tasks];
        int[] taskN0 = new int[tasks];
        int t = 0;
        for (int gi = 0; gi < gemms.length; gi++) {
            Gemm g = gemms[gi];
            for (int m0 = 0; m0 < g.m; m0 += MC) {
                for (int n0 = 0; n0 < g.n; n0 += NC) {
                    taskGemm[t] = gi;
                    taskM0[t] = m0;
                    taskN0[t] = n0;
                    t++;
                }
            }
        }
        boolean accumulate = spec.accumulate();
        boolean round = spec.bf16Operands();
        parallel.forEachChunk(tasks, 1, (chunk, from, to) -> {
            Scratch sc = SCRATCH.get();
            for (int i = from; i < to; i++) {
                block(gemms[taskGemm[i]], taskM0[i], taskN0[i], accumulate, round, sc);
            }
        });
    }

    private static int blocks(int n, int b) {
        return (n + b - 1) / b;
    }

    private static void block(Gemm g, int m0, int n0, boolean accumulate, boolean round, Scratch sc) {
        int mc = Math.min(MC, g.m - m0);
        int nc = Math.min(NC, g.n - n0);
        if (!accumulate) {
            for (int i = 0; i < mc; i++) {
                long row = (g.cBase + (long) (m0 + i) * g.ldc + n0) * 4;
                g.c.asSlice(row, (long) nc * 4).fill((byte) 0);
            }
        }
        int mPanels = blocks(mc, MR);
        int nPanels = blocks(nc, NR);
        for (int k0 = 0; k0 < g.k; k0 += KC) {
            int kc = Math.min(KC, g.k - k0);
            packA(g, m0, mc, k0, kc, round, sc.a, sc.strides);
            int rs = sc.strides[0];
            int ks = sc.strides[1];
            int bs = packB(g, n0, nc, k0, kc, round, sc.b);
            for (int q = 0; q < nPanels; q++) {
                int cols = Math.min(NR, nc - q * NR);
                for (int p = 0; p < mPanels; p++) {
                    int rows = Math.min(MR, mc - p * MR);
                    long c0 = g.cBase + (long) (m0 + p * MR) * g.ldc + n0 + q * NR;
                    micro(sc.a, p * MR * rs, rs, ks, sc.b, q * NR, bs, kc, g.c, c0, g.ldc, rows, cols, sc.tile);
                }
            }
        }
    }

    /**
     * Copies the A block into {@code ap} in the operand's own memory order, so the copy is a run of
     * bulk row copies: element {@code (i, k)} lands at {@code ap[i*kc + k]} when A is row-major in
     * k ({@code aSk == 1}), else at {@code ap[k*MC + i]}. Rows past {@code mc} are zero.
     *
     * @return {@code {rowStride, kStride}} of the packed block
     */
    private static int packA(Gemm g, int m0, int mc, int k0, int kc, boolean round, float[] ap, int[] strides) {
        MemorySegment a = g.a;
        boolean rowMajor = g.aSk == 1;
        int outer = rowMajor ? mc : kc;
        int inner = rowMajor ? kc : mc;
        int stride = rowMajor ? kc : MC;
        int mPad = blocks(mc, MR) * MR;
        for (int o = 0; o < outer; o++) {
            long src = rowMajor ? g.aBase + (long) (m0 + o) * g.aSi + k0 : g.aBase + (long) (k0 + o) * g.aSk + m0;
            int dst = o * stride;
            if (g.aBf16) {
                for (int j = 0; j < inner; j++) {
                    ap[dst + j] = bf16(a.getAtIndex(I16, src + j));
                }
            } else {
                MemorySegment.copy(a, F32, src * 4, ap, dst, inner);
                if (round) {
                    for (int j = 0; j < inner; j++) {
                        ap[dst + j] = roundBf16(ap[dst + j]);
                    }
                }
            }
        }
        if (rowMajor) {
            java.util.Arrays.fill(ap, mc * kc, mPad * kc, 0f);
            strides[0] = kc;
            strides[1] = 1;
        } else {
            for (int k = 0; k < kc; k++) {
                java.util.Arrays.fill(ap, k * MC + mc, k * MC + mPad, 0f);
            }
            strides[0] = 1;
            strides[1] = MC;
        }
        return 0;
    }

    /**
     * Copies the B block row by row into {@code bp[k*ncPad + j]} ({@code ncPad} = {@code nc} rounded
     * up to NR, padding zero), converting bf16 and rounding as asked.
     *
     * @return {@code ncPad}, the row stride of the packed block
     */
    private static int packB(Gemm g, int n0, int nc, int k0, int kc, boolean round, float[] bp) {
        MemorySegment b = g.b;
        int ncPad = blocks(nc, NR) * NR;
        for (int k = 0; k < kc; k++) {
            long src = g.bBase + (long) (k0 + k) * g.ldb + n0;
            int dst = k * ncPad;
            if (g.bBf16) {
                for (int j = 0; j < nc; j++) {
                    bp[dst + j] = bf16(b.getAtIndex(I16, src + j));
                }
            } else {
                MemorySegment.copy(b, F32, src * 4, bp, dst, nc);
                if (round) {
                    for (int j = 0; j < nc; j++) {
                        bp[dst + j] = roundBf16(bp[dst + j]);
                    }
                }
            }
            if (nc < ncPad) {
                java.util.Arrays.fill(bp, dst + nc, dst + ncPad, 0f);
            }
        }
        return ncPad;
    }

    /**
     * The 6 × 3-vector micro-kernel: {@code C[rows, cols] += Ap[6, kc] · Bp[kc, NR]} with 18 vector
     * accumulators, k ascending.
     */
    private static void micro(float[] ap, int aOff, int rs, int ks, float[] bp, int bOff, int bs, int kc,
                              MemorySegment c, long c0, long ldc, int rows, int cols, float[] tile) {
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c02 = c00;
        FloatVector c10 = c00, c11 = c00, c12 = c00;
        FloatVector c20 = c00, c21 = c00, c22 = c00;
        FloatVector c30 = c00, c31 = c00, c32 = c00;
        FloatVector c40 = c00, c41 = c00, c42 = c00;
        FloatVector c50 = c00, c51 = c00, c52 = c00;
        for (int k = 0; k < kc; k++) {
            int bo = bOff + k * bs;
            FloatVector b0 = FloatVector.fromArray(S, bp, bo);
            FloatVector b1 = FloatVector.fromArray(S, bp, bo + L);
            FloatVector b2 = FloatVector.fromArray(S, bp, bo + 2 * L);
            int ao = aOff + k * ks;
            FloatVector x = FloatVector.broadcast(S, ap[ao]);
            c00 = x.fma(b0, c00);
            c01 = x.fma(b1, c01);
            c02 = x.fma(b2, c02);
            x = FloatVector.broadcast(S, ap[ao + rs]);
            c10 = x.fma(b0, c10);
            c11 = x.fma(b1, c11);
            c12 = x.fma(b2, c12);
            x = FloatVector.broadcast(S, ap[ao + 2 * rs]);
            c20 = x.fma(b0, c20);
            c21 = x.fma(b1, c21);
            c22 = x.fma(b2, c22);
            x = FloatVector.broadcast(S, ap[ao + 3 * rs]);
            c30 = x.fma(b0, c30);
            c31 = x.fma(b1, c31);
            c32 = x.fma(b2, c32);
            x = FloatVector.broadcast(S, ap[ao + 4 * rs]);
            c40 = x.fma(b0, c40);
            c41 = x.fma(b1, c41);
            c42 = x.fma(b2, c42);
            x = FloatVector.broadcast(S, ap[ao + 5 * rs]);
            c50 = x.fma(b0, c50);
            c51 = x.fma(b1, c51);
            c52 = x.fma(b2, c52);
        }
        c00.intoArray(tile, 0);
        c01.intoArray(tile, L);
        c02.intoArray(tile, 2 * L);
        c10.intoArray(tile, NR);
        c11.intoArray(tile, NR + L);
        c12.intoArray(tile, NR + 2 * L);
        c20.intoArray(tile, 2 * NR);
        c21.intoArray(tile, 2 * NR + L);
        c22.intoArray(tile, 2 * NR + 2 * L);
        c30.intoArray(tile, 3 * NR);
        c31.intoArray(tile, 3 * NR + L);
        c32.intoArray(tile, 3 * NR + 2 * L);
        c40.intoArray(tile, 4 * NR);
        c41.intoArray(tile, 4 * NR + L);
        c42.intoArray(tile, 4 * NR + 2 * L);
        c50.intoArray(tile, 5 * NR);
        c51.intoArray(tile, 5 * NR + L);
        c52.intoArray(tile, 5 * NR + 2 * L);
        addTile(tile, c, c0, ldc, rows, cols);
    }

    /** {@code C[rows, cols] += tile[rows, cols]} (tile row stride NR). */
    private static void addTile(float[] tile, MemorySegment c, long c0, long ldc, int rows, int cols) {
        if (cols == NR) {
            for (int r = 0; r < rows; r++) {
                long row = (c0 + r * ldc) * 4;
                for (int j = 0; j < NR; j += L) {
                    long at = row + 4L * j;
                    FloatVector.fromMemorySegment(S, c, at, LE).add(FloatVector.fromArray(S, tile, r * NR + j))
                            .intoMemorySegment(c, at, LE);
                }
            }
            return;
        }
        for (int r = 0; r < rows; r++) {
            long row = (c0 + r * ldc) * 4;
            for (int j = 0; j < cols; j += L) {
                VectorMask<Float> m = S.indexInRange(j, cols);
                long at = row + 4L * j;
                FloatVector.fromMemorySegment(S, c, at, LE, m).add(FloatVector.fromArray(S, tile, r * NR + j, m))
                        .intoMemorySegment(c, at, LE, m);
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    static float bf16(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    static float roundBf16(float v) {
        return bf16(DType.f32ToBf16(v));
    }

    private static HostBuffer host(String name, Buffer b) {
        if (b instanceof HostBuffer h) {
            return h;
        }
        throw new IllegalArgumentException(name + ": the cpu expert kernels need a HostBuffer, got "
                + b.getClass().getSimpleName() + " on " + b.device());
    }

    private static HostBuffer floating(String name, Buffer b, int rank) {
        HostBuffer h = host(name, b);
        if (h.dtype() != DType.F32 && h.dtype() != DType.BF16) {
            throw new IllegalArgumentException(name + ": expected dtype F32 or BF16 but got " + h.dtype());
        }
        if (rank >= 0 && h.shape().rank() != rank) {
            throw new IllegalArgumentException(name + ": expected rank " + rank + " but got shape " + h.shape());
        }
        return h;
    }

    private static HostBuffer f32(String name, Buffer b, int rank) {
        HostBuffer h = floating(name, b, rank);
        if (h.dtype() != DType.F32) {
            throw new IllegalArgumentException(name + ": expected dtype F32 but got " + h.dtype());
        }
        return h;
    }

    private static void sameShape(String name, HostBuffer b, HostBuffer ref) {
        if (!b.shape().equals(ref.shape())) {
            throw new IllegalArgumentException(name + ": shape " + b.shape() + " differs from gate " + ref.shape());
        }
    }

    private static int dim(HostBuffer b, int i) {
        return Math.toIntExact(b.shape().dim(i));
    }

    private static int[] offsets(Buffer groupOffsets, int groups, int rows) {
        HostBuffer h = host("groupOffsets", groupOffsets);
        h.require("groupOffsets", DType.I32, groups + 1L);
        int[] off = h.toIntArray();
        if (off[0] < 0) {
            throw new IllegalArgumentException("groupOffsets[0]=" + off[0] + " is negative");
        }
        for (int g = 0; g < groups; g++) {
            if (off[g + 1] < off[g]) {
                throw new IllegalArgumentException("groupOffsets must not decrease: groupOffsets[" + (g + 1) + "]="
                        + off[g + 1] + " < groupOffsets[" + g + "]=" + off[g]);
            }
        }
        if (off[groups] > rows) {
            throw new IllegalArgumentException("groupOffsets[" + groups + "]=" + off[groups] + " exceeds the "
                    + rows + " rows of the operand");
        }
        return off;
    }
}
