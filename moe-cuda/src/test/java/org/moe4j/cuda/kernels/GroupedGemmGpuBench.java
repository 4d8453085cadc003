package org.moe4j.cuda.kernels;

import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.CudaException;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;
import org.moe4j.experts.ExpertKernels.GemmSpec;

/**
 * GPU benchmark of the grouped GEMMs of one expert layer (bf16 operands, fp32 accumulation, fp32
 * out) on DeepSeek-V3, Qwen3-30B-A3B and Mixtral expert shapes, forward and backward:
 * <ul>
 *   <li>{@code fwd_gate_up}: {@code X [rows, H] . W13_g^T}, W13 {@code [E, 2F, H]} (gate and up stacked);</li>
 *   <li>{@code fwd_down}: {@code Hact [rows, F] . W2_g^T}, W2 {@code [E, H, F]};</li>
 *   <li>{@code bwd_dx}: {@code [dG | dU] . W13_g} (K = 2F, N = H) and {@code bwd_dhact}: {@code dY . W2_g};</li>
 *   <li>{@code bwd_dw13}: {@code [dG | dU]_g^T . X_g} and {@code bwd_dw2}: {@code dY_g^T . Hact_g}.</li>
 * </ul>
 * Each on the {@code mma} kernels and, on compute capability 9.0, the {@code wgmma} kernels (kernel
 * time only: tensor maps encoded before timing), then the full {@code groupedMatmulTransposedB} call
 * (offset validation read-back and tensor-map encoding included). TFLOP/s. On the first row count of
 * each shape the wgmma outputs are compared with the mma outputs ({@code check} lines: relative
 * error, must be far below the bf16 bound 1e-2). Routed rows split over the local experts with a
 * +/-25% skew; fresh random data, two input sets rotated, CUDA events around batches of runs
 * ({@link GpuTiming}), median per run. cuBLAS and torch._grouped_mm figures come from
 * scripts/gpu-peers/grouped_gemm_peer.py in the same bundle run.
 *
 * <p>Both paths write the same output buffer, so before each path's runs it is poisoned (every byte
 * 0xFF, an F32 NaN): a kernel that writes nothing, or only part of its output, cannot pass off the
 * other path's results as its own. A check fails when an element still holds the poison, or when the
 * relative error is not below {@link #CHECK_BOUND}; the benchmark still runs to the end, then exits
 * non-zero naming every failed check.
 */
public final class GroupedGemmGpuBench {
    private GroupedGemmGpuBench() {
    }

    record ShapeSpec(String name, int hidden, int ffn, int experts) {
    }

    /** wgmma vs mma relative error must stay below this (the bf16 bound; measured far below). */
    static final double CHECK_BOUND = 1e-2;
    /** The F32 bit pattern of four 0xFF bytes (a NaN): the poison written before each path. */
    static final int POISON_BITS = 0xFFFFFFFF;

    /** One GEMM of the layer: how to launch it on a path (maps prepared outside the timing), its flops. */
    private interface Op {
        AutoCloseable prepare(CudaExpertKernels k, int set);

        void launch(CudaExpertKernels k, AutoCloseable prepared, int set);
    }

