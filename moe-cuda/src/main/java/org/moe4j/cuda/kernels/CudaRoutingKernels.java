package org.moe4j.cuda.kernels;

import static org.moe4j.cuda.kernels.Kernels.blocks;
import static org.moe4j.cuda.kernels.Kernels.dev;
import static org.moe4j.cuda.kernels.Kernels.ptr;

import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.routing.RouteParams;
import org.moe4j.routing.RoutingKernels;

/**
 * {@link RoutingKernels} on the GPU ({@code native/routing.cu}). Follows the CPU reference
 * operation by operation; sums over k run in k order (bit-identical), sums over experts in a warp
 * butterfly (within rounding), so selections agree except on exact ties and weights within ~1e-6.
 *
 * <p>Host synchronisation: {@link #route} reads back one integer (the first token with non-finite
 * logits), {@link #dropOverCapacity} the drop count, and the {@code ...Host} outputs are copied back.
 * {@link #routeDeferred}, {@link #accumulateLoad} and {@link #updateExpertBias} (sync-free routing)
 * read nothing back.
 */
public final class CudaRoutingKernels implements RoutingKernels {
    /** Largest expert count of the warp-per-token router kernels. */
    public static final int MAX_EXPERTS = 2048;
    /** Largest top-k of the router kernels. */
    public static final int MAX_TOP_K = 32;
    /** Largest group count of the node-limited mask. */
    public static final int MAX_GROUPS = 32;
    private static final int WARPS = 4;
    private static final int SEGMENT_BLOCK = 64;

    private final Kernels k;
    private final Kernels permute;

    /**
     * Creates a new {@code CudaRoutingKernels}.
     * @param backend the cuda backend
     */
    public CudaRoutingKernels(Backend backend) {
        this.k = new Kernels(backend, "routing");
        this.permute = new Kernels(backend, "permute");
    }

    private static void checkLimits(RouteParams p) {
        if (p.experts() > MAX_EXPERTS) {
            throw new IllegalArgumentException("cuda router: experts=" + p.experts() + " exceeds " + MAX_EXPERTS);
        }
        if (p.topK() > MAX_TOP_K) {
            throw new IllegalArgumentException("cuda router: topK=" + p.topK() + " exceeds " + MAX_TOP_K);
        }
        if (p.groupLimited() && p.expertGroups() > MAX_GROUPS) {
            throw new IllegalArgumentException("cuda router: expertGroups=" + p.expertGroups() + " exceeds " + MAX_GROUPS);
        }
    }

    private void gemm(Buffer a, long aRs, long aKs, Buffer b, long bNs, long bKs, int m, int n, int kk, Buffer c) {
        if (m == 0 || n == 0) {
            return;
        }
        k.launch("moe_fp32_gemm").grid(blocks(n, 64), blocks(m, 64), 1).block(16, 16, 1)
                .arg(dev("a", a)).arg(a.dtype() == DType.BF16 ? 1 : 0).arg(aRs).arg(aKs)
                .arg(dev("b", b)).arg(b.dtype() == DType.BF16 ? 1 : 0).arg(bNs).arg(bKs)
                .arg(m).arg(n).arg(kk).arg(dev("c", c)).launch();
    }

    @Override
    public void gateLogits(Buffer x, Buffer gateWeight, Buffer logits) {
        int tokens = x.shape().dimInt(0);
        int hidden = x.shape().dimInt(1);
        int experts = gateWeight.shape().dimInt(0);
        gemm(x, hidden, 1, gateWeight, hidden, 1, tokens, experts, hidden, logits);
    }

