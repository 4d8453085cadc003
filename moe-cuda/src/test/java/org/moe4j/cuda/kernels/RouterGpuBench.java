package org.moe4j.cuda.kernels;

import java.util.Locale;
import java.util.Random;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.GroupScore;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.routing.RouteParams;

/**
 * GPU benchmark of the fused router kernel (scores, expert bias, node-limited groups, top-k,
 * weights, tokens-per-expert histogram; no host round trip): tokens 4096 and 16384, 256 experts,
 * 8 groups / 4 limited, top-8, sigmoid (DeepSeek-V3). The PyTorch implementation of the same routing
 * runs on the same GPU in the same bundle run (scripts/gpu-peers/router_peer.py). Fresh random
 * logits, four input sets rotated, CUDA events around batches of runs ({@link GpuTiming}), median per run.
 */
public final class RouterGpuBench {
    private RouterGpuBench() {
    }

    /** @param args token counts (default 4096 16384) */
    public static void main(String[] args) {
        CudaBackend backend = new CudaBackend();
        if (!backend.probe().available()) {
            System.out.println("RouterGpuBench skipped: " + backend.probe().reason());
            return;
        }
        GpuTiming.header(backend);
        int[] tokensList = args.length == 0 ? new int[] {4096, 16384} : java.util.Arrays.stream(args).mapToInt(Integer::parseInt).toArray();
        RouteParams p = new RouteParams(256, 8, ScoreFunction.SIGMOID, 8, 4, GroupScore.TOP2_SUM, true, 2.5f, false);
        CudaRoutingKernels k = new CudaRoutingKernels(backend);
        Random rnd = new Random(11);
        for (int tokens : tokensList) {
            DeviceBuffer[] logits = new DeviceBuffer[4];
            for (int i = 0; i < logits.length; i++) {
                try (HostBuffer h = HostBuffer.allocate(DType.F32, tokens, p.experts())) {
                    for (long j = 0; j < h.numel(); j++) {
                        h.setFloat(j, (float) rnd.nextGaussian());
                    }
                    logits[i] = backend.pool().copyOf(h);
                }
            }
            try (HostBuffer hb = HostBuffer.allocate(DType.F32, p.experts())) {
                for (int e = 0; e < p.experts(); e++) {
                    hb.setFloat(e, 0.01f * (float) rnd.nextGaussian());
                }
                try (DeviceBuffer bias = backend.pool().copyOf(hb);
                        DeviceBuffer scores = backend.pool().allocate(DType.F32, Shape.of(tokens, p.experts()));
                        DeviceBuffer sel = backend.pool().allocate(DType.I32, Shape.of(tokens, p.topK()));
                        DeviceBuffer w = backend.pool().allocate(DType.F32, Shape.of(tokens, p.topK()));
                        DeviceBuffer counts = backend.pool().allocate(DType.I32, Shape.of(p.experts()))) {
                    double ms = GpuTiming.medianMillis(backend, r -> {
                        counts.zeroAsync(backend.stream());
                        k.routeAsync(p, logits[r % 4], bias, null, scores, sel, w, null, counts, null);
                    });
                    long bytes = (long) tokens * p.experts() * 4 * 2 + (long) tokens * p.topK() * 8;
                    GpuTiming.report("router_fwd", String.format(Locale.ROOT, "tokens=%d E=256 g8/4 top8 sigmoid", tokens), ms,
                            String.format(Locale.ROOT, "%.1f GB/s (logits in, scores + top-k out)", bytes / ms / 1e6));
                }
            } finally {
                for (DeviceBuffer b : logits) {
                    b.close();
                }
            }
        }
        GpuTiming.printJson();
    }
}
