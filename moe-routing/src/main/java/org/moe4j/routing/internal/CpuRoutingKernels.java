package org.moe4j.routing.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShuffle;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.routing.RouteParams;
import org.moe4j.routing.RoutingKernels;

/**
 * CPU reference of {@link RoutingKernels}: multi-threaded over fixed token blocks with
 * {@link CpuParallel#forEachChunk}, Vector API for the gate GEMM and the score functions, scratch
 * arrays allocated once per chunk. Every output element is computed by exactly one chunk in a fixed
 * order, and reductions over tokens combine per-block partials in block order, so results are
 * bitwise identical for any thread count.
 */
public final class CpuRoutingKernels implements RoutingKernels {
    /** Tokens per parallel block of the routing kernels. */
    public static final int TOKEN_BLOCK = 64;
    /** Tokens per block of the gate GEMM. */
    static final int GEMM_TOKEN_BLOCK = 32;
    /** Assignments per parallel block of {@link #countTokens}. */
    static final int COUNT_BLOCK = 16384;
    /** Experts per block of the gate weight gradient. */
    static final int GEMM_EXPERT_BLOCK = 8;

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;

    /** {@code ROTATIONS[r]}: lane i takes lane {@code (i + r) mod L}. */
    private static final VectorShuffle<Float>[] ROTATIONS = rotations();

    /** Lane i takes lane i - 1 (lane 0 takes the last lane, which is then overwritten). */
    private static final VectorShuffle<Float> SHIFT_RIGHT = VectorShuffle.iota(Vec.S, Vec.L - 1, 1, true);
    private static final VectorShuffle<Integer> SHIFT_RIGHT_I = VectorShuffle.iota(Vec.IS, Vec.L - 1, 1, true);
    /** Lane i holds i, as float and as int: lane masks from a lane position, see {@link #insertRangesVec}. */
    private static final FloatVector IOTA = FloatVector.zero(Vec.S).addIndex(1);
    private static final IntVector IOTA_I = IntVector.zero(Vec.IS).addIndex(1);

    private final CpuParallel parallel;

    @SuppressWarnings("unchecked")
    private static VectorShuffle<Float>[] rotations() {
        VectorShuffle<Float>[] r = new VectorShuffle[Vec.L];
        for (int i = 0; i < Vec.L; i++) {
            r[i] = VectorShuffle.iota(Vec.S, i, 1, true);
        }
        return r;
    }

    /** @param parallel the thread pool to run on */
    public CpuRoutingKernels(CpuParallel parallel) {
        this.parallel = parallel;
    }

    /** @return the thread pool used */
    public CpuParallel parallel() {
        return parallel;
    }

    private static MemorySegment seg(Buffer b) {
        if (!(b instanceof HostBuffer h)) {
            throw new IllegalArgumentException("cpu routing kernels need host buffers, got " + b);
        }
        return h.segment();
    }

    private static int rows(Buffer b) {
        return b.shape().dimInt(0);
    }

    private static int cols(Buffer b) {
        return b.shape().dimInt(1);
    }

    // ------------------------------------------------------------------ gate GEMM

    /** Copies rows {@code [from, to)} of x (F32 or BF16) into {@code dst} as fp32, row-major. */
    private static void loadRows(MemorySegment x, DType dtype, int hidden, int from, int to, float[] dst) {
        if (dtype == DType.F32) {
            MemorySegment.copy(x, ValueLayout.JAVA_FLOAT, (long) from * hidden * 4, dst, 0, (to - from) * hidden);
        } else {
            long base = (long) from * hidden;
            int n = (to - from) * hidden;
            for (int i = 0; i < n; i++) {
                dst[i] = Float.intBitsToFloat((x.getAtIndex(I16, base + i) & 0xFFFF) << 16);
            }
        }
    }

    private static float[] loadMatrix(MemorySegment m, int rows, int cols) {
        float[] a = new float[rows * cols];
        MemorySegment.copy(m, ValueLayout.JAVA_FLOAT, 0, a, 0, a.length);
        return a;
    }