    @Override
    public void gateBackward(Buffer x, Buffer gateWeight, Buffer dLogits, Buffer dX, Buffer dGate) {
        int tokens = x.shape().dimInt(0);
        int hidden = x.shape().dimInt(1);
        int experts = gateWeight.shape().dimInt(0);
        // dX[t, h] = sum_e dLogits[t, e] W[e, h];  dGate[e, h] = sum_t dLogits[t, e] x[t, h]
        gemm(dLogits, experts, 1, gateWeight, 1, hidden, tokens, hidden, experts, dX);
        if (dGate != null) {
            gemm(dLogits, 1, experts, x, 1, hidden, experts, hidden, tokens, dGate);
        }
    }

    @Override
    public int route(RouteParams p, Buffer logits, Buffer expertBias, Buffer paddingMask, Buffer scores, Buffer selected,
            Buffer topkWeights, Buffer lse) {
        checkLimits(p);
        int tokens = logits.shape().dimInt(0);
        if (tokens == 0) {
            return -1;
        }
        try (DeviceBuffer bad = k.scratch(DType.I32, 1); HostBuffer badHost = HostBuffer.ofInts(new int[] {Integer.MAX_VALUE}, 1)) {
            bad.copyFromAsync(badHost, k.stream());
            routeAsync(p, logits, expertBias, paddingMask, scores, selected, topkWeights, lse, null, bad);
            bad.copyToAsync(badHost, k.stream());
            k.stream().synchronize();
            int first = badHost.getInt(0);
            return first == Integer.MAX_VALUE ? -1 : first;
        }
    }

    /**
     * The router kernel alone, asynchronous (no read-back): {@link #route} without the non-finite
     * report unless {@code firstBad} is given, plus an optional fused tokens-per-expert histogram
     * (I32 {@code [experts]}, zeroed by the caller). Used by {@link #route} and the benchmark.
     */
    void routeAsync(RouteParams p, Buffer logits, Buffer expertBias, Buffer paddingMask, Buffer scores, Buffer selected,
            Buffer topkWeights, Buffer lse, Buffer tokensPerExpert, DeviceBuffer firstBad) {
        checkLimits(p);
        int tokens = logits.shape().dimInt(0);
        if (tokens == 0) {
            return;
        }
        k.launchWithSmem("moe_router_fwd", (WARPS + 2) * p.experts() * 4).grid(blocks(tokens, WARPS)).block(32 * WARPS)
                .arg(dev("logits", logits)).arg(logits.dtype() == DType.BF16 ? 1 : 0)
                .argPointer(ptr("expertBias", expertBias)).argPointer(ptr("paddingMask", paddingMask))
                .arg(tokens).arg(p.experts()).arg(p.topK()).arg(p.scoreFunction() == ScoreFunction.SIGMOID ? 1 : 0)
                .arg(p.expertGroups()).arg(p.limitedGroups()).arg(p.groupScore() == GroupScore.MAX ? 1 : 0)
                .arg(p.routeNorm() ? 1 : 0).arg(p.routeScale()).arg(p.forceBalanced() ? 1 : 0)
                .arg(dev("scores", scores)).arg(dev("selected", selected)).arg(dev("topkWeights", topkWeights))
                .argPointer(ptr("lse", lse)).argPointer(ptr("tokensPerExpert", tokensPerExpert))
                .argPointer(firstBad == null ? 0L : firstBad.address()).launch();
    }

    /**
     * Returns true: the router statistics of sync-free routing stay on the device.
     * @return true
     */
    @Override
    public boolean deviceStatistics() {
        return true;
    }

    @Override
    public void routeDeferred(RouteParams p, Buffer logits, Buffer expertBias, Buffer paddingMask, Buffer scores,
            Buffer selected, Buffer topkWeights, Buffer lse, Buffer tokensPerExpert, Buffer firstBad) {
        routeAsync(p, logits, expertBias, paddingMask, scores, selected, topkWeights, lse,
                dev("tokensPerExpert", tokensPerExpert), dev("firstBad", firstBad));
    }

