package org.moe4j.cuda.kernels;

import java.util.Locale;
import java.util.Random;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;

/**
 * GPU benchmark of the permute (row gather into dispatch order) and combine (weighted sum over k)
 * kernels next to a device-to-device copy of the same bytes. Bandwidth counts bytes read plus
 * bytes written once. Fresh random data, two input sets rotated, CUDA events around batches of runs ({@link GpuTiming}), median per run.
 *
 * <p>Run from the GPU bundle ({@code benchmarks.txt}) or by hand with the test class path:
 * {@code java -cp ... org.moe4j.cuda.kernels.PermuteGpuBench [tokens...]}.
 */
public final class PermuteGpuBench {
    private PermuteGpuBench() {
    }

    /** @param args token counts (default 4096 16384) */
    public static void main(String[] args) {
        CudaBackend backend = new CudaBackend();
        if (!backend.probe().available()) {
            System.out.println("PermuteGpuBench skipped: " + backend.probe().reason());
            return;
        }
        GpuTiming.header(backend);
        int[] tokensList = args.length == 0 ? new int[] {4096, 16384} : java.util.Arrays.stream(args).mapToInt(Integer::parseInt).toArray();
        int hidden = 7168;
        int topK = 8;
        int experts = 256;
        CudaDispatchKernels k = new CudaDispatchKernels(backend);
        Random rnd = new Random(42);
        for (int tokens : tokensList) {
            int slots = tokens * topK;
            DeviceBuffer[] x = new DeviceBuffer[2];
            DeviceBuffer[] idx = new DeviceBuffer[2];
            DeviceBuffer[] w = new DeviceBuffer[2];
            for (int s = 0; s < 2; s++) {
                try (HostBuffer hx = HostBuffer.allocate(DType.BF16, tokens, hidden);
                        HostBuffer hi = HostBuffer.allocate(DType.I32, slots);
                        HostBuffer hw = HostBuffer.allocate(DType.F32, tokens, topK)) {
                    for (long i = 0; i < hx.numel(); i++) {
                        hx.setFloat(i, (float) rnd.nextGaussian());
                    }
                    int[] perm = new int[slots];
                    for (int i = 0; i < slots; i++) {
                        perm[i] = i;
                    }
                    for (int i = slots - 1; i > 0; i--) { // a random permutation: the row of each slot
                        int j = rnd.nextInt(i + 1);
                        int t = perm[i];
                        perm[i] = perm[j];
                        perm[j] = t;
                    }
                    for (int i = 0; i < slots; i++) {
                        hi.setInt(i, perm[i]);
                        hw.setFloat(i, rnd.nextFloat());
                    }
                    x[s] = backend.pool().copyOf(hx);
                    idx[s] = backend.pool().copyOf(hi);
                    w[s] = backend.pool().copyOf(hw);
                }
            }
            try (DeviceBuffer rows = backend.pool().allocate(DType.BF16, org.moe4j.core.Shape.of(slots, hidden));
                    DeviceBuffer out = backend.pool().allocate(DType.BF16, org.moe4j.core.Shape.of(tokens, hidden));
                    DeviceBuffer srcIdx = backend.pool().allocate(DType.I32, org.moe4j.core.Shape.of(slots));
                    DeviceBuffer copyDst = backend.pool().allocate(DType.BF16, org.moe4j.core.Shape.of(slots, hidden))) {
                // gather: slot row j reads token j / topK (the dispatch-order gather pattern)
                try (HostBuffer hs = HostBuffer.allocate(DType.I32, slots)) {
                    for (int j = 0; j < slots; j++) {
                        hs.setInt(j, j / topK);
                    }
                    srcIdx.copyFrom(hs);
                }
                String params = String.format(Locale.ROOT, "tokens=%d hidden=%d topK=%d bf16", tokens, hidden, topK);
                long permuteBytes = 2L * slots * hidden * 2;
                double ms = GpuTiming.medianMillis(backend, r -> k.copyRows(x[r % 2], srcIdx, rows, idx[r % 2], null));
                GpuTiming.report("permute_copyRows", params, ms, gbps(permuteBytes, ms));
                double copyMs = GpuTiming.medianMillis(backend, r -> copyDst.copyFromAsync(rows, backend.stream()));
                GpuTiming.report("d2d_copy_same_bytes", params, copyMs, gbps(permuteBytes, copyMs));
                long combineBytes = (long) slots * hidden * 2 + (long) tokens * hidden * 2 + slots * 8L;
                double cms = GpuTiming.medianMillis(backend, r -> k.weightedSum(rows, idx[r % 2], w[r % 2], out));
                GpuTiming.report("combine_weightedSum", params, cms, gbps(combineBytes, cms));
                System.out.println(String.format(Locale.ROOT, "ratio permute/d2d %.2f, combine bytes/s vs d2d %.2f",
                        ms / copyMs, (combineBytes / cms) / (permuteBytes / copyMs)));
            } finally {
                for (int s = 0; s < 2; s++) {
                    x[s].close();
                    idx[s].close();
                    w[s].close();
                }
            }
        }
        GpuTiming.printJson();
    }

    static String gbps(long bytes, double ms) {
        return String.format(Locale.ROOT, "%8.1f GB/s", bytes / ms / 1e6);
    }
}