    @Override
    public void gateLogits(Buffer x, Buffer gateWeight, Buffer logits) {
        int tokens = rows(x);
        int hidden = cols(x);
        int experts = rows(gateWeight);
        MemorySegment xs = seg(x);
        DType xt = x.dtype();
        float[] w = loadMatrix(seg(gateWeight), experts, hidden); // [experts, hidden]
        MemorySegment out = seg(logits);
        parallel.forEachChunk(tokens, GEMM_TOKEN_BLOCK, (chunk, from, to) -> {
            int n = to - from;
            float[] xa = new float[n * hidden]; // [n, hidden]
            float[] acc = new float[n * experts]; // [n, experts]
            loadRows(xs, xt, hidden, from, to, xa);
            Gemm.abT(xa, n, w, experts, hidden, acc);
            MemorySegment.copy(acc, 0, out, ValueLayout.JAVA_FLOAT, (long) from * experts * 4, n * experts);
        });
    }

    @Override
    public void gateBackward(Buffer x, Buffer gateWeight, Buffer dLogits, Buffer dX, Buffer dGate) {
        int tokens = rows(x);
        int hidden = cols(x);
        int experts = rows(gateWeight);
        MemorySegment xs = seg(x);
        DType xt = x.dtype();
        float[] w = loadMatrix(seg(gateWeight), experts, hidden);
        float[] g = loadMatrix(seg(dLogits), tokens, experts); // [tokens, experts]
        MemorySegment dxs = seg(dX);
        // dX[t, :] = Σ_e dLogits[t, e] · W[e, :], e ascending
        parallel.forEachChunk(tokens, GEMM_TOKEN_BLOCK, (chunk, from, to) -> {
            int n = to - from;
            float[] acc = new float[n * hidden];
            Gemm.ab(g, from * experts, n, experts, w, hidden, acc);
            MemorySegment.copy(acc, 0, dxs, ValueLayout.JAVA_FLOAT, (long) from * hidden * 4, n * hidden);
        });
        if (dGate == null) {
            return;
        }
        // dGate[e, :] = Σ_t dLogits[t, e] · x[t, :], t ascending
        float[] xa = new float[tokens * hidden];
        loadRows(xs, xt, hidden, 0, tokens, xa);
        MemorySegment dgs = seg(dGate);
        parallel.forEachChunk(experts, GEMM_EXPERT_BLOCK, (chunk, from, to) -> {
            int n = to - from;
            float[] acc = new float[n * hidden];
            Gemm.atB(g, experts, from, n, tokens, xa, hidden, acc);
            MemorySegment.copy(acc, 0, dgs, ValueLayout.JAVA_FLOAT, (long) from * hidden * 4, n * hidden);
        });
    }

    // ------------------------------------------------------------------ routing

