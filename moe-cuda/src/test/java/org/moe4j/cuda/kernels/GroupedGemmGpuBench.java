package org.moe4j.cuda.kernels;

import java.util.Locale;
import java.util.Random;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.experts.ExpertKernels.GemmSpec;

/**
 * GPU benchmark of the grouped GEMM (bf16 operands, fp32 accumulation) on DeepSeek-V3, Qwen3-30B-A3B
 * and Mixtral expert shapes: gate+up projection {@code X [rows, H] . W13 [E, H, 2F]} and down
 * projection {@code Hact [rows, F] . W2 [E, F, H]}: the mma kernel, the full {@code groupedMatmul}
 * call, and on compute capability 9.0 the wgmma kernel with weights pre-transposed to K-major
 * (kernel time only); TFLOP/s. Routed rows split over the local experts with a +/-25% skew; fresh random
 * data, two input sets rotated, CUDA events, median of 50. cuBLAS / torch._grouped_mm figures come
 * from scripts/gpu-peers/grouped_gemm_peer.py in the same bundle run.
 */
public final class GroupedGemmGpuBench {
    private GroupedGemmGpuBench() {
    }

    record ShapeSpec(String name, int hidden, int ffn, int experts) {
    }

    /** @param args routed row counts (default 4096 16384 32768) */
    public static void main(String[] args) {
        CudaBackend backend = new CudaBackend();
        if (!backend.probe().available()) {
            System.out.println("GroupedGemmGpuBench skipped: " + backend.probe().reason());
            return;
        }
        GpuTiming.header(backend);
        int[] rowsList = args.length == 0 ? new int[] {4096, 16384, 32768} : java.util.Arrays.stream(args).mapToInt(Integer::parseInt).toArray();
        ShapeSpec[] shapes = {new ShapeSpec("deepseek-v3", 7168, 2048, 8), new ShapeSpec("qwen3-30b-a3b", 2048, 768, 16),
                new ShapeSpec("mixtral", 4096, 14336, 8)};
        boolean hopper = backend.context().device().major() == 9 && backend.context().device().minor() == 0;
        Random rnd = new Random(7);
        for (ShapeSpec s : shapes) {
            try (DeviceBuffer w13 = random(backend, rnd, 0.02f, s.experts(), s.hidden(), 2L * s.ffn());
                    DeviceBuffer w2 = random(backend, rnd, 0.02f, s.experts(), s.ffn(), s.hidden())) {
                for (int rows : rowsList) {
                    int[] off = split(rows, s.experts(), rnd);
                    DeviceBuffer[] x = {random(backend, rnd, 1f, rows, s.hidden()), random(backend, rnd, 1f, rows, s.hidden())};
                    DeviceBuffer[] h = {random(backend, rnd, 1f, rows, s.ffn()), random(backend, rnd, 1f, rows, s.ffn())};
                    try (HostBuffer ho = HostBuffer.ofInts(off, s.experts() + 1); DeviceBuffer offsets = backend.pool().copyOf(ho);
                            DeviceBuffer gu = backend.pool().allocate(DType.F32, Shape.of(rows, 2L * s.ffn()));
                            DeviceBuffer y = backend.pool().allocate(DType.F32, Shape.of(rows, s.hidden()))) {
                        String params = String.format(Locale.ROOT, "%s rows=%d H=%d F=%d E=%d", s.name(), rows, s.hidden(),
                                s.ffn(), s.experts());
                        double upFlops = 2.0 * rows * s.hidden() * 2.0 * s.ffn();
                        double downFlops = 2.0 * rows * s.ffn() * s.hidden();
                        CudaExpertKernels k = new CudaExpertKernels(backend, "mma");
                        // kernel alone (no validation read-back, no host synchronisation inside the timed region)
                        double ms = GpuTiming.medianMillis(backend,
                                r -> k.launchMma(x[r % 2], w13, offsets, rows, s.hidden(), 2 * s.ffn(), s.experts(), gu, false));
                        GpuTiming.report("gemm_gate_up_mma", params, ms, tflops(upFlops, ms));
                        double dms = GpuTiming.medianMillis(backend,
                                r -> k.launchMma(h[r % 2], w2, offsets, rows, s.ffn(), s.hidden(), s.experts(), y, false));
                        GpuTiming.report("gemm_down_mma", params, dms, tflops(downFlops, dms));
                        // the full ExpertKernels call (offset validation read-back included)
                        double api = GpuTiming.medianMillis(backend,
                                r -> k.groupedMatmul(x[r % 2], w13, offsets, gu, GemmSpec.OVERWRITE));
                        GpuTiming.report("groupedMatmul_api_gate_up", params, api, tflops(upFlops, api));
                        if (hopper) {
                            try (DeviceBuffer w13t = k.transposedBf16(w13, s.experts(), s.hidden(), 2 * s.ffn());
                                    DeviceBuffer w2t = k.transposedBf16(w2, s.experts(), s.ffn(), s.hidden());
                                    DeviceBuffer m0 = k.tensorMaps(x[0], w13t, rows, s.hidden(), 2 * s.ffn(), s.experts());
                                    DeviceBuffer m1 = k.tensorMaps(x[1], w13t, rows, s.hidden(), 2 * s.ffn(), s.experts());
                                    DeviceBuffer d0 = k.tensorMaps(h[0], w2t, rows, s.ffn(), s.hidden(), s.experts());
                                    DeviceBuffer d1 = k.tensorMaps(h[1], w2t, rows, s.ffn(), s.hidden(), s.experts())) {
                                DeviceBuffer[] um = {m0, m1};
                                DeviceBuffer[] dm = {d0, d1};
                                double wms = GpuTiming.medianMillis(backend,
                                        r -> k.launchWgmma(um[r % 2], offsets, rows, s.hidden(), 2 * s.ffn(), s.experts(), gu));
                                GpuTiming.report("gemm_gate_up_wgmma", params, wms, tflops(upFlops, wms));
                                double wdms = GpuTiming.medianMillis(backend,
                                        r -> k.launchWgmma(dm[r % 2], offsets, rows, s.ffn(), s.hidden(), s.experts(), y));
                                GpuTiming.report("gemm_down_wgmma", params, wdms, tflops(downFlops, wdms));
                            }
                        }
                    } finally {
                        for (int i = 0; i < 2; i++) {
                            x[i].close();
                            h[i].close();
                        }
                    }
                }
            }
        }
    }

    static DeviceBuffer random(CudaBackend backend, Random rnd, float scale, long... dims) {
        try (HostBuffer hb = HostBuffer.allocate(DType.BF16, dims)) {
            for (long i = 0; i < hb.numel(); i++) {
                hb.setFloat(i, scale * (float) rnd.nextGaussian());
            }
            return backend.pool().copyOf(hb);
        }
    }

    static int[] split(int rows, int groups, Random rnd) {
        int[] off = new int[groups + 1];
        double base = (double) rows / groups;
        for (int g = 0; g < groups; g++) {
            int size = g == groups - 1 ? rows - off[g] : (int) Math.max(0, Math.round(base * (0.75 + 0.5 * rnd.nextDouble())));
            off[g + 1] = Math.min(rows, off[g] + size);
        }
        off[groups] = rows;
        return off;
    }

    static String tflops(double flops, double ms) {
        return String.format(Locale.ROOT, "%7.1f TFLOP/s", flops / ms / 1e9);
    }
}