    /** @param args routed row counts (default 4096 16384 32768) */
    public static void main(String[] args) throws Exception {
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
        CudaExpertKernels mma = new CudaExpertKernels(backend, "mma");
        CudaExpertKernels wg = hopper ? new CudaExpertKernels(backend, "wgmma") : null;
        Random rnd = new Random(7);
        List<String> failures = new ArrayList<>();
        for (ShapeSpec s : shapes) {
            int h = s.hidden();
            int f = s.ffn();
            int e = s.experts();
            try (DeviceBuffer w13 = random(backend, rnd, 0.02f, e, 2L * f, h);
                    DeviceBuffer w2 = random(backend, rnd, 0.02f, e, h, f)) {
                boolean first = true;
                for (int rows : rowsList) {
                    int[] off = split(rows, e, rnd);
                    List<DeviceBuffer> owned = new ArrayList<>();
                    try (HostBuffer ho = HostBuffer.ofInts(off, e + 1); DeviceBuffer offsets = backend.pool().copyOf(ho)) {
                        DeviceBuffer[] x = new DeviceBuffer[2];
                        DeviceBuffer[] act = new DeviceBuffer[2];
                        DeviceBuffer[] dgu = new DeviceBuffer[2];
                        DeviceBuffer[] dy = new DeviceBuffer[2];
                        for (int i = 0; i < 2; i++) {
                            x[i] = keep(owned, random(backend, rnd, 1f, rows, h));
                            act[i] = keep(owned, random(backend, rnd, 1f, rows, f));
                            dgu[i] = keep(owned, random(backend, rnd, 1f, rows, 2L * f));
                            dy[i] = keep(owned, random(backend, rnd, 1f, rows, h));
                        }
                        DeviceBuffer outGu = keep(owned, backend.pool().allocate(DType.F32, Shape.of(rows, 2L * f)));
                        DeviceBuffer outH = keep(owned, backend.pool().allocate(DType.F32, Shape.of(rows, h)));
                        DeviceBuffer outF = keep(owned, backend.pool().allocate(DType.F32, Shape.of(rows, f)));
                        DeviceBuffer outW13 = keep(owned, backend.pool().allocate(DType.F32, Shape.of(e, 2L * f, h)));
                        DeviceBuffer outW2 = keep(owned, backend.pool().allocate(DType.F32, Shape.of(e, h, f)));
                        String params = String.format(Locale.ROOT, "%s rows=%d H=%d F=%d E=%d", s.name(), rows, h, f, e);
                        double gemmFlops = 2.0 * rows * h * f; // one [rows x H x F] product
                        record Named(String name, double flops, DeviceBuffer out, Op op) {
                        }
                        List<Named> ops = List.of(
                                new Named("fwd_gate_up", 2 * gemmFlops, outGu, fwd(x, w13, offsets, rows, h, 2 * f, e, outGu)),
                                new Named("fwd_down", gemmFlops, outH, fwd(act, w2, offsets, rows, f, h, e, outH)),
                                new Named("bwd_dx", 2 * gemmFlops, outH, dx(dgu, w13, offsets, rows, 2 * f, h, e, outH)),
                                new Named("bwd_dhact", gemmFlops, outF, dx(dy, w2, offsets, rows, h, f, e, outF)),
                                new Named("bwd_dw13", 2 * gemmFlops, outW13, wgrad(dgu, x, offsets, rows, 2 * f, h, e, outW13)),
                                new Named("bwd_dw2", gemmFlops, outW2, wgrad(dy, act, offsets, rows, h, f, e, outW2)));
                        for (Named op : ops) {
                            HostBuffer ref = null;
                            for (CudaExpertKernels k : wg == null ? List.of(mma) : List.of(mma, wg)) {
                                poison(backend, op.out());
                                double ms = time(backend, k, op.op());
                                GpuTiming.report(op.name() + "_" + k.path(), params, ms, tflops(op.flops(), ms));
                                if (first) {
                                    HostBuffer got = GpuParity.down(op.out());
                                    String unwritten = unwritten(got);
                                    if (unwritten != null) {
                                        failures.add(fail(op.name(), k.path(), params, unwritten));
                                    }
                                    if (ref == null) {
                                        ref = got;
                                    } else {
                                        double err = GpuParity.relError(got, ref);
                                        boolean ok = err < CHECK_BOUND && unwritten == null;
                                        System.out.println(String.format(Locale.ROOT, "check %-18s %-48s wgmma vs mma relative error %.3e %s",
                                                op.name(), params, err, ok ? "ok" : "FAILED"));
                                        if (!(err < CHECK_BOUND)) {
                                            failures.add(String.format(Locale.ROOT, "%s %s: wgmma vs mma relative error %.3e, not below %.0e",
                                                    op.name(), params, err, CHECK_BOUND));
                                        }
                                        got.close();
                                    }
                                }
                            }
                            if (ref != null) {
                                ref.close();
                            }
                        }
                        // the full ExpertKernels call of the default path (validation read-back included)
                        double api = GpuTiming.medianMillis(backend,
                                r -> mma.groupedMatmulTransposedB(x[r % 2], w13, offsets, outGu, GemmSpec.OVERWRITE));
                        GpuTiming.report("api_fwd_gate_up_mma", params, api, tflops(2 * gemmFlops, api));
                        if (wg != null) {
                            double wapi = GpuTiming.medianMillis(backend,
                                    r -> wg.groupedMatmulTransposedB(x[r % 2], w13, offsets, outGu, GemmSpec.OVERWRITE));
                            GpuTiming.report("api_fwd_gate_up_wgmma", params, wapi, tflops(2 * gemmFlops, wapi));
                        }
                    } finally {
                        for (DeviceBuffer b : owned) {
                            b.close();
                        }
                    }
                    first = false;
                }
            }
        }
        GpuTiming.printJson();
        if (!failures.isEmpty()) {
            throw new AssertionError("GroupedGemmGpuBench: " + failures.size() + " check(s) failed:\n  "
                    + String.join("\n  ", failures));
        }
    }

    /** Queues filling {@code out} with 0xFF bytes on the backend's stream (before the path's warm-up runs). */
    static void poison(CudaBackend backend, DeviceBuffer out) {
        backend.context().makeCurrent();
        CudaException.check(cuda_h.cuMemsetD8Async(out.address(), (byte) 0xFF, out.byteSize(), backend.stream().handle()),
                "cuMemsetD8Async(0xFF, " + out.describe() + ")");
    }

