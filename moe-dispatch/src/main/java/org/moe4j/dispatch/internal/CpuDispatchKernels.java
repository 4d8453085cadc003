package org.moe4j.dispatch.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.spi.DispatchArgs;

/**
 * CPU reference of {@link DispatchKernels}: bulk {@link MemorySegment} copies for rows, the Vector
 * API for weighted sums and dot products, {@link CpuParallel} over rows. Every output row is
 * computed by one thread with a fixed operation order, so results do not depend on the thread count.
 */
public final class CpuDispatchKernels implements DispatchKernels {
    private static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    private static final ByteOrder NATIVE = ByteOrder.nativeOrder();
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    /** Target elements per parallel chunk; chunk sizes depend only on the problem, never on threads. */
    private static final int CHUNK_ELEMS = 1 << 15;

    private final CpuParallel parallel;
    private final int chunkElems;

    /** Kernels on the process-wide {@link CpuParallel#common()} pool. */
    public CpuDispatchKernels() {
        this(CpuParallel.common());
    }

    /**
     * @param parallel the thread pool to use
     */
    public CpuDispatchKernels(CpuParallel parallel) {
        this(parallel, CHUNK_ELEMS);
    }

    /**
     * @param parallel   the thread pool to use
     * @param chunkElems elements per parallel chunk (tests use small values to force many chunks)
     */
    public CpuDispatchKernels(CpuParallel parallel, int chunkElems) {
        if (chunkElems < 1) {
            throw new IllegalArgumentException("chunkElems must be >= 1, got " + chunkElems);
        }
        this.parallel = parallel;
        this.chunkElems = chunkElems;
    }

    // ---------------------------------------------------------------- plans (sequential integer work)

    @Override
    public void countRoutes(Buffer topkIdx, int experts, int world, boolean perRankDedup, Buffer routeCounts) {
        MemorySegment idx = seg(topkIdx);
        int tokens = topkIdx.shape().dimInt(0);
        int k = topkIdx.shape().dimInt(1);
        int local = experts / world;
        int[] counts = new int[world * (local + 1)];
        int[] seen = new int[world];
        Arrays.fill(seen, -1);
        for (int t = 0; t < tokens; t++) {
            for (int j = 0; j < k; j++) {
                int e = idx.getAtIndex(I32, (long) t * k + j);
                if (e == -1) {
                    continue;
                }
                if (e < 0 || e >= experts) {
                    throw new IllegalArgumentException("topkIdx[" + t + ", " + j + "] = " + e + " is outside [0, " + experts
                            + ") (use -1 for no expert)");
                }
                int d = e / local;
                counts[d * (local + 1) + e % local]++;
                if (!perRankDedup || seen[d] != t) {
                    counts[d * (local + 1) + local]++;
                    seen[d] = t;
                }
            }
        }
        MemorySegment.copy(counts, 0, seg(routeCounts), ValueLayout.JAVA_INT, 0, counts.length);
    }

    @Override
    public long firstNonFiniteWeight(Buffer topkIdx, Buffer topkWeights) {
        return DispatchArgs.firstNonFiniteWeight(seg(topkIdx), seg(topkWeights),
                Math.min(topkIdx.numel(), topkWeights.numel()));
    }