    @Override
    public void accumulateLoad(Buffer tokensPerExpert, Buffer firstBad, Buffer load) {
        int experts = load.shape().dimInt(0);
        k.launch("moe_load_accumulate").grid(blocks(experts, 256)).block(256)
                .arg(dev("tokensPerExpert", tokensPerExpert)).arg(dev("firstBad", firstBad)).arg(experts)
                .arg(dev("load", load)).launch();
    }

    @Override
    public void updateExpertBias(Buffer load, float coeff, boolean zeroMean, Buffer bias) {
        DeviceBuffer l = dev("load", load);
        k.launch("moe_expert_bias_update").grid(1).block(1).arg(l).arg(l.shape().dimInt(0)).arg(coeff)
                .arg(zeroMean ? 1 : 0).arg(dev("bias", bias)).launch();
        l.zeroAsync(k.stream());
    }

    @Override
    public void countTokens(Buffer topkIdx, Buffer tokensPerExpertHost) {
        int experts = tokensPerExpertHost.shape().dimInt(0);
        long n = topkIdx.numel();
        try (DeviceBuffer counts = k.scratch(DType.I32, experts)) {
            if (n > 0) {
                k.launchWithSmem("moe_seq_histogram", experts * 4).grid(blocks(n, 256)).block(256)
                        .arg(dev("topkIdx", topkIdx)).arg(n).arg(experts).arg(counts).launch();
            }
            counts.copyToAsync((HostBuffer) tokensPerExpertHost, k.stream());
            k.stream().synchronize();
        }
    }

    @Override
    public long dropOverCapacity(Buffer selected, Buffer scores, int capacity, DropPolicy policy, Buffer topkIdx,
            Buffer topkWeights) {
        int experts = scores.shape().dimInt(1);
        int topK = selected.shape().dimInt(1);
        long n = selected.numel();
        DeviceBuffer out = dev("topkIdx", topkIdx);
        out.copyFromAsync(dev("selected", selected), k.stream());
        if (n == 0) {
            return 0;
        }
        int chunk = CudaDispatchKernels.ORDER_CHUNK;
        int chunks = blocks(n, chunk);
        try (DeviceBuffer chunkCounts = k.scratch(DType.I32, (long) chunks * experts);
                DeviceBuffer offsets = k.scratch(DType.I32, experts + 1);
                DeviceBuffer pos = k.scratch(DType.I32, n);
                DeviceBuffer rowSrc = k.scratch(DType.I32, n);
                DeviceBuffer dropped = k.scratch(DType.I64, 1);
                HostBuffer droppedHost = HostBuffer.allocate(DType.I64, 1)) {
            DeviceBuffer sel = dev("selected", selected);
            permute.launchWithSmem("moe_key_chunk_counts", experts * 4).grid(chunks).block(256).arg(sel).arg(n).arg(experts)
                    .arg(chunk).arg(chunkCounts).launch();
            permute.launchWithSmem("moe_key_layout", experts * 4).grid(1).block(1024).arg(chunkCounts).arg(chunks).arg(experts)
                    .argPointer(0L).arg(offsets).argPointer(0L).launch();
            permute.launchWithSmem("moe_key_positions", experts * 4).grid(chunks).block(32).arg(sel).arg(n).arg(experts)
                    .arg(chunk).arg(chunkCounts).arg(pos).arg(rowSrc).launch();
            k.launch("moe_capacity_drop").grid(experts).block(256).arg(rowSrc).arg(offsets).arg(dev("scores", scores))
                    .arg(topK).arg(experts).arg(capacity).arg(policy == DropPolicy.BY_POSITION ? 1 : 0).arg(out)
                    .arg(dev("topkWeights", topkWeights)).arg(dropped).launch();
            dropped.copyToAsync(droppedHost, k.stream());
            k.stream().synchronize();
            return droppedHost.segment().get(java.lang.foreign.ValueLayout.JAVA_LONG, 0);
        }
    }