    @Override
    public int route(RouteParams p, Buffer logits, Buffer expertBias, Buffer paddingMask, Buffer scores,
            Buffer selected, Buffer topkWeights, Buffer lse) {
        int tokens = rows(logits);
        int experts = p.experts();
        int k = p.topK();
        MemorySegment ls = seg(logits);
        MemorySegment ss = seg(scores);
        MemorySegment sel = seg(selected);
        MemorySegment ws = seg(topkWeights);
        MemorySegment lses = lse == null ? null : seg(lse);
        MemorySegment mask = paddingMask == null ? null : seg(paddingMask);
        float[] bias = new float[experts];
        MemorySegment.copy(seg(expertBias), ValueLayout.JAVA_FLOAT, 0, bias, 0, experts);
        boolean anyBias = false;
        for (float b : bias) {
            anyBias |= b != 0f;
        }
        final boolean useBias = anyBias;
        int blocks = CpuParallel.chunks(tokens, TOKEN_BLOCK);
        int[] firstBad = new int[blocks];
        parallel.forEachChunk(tokens, TOKEN_BLOCK, (chunk, from, to) -> {
            float[] row = new float[experts]; // logits, then scores
            float[] choice = new float[experts];
            float[] topVal = new float[k];
            int[] topIdx = new int[k];
            int g = p.expertGroups();
            float[] groupScore = new float[g];
            int[] groupKeep = new int[Math.max(g, 1)]; // kept group indices, ascending, in [0, limitedGroups)
            float[] tmp = new float[Vec.L];
            float[] scratch = new float[(g + 1) * Vec.L];
            int bad = -1;
            for (int t = from; t < to; t++) {
                long rowOff = (long) t * experts * 4;
                long slotBase = (long) t * k;
                if (mask != null && mask.getAtIndex(I32, t) == 0) {
                    ss.asSlice(rowOff, (long) experts * 4).fill((byte) 0);
                    for (int j = 0; j < k; j++) {
                        sel.setAtIndex(I32, slotBase + j, -1);
                        ws.setAtIndex(F32, slotBase + j, 0f);
                    }
                    if (lses != null) {
                        lses.setAtIndex(F32, t, 0f);
                    }
                    continue;
                }
                MemorySegment.copy(ls, ValueLayout.JAVA_FLOAT, rowOff, row, 0, experts);
                if (!Vec.allFinite(row, experts)) {
                    if (bad < 0) {
                        bad = t;
                    }
                    continue;
                }
                float lseT = p.scoreFunction() == ScoreFunction.SOFTMAX
                        ? Vec.softmaxInPlace(row, experts, tmp)
                        : Vec.sigmoidInPlace(row, experts, lses != null, tmp);
                if (lses != null) {
                    lses.setAtIndex(F32, t, lseT);
                }
                MemorySegment.copy(row, 0, ss, ValueLayout.JAVA_FLOAT, rowOff, experts);
                if (p.forceBalanced()) {
                    for (int j = 0; j < k; j++) {
                        topIdx[j] = (int) ((slotBase + j) % experts);
                    }
                } else {
                    float[] c = row;
                    if (useBias) {
                        Vec.add(row, bias, choice, experts);
                        c = choice;
                    }
                    select(p, c, topVal, topIdx, groupScore, groupKeep, scratch);
                }
                float sum = 0f;
                for (int j = 0; j < k; j++) {
                    topVal[j] = row[topIdx[j]];
                    sum += topVal[j];
                }
                float denom = sum + RouteParams.NORM_EPS;
                for (int j = 0; j < k; j++) {
                    float wj = p.routeNorm() ? topVal[j] / denom : topVal[j];
                    sel.setAtIndex(I32, slotBase + j, topIdx[j]);
                    ws.setAtIndex(F32, slotBase + j, wj * p.routeScale());
                }
            }
            firstBad[chunk] = bad;
        });
        for (int b : firstBad) {
            if (b >= 0) {
                return b;
            }
        }
        return -1;
    }