    /** @return null when no element holds the poison, else how many do and the first one */
    static String unwritten(HostBuffer got) {
        long count = 0;
        long first = -1;
        for (long i = 0; i < got.numel(); i++) {
            if (got.segment().getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i) == POISON_BITS) {
                if (first < 0) {
                    first = i;
                }
                count++;
            }
        }
        return count == 0 ? null : count + " of " + got.numel() + " elements never written (first: element " + first + ")";
    }

    private static String fail(String op, String path, String params, String what) {
        String line = String.format(Locale.ROOT, "check %-18s %-48s %s: %s FAILED", op, params, path, what);
        System.out.println(line);
        return op + " " + params + " " + path + ": " + what;
    }

    private static double time(CudaBackend backend, CudaExpertKernels k, Op op) throws Exception {
        try (AutoCloseable p0 = op.prepare(k, 0); AutoCloseable p1 = op.prepare(k, 1)) {
            AutoCloseable[] p = {p0, p1};
            return GpuTiming.medianMillis(backend, r -> op.launch(k, p[r % 2], r % 2));
        }
    }

    private static final AutoCloseable NOTHING = () -> { };

    private static boolean isWgmma(CudaExpertKernels k) {
        return k.path().equals("wgmma");
    }

    /** out = a . b_g^T, b {@code [E, N, K]}. */
    private static Op fwd(DeviceBuffer[] a, DeviceBuffer b, DeviceBuffer off, int rows, int kDim, int n, int e, DeviceBuffer out) {
        return new Op() {
            @Override
            public AutoCloseable prepare(CudaExpertKernels k, int set) {
                return isWgmma(k) ? k.fwdMaps(a[set], b, rows, kDim, n, e) : NOTHING;
            }

            @Override
            public void launch(CudaExpertKernels k, AutoCloseable maps, int set) {
                if (isWgmma(k)) {
                    k.launchFwdWgmma((CudaExpertKernels.WgmmaMaps) maps, off, rows, kDim, n, e, out, false);
                } else {
                    k.launchFwd(a[set], b, off, rows, kDim, n, e, out, false);
                }
            }
        };
    }

    /** out = a . b_g, b {@code [E, K, N]}. */
    private static Op dx(DeviceBuffer[] a, DeviceBuffer b, DeviceBuffer off, int rows, int kDim, int n, int e, DeviceBuffer out) {
        return new Op() {
            @Override
            public AutoCloseable prepare(CudaExpertKernels k, int set) {
                return isWgmma(k) ? k.dxMaps(a[set], b, null, null, rows, kDim, n, e) : NOTHING;
            }

            @Override
            public void launch(CudaExpertKernels k, AutoCloseable maps, int set) {
                if (isWgmma(k)) {
                    k.launchDxWgmma((CudaExpertKernels.WgmmaMaps) maps, off, rows, n, kDim, e, out, false);
                } else {
                    k.launchDx(a[set], b, off, rows, kDim, n, e, out, false);
                }
            }
        };
    }

    /** out_g = a_g^T . b_g, a {@code [rows, M]}, b {@code [rows, N]}. */
    private static Op wgrad(DeviceBuffer[] a, DeviceBuffer[] b, DeviceBuffer off, int rows, int m, int n, int e, DeviceBuffer out) {
        return new Op() {
            @Override
            public AutoCloseable prepare(CudaExpertKernels k, int set) {
                return isWgmma(k) ? k.wgradMaps(a[set], b[set], rows, m, n) : NOTHING;
            }

            @Override
            public void launch(CudaExpertKernels k, AutoCloseable maps, int set) {
                if (isWgmma(k)) {
                    k.launchWgradWgmma((CudaExpertKernels.WgmmaMaps) maps, off, e, m, n, out, false);
                } else {
                    k.launchWgrad(a[set], b[set], off, rows, m, n, e, out, false);
                }
            }
        };
    }

    private static DeviceBuffer keep(List<DeviceBuffer> owned, DeviceBuffer b) {
        owned.add(b);
        return b;
    }

    /** Gaussian values drawn once; buffers are filled with this block from a random start, repeated. */
    private static final int POOL = 1 << 20;
    private static float[] gaussianPool;

    /**
     * A bf16 device buffer of {@code scale * N(0, 1)} values: a pool of 2^20 Gaussian draws laid from a
     * random start and repeated (drawing every element of the multi-GB operands would take minutes).
     */
    static DeviceBuffer random(CudaBackend backend, Random rnd, float scale, long... dims) {
        if (gaussianPool == null) {
            Random g = new Random(11);
            gaussianPool = new float[POOL];
            for (int i = 0; i < POOL; i++) {
                gaussianPool[i] = (float) g.nextGaussian();
            }
        }
        try (HostBuffer hb = HostBuffer.allocate(DType.BF16, dims)) {
            int start = rnd.nextInt(POOL);
            long n = hb.numel();
            long block = Math.min(n, POOL);
            for (long i = 0; i < block; i++) {
                hb.setFloat(i, scale * gaussianPool[(int) ((start + i) % POOL)]);
            }
            for (long done = block; done < n; done += block) {
                java.lang.foreign.MemorySegment.copy(hb.segment(), 0, hb.segment(), done * 2, Math.min(block, n - done) * 2);
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