    @Override
    public void segmentStats(ScoreFunction scoreFunction, Buffer scores, Buffer selected, Buffer lse, int segmentLength,
            Buffer probSumHost, Buffer countsHost, Buffer validHost, Buffer lseSqHost) {
        int tokens = scores.shape().dimInt(0);
        int experts = scores.shape().dimInt(1);
        int topK = selected.shape().dimInt(1);
        int segments = validHost.shape().dimInt(0);
        int perSegment = Math.max(1, blocks(Math.min(segmentLength, Math.max(tokens, 1)), SEGMENT_BLOCK));
        int ctas = segments * perSegment;
        try (DeviceBuffer probPart = k.scratch(DType.F32, (long) ctas * experts * 2); // doubles
                DeviceBuffer countPart = k.scratch(DType.I32, (long) ctas * experts);
                DeviceBuffer validPart = k.scratch(DType.I32, ctas);
                DeviceBuffer lsePart = k.scratch(DType.F32, (long) ctas * 2);
                DeviceBuffer probSum = k.scratch(DType.F32, (long) segments * experts);
                DeviceBuffer counts = k.scratch(DType.I32, (long) segments * experts);
                DeviceBuffer valid = k.scratch(DType.I32, segments);
                DeviceBuffer lseSq = k.scratch(DType.F32, segments)) {
            if (segments > 0) {
                k.launch("moe_segment_partials").grid(ctas).block(256).sharedMemory(experts * 4 + SEGMENT_BLOCK * 4)
                        .arg(dev("scores", scores)).arg(dev("selected", selected)).argPointer(ptr("lse", lse))
                        .arg(tokens).arg(experts).arg(topK).arg(scoreFunction == ScoreFunction.SIGMOID ? 1 : 0)
                        .arg(segmentLength).arg(perSegment).arg(probPart).arg(countPart).arg(validPart).arg(lsePart).launch();
                k.launch("moe_segment_finish").grid(blocks(experts, 128), segments, 1).block(128).arg(probPart).arg(countPart)
                        .arg(validPart).arg(lsePart).arg(experts).arg(perSegment).arg(probSum).arg(counts).arg(valid)
                        .arg(lseSq).launch();
            }
            probSum.copyToAsync((HostBuffer) probSumHost, k.stream());
            counts.copyToAsync((HostBuffer) countsHost, k.stream());
            valid.copyToAsync((HostBuffer) validHost, k.stream());
            lseSq.copyToAsync((HostBuffer) lseSqHost, k.stream());
            k.stream().synchronize();
        }
    }

    @Override
    public void routeBackward(RouteParams p, Buffer logits, Buffer scores, Buffer selected, Buffer topkIdx,
            Buffer dTopkWeights, Buffer auxGradHost, int auxSegmentLength, Buffer lse, float zGrad, Buffer dLogits) {
        checkLimits(p);
        int tokens = scores.shape().dimInt(0);
        if (tokens == 0) {
            return;
        }
        DeviceBuffer aux = auxGradHost == null ? null : k.pool().copyOf((HostBuffer) auxGradHost);
        try {
            k.launchWithSmem("moe_router_bwd", WARPS * p.experts() * 4).grid(blocks(tokens, WARPS)).block(32 * WARPS)
                    .argPointer(ptr("logits", logits)).arg(dev("scores", scores)).arg(dev("selected", selected))
                    .arg(dev("topkIdx", topkIdx)).argPointer(ptr("dTopkWeights", dTopkWeights))
                    .argPointer(aux == null ? 0L : aux.address()).arg(Math.max(1, auxSegmentLength))
                    .argPointer(ptr("lse", lse)).arg(zGrad).arg(tokens).arg(p.experts()).arg(p.topK())
                    .arg(p.scoreFunction() == ScoreFunction.SIGMOID ? 1 : 0).arg(p.routeNorm() ? 1 : 0).arg(p.routeScale())
                    .arg(dev("dLogits", dLogits)).launch();
        } finally {
            if (aux != null) {
                aux.close();
            }
        }
    }
}