    /**
     * Top-k of {@code c} (descending, ties to the lower index), restricted to the kept groups when
     * node-limited.
     *
     * <p>Two passes: the lane-wise maximum over all candidate vectors holds L distinct elements, so
     * its k-th largest lane is a lower bound of the k-th largest choice; the second pass inserts (in
     * index order, strict comparison) only the elements at or above that bound.
     *
     * @param groupKeep at least {@code expertGroups} ints
     * @param scratch   at least {@code (expertGroups + 1) · L} floats (group g's lane maxima at
     *                  {@code [(g + 1) · L, (g + 2) · L)})
     */
    static void select(RouteParams p, float[] c, float[] topVal, int[] topIdx, float[] groupScore, int[] groupKeep,
            float[] scratch) {
        Arrays.fill(topVal, Float.NEGATIVE_INFINITY);
        Arrays.fill(topIdx, -1);
        int k = topVal.length;
        if (!p.groupLimited()) {
            FloatVector colMax = laneMax(c, 0, p.experts());
            float bound = kthLargestLane(colMax, k);
            if (k <= Vec.L) {
                groupKeep[0] = 0;
                insertRangesVec(c, groupKeep, 1, p.experts(), bound, topVal, topIdx, scratch);
            } else {
                insertRange(c, 0, p.experts(), bound, topVal, topIdx);
            }
            return;
        }
        int g = p.expertGroups();
        int per = p.expertsPerGroup();
        boolean max = p.groupScore() == GroupScore.MAX;
        for (int gi = 0; gi < g; gi++) {
            groupScore[gi] = groupScore(c, gi * per, per, max, scratch, (gi + 1) * Vec.L);
        }
        // keep the top limitedGroups groups, ties to the lower group index: group gi is kept when
        // fewer than limitedGroups groups precede it in (score descending, index ascending) order.
        // Branch-free ranks (random scores would mispredict an insertion sort); kept groups come
        // out in ascending order, so equal choices keep the lower expert index below.
        int keep = p.limitedGroups();
        int kept = 0;
        for (int gi = 0; gi < g; gi++) {
            float v = groupScore[gi];
            int rank = 0;
            for (int h = 0; h < g; h++) {
                float u = groupScore[h];
                rank += (u > v) | ((u == v) & (h < gi)) ? 1 : 0;
            }
            groupKeep[kept] = gi;
            kept += rank < keep ? 1 : 0;
        }
        FloatVector colMax = FloatVector.broadcast(Vec.S, Float.NEGATIVE_INFINITY);
        for (int q = 0; q < keep; q++) {
            colMax = colMax.max(FloatVector.fromArray(Vec.S, scratch, (groupKeep[q] + 1) * Vec.L));
        }
        float bound = kthLargestLane(colMax, k);
        if (k <= Vec.L) {
            insertRangesVec(c, groupKeep, keep, per, bound, topVal, topIdx, scratch);
            return;
        }
        for (int q = 0; q < keep; q++) {
            int gi = groupKeep[q];
            insertRange(c, gi * per, gi * per + per, bound, topVal, topIdx);
        }
    }

    /**
     * Top-k (k ≤ L) of the elements {@code >= bound} in the ranges {@code [r · len, r · len + len)}
     * for {@code r = ranges[0..count)} (ascending), kept in one sorted register pair: each candidate
     * is inserted branch-free before the first lane it beats strictly (lanes after it shift by one),
     * so equal values keep the earlier, lower index, exactly like {@link #insertRange}.
     *
     * @param scratch at least L floats, overwritten
     */
    private static void insertRangesVec(float[] c, int[] ranges, int count, int len, float bound, float[] topVal,
            int[] topIdx, float[] scratch) {
        FloatVector tv = FloatVector.broadcast(Vec.S, Float.NEGATIVE_INFINITY); // sorted descending
        IntVector ti = IntVector.broadcast(Vec.IS, -1);
        for (int q = 0; q < count; q++) {
            int from = ranges[q] * len;
            for (int j = 0; j < len; j += Vec.L) {
                long bits;
                if (j <= len - Vec.L) {
                    bits = FloatVector.fromArray(Vec.S, c, from + j).compare(VectorOperators.GE, bound).toLong();
                } else {
                    VectorMask<Float> m = Vec.S.indexInRange(j, len);
                    bits = FloatVector.fromArray(Vec.S, c, from + j, m).compare(VectorOperators.GE, bound, m).toLong();
                }
                while (bits != 0) {
                    int e = from + j + Long.numberOfTrailingZeros(bits);
                    bits &= bits - 1;
                    float x = c[e];
                    // beaten: a suffix [pos, L) of the lanes (tv is sorted descending), pos = L if none.
                    // Every mask is built in its own species (compare, or IOTA against pos), never by
                    // VectorMask.fromLong(IS, beaten.toLong()): C2 of JDK 25.0.3 (reproduced on AVX2,
                    // reported on AVX-512; interpreter and C1 are right) miscompiles that float -> long
                    // -> mask round trip once this loop is hot, losing candidates and leaving slots at
                    // index -1 (route's ArrayIndexOutOfBoundsException). firstTrue plus lane compares is
                    // also no slower than fromLong's bit-to-lane expansion.
                    VectorMask<Float> beaten = tv.compare(VectorOperators.LT, x);
                    int pos = beaten.firstTrue();
                    tv = tv.blend(tv.rearrange(SHIFT_RIGHT), beaten)
                            .blend(x, IOTA.compare(VectorOperators.EQ, (float) pos));
                    ti = ti.blend(ti.rearrange(SHIFT_RIGHT_I), IOTA_I.compare(VectorOperators.GE, pos))
                            .blend(e, IOTA_I.compare(VectorOperators.EQ, pos));
                }
            }
        }
        int k = topVal.length;
        tv.intoArray(scratch, 0);
        System.arraycopy(scratch, 0, topVal, 0, k);
        ti.reinterpretAsFloats().intoArray(scratch, 0); // raw bits, read back unchanged
        for (int i = 0; i < k; i++) {
            topIdx[i] = Float.floatToRawIntBits(scratch[i]);
        }
    }