    @Override
    public void buildSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank,
            boolean perRankDedup, SendPlan plan) {
        MemorySegment idx = seg(topkIdx);
        MemorySegment w = seg(topkWeights);
        int tokens = topkIdx.shape().dimInt(0);
        int k = topkIdx.shape().dimInt(1);
        int local = experts / world;
        int width = META_FIXED + 2 * k;
        MemorySegment sendToken = seg(plan.sendToken());
        MemorySegment meta = seg(plan.sendMeta());
        // unit offsets per destination (rank-major); inside a rank: expert-major (slots) or token order (dedup)
        int[] unitStart = new int[experts + 1];
        int[] unitsPerRank = new int[world];
        int[] seen = new int[world];
        Arrays.fill(seen, -1);
        for (int t = 0; t < tokens; t++) {
            for (int j = 0; j < k; j++) {
                int e = idx.getAtIndex(I32, (long) t * k + j);
                if (e < 0) {
                    continue;
                }
                int d = e / local;
                if (perRankDedup) {
                    if (seen[d] != t) {
                        unitsPerRank[d]++;
                        seen[d] = t;
                    }
                } else {
                    unitStart[e + 1]++;
                }
            }
        }
        int units;
        int[] cursor;
        if (perRankDedup) {
            cursor = new int[world];
            int acc = 0;
            for (int d = 0; d < world; d++) {
                cursor[d] = acc;
                acc += unitsPerRank[d];
            }
            units = acc;
        } else {
            for (int e = 0; e < experts; e++) {
                unitStart[e + 1] += unitStart[e];
            }
            units = unitStart[experts];
            cursor = Arrays.copyOf(unitStart, experts);
        }
        requireRows("plan.sendToken", plan.sendToken(), units);
        requireRows("plan.sendMeta", plan.sendMeta(), units);
        int[] row = new int[width];
        Arrays.fill(seen, -1);
        int[] unitOfRank = new int[world];
        for (int t = 0; t < tokens; t++) {
            for (int j = 0; j < k; j++) {
                int e = idx.getAtIndex(I32, (long) t * k + j);
                if (e < 0) {
                    continue;
                }
                int d = e / local;
                int u;
                if (perRankDedup) {
                    if (seen[d] != t) {
                        seen[d] = t;
                        u = cursor[d]++;
                        unitOfRank[d] = u;
                        initMeta(row, rank, t, k);
                        writeMeta(meta, u, row);
                        sendToken.setAtIndex(I32, u, t);
                    } else {
                        u = unitOfRank[d];
                    }
                } else {
                    u = cursor[e]++;
                    initMeta(row, rank, t, k);
                    writeMeta(meta, u, row);
                    sendToken.setAtIndex(I32, u, t);
                }
                long base = (long) u * width;
                meta.setAtIndex(I32, base + META_FIXED + j, e);
                meta.setAtIndex(I32, base + META_FIXED + k + j, Float.floatToRawIntBits(w.getAtIndex(F32, (long) t * k + j)));
            }
        }
        // return order: units in send order, k ascending inside
        MemorySegment returnToken = seg(plan.returnToken());
        MemorySegment returnSlot = seg(plan.returnSlot());
        MemorySegment slotReturnRow = seg(plan.slotReturnRow());
        slotReturnRow.fill((byte) 0xFF);
        int r = 0;
        for (int u = 0; u < units; u++) {
            long base = (long) u * width;
            int t = meta.getAtIndex(I32, base + 1);
            for (int j = 0; j < k; j++) {
                if (meta.getAtIndex(I32, base + META_FIXED + j) >= 0) {
                    returnToken.setAtIndex(I32, r, t);
                    returnSlot.setAtIndex(I32, r, t * k + j);
                    slotReturnRow.setAtIndex(I32, (long) t * k + j, r);
                    r++;
                }
            }
        }
        requireRows("plan.returnToken", plan.returnToken(), r);
    }

    private static void initMeta(int[] row, int rank, int token, int k) {
        Arrays.fill(row, 0);
        row[0] = rank;
        row[1] = token;
        Arrays.fill(row, META_FIXED, META_FIXED + k, -1);
    }

    private static void writeMeta(MemorySegment meta, int u, int[] row) {
        MemorySegment.copy(row, 0, meta, ValueLayout.JAVA_INT_UNALIGNED, (long) u * row.length * 4, row.length);
    }

    @Override
    public void buildStaticSendPlan(Buffer topkIdx, Buffer topkWeights, int experts, int world, int rank, int capacity,
            org.moe4j.core.config.DropPolicy policy, StaticSendPlan plan) {
        StaticPlans.buildSendPlan(host(topkIdx), host(topkWeights), experts, world, rank, capacity, policy, plan);
    }

    @Override
    public void buildStaticRecvPlan(Buffer meta, int firstExpert, int alignment, Buffer groupOffsets,
            Buffer tokensPerLocalExpert, RecvPlan plan) {
        StaticPlans.buildRecvPlan(host(meta), firstExpert, alignment, host(groupOffsets), host(tokensPerLocalExpert),
                plan);
    }

    /** @return true: host memory is this backend's device memory, nothing is read back */
    @Override
    public boolean staticPlansOnDevice() {
        return true;
    }

    /**
     * The CPU scan reads host memory in place.
     *
     * @return false: nothing is read back
     */
    @Override
    public boolean nonFiniteWeightScanReadsBack() {
        return false;
    }

    private static HostBuffer host(Buffer b) {
        seg(b); // refuses non-host buffers with the usual message
        return (HostBuffer) b;
    }

    @Override
    public void packUnits(Buffer topkIdx, Buffer topkWeights, int rank, Buffer meta) {
        MemorySegment idx = seg(topkIdx);
        MemorySegment w = seg(topkWeights);
        MemorySegment m = seg(meta);
        int tokens = topkIdx.shape().dimInt(0);
        int k = topkIdx.shape().dimInt(1);
        int width = META_FIXED + 2 * k;
        for (int t = 0; t < tokens; t++) {
            long base = (long) t * width;
            m.setAtIndex(I32, base, rank);
            m.setAtIndex(I32, base + 1, t);
            for (int j = 0; j < k; j++) {
                m.setAtIndex(I32, base + META_FIXED + j, idx.getAtIndex(I32, (long) t * k + j));
                m.setAtIndex(I32, base + META_FIXED + k + j, Float.floatToRawIntBits(w.getAtIndex(F32, (long) t * k + j)));
            }
        }
    }

    @Override
    public void countLocal(Buffer meta, int firstExpert, int localExperts, Buffer counts) {
        MemorySegment m = seg(meta);
        int units = meta.shape().dimInt(0);
        int width = meta.shape().dimInt(1);
        int k = (width - META_FIXED) / 2;
        int[] c = new int[localExperts];
        for (int u = 0; u < units; u++) {
            for (int j = 0; j < k; j++) {
                int l = m.getAtIndex(I32, (long) u * width + META_FIXED + j) - firstExpert;
                if (l >= 0 && l < localExperts) {
                    c[l]++;
                }
            }
        }
        MemorySegment.copy(c, 0, seg(counts), ValueLayout.JAVA_INT, 0, localExperts);
    }

    @Override
    public void buildRecvPlan(Buffer meta, int firstExpert, Buffer groupOffsets, RecvPlan plan) {
        MemorySegment m = seg(meta);
        int units = meta.shape().dimInt(0);
        int width = meta.shape().dimInt(1);
        int k = (width - META_FIXED) / 2;
        int localExperts = groupOffsets.shape().dimInt(0) - 1;
        int[] cursor = new int[localExperts];
        MemorySegment.copy(seg(groupOffsets), ValueLayout.JAVA_INT, 0, cursor, 0, localExperts);
        MemorySegment slotUnit = seg(plan.slotUnit());
        MemorySegment slotUnitSlot = seg(plan.slotUnitSlot());
        MemorySegment slotExpertRow = seg(plan.slotExpertRow());
        MemorySegment slotWeight = seg(plan.slotWeight());
        MemorySegment rowSrcRank = seg(plan.rowSrcRank());
        MemorySegment rowSrcIndex = seg(plan.rowSrcIndex());
        MemorySegment rowTopkSlot = seg(plan.rowTopkSlot());
        rowSrcRank.fill((byte) 0xFF);
        rowSrcIndex.fill((byte) 0xFF);
        rowTopkSlot.fill((byte) 0xFF);
        int r = 0;
        for (int u = 0; u < units; u++) {
            long base = (long) u * width;
            for (int j = 0; j < k; j++) {
                int l = m.getAtIndex(I32, base + META_FIXED + j) - firstExpert;
                if (l < 0 || l >= localExperts) {
                    continue;
                }
                int row = cursor[l]++;
                slotUnit.setAtIndex(I32, r, u);
                slotUnitSlot.setAtIndex(I32, r, u * k + j);
                slotExpertRow.setAtIndex(I32, r, row);
                slotWeight.setAtIndex(F32, r, Float.intBitsToFloat(m.getAtIndex(I32, base + META_FIXED + k + j)));
                rowSrcRank.setAtIndex(I32, row, m.getAtIndex(I32, base));
                rowSrcIndex.setAtIndex(I32, row, m.getAtIndex(I32, base + 1));
                rowTopkSlot.setAtIndex(I32, row, j);
                r++;
            }
        }
        requireRows("plan.slotUnit", plan.slotUnit(), r);
    }

    @Override
    public void validSlots(Buffer topkIdx, Buffer slotRow, Buffer slotToken) {
        MemorySegment idx = seg(topkIdx);
        MemorySegment sr = seg(slotRow);
        MemorySegment st = seg(slotToken);
        int k = topkIdx.shape().dimInt(1);
        long n = topkIdx.numel();
        for (long s = 0; s < n; s++) {
            boolean valid = idx.getAtIndex(I32, s) >= 0;
            sr.setAtIndex(I32, s, valid ? (int) s : -1);
            st.setAtIndex(I32, s, valid ? (int) (s / k) : -1);
        }
    }

    @Override
    public void composeIndex(Buffer table, Buffer index, Buffer out) {
        MemorySegment tb = seg(table);
        MemorySegment ix = seg(index);
        MemorySegment o = seg(out);
        long n = table.numel();
        long m = DispatchArgs.composeIndexEntries(index, out);
        for (long j = 0; j < m; j++) {
            int i = ix.getAtIndex(I32, j);
            if (i < -1 || i >= n) {
                throw new IllegalArgumentException("composeIndex: index[" + j + "] = " + i + " is outside [-1, " + n + ")");
            }
            o.setAtIndex(I32, j, i < 0 ? -1 : tb.getAtIndex(I32, i));
        }
    }

    // ---------------------------------------------------------------- row kernels (parallel)

    @Override
    public void copyRows(Buffer src, Buffer srcIndex, Buffer dst, Buffer dstIndex, Buffer weights) {
        int h = DispatchArgs.sameRowWidth("copyRows", "src", src, "dst", dst);
        int m = DispatchArgs.visitedRows(src, srcIndex, dstIndex);
        MemorySegment s = seg(src);
        MemorySegment d = seg(dst);
        MemorySegment si = srcIndex == null ? null : seg(srcIndex);
        MemorySegment di = dstIndex == null ? null : seg(dstIndex);
        MemorySegment ws = weights == null ? null : seg(weights);
        DType st = src.dtype();
        DType dt = dst.dtype();
        long srcRowBytes = (long) h * st.byteSize();
        long dstRowBytes = (long) h * dt.byteSize();
        boolean bulk = st == dt && ws == null;
        parallel.forEachChunk(m, chunkRows(h), (chunk, from, to) -> {
            float[] buf = bulk ? null : new float[h];
            for (int j = from; j < to; j++) {
                int dr = di == null ? j : di.getAtIndex(I32, j);
                if (dr < 0) {
                    continue;
                }
                int sr = si == null ? j : si.getAtIndex(I32, j);
                if (sr < 0) {
                    d.asSlice(dr * dstRowBytes, dstRowBytes).fill((byte) 0);
                } else if (bulk) {
                    MemorySegment.copy(s, sr * srcRowBytes, d, dr * dstRowBytes, srcRowBytes);
                } else {
                    loadRow(s, st, sr * srcRowBytes, buf, h);
                    if (ws != null) {
                        scale(buf, ws.getAtIndex(F32, j), h);
                    }
                    storeRow(d, dt, dr * dstRowBytes, buf, h);
                }
            }
        });
    }

    @Override
    public void weightedSum(Buffer rows, Buffer slotRow, Buffer weights, Buffer out) {
        int h = width(rows);
        int tokens = rows(out);
        int k = tokens == 0 ? 0 : (int) (slotRow.numel() / tokens);
        MemorySegment r = seg(rows);
        MemorySegment sr = seg(slotRow);
        MemorySegment w = weights == null ? null : seg(weights);
        MemorySegment o = seg(out);
        DType rt = rows.dtype();
        DType ot = out.dtype();
        long rowBytes = (long) h * rt.byteSize();
        long outRowBytes = (long) h * ot.byteSize();
        if (rt == DType.F32 && ot == DType.F32) {
            parallel.forEachChunk(tokens, chunkRows(h * Math.max(1, k)), (chunk, from, to) -> {
                long[] offs = new long[k];
                float[] ws = new float[k];
                for (int t = from; t < to; t++) {
                    int n = 0;
                    for (int j = 0; j < k; j++) {
                        int row = sr.getAtIndex(I32, (long) t * k + j);
                        if (row >= 0) {
                            offs[n] = row * rowBytes;
                            ws[n] = w == null ? 1f : w.getAtIndex(F32, (long) t * k + j);
                            n++;
                        }
                    }
                    sumRowsF32(r, offs, w == null ? null : ws, n, o, t * outRowBytes, h);
                }
            });
            return;
        }
        parallel.forEachChunk(tokens, chunkRows(h * Math.max(1, k)), (chunk, from, to) -> {
            float[] acc = new float[h];
            float[] tmp = rt == DType.F32 ? null : new float[h];
            for (int t = from; t < to; t++) {
                Arrays.fill(acc, 0f);
                for (int j = 0; j < k; j++) {
                    int row = sr.getAtIndex(I32, (long) t * k + j);
                    if (row < 0) {
                        continue;
                    }
                    long off = row * rowBytes;
                    if (w == null) {
                        if (tmp == null) {
                            addRow(acc, r, off, h);
                        } else {
                            loadRow(r, rt, off, tmp, h);
                            for (int i = 0; i < h; i++) {
                                acc[i] += tmp[i];
                            }
                        }
                    } else {
                        float wk = w.getAtIndex(F32, (long) t * k + j);
                        if (tmp == null) {
                            addScaledRow(acc, r, off, wk, h);
                        } else {
                            loadRow(r, rt, off, tmp, h);
                            addScaled(acc, tmp, wk, h);
                        }
                    }
                }
                storeRow(o, ot, t * outRowBytes, acc, h);
            }
        });
    }

    @Override
    public void rowDots(Buffer a, Buffer aIndex, Buffer b, Buffer bIndex, Buffer out, Buffer outIndex) {
        int h = DispatchArgs.sameRowWidth("rowDots", "a", a, "b", b);
        int m = DispatchArgs.visitedRows(a, aIndex, bIndex, outIndex);
        MemorySegment as = seg(a);
        MemorySegment bs = seg(b);
        MemorySegment ai = aIndex == null ? null : seg(aIndex);
        MemorySegment bi = bIndex == null ? null : seg(bIndex);
        MemorySegment oi = outIndex == null ? null : seg(outIndex);
        MemorySegment o = seg(out);
        DType at = a.dtype();
        DType bt = b.dtype();
        long aRowBytes = (long) h * at.byteSize();
        long bRowBytes = (long) h * bt.byteSize();
        parallel.forEachChunk(m, chunkRows(h), (chunk, from, to) -> {
            float[] x = at == DType.F32 ? null : new float[h];
            float[] y = bt == DType.F32 ? null : new float[h];
            for (int j = from; j < to; j++) {
                int or = oi == null ? j : oi.getAtIndex(I32, j);
                if (or < 0) {
                    continue;
                }
                int ar = ai == null ? j : ai.getAtIndex(I32, j);
                int br = bi == null ? j : bi.getAtIndex(I32, j);
                float dot = 0f;
                if (ar >= 0 && br >= 0) {
                    dot = dot(as, at, ar * aRowBytes, x, bs, bt, br * bRowBytes, y, h);
                }
                o.setAtIndex(F32, or, dot);
            }
        });
    }

    @Override
    public void scatterValues(Buffer src, Buffer index, Buffer dst) {
        MemorySegment s = seg(src);
        MemorySegment i = seg(index);
        MemorySegment d = seg(dst);
        long m = index.numel();
        for (long j = 0; j < m; j++) {
            int at = i.getAtIndex(I32, j);
            if (at >= 0) {
                d.setAtIndex(F32, at, s.getAtIndex(F32, j));
            }
        }
    }

    @Override
    public void copyToHost(Buffer src, HostBuffer dst) {
        DispatchArgs.requireSameBytes(src, dst);
        MemorySegment.copy(seg(src), 0, dst.segment(), 0, dst.byteSize());
    }

    @Override
    public void copyFromHost(HostBuffer src, Buffer dst) {
        DispatchArgs.requireSameBytes(src, dst);
        MemorySegment.copy(src.segment(), 0, seg(dst), 0, src.byteSize());
    }

    // ---------------------------------------------------------------- helpers


    private int chunkRows(int rowElems) {
        return Math.max(1, chunkElems / Math.max(1, rowElems));
    }

    private static int rows(Buffer b) {
        return DispatchArgs.rows(b);
    }

    private static int width(Buffer b) {
        return DispatchArgs.width(b);
    }

    private static void requireRows(String what, Buffer b, int rows) {
        if (rows(b) != rows) {
            throw new IllegalArgumentException(what + ": expected " + rows + " rows but got " + b.shape());
        }
    }

    private static MemorySegment seg(Buffer b) {
        if (b instanceof HostBuffer h) {
            return h.segment();
        }
        throw new IllegalArgumentException("cpu dispatch kernels need host buffers but got " + b.getClass().getSimpleName()
                + " on " + b.device());
    }

    private static void loadRow(MemorySegment s, DType dt, long off, float[] out, int h) {
        switch (dt) {
            case F32 -> MemorySegment.copy(s, F32, off, out, 0, h);
            case BF16 -> {
                for (int i = 0; i < h; i++) {
                    out[i] = DType.bf16ToF32(s.get(I16, off + 2L * i));
                }
            }
            case F16 -> {
                for (int i = 0; i < h; i++) {
                    out[i] = DType.f16ToF32(s.get(I16, off + 2L * i));
                }
            }
            default -> throw new IllegalArgumentException("rows must be F32, BF16 or F16, not " + dt);
        }
    }

    private static void storeRow(MemorySegment s, DType dt, long off, float[] in, int h) {
        switch (dt) {
            case F32 -> MemorySegment.copy(in, 0, s, F32, off, h);
            case BF16 -> {
                for (int i = 0; i < h; i++) {
                    s.set(I16, off + 2L * i, DType.f32ToBf16(in[i]));
                }
            }
            case F16 -> {
                for (int i = 0; i < h; i++) {
                    s.set(I16, off + 2L * i, DType.f32ToF16(in[i]));
                }
            }
            default -> throw new IllegalArgumentException("rows must be F32, BF16 or F16, not " + dt);
        }
    }

    private static void scale(float[] v, float w, int h) {
        int i = 0;
        for (int bound = S.loopBound(h); i < bound; i += S.length()) {
            FloatVector.fromArray(S, v, i).mul(w).intoArray(v, i);
        }
        for (; i < h; i++) {
            v[i] = v[i] * w;
        }
    }

    /** acc += w * row (product then sum, never fused: identical lane-wise and in the tail). */
    private static void addScaled(float[] acc, float[] row, float w, int h) {
        int i = 0;
        for (int bound = S.loopBound(h); i < bound; i += S.length()) {
            FloatVector a = FloatVector.fromArray(S, acc, i);
            a.add(FloatVector.fromArray(S, row, i).mul(w)).intoArray(acc, i);
        }
        for (; i < h; i++) {
            acc[i] = acc[i] + row[i] * w;
        }
    }

    /**
     * {@code o[i] = ((0 + ws[0]*r0[i]) + ws[1]*r1[i]) + ...} over {@code n} rows, held in registers
     * per vector block: the same operations in the same order as accumulating row by row.
     */
    private static void sumRowsF32(MemorySegment r, long[] offs, float[] ws, int n, MemorySegment o, long outOff, int h) {
        int i = 0;
        for (int bound = S.loopBound(h); i < bound; i += S.length()) {
            FloatVector acc = FloatVector.zero(S);
            for (int j = 0; j < n; j++) {
                FloatVector y = FloatVector.fromMemorySegment(S, r, offs[j] + 4L * i, NATIVE);
                acc = acc.add(ws == null ? y : y.mul(ws[j]));
            }
            acc.intoMemorySegment(o, outOff + 4L * i, NATIVE);
        }
        for (; i < h; i++) {
            float acc = 0f;
            for (int j = 0; j < n; j++) {
                float y = r.get(F32, offs[j] + 4L * i);
                acc = acc + (ws == null ? y : y * ws[j]);
            }
            o.set(F32, outOff + 4L * i, acc);
        }
    }

    private static void addScaledRow(float[] acc, MemorySegment s, long off, float w, int h) {
        int i = 0;
        for (int bound = S.loopBound(h); i < bound; i += S.length()) {
            FloatVector a = FloatVector.fromArray(S, acc, i);
            FloatVector y = FloatVector.fromMemorySegment(S, s, off + 4L * i, NATIVE);
            a.add(y.mul(w)).intoArray(acc, i);
        }
        for (; i < h; i++) {
            acc[i] = acc[i] + s.get(F32, off + 4L * i) * w;
        }
    }

    private static void addRow(float[] acc, MemorySegment s, long off, int h) {
        int i = 0;
        for (int bound = S.loopBound(h); i < bound; i += S.length()) {
            FloatVector a = FloatVector.fromArray(S, acc, i);
            a.add(FloatVector.fromMemorySegment(S, s, off + 4L * i, NATIVE)).intoArray(acc, i);
        }
        for (; i < h; i++) {
            acc[i] = acc[i] + s.get(F32, off + 4L * i);
        }
    }

    /** Dot product with a fixed order: lane-wise partial sums, then lanes reduced, then the tail. */
    private static float dot(MemorySegment a, DType at, long aOff, float[] x, MemorySegment b, DType bt, long bOff,
            float[] y, int h) {
        if (x != null) {
            loadRow(a, at, aOff, x, h);
        }
        if (y != null) {
            loadRow(b, bt, bOff, y, h);
        }
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (int bound = S.loopBound(h); i < bound; i += S.length()) {
            FloatVector va = x != null ? FloatVector.fromArray(S, x, i) : FloatVector.fromMemorySegment(S, a, aOff + 4L * i, NATIVE);
            FloatVector vb = y != null ? FloatVector.fromArray(S, y, i) : FloatVector.fromMemorySegment(S, b, bOff + 4L * i, NATIVE);
            acc = acc.add(va.mul(vb));
        }
        // lanes summed in index order: reduceLanes(ADD) leaves the order unspecified (it may differ
        // between interpreted and compiled code), which would break bitwise reproducibility
        float sum = 0f;
        for (int lane = 0; lane < S.length(); lane++) {
            sum = sum + acc.lane(lane);
        }
        for (; i < h; i++) {
            float va = x != null ? x[i] : a.get(F32, aOff + 4L * i);
            float vb = y != null ? y[i] : b.get(F32, bOff + 4L * i);
            sum = sum + va * vb;
        }
        return sum;
    }
}
