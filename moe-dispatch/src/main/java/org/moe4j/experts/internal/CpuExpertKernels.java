package org.moe4j.experts.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.core.cpu.VectorMath;
import org.moe4j.experts.ExpertKernels;

/**
 * CPU implementation of {@link ExpertKernels}: a packed, cache-blocked, register-blocked GEMM on the
 * Vector API, run over output tiles with {@link CpuParallel}.
 *
 * <p>Structure (the classic Goto/BLIS scheme): the output of every group is cut into column tiles
 * of {@code NC = 2 × NR} columns covering all of the group's rows, one task each (so each output
 * element has exactly one owner; tasks run largest first). A task walks the inner dimension in blocks
 * of {@value #KC}; per block it packs the B block once into panel-major {@code NR}-column
 * micro-panels ({@code [panel][k][NR]}, zero padded; read row-major or, for
 * {@link #groupedMatmulTransposedB}, column by column from a {@code [N, K]} weight), then for every
 * {@value #MC}-row block packs A (bulk row copies in A's own memory order) and runs a
 * {@value #MR}×{@code NR} micro-kernel ({@code NR = 4 × species length}) that keeps 24 accumulators
 * in vector registers. The first block of an overwriting GEMM stores its sums, later blocks add
 * theirs, so no zero fill is needed. bf16 operands are widened and F32 operands rounded to bf16 (when
 * asked) while packing. The reduction order over the inner dimension is fixed: ascending within a
 * block, blocks in ascending order. Nothing depends on the thread count.
 */
public final class CpuExpertKernels implements ExpertKernels {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final int L = S.length();
    private static final VectorSpecies<Short> SS = VectorSpecies.of(short.class, VectorShape.forBitSize(L * 16));
    private static final VectorSpecies<Integer> IS = S.withLanes(int.class);
    /** Rows of the micro-kernel. */
    static final int MR = 6;
    /** Vectors per micro-kernel row. */
    static final int NV = 4;
    /** Columns of the micro-kernel. */
    static final int NR = NV * L;
    /** Inner-dimension block (A micro-panel {@code MR × KC} stays in L1, the packed B block in L2). */
    static final int KC = 512;
    /** Rows per packed A block (multiple of MR). */
    static final int MC = 96;
    /** Output columns per task (multiple of NR). */
    static final int NC = 2 * NR;
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
        final float[] row = new float[KC];
        final float[] tile = new float[MR * NR];
        final int[] strides = new int[2];
        /** Partial sums of the token-block tree, one {@code MC × NC} tile per level (grown on demand). */
        float[][] levels = new float[0][];