    /** @return lane-wise maximum of {@code c[from, from + n)} viewed as vectors (-Inf in unused lanes) */
    private static FloatVector laneMax(float[] c, int from, int n) {
        FloatVector mx = FloatVector.broadcast(Vec.S, Float.NEGATIVE_INFINITY);
        int j = 0;
        for (; j <= n - Vec.L; j += Vec.L) {
            mx = mx.max(FloatVector.fromArray(Vec.S, c, from + j));
        }
        if (j < n) {
            VectorMask<Float> m = Vec.S.indexInRange(j, n);
            mx = mx.max(FloatVector.fromArray(Vec.S, c, from + j, m).blend(Float.NEGATIVE_INFINITY, m.not()));
        }
        return mx;
    }

    /**
     * Group score in one pass: lane-wise best and second best, then the best lane plus the larger
     * of (the other lanes' best, the best lane's second). Stores the lane-wise best at
     * {@code laneMaxOut[at, at + L)}.
     *
     * @return the maximum ({@code max}) or the sum of the two largest values (the largest twice if tied)
     */
    private static float groupScore(float[] c, int from, int n, boolean max, float[] laneMaxOut, int at) {
        FloatVector ninf = FloatVector.broadcast(Vec.S, Float.NEGATIVE_INFINITY);
        FloatVector a = ninf;
        FloatVector b = ninf;
        int j = 0;
        for (; j <= n - Vec.L; j += Vec.L) {
            FloatVector v = FloatVector.fromArray(Vec.S, c, from + j);
            b = b.max(a.min(v));
            a = a.max(v);
        }
        if (j < n) {
            VectorMask<Float> m = Vec.S.indexInRange(j, n);
            FloatVector v = FloatVector.fromArray(Vec.S, c, from + j, m).blend(Float.NEGATIVE_INFINITY, m.not());
            b = b.max(a.min(v));
            a = a.max(v);
        }
        a.intoArray(laneMaxOut, at);
        float top = a.reduceLanes(VectorOperators.MAX);
        if (max) {
            return top;
        }
        VectorMask<Float> eq = a.compare(VectorOperators.EQ, top);
        float second = eq.trueCount() >= 2 ? top : a.blend(b, eq).reduceLanes(VectorOperators.MAX);
        return top + second;
    }

    /**
     * The k-th largest lane of {@code v} (duplicates counted), i.e. the largest lane value x with
     * at least k lanes {@code >= x}. Branch-free: each lane counts the lanes at or above it by
     * comparing against the L rotations of {@code v}.
     *
     * @return the k-th largest lane (-Inf when k exceeds the lane count)
     */
    private static float kthLargestLane(FloatVector v, int k) {
        if (k > Vec.L) {
            return Float.NEGATIVE_INFINITY;
        }
        FloatVector one = FloatVector.broadcast(Vec.S, 1f);
        FloatVector atOrAbove = one; // every lane is >= itself
        for (int r = 1; r < Vec.L; r++) {
            atOrAbove = atOrAbove.add(one, v.rearrange(ROTATIONS[r]).compare(VectorOperators.GE, v));
        }
        return v.blend(Float.NEGATIVE_INFINITY, atOrAbove.compare(VectorOperators.LT, (float) k))
                .reduceLanes(VectorOperators.MAX); // exact
    }

    private static void insertRange(float[] c, int from, int to, float bound, float[] topVal, int[] topIdx) {
        int k = topVal.length;
        float last = topVal[k - 1];
        int n = to - from;
        for (int j = 0; j < n; j += Vec.L) {
            long bits;
            if (j <= n - Vec.L) {
                bits = FloatVector.fromArray(Vec.S, c, from + j).compare(VectorOperators.GE, bound).toLong();
            } else {
                VectorMask<Float> m = Vec.S.indexInRange(j, n);
                bits = FloatVector.fromArray(Vec.S, c, from + j, m).compare(VectorOperators.GE, bound, m).toLong();
            }
            while (bits != 0) {
                int e = from + j + Long.numberOfTrailingZeros(bits);
                bits &= bits - 1;
                float v = c[e];
                if (!(v > last)) {
                    continue;
                }
                int pos = k - 1;
                while (pos > 0 && v > topVal[pos - 1]) {
                    topVal[pos] = topVal[pos - 1];
                    topIdx[pos] = topIdx[pos - 1];
                    pos--;
                }
                topVal[pos] = v;
                topIdx[pos] = e;
                last = topVal[k - 1];
            }
        }
    }

    // ------------------------------------------------------------------ counts, capacity, statistics

    @Override
    public void countTokens(Buffer topkIdx, Buffer tokensPerExpertHost) {
        MemorySegment idx = seg(topkIdx);
        int experts = tokensPerExpertHost.shape().dimInt(0);
        int n = Math.toIntExact(topkIdx.numel());
        // integer counts per block, summed afterwards: exact in any order
        int[][] partial = new int[CpuParallel.chunks(n, COUNT_BLOCK)][];
        parallel.forEachChunk(n, COUNT_BLOCK, (chunk, from, to) -> {
            int[] counts = new int[experts];
            for (int i = from; i < to; i++) {
                int e = idx.getAtIndex(I32, i);
                if (e >= 0) {
                    counts[e]++;
                }
            }
            partial[chunk] = counts;
        });
        int[] counts = new int[experts];
        for (int[] c : partial) {
            for (int e = 0; e < experts; e++) {
                counts[e] += c[e];
            }
        }
        MemorySegment.copy(counts, 0, seg(tokensPerExpertHost), ValueLayout.JAVA_INT, 0, experts);
    }

    @Override
    public long dropOverCapacity(Buffer selected, Buffer scores, int capacity, DropPolicy policy, Buffer topkIdx,
            Buffer topkWeights) {
        MemorySegment sel = seg(selected);
        MemorySegment out = seg(topkIdx);
        MemorySegment ws = seg(topkWeights);
        MemorySegment ss = seg(scores);
        int experts = cols(scores);
        int k = cols(selected);
        int n = Math.toIntExact(selected.numel());
        MemorySegment.copy(sel, 0, out, 0, (long) n * 4);
        int[] counts = new int[experts + 1];
        for (int i = 0; i < n; i++) {
            int e = sel.getAtIndex(I32, i);
            if (e >= 0) {
                counts[e + 1]++;
            }
        }
        boolean over = false;
        for (int e = 0; e < experts; e++) {
            over |= counts[e + 1] > capacity;
            counts[e + 1] += counts[e];
        }
        if (!over) {
            return 0;
        }
        int[] fill = Arrays.copyOf(counts, experts);
        long[] keys = new long[counts[experts]]; // flat slot index per expert, token order
        for (int i = 0; i < n; i++) {
            int e = sel.getAtIndex(I32, i);
            if (e >= 0) {
                keys[fill[e]++] = i;
            }
        }
        long dropped = 0;
        for (int e = 0; e < experts; e++) {
            int from = counts[e];
            int to = counts[e + 1];
            if (to - from <= capacity) {
                continue;
            }
            if (policy == DropPolicy.BY_SCORE) {
                for (int q = from; q < to; q++) {
                    int flat = (int) keys[q];
                    float sc = ss.getAtIndex(F32, (long) (flat / k) * experts + e);
                    // scores are >= 0, so their bits order like the values; high score first, then low slot
                    keys[q] = ((long) (Integer.MAX_VALUE - Float.floatToRawIntBits(sc)) << 32) | flat;
                }
                Arrays.sort(keys, from, to);
                for (int q = from; q < to; q++) {
                    keys[q] &= 0xFFFFFFFFL;
                }
            }
            for (int q = from + capacity; q < to; q++) {
                int flat = (int) keys[q];
                out.setAtIndex(I32, flat, -1);
                ws.setAtIndex(F32, flat, 0f);
                dropped++;
            }
        }
        return dropped;
    }