        float[] level(int i) {
            if (i >= levels.length) {
                levels = java.util.Arrays.copyOf(levels, i + 1);
            }
            if (levels[i] == null) {
                levels[i] = new float[MC * NC];
            }
            return levels[i];
        }
    }

    /** One plain GEMM {@code C[m,n] (+)= Σ_k A(m,k)·B(k,n)} over host memory (element indices). */
    private record Gemm(int m, int n, int k,
                        MemorySegment a, boolean aBf16, long aBase, long aSi, long aSk,
                        MemorySegment b, boolean bBf16, long bBase, long ldb, boolean bTransposed,
                        MemorySegment c, long cBase, long ldc) {
    }

    // ---------------------------------------------------------------- public kernels

    @Override
    public void groupedMatmul(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        groupedMatmul("groupedMatmul", a, b, groupOffsets, out, spec, false);
    }

    @Override
    public boolean supportsTransposedB() {
        return true;
    }

    @Override
    public void groupedMatmulTransposedB(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        groupedMatmul("groupedMatmulTransposedB", a, b, groupOffsets, out, spec, true);
    }

    /** Shared body of the two forward grouped GEMMs; b is {@code [groups, k, n]} or, transposed, {@code [groups, n, k]}. */
    private void groupedMatmul(String op, Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec,
                               boolean transposedB) {
        HostBuffer ha = floating("a", a, 2);
        HostBuffer hb = floating("b", b, 3);
        HostBuffer ho = f32("out", out, 2);
        int rows = dim(ha, 0);
        int k = dim(ha, 1);
        int groups = dim(hb, 0);
        int kDim = transposedB ? 2 : 1;
        int n = dim(hb, transposedB ? 1 : 2);
        if (dim(hb, kDim) != k) {
            throw new IllegalArgumentException(op + ": a is " + ha.shape() + " but b is " + hb.shape()
                    + " (inner dimensions " + k + " != " + dim(hb, kDim) + ")");
        }
        ho.shape().require(op + " out", rows, n);
        int[] off = offsets(groupOffsets, groups, rows);
        Gemm[] gemms = new Gemm[groups];
        for (int g = 0; g < groups; g++) {
            int m = off[g + 1] - off[g];
            gemms[g] = new Gemm(m, n, k,
                    ha.segment(), ha.dtype() == DType.BF16, (long) off[g] * k, k, 1,
                    hb.segment(), hb.dtype() == DType.BF16, (long) g * k * n, transposedB ? k : n, transposedB,
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
        Gemm[] gemms = weightGradGemms(ha, hb, ho, off, m, n);
        run(gemms, spec);
    }

    /**
     * One {@code out[g] = a[rows of g]ᵀ · b[rows of g]} GEMM per group {@code g} of {@code off}
     * ({@code a} is {@code [rows, m]}, {@code b} is {@code [rows, n]}, {@code out} is {@code [groups, m, n]}).
     */
    private static Gemm[] weightGradGemms(HostBuffer ha, HostBuffer hb, HostBuffer ho, int[] off, int m, int n) {
        Gemm[] gemms = new Gemm[off.length - 1];
        for (int g = 0; g < gemms.length; g++) {
            int kk = off[g + 1] - off[g];
            gemms[g] = new Gemm(m, n, kk,
                    ha.segment(), ha.dtype() == DType.BF16, (long) off[g] * m, 1, m,
                    hb.segment(), hb.dtype() == DType.BF16, (long) off[g] * n, n, false,
                    ho.segment(), (long) g * m * n, n);
        }
        return gemms;
    }

    @Override
    public boolean supportsTokenBlockTree() {
        return true;
    }

    @Override
    public void groupedWeightGradTree(Buffer a, Buffer b, Buffer segmentOffsets, int blockRows, Buffer out,
            GemmSpec spec) {
        HostBuffer ha = floating("a", a, 2);
        HostBuffer hb = floating("b", b, 2);
        HostBuffer ho = f32("out", out, 3);
        if (blockRows < 1 || blockRows > KC) {
            throw new IllegalArgumentException("groupedWeightGradTree: blockRows=" + blockRows + " must be in [1, " + KC
                    + "]");
        }
        int rows = dim(ha, 0);
        int m = dim(ha, 1);
        int n = dim(hb, 1);
        if (dim(hb, 0) != rows) {
            throw new IllegalArgumentException("groupedWeightGradTree: a has " + rows + " rows but b has " + dim(hb, 0));
        }
        int segments = dim(ho, 0);
        ho.shape().require("groupedWeightGradTree out", segments, m, n);
        int[] off = offsets(segmentOffsets, segments, rows);
        Gemm[] gemms = weightGradGemms(ha, hb, ho, off, m, n);
        boolean accumulate = spec.accumulate();
        boolean round = spec.bf16Operands();
        int tiles = 0;
        for (Gemm g : gemms) {
            tiles += blocks(g.n, NC);
        }
        int[] taskGemm = new int[tiles];
        int[] taskN0 = new int[tiles];
        int t = 0;
        for (int gi = 0; gi < segments; gi++) {
            for (int n0 = 0; n0 < gemms[gi].n; n0 += NC) {
                taskGemm[t] = gi;
                taskN0[t++] = n0;
            }
        }
        parallel.forEachChunk(tiles, 1, (chunk, from, to) -> {
            Scratch sc = SCRATCH.get();
            for (int i = from; i < to; i++) {
                treeBlock(gemms[taskGemm[i]], taskN0[i], blockRows, accumulate, round, sc);
            }
        });
    }

    @Override
    public void combineTreeNodes(Buffer nodes, int[] plan, Buffer out, boolean accumulate) {
        HostBuffer hn = f32("nodes", nodes, -1);
        HostBuffer ho = f32("out", out, -1);
        java.util.Objects.requireNonNull(plan, "plan");
        if (hn.shape().rank() < 1) {
            throw new IllegalArgumentException("combineTreeNodes: nodes must have a leading node dimension, got "
                    + hn.shape());
        }
        int count = dim(hn, 0);
        long rowLong = count == 0 ? 0 : hn.numel() / count;
        if (count == 0 || rowLong != ho.numel()) {
            throw new IllegalArgumentException("combineTreeNodes: nodes " + hn.shape() + " do not hold rows of "
                    + ho.numel() + " elements (out " + ho.shape() + ")");
        }
        if (plan.length % 2 != 1) {
            throw new IllegalArgumentException("combineTreeNodes: plan length " + plan.length
                    + " must be odd (pairs, then the root)");
        }
        for (int i = 0; i < plan.length; i++) {
            if (plan[i] < 0 || plan[i] >= count) {
                throw new IllegalArgumentException("combineTreeNodes: plan[" + i + "]=" + plan[i] + " is not a row of "
                        + count + " nodes");
            }
        }
        int row = Math.toIntExact(rowLong);
        MemorySegment ns = hn.segment();
        MemorySegment os = ho.segment();
        int root = plan[plan.length - 1];
        parallel.forEachChunk(row, ELEMENTWISE_CHUNK, (chunk, from, to) -> {
            for (int p = 0; p + 1 < plan.length; p += 2) {
                long dst = (long) plan[p] * row;
                long src = (long) plan[p + 1] * row;
                for (int i = from; i < to; i += L) {
                    VectorMask<Float> msk = S.indexInRange(i, to);
                    FloatVector.fromMemorySegment(S, ns, (dst + i) * 4, LE, msk)
                            .add(FloatVector.fromMemorySegment(S, ns, (src + i) * 4, LE, msk))
                            .intoMemorySegment(ns, (dst + i) * 4, LE, msk);
                }
            }
            long r = (long) root * row;
            for (int i = from; i < to; i += L) {
                VectorMask<Float> msk = S.indexInRange(i, to);
                FloatVector v = FloatVector.fromMemorySegment(S, ns, (r + i) * 4, LE, msk);
                if (accumulate) {
                    v = FloatVector.fromMemorySegment(S, os, (long) i * 4, LE, msk).add(v);
                }
                v.intoMemorySegment(os, (long) i * 4, LE, msk);
            }
        });
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
                FloatVector sig = one.div(one.add(VectorMath.exp(h.neg()))); // not lanewise(EXP): JIT-dependent bits
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
                FloatVector sig = one.div(one.add(VectorMath.exp(h.neg()))); // not lanewise(EXP): JIT-dependent bits
                FloatVector silu = h.mul(sig);
                // silu'(h) = σ(h)·(1 + h·(1 − σ(h)))
                FloatVector dsilu = sig.mul(one.add(h.mul(one.sub(sig))));
                dy.mul(v).mul(dsilu).intoMemorySegment(dgs, byteOff, LE, m);
                dy.mul(silu).intoMemorySegment(dus, byteOff, LE, m);
            }
        });
    }

    // ---------------------------------------------------------------- model-family variants

    @Override
    public boolean supportsLayerFeatures() {
        return true;
    }

    private static void clampParams(float limit, float alpha) {
        if (!(limit > 0) || Float.isInfinite(limit) || !(alpha > 0) || Float.isInfinite(alpha)) {
            throw new IllegalArgumentException("clamped SwiGLU: limit=" + limit + " and alpha=" + alpha
                    + " must be finite and > 0");
        }
    }

    private static float sigmoid(float v) {
        return (float) (1.0 / (1.0 + Math.exp(-v)));
    }

    @Override
    public void clampedSwigluForward(Buffer gate, Buffer up, Buffer out, float limit, float alpha) {
        clampParams(limit, alpha);
        HostBuffer g = f32("gate", gate, -1);
        HostBuffer u = f32("up", up, -1);
        HostBuffer o = f32("out", out, -1);
        sameShape("up", u, g);
        sameShape("out", o, g);
        MemorySegment gs = g.segment();
        MemorySegment us = u.segment();
        MemorySegment os = o.segment();
        int n = Math.toIntExact(g.numel());
        parallel.forEachChunk(n, ELEMENTWISE_CHUNK, (chunk, from, to) -> {
            for (int i = from; i < to; i++) {
                float gc = Math.min(gs.getAtIndex(F32, i), limit);
                float uc = Math.max(-limit, Math.min(us.getAtIndex(F32, i), limit));
                os.setAtIndex(F32, i, (uc + 1f) * (gc * sigmoid(alpha * gc)));
            }
        });
    }

    @Override
    public void clampedSwigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp, float limit,
                                      float alpha) {
        clampParams(limit, alpha);
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
        parallel.forEachChunk(n, ELEMENTWISE_CHUNK, (chunk, from, to) -> {
            for (int i = from; i < to; i++) {
                float gv = gs.getAtIndex(F32, i);
                float uv = us.getAtIndex(F32, i);
                float dy = ds.getAtIndex(F32, i);
                float gc = Math.min(gv, limit);
                float uc = Math.max(-limit, Math.min(uv, limit));
                float sig = sigmoid(alpha * gc);
                float glu = gc * sig;
                float dGlu = dy * (uc + 1f);
                float dgc = dGlu * (sig + alpha * gc * sig * (1f - sig));
                dgs.setAtIndex(F32, i, gv <= limit ? dgc : 0f);
                dus.setAtIndex(F32, i, uv >= -limit && uv <= limit ? dy * glu : 0f);
            }
        });
    }

    private static HostBuffer biasOf(String name, Buffer bias, int groups, int n) {
        HostBuffer b = f32(name, bias, -1);
        if (b.shape().rank() > 2 || b.numel() != (long) groups * n) {
            throw new IllegalArgumentException(name + ": expected " + groups + " x " + n + " elements ([groups, N]) but got "
                    + b.shape());
        }
        return b;
    }

    @Override
    public void addGroupBias(Buffer out, Buffer bias, Buffer groupOffsets) {
        HostBuffer o = f32("out", out, 2);
        int rows = dim(o, 0);
        int n = dim(o, 1);
        int groups = Math.toIntExact(host("groupOffsets", groupOffsets).numel()) - 1;
        int[] off = offsets(groupOffsets, groups, rows);
        HostBuffer b = biasOf("bias", bias, groups, n);
        MemorySegment os = o.segment();
        MemorySegment bs = b.segment();
        parallel.forEachChunk(rows, 64, (chunk, from, to) -> {
            int g = 0;
            for (int r = from; r < to; r++) {
                while (g < groups && r >= off[g + 1]) {
                    g++;
                }
                if (g == groups || r < off[g]) {
                    continue; // outside every group
                }
                long ro = (long) r * n;
                long bo = (long) g * n;
                for (int c = 0; c < n; c++) {
                    os.setAtIndex(F32, ro + c, os.getAtIndex(F32, ro + c) + bs.getAtIndex(F32, bo + c));
                }
            }
        });
    }

    @Override
    public void groupBiasGrad(Buffer dOut, Buffer groupOffsets, Buffer dBias) {
        HostBuffer d = f32("dOut", dOut, 2);
        int rows = dim(d, 0);
        int n = dim(d, 1);
        int groups = Math.toIntExact(host("groupOffsets", groupOffsets).numel()) - 1;
        int[] off = offsets(groupOffsets, groups, rows);
        HostBuffer b = biasOf("dBias", dBias, groups, n);
        MemorySegment ds = d.segment();
        MemorySegment bs = b.segment();
        // one task per (group, column block): rows summed in ascending order
        int colBlock = 256;
        int colBlocks = (n + colBlock - 1) / colBlock;
        parallel.forEachChunk(groups * colBlocks, 1, (chunk, from, to) -> {
            for (int task = from; task < to; task++) {
                int g = task / colBlocks;
                int c0 = (task % colBlocks) * colBlock;
                int c1 = Math.min(n, c0 + colBlock);
                for (int c = c0; c < c1; c++) {
                    float acc = bs.getAtIndex(F32, (long) g * n + c);
                    for (int r = off[g]; r < off[g + 1]; r++) {
                        acc += ds.getAtIndex(F32, (long) r * n + c);
                    }
                    bs.setAtIndex(F32, (long) g * n + c, acc);
                }
            }
        });
    }

    private static HostBuffer rowsOf(String name, Buffer scale, int rows) {
        HostBuffer h = f32(name, scale, -1);
        if (h.shape().rank() > 2 || h.numel() != rows) {
            throw new IllegalArgumentException(name + ": expected " + rows + " elements ([rows] or [rows, 1]) but got "
                    + h.shape());
        }
        return h;
    }

    @Override
    public void rowScaleForward(Buffer scale, boolean sigmoid, Buffer x, Buffer out, boolean accumulate) {
        HostBuffer xh = f32("x", x, 2);
        HostBuffer o = f32("out", out, 2);
        sameShape("out", o, xh);
        int rows = dim(xh, 0);
        int n = dim(xh, 1);
        HostBuffer s = rowsOf("scale", scale, rows);
        MemorySegment xs = xh.segment();
        MemorySegment os = o.segment();
        MemorySegment ss = s.segment();
        parallel.forEachChunk(rows, 64, (chunk, from, to) -> {
            for (int r = from; r < to; r++) {
                float f = ss.getAtIndex(F32, r);
                if (sigmoid) {
                    f = sigmoid(f);
                }
                long ro = (long) r * n;
                for (int c = 0; c < n; c++) {
                    float v = f * xs.getAtIndex(F32, ro + c);
                    os.setAtIndex(F32, ro + c, accumulate ? os.getAtIndex(F32, ro + c) + v : v);
                }
            }
        });
    }

    @Override
    public void rowScaleBackward(Buffer scale, boolean sigmoid, Buffer x, Buffer dOut, Buffer dX, Buffer dScale) {
        HostBuffer xh = f32("x", x, 2);
        HostBuffer d = f32("dOut", dOut, 2);
        HostBuffer dx = f32("dX", dX, 2);
        sameShape("dOut", d, xh);
        sameShape("dX", dx, xh);
        int rows = dim(xh, 0);
        int n = dim(xh, 1);
        HostBuffer s = rowsOf("scale", scale, rows);
        HostBuffer ds = rowsOf("dScale", dScale, rows);
        MemorySegment xs = xh.segment();
        MemorySegment dys = d.segment();
        MemorySegment dxs = dx.segment();
        MemorySegment ss = s.segment();
        MemorySegment dss = ds.segment();
        parallel.forEachChunk(rows, 64, (chunk, from, to) -> {
            for (int r = from; r < to; r++) {
                float raw = ss.getAtIndex(F32, r);
                float f = sigmoid ? sigmoid(raw) : raw;
                float df = sigmoid ? f * (1f - f) : 1f;
                long ro = (long) r * n;
                float dot = 0f;
                for (int c = 0; c < n; c++) {
                    float dy = dys.getAtIndex(F32, ro + c);
                    dot += dy * xs.getAtIndex(F32, ro + c);
                    dxs.setAtIndex(F32, ro + c, f * dy);
                }
                dss.setAtIndex(F32, r, df * dot);
            }
        });
    }

    private static int slots(HostBuffer x, HostBuffer expanded) {
        int tokens = dim(x, 0);
        int rows = dim(expanded, 0);
        if (dim(expanded, 1) != dim(x, 1) || tokens == 0 && rows != 0 || tokens > 0 && (rows % tokens != 0 || rows == 0)) {
            throw new IllegalArgumentException("slot rows: " + expanded.shape() + " is not [tokens·K, " + dim(x, 1)
                    + "] for " + x.shape());
        }
        return tokens == 0 ? 1 : rows / tokens;
    }

    @Override
    public void scaleExpand(Buffer x, Buffer w, Buffer out) {
        HostBuffer xh = f32("x", x, 2);
        HostBuffer o = f32("out", out, 2);
        int k = slots(xh, o);
        int tokens = dim(xh, 0);
        int n = dim(xh, 1);
        HostBuffer wh = rowsOf("w", w, tokens * k);
        MemorySegment xs = xh.segment();
        MemorySegment os = o.segment();
        MemorySegment ws = wh.segment();
        parallel.forEachChunk(tokens, 64, (chunk, from, to) -> {
            for (int t = from; t < to; t++) {
                for (int j = 0; j < k; j++) {
                    float f = ws.getAtIndex(F32, (long) t * k + j);
                    long ro = ((long) t * k + j) * n;
                    for (int c = 0; c < n; c++) {
                        os.setAtIndex(F32, ro + c, f * xs.getAtIndex(F32, (long) t * n + c));
                    }
                }
            }
        });
    }

    @Override
    public void scaleExpandBackward(Buffer x, Buffer w, Buffer dOut, Buffer dX, Buffer dW) {
        HostBuffer xh = f32("x", x, 2);
        HostBuffer d = f32("dOut", dOut, 2);
        HostBuffer dx = f32("dX", dX, 2);
        sameShape("dX", dx, xh);
        int k = slots(xh, d);
        int tokens = dim(xh, 0);
        int n = dim(xh, 1);
        HostBuffer wh = rowsOf("w", w, tokens * k);
        HostBuffer dwh = rowsOf("dW", dW, tokens * k);
        MemorySegment xs = xh.segment();
        MemorySegment ds = d.segment();
        MemorySegment dxs = dx.segment();
        MemorySegment ws = wh.segment();
        MemorySegment dws = dwh.segment();
        parallel.forEachChunk(tokens, 64, (chunk, from, to) -> {
            for (int t = from; t < to; t++) {
                long xo = (long) t * n;
                for (int c = 0; c < n; c++) {
                    float acc = 0f;
                    for (int j = 0; j < k; j++) {
                        acc += ws.getAtIndex(F32, (long) t * k + j) * ds.getAtIndex(F32, ((long) t * k + j) * n + c);
                    }
                    dxs.setAtIndex(F32, xo + c, acc);
                }
                for (int j = 0; j < k; j++) {
                    long ro = ((long) t * k + j) * n;
                    float dot = 0f;
                    for (int c = 0; c < n; c++) {
                        dot += ds.getAtIndex(F32, ro + c) * xs.getAtIndex(F32, xo + c);
                    }
                    dws.setAtIndex(F32, (long) t * k + j, dot);
                }
            }
        });
    }

    @Override
    public void sumSlots(Buffer y, int topK, Buffer out) {
        HostBuffer yh = f32("y", y, 2);
        HostBuffer o = f32("out", out, 2);
        if (topK < 1 || dim(o, 1) != dim(yh, 1) || (long) dim(o, 0) * topK != dim(yh, 0)) {
            throw new IllegalArgumentException("sumSlots: y " + yh.shape() + " is not [tokens·" + topK + ", N] for out "
                    + o.shape());
        }
        int tokens = dim(o, 0);
        int n = dim(o, 1);
        MemorySegment ys = yh.segment();
        MemorySegment os = o.segment();
        parallel.forEachChunk(tokens, 64, (chunk, from, to) -> {
            for (int t = from; t < to; t++) {
                for (int c = 0; c < n; c++) {
                    float acc = 0f;
                    for (int j = 0; j < topK; j++) {
                        acc += ys.getAtIndex(F32, ((long) t * topK + j) * n + c);
                    }
                    os.setAtIndex(F32, (long) t * n + c, acc);
                }
            }
        });
    }

    // ---------------------------------------------------------------- GEMM driver

    private void run(Gemm[] gemms, GemmSpec spec) {
        int tasks = 0;
        for (Gemm g : gemms) {
            if (g.m > 0) {
                tasks += blocks(g.n, NC);
            }
        }
        int[] taskGemm = new int[tasks];
        int[] taskN0 = new int[tasks];
        long[] work = new long[tasks];
        Integer[] order = new Integer[tasks];
        int t = 0;
        for (int gi = 0; gi < gemms.length; gi++) {
            Gemm g = gemms[gi];
            if (g.m == 0) {
                continue;
            }
            for (int n0 = 0; n0 < g.n; n0 += NC) {
                taskGemm[t] = gi;
                taskN0[t] = n0;
                work[t] = (long) g.m * Math.max(1, g.k) * Math.min(NC, g.n - n0);
                order[t] = t;
                t++;
            }
        }
        // Largest tasks first (better balance at the end). The order does not affect results: every output
        // element belongs to exactly one task.
        java.util.Arrays.sort(order, (x, y) -> Long.compare(work[y], work[x]));
        boolean accumulate = spec.accumulate();
        boolean round = spec.bf16Operands();
        parallel.forEachChunk(tasks, 1, (chunk, from, to) -> {
            Scratch sc = SCRATCH.get();
            for (int i = from; i < to; i++) {
                int task = order[i];
                block(gemms[taskGemm[task]], taskN0[task], accumulate, round, sc);
            }
        });
    }

    private static int blocks(int n, int b) {
        return (n + b - 1) / b;
    }

    /**
     * One task: the output columns {@code [n0, n0 + NC)} of every row of one GEMM. Per inner block the
     * B block is packed once and reused for all rows; A is packed per {@value #MC}-row block.
     */
    private static void block(Gemm g, int n0, boolean accumulate, boolean round, Scratch sc) {
        int nc = Math.min(NC, g.n - n0);
        if (g.k == 0) {
            if (!accumulate) {
                for (int i = 0; i < g.m; i++) {
                    long row = (g.cBase + (long) i * g.ldc + n0) * 4;
                    g.c.asSlice(row, (long) nc * 4).fill((byte) 0);
                }
            }
            return;
        }
        int nPanels = blocks(nc, NR);
        for (int k0 = 0; k0 < g.k; k0 += KC) {
            int kc = Math.min(KC, g.k - k0);
            packB(g, n0, nc, k0, kc, round, sc.b, sc.row);
            boolean store = !accumulate && k0 == 0;
            for (int m0 = 0; m0 < g.m; m0 += MC) {
                int mc = Math.min(MC, g.m - m0);
                packA(g, m0, mc, k0, kc, round, sc.a, sc.strides);
                int rs = sc.strides[0];
                int ks = sc.strides[1];
                int mPanels = blocks(mc, MR);
                for (int p = 0; p < mPanels; p++) {
                    int rows = Math.min(MR, mc - p * MR);
                    long cRow = g.cBase + (long) (m0 + p * MR) * g.ldc + n0;
                    for (int q = 0; q < nPanels; q++) {
                        int cols = Math.min(NR, nc - q * NR);
                        micro(sc.a, p * MR * rs, rs, ks, sc.b, q * kc * NR, kc,
                                g.c, cRow + q * NR, g.ldc, rows, cols, store, sc.tile);
                    }
                }
            }
        }
    }

    /**
     * One task of {@link #groupedWeightGradTree}: the output columns {@code [n0, n0 + NC)} of every row
     * of one segment. Per {@value #MC}-row block the inner dimension is cut into leaves of
     * {@code blockRows}; each leaf's tile is summed from zero and pushed on a stack of per-level tiles
     * that merges like a binary counter ({@code left += right} whenever two equal-size subtrees meet);
     * the remaining levels fold from the top, which is exactly the truncated aligned tree of
     * {@link org.moe4j.experts.TokenBlockTree}.
     */
    private static void treeBlock(Gemm g, int n0, int blockRows, boolean accumulate, boolean round, Scratch sc) {
        int nc = Math.min(NC, g.n - n0);
        int leaves = blocks(g.k, blockRows);
        int nPanels = blocks(nc, NR);
        for (int m0 = 0; m0 < g.m; m0 += MC) {
            int mc = Math.min(MC, g.m - m0);
            int depth = 0;
            for (int j = 0; j < leaves; j++) {
                int k0 = j * blockRows;
                int kc = Math.min(blockRows, g.k - k0);
                float[] leaf = sc.level(depth);
                packB(g, n0, nc, k0, kc, round, sc.b, sc.row);
                packA(g, m0, mc, k0, kc, round, sc.a, sc.strides);
                int rs = sc.strides[0];
                int ks = sc.strides[1];
                int mPanels = blocks(mc, MR);
                for (int p = 0; p < mPanels; p++) {
                    int rowsP = Math.min(MR, mc - p * MR);
                    for (int q = 0; q < nPanels; q++) {
                        int cols = Math.min(NR, nc - q * NR);
                        microTile(sc.a, p * MR * rs, rs, ks, sc.b, q * kc * NR, kc, sc.tile);
                        for (int r = 0; r < rowsP; r++) {
                            System.arraycopy(sc.tile, r * NR, leaf, (p * MR + r) * NC + q * NR, cols);
                        }
                    }
                }
                depth++;
                for (int c = j + 1; (c & 1) == 0; c >>>= 1) {
                    addTile(sc.level(depth - 2), sc.level(depth - 1), mc, nc);
                    depth--;
                }
            }
            while (depth > 1) {
                addTile(sc.level(depth - 2), sc.level(depth - 1), mc, nc);
                depth--;
            }
            for (int r = 0; r < mc; r++) {
                long row = (g.cBase + (long) (m0 + r) * g.ldc + n0) * 4;
                if (depth == 0) {
                    if (!accumulate) {
                        g.c.asSlice(row, (long) nc * 4).fill((byte) 0);
                    }
                    continue;
                }
                float[] sum = sc.level(0);
                for (int j = 0; j < nc; j += L) {
                    VectorMask<Float> msk = S.indexInRange(j, nc);
                    FloatVector v = FloatVector.fromArray(S, sum, r * NC + j, msk);
                    long at = row + 4L * j;
                    if (accumulate) {
                        v = FloatVector.fromMemorySegment(S, g.c, at, LE, msk).add(v);
                    }
                    v.intoMemorySegment(g.c, at, LE, msk);
                }
            }
        }
    }

    /** {@code dst[r, :nc] += src[r, :nc]} for the first {@code mc} rows of two {@code MC × NC} tiles. */
    private static void addTile(float[] dst, float[] src, int mc, int nc) {
        for (int r = 0; r < mc; r++) {
            int o = r * NC;
            for (int j = 0; j < nc; j += L) {
                VectorMask<Float> msk = S.indexInRange(j, nc);
                FloatVector.fromArray(S, dst, o + j, msk).add(FloatVector.fromArray(S, src, o + j, msk))
                        .intoArray(dst, o + j, msk);
            }
        }
    }

    /**
     * Copies the A block into {@code ap} in the operand's own memory order, so the copy is a run of
     * bulk row copies: element {@code (i, k)} lands at {@code ap[i*kc + k]} when A is row-major in
     * k ({@code aSk == 1}), else at {@code ap[k*MC + i]}. Rows past {@code mc} are zero.
     */
    private static void packA(Gemm g, int m0, int mc, int k0, int kc, boolean round, float[] ap, int[] strides) {
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
                widenBf16(a, src, ap, dst, inner);
            } else {
                MemorySegment.copy(a, F32, src * 4, ap, dst, inner);
                if (round) {
                    roundBf16(ap, dst, inner);
                }
            }
        }
        if (rowMajor) {
            java.util.Arrays.fill(ap, mc * kc, mPad * kc, 0f);
            strides[0] = kc;
            strides[1] = 1;
        } else {
            if (mc < mPad) {
                for (int k = 0; k < kc; k++) {
                    java.util.Arrays.fill(ap, k * MC + mc, k * MC + mPad, 0f);
                }
            }
            strides[0] = 1;
            strides[1] = MC;
        }
    }

    /**
     * Packs the B block into panel-major micro-panels: element {@code (k, j)} of the block lands at
     * {@code bp[(j / NR)·kc·NR + k·NR + j % NR]}, columns past {@code nc} zero, converting bf16 and
     * rounding as asked. B is read row-major in k ({@code [K, N]}) or, when {@code bTransposed},
     * as {@code [N, K]}.
     */
    private static void packB(Gemm g, int n0, int nc, int k0, int kc, boolean round, float[] bp, float[] row) {
        MemorySegment b = g.b;
        int nPanels = blocks(nc, NR);
        if (g.bTransposed) {
            // B(k, n) at bBase + n·ldb + k: read each column n as a contiguous run, scatter into its panel.
            for (int j = 0; j < nPanels * NR; j++) {
                int q = j / NR;
                int base = q * kc * NR + (j % NR);
                if (j >= nc) {
                    for (int k = 0; k < kc; k++) {
                        bp[base + k * NR] = 0f;
                    }
                    continue;
                }
                long src = g.bBase + (long) (n0 + j) * g.ldb + k0;
                if (g.bBf16) {
                    widenBf16(b, src, row, 0, kc);
                } else {
                    MemorySegment.copy(b, F32, src * 4, row, 0, kc);
                    if (round) {
                        roundBf16(row, 0, kc);
                    }
                }
                for (int k = 0; k < kc; k++) {
                    bp[base + k * NR] = row[k];
                }
            }
            return;
        }
        for (int q = 0; q < nPanels; q++) {
            int cols = Math.min(NR, nc - q * NR);
            int dst0 = q * kc * NR;
            for (int k = 0; k < kc; k++) {
                long src = g.bBase + (long) (k0 + k) * g.ldb + n0 + q * NR;
                int dst = dst0 + k * NR;
                if (g.bBf16) {
                    widenBf16(b, src, bp, dst, cols);
                } else if (cols == NR && !round) {
                    for (int j = 0; j < NR; j += L) {
                        FloatVector.fromMemorySegment(S, b, (src + j) * 4, LE).intoArray(bp, dst + j);
                    }
                    continue;
                } else {
                    MemorySegment.copy(b, F32, src * 4, bp, dst, cols);
                    if (round) {
                        roundBf16(bp, dst, cols);
                    }
                }
                if (cols < NR) {
                    java.util.Arrays.fill(bp, dst + cols, dst + NR, 0f);
                }
            }
        }
    }

    /**
     * The 6 × 4-vector micro-kernel: {@code C[rows, cols] (+)= Ap[6, kc] · Bp[kc, NR]} with 24 vector
     * accumulators, k ascending; {@code store} overwrites C instead of adding to it.
     */
    private static void micro(float[] ap, int aOff, int rs, int ks, float[] bp, int bOff, int kc,
                              MemorySegment c, long c0, long ldc, int rows, int cols, boolean store,
                              float[] tile) {
        microTile(ap, aOff, rs, ks, bp, bOff, kc, tile);
        putTile(tile, c, c0, ldc, rows, cols, store);
    }

    /** The micro-kernel's sums {@code Ap[6, kc] · Bp[kc, NR]}, k ascending from zero, into {@code tile} (row stride NR). */
    private static void microTile(float[] ap, int aOff, int rs, int ks, float[] bp, int bOff, int kc, float[] tile) {
        FloatVector c00 = FloatVector.zero(S), c01 = c00, c02 = c00, c03 = c00;
        FloatVector c10 = c00, c11 = c00, c12 = c00, c13 = c00;
        FloatVector c20 = c00, c21 = c00, c22 = c00, c23 = c00;
        FloatVector c30 = c00, c31 = c00, c32 = c00, c33 = c00;
        FloatVector c40 = c00, c41 = c00, c42 = c00, c43 = c00;
        FloatVector c50 = c00, c51 = c00, c52 = c00, c53 = c00;
        int r1 = rs, r2 = 2 * rs, r3 = 3 * rs, r4 = 4 * rs, r5 = 5 * rs;
        for (int k = 0, bo = bOff, ao = aOff; k < kc; k++, bo += NR, ao += ks) {
            FloatVector b0 = FloatVector.fromArray(S, bp, bo);
            FloatVector b1 = FloatVector.fromArray(S, bp, bo + L);
            FloatVector b2 = FloatVector.fromArray(S, bp, bo + 2 * L);
            FloatVector b3 = FloatVector.fromArray(S, bp, bo + 3 * L);
            FloatVector x = FloatVector.broadcast(S, ap[ao]);
            c00 = x.fma(b0, c00);
            c01 = x.fma(b1, c01);
            c02 = x.fma(b2, c02);
            c03 = x.fma(b3, c03);
            x = FloatVector.broadcast(S, ap[ao + r1]);
            c10 = x.fma(b0, c10);
            c11 = x.fma(b1, c11);
            c12 = x.fma(b2, c12);
            c13 = x.fma(b3, c13);
            x = FloatVector.broadcast(S, ap[ao + r2]);
            c20 = x.fma(b0, c20);
            c21 = x.fma(b1, c21);
            c22 = x.fma(b2, c22);
            c23 = x.fma(b3, c23);
            x = FloatVector.broadcast(S, ap[ao + r3]);
            c30 = x.fma(b0, c30);
            c31 = x.fma(b1, c31);
            c32 = x.fma(b2, c32);
            c33 = x.fma(b3, c33);
            x = FloatVector.broadcast(S, ap[ao + r4]);
            c40 = x.fma(b0, c40);
            c41 = x.fma(b1, c41);
            c42 = x.fma(b2, c42);
            c43 = x.fma(b3, c43);
            x = FloatVector.broadcast(S, ap[ao + r5]);
            c50 = x.fma(b0, c50);
            c51 = x.fma(b1, c51);
            c52 = x.fma(b2, c52);
            c53 = x.fma(b3, c53);
        }
        c00.intoArray(tile, 0);
        c01.intoArray(tile, L);
        c02.intoArray(tile, 2 * L);
        c03.intoArray(tile, 3 * L);
        c10.intoArray(tile, NR);
        c11.intoArray(tile, NR + L);
        c12.intoArray(tile, NR + 2 * L);
        c13.intoArray(tile, NR + 3 * L);
        c20.intoArray(tile, 2 * NR);
        c21.intoArray(tile, 2 * NR + L);
        c22.intoArray(tile, 2 * NR + 2 * L);
        c23.intoArray(tile, 2 * NR + 3 * L);
        c30.intoArray(tile, 3 * NR);
        c31.intoArray(tile, 3 * NR + L);
        c32.intoArray(tile, 3 * NR + 2 * L);
        c33.intoArray(tile, 3 * NR + 3 * L);
        c40.intoArray(tile, 4 * NR);
        c41.intoArray(tile, 4 * NR + L);
        c42.intoArray(tile, 4 * NR + 2 * L);
        c43.intoArray(tile, 4 * NR + 3 * L);
        c50.intoArray(tile, 5 * NR);
        c51.intoArray(tile, 5 * NR + L);
        c52.intoArray(tile, 5 * NR + 2 * L);
        c53.intoArray(tile, 5 * NR + 3 * L);
    }

    /** {@code C[rows, cols] = tile} (store) or {@code C[rows, cols] += tile}; tile row stride NR. */
    private static void putTile(float[] tile, MemorySegment c, long c0, long ldc, int rows, int cols, boolean store) {
        if (cols == NR) {
            for (int r = 0; r < rows; r++) {
                long row = (c0 + r * ldc) * 4;
                for (int j = 0; j < NR; j += L) {
                    long at = row + 4L * j;
                    FloatVector v = FloatVector.fromArray(S, tile, r * NR + j);
                    if (!store) {
                        v = FloatVector.fromMemorySegment(S, c, at, LE).add(v);
                    }
                    v.intoMemorySegment(c, at, LE);
                }
            }
            return;
        }
        for (int r = 0; r < rows; r++) {
            long row = (c0 + r * ldc) * 4;
            for (int j = 0; j < cols; j += L) {
                VectorMask<Float> m = S.indexInRange(j, cols);
                long at = row + 4L * j;
                FloatVector v = FloatVector.fromArray(S, tile, r * NR + j, m);
                if (!store) {
                    v = FloatVector.fromMemorySegment(S, c, at, LE, m).add(v);
                }
                v.intoMemorySegment(c, at, LE, m);
            }
        }
    }

    // ---------------------------------------------------------------- helpers

    static float bf16(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** Widens {@code len} bf16 values at element {@code src} of {@code seg} into {@code dst[off, off+len)}, vectorised. */
    static void widenBf16(MemorySegment seg, long src, float[] dst, int off, int len) {
        int i = 0;
        for (; i <= len - L; i += L) {
            ShortVector.fromMemorySegment(SS, seg, (src + i) * 2, LE)
                    .convertShape(VectorOperators.S2I, IS, 0).reinterpretAsInts()
                    .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().intoArray(dst, off + i);
        }
        for (; i < len; i++) {
            dst[off + i] = bf16(seg.getAtIndex(I16, src + i));
        }
    }

    /**
     * Rounds {@code a[from, from+len)} to bf16 in place, exactly as {@link DType#f32ToBf16} (nearest-even,
     * NaN kept quiet), vectorised.
     */
    static void roundBf16(float[] a, int from, int len) {
        int i = 0;
        for (; i <= len - L; i += L) {
            IntVector bits = FloatVector.fromArray(S, a, from + i).reinterpretAsInts();
            IntVector lsb = bits.lanewise(VectorOperators.LSHR, 16).and(1);
            IntVector rounded = bits.add(0x7FFF).add(lsb).and(0xFFFF0000);
            IntVector nan = bits.and(0xFFFF0000).or(0x00400000);
            VectorMask<Integer> isNan = bits.and(0x7FFFFFFF).compare(VectorOperators.GT, 0x7F800000);
            rounded.blend(nan, isNan).reinterpretAsFloats().intoArray(a, from + i);
        }
        for (; i < len; i++) {
            a[from + i] = roundBf16(a[from + i]);
        }
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