    @Override
    public void segmentStats(ScoreFunction scoreFunction, Buffer scores, Buffer selected, Buffer lse,
            int segmentLength, Buffer probSumHost, Buffer countsHost, Buffer validHost, Buffer lseSqHost) {
        int tokens = rows(scores);
        int experts = cols(scores);
        int k = cols(selected);
        MemorySegment ss = seg(scores);
        MemorySegment sel = seg(selected);
        MemorySegment lses = lse == null ? null : seg(lse);
        MemorySegment probOut = seg(probSumHost);
        MemorySegment countOut = seg(countsHost);
        MemorySegment validOut = seg(validHost);
        MemorySegment lseOut = seg(lseSqHost);
        boolean sigmoid = scoreFunction == ScoreFunction.SIGMOID;
        parallel.forEachChunk(tokens, segmentLength, (segment, from, to) -> {
            double[] acc = new double[experts];
            int[] counts = new int[experts];
            float[] row = new float[experts];
            int valid = 0;
            double lseSq = 0;
            for (int t = from; t < to; t++) {
                long slot = (long) t * k;
                if (sel.getAtIndex(I32, slot) < 0) {
                    continue;
                }
                valid++;
                for (int j = 0; j < k; j++) {
                    counts[sel.getAtIndex(I32, slot + j)]++;
                }
                MemorySegment.copy(ss, ValueLayout.JAVA_FLOAT, (long) t * experts * 4, row, 0, experts);
                if (sigmoid) {
                    float sum = 0f;
                    for (int e = 0; e < experts; e++) {
                        sum += row[e];
                    }
                    for (int e = 0; e < experts; e++) {
                        acc[e] += row[e] / sum;
                    }
                } else {
                    for (int e = 0; e < experts; e++) {
                        acc[e] += row[e];
                    }
                }
                if (lses != null) {
                    double l = lses.getAtIndex(F32, t);
                    lseSq += l * l;
                }
            }
            long base = (long) segment * experts;
            for (int e = 0; e < experts; e++) {
                probOut.setAtIndex(F32, base + e, (float) acc[e]);
                countOut.setAtIndex(I32, base + e, counts[e]);
            }
            validOut.setAtIndex(I32, segment, valid);
            lseOut.setAtIndex(F32, segment, (float) lseSq);
        });
    }

    // ------------------------------------------------------------------ backward

    @Override
    public void routeBackward(RouteParams p, Buffer logits, Buffer scores, Buffer selected, Buffer topkIdx,
            Buffer dTopkWeights, Buffer auxGradHost, int auxSegmentLength, Buffer lse, float zGrad, Buffer dLogits) {
        int tokens = rows(scores);
        int experts = p.experts();
        int k = p.topK();
        MemorySegment ls = seg(logits);
        MemorySegment ss = seg(scores);
        MemorySegment sel = seg(selected);
        MemorySegment idx = seg(topkIdx);
        MemorySegment dws = dTopkWeights == null ? null : seg(dTopkWeights);
        MemorySegment lses = lse == null ? null : seg(lse);
        MemorySegment out = seg(dLogits);
        float[] aux = auxGradHost == null ? null : ((HostBuffer) auxGradHost).toFloatArray(); // [segments, experts]
        boolean sigmoid = p.scoreFunction() == ScoreFunction.SIGMOID;
        float scale = p.routeScale();
        parallel.forEachChunk(tokens, TOKEN_BLOCK, (chunk, from, to) -> {
            float[] s = new float[experts];
            float[] ds = new float[experts];
            float[] l = new float[experts];
            float[] g = new float[k];
            int[] e = new int[k];
            float[] tmp = new float[Vec.L];
            for (int t = from; t < to; t++) {
                long rowOff = (long) t * experts * 4;
                long slot = (long) t * k;
                if (sel.getAtIndex(I32, slot) < 0) {
                    out.asSlice(rowOff, (long) experts * 4).fill((byte) 0);
                    continue;
                }
                MemorySegment.copy(ss, ValueLayout.JAVA_FLOAT, rowOff, s, 0, experts);
                // balance losses: dLoss/dp, then through p = s / Σs for sigmoid
                if (aux != null) {
                    int a0 = (t / auxSegmentLength) * experts;
                    if (sigmoid) {
                        float sum = 0f;
                        for (int j = 0; j < experts; j++) {
                            sum += s[j];
                        }
                        float dot = 0f;
                        for (int j = 0; j < experts; j++) {
                            dot += aux[a0 + j] * (s[j] / sum);
                        }
                        for (int j = 0; j < experts; j++) {
                            ds[j] = (aux[a0 + j] - dot) / sum;
                        }
                    } else {
                        System.arraycopy(aux, a0, ds, 0, experts);
                    }
                } else {
                    Arrays.fill(ds, 0f);
                }
                // top-k weight path
                if (dws != null) {
                    float sum = 0f;
                    float dot = 0f;
                    for (int j = 0; j < k; j++) {
                        e[j] = sel.getAtIndex(I32, slot + j);
                        boolean kept = idx.getAtIndex(I32, slot + j) >= 0;
                        g[j] = kept ? dws.getAtIndex(F32, slot + j) * scale : 0f;
                        sum += s[e[j]];
                        dot += g[j] * s[e[j]];
                    }
                    if (p.routeNorm()) {
                        float denom = sum + RouteParams.NORM_EPS;
                        float corr = dot / (denom * denom);
                        for (int j = 0; j < k; j++) {
                            ds[e[j]] += g[j] / denom - corr;
                        }
                    } else {
                        for (int j = 0; j < k; j++) {
                            ds[e[j]] += g[j];
                        }
                    }
                }
                // through the score function
                if (sigmoid) {
                    for (int j = 0; j < experts; j++) {
                        ds[j] = ds[j] * (s[j] * (1f - s[j]));
                    }
                } else {
                    float dot = 0f;
                    for (int j = 0; j < experts; j++) {
                        dot += ds[j] * s[j];
                    }
                    for (int j = 0; j < experts; j++) {
                        ds[j] = s[j] * (ds[j] - dot);
                    }
                }
                // z-loss: zGrad · lse · softmax(logits)
                if (zGrad != 0f) {
                    MemorySegment.copy(ls, ValueLayout.JAVA_FLOAT, rowOff, l, 0, experts);
                    float lt = lses.getAtIndex(F32, t);
                    float c = zGrad * lt;
                    for (int j = 0; j < experts; j += Vec.L) {
                        VectorMask<Float> m = Vec.S.indexInRange(j, experts);
                        FloatVector z = Vec.exp(FloatVector.fromArray(Vec.S, l, j, m).sub(lt));
                        z.fma(FloatVector.broadcast(Vec.S, c), FloatVector.fromArray(Vec.S, ds, j, m)).intoArray(ds, j, m);
                    }
                }
                MemorySegment.copy(ds, 0, out, ValueLayout.JAVA_FLOAT, rowOff, experts);
            }
        });
    }
}
