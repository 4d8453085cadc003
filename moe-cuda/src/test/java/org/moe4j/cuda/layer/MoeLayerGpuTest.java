package org.moe4j.cuda.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.comm.VirtualRankGroup;
import org.moe4j.cuda.kernels.CudaExpertKernels;
import org.moe4j.cuda.kernels.CudaOptimizerKernels;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.OptimizerKernels;
import org.moe4j.optim.Parameter;
import org.moe4j.optim.internal.CpuOptimizerKernels;

/**
 * {@link MoeLayer} end to end on the CUDA backend against the same layer on the CPU backend: same
 * config, same seed, same tokens. Initial parameters are bitwise equal (host init, then upload);
 * the first forward's routing is identical and its output, {@code dX} and every parameter gradient
 * agree within the kernels' tolerances; after a few AdamW steps (with expert-bias updates) the
 * parameters still agree. Expert parallel W = 1, 2, 4: CPU ranks in a {@link LocalGroup}, GPU ranks
 * in a {@link VirtualRankGroup} on one device.
 */
@Tag("gpu")
class MoeLayerGpuTest {
    /** fp32 experts: routing GEMM and exact fp32 expert GEMMs differ from the CPU only in summation order. */
    static final double FP32_TOLERANCE = 2e-5;
    /**
     * bf16 experts: both sides round the same operands to bf16 and accumulate in fp32 (kernel docs:
     * same-operand error &lt; 1e-4 per GEMM); a 1-ulp fp32 difference in an intermediate may round
     * to the neighbouring bf16 value, so the chain of six GEMMs gets 1e-3 (the bf16 bound is 1e-2).
     */
    static final double BF16_TOLERANCE = 1e-3;
    /**
     * Parameters after the AdamW steps: Adam normalises each update to about {@code lr}, so an element
     * whose gradient is near zero may step the other way on one backend; this bounds their share.
     */
    static final double PARAM_TOLERANCE = 1e-3;
    /** Selection-score gap below which a draw counts as a near tie and is redrawn. */
    static final double TIE = 1e-4;
    static final int MAX_DRAWS = 20;
    static final int TOKENS = 48;
    static final int HIDDEN = 64;
    static final int EXPERTS = 8;
    static final int STEPS = 3;
    static final double LR = 1e-3;
    private static final Duration TIMEOUT = Duration.ofSeconds(120);

    private static CudaBackend cuda;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        cuda = new CudaBackend();
        // gpu-bundle/run.sh runs this class a second time with -Dmoe4j.cuda.gemm=wgmma (Hopper GEMMs)
        String path = System.getProperty(CudaExpertKernels.PATH_PROPERTY, "mma");
        if (path.equals("wgmma")) {
            var dev = cuda.context().device();
            Assumptions.assumeTrue(dev.major() == 9 && dev.minor() == 0,
                    "moe4j.cuda.gemm=wgmma needs compute capability 9.0, this is " + dev.major() + "." + dev.minor());
        }
        ExpertKernels used = Backends.kernels(ExpertKernels.class, cuda);
        assertEquals(path, ((CudaExpertKernels) used).path(), "the layer's expert GEMM path");
        System.out.println("MoeLayerGpuTest: expert GEMMs on the " + path + " path");
    }

    static MoeConfig config(int world, DType expertDtype) {
        return MoeConfig.builder().hidden(HIDDEN).experts(EXPERTS).topK(2).ffn(32)
                .scoreFunction(ScoreFunction.SIGMOID).routeNorm(true).routeScale(2.5).expertBiasCoeff(1e-3)
                .sharedExperts(1, 32).expertParallel(world).expertDtype(expertDtype).build();
    }

    /** What one rank reports, all on the host. */
    record RankResult(boolean onDevice, double minGap, Map<String, float[]> initial, float[] out, int[] topkIdx,
                      float[] dX, Map<String, float[]> grads, Map<String, float[]> trained) {
    }

    static HostBuffer random(Random g, long... dims) {
        HostBuffer h = HostBuffer.allocate(DType.F32, dims);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) g.nextGaussian());
        }
        return h;
    }

    static float[] floats(Buffer b) {
        try (HostBuffer h = b.toHost()) {
            return h.toFloatArray();
        }
    }

    /** Smallest gap between a token's weakest selected and strongest unselected selection score. */
    static double selectionGap(Buffer scores, Buffer topkIdx, float[] bias) {
        try (HostBuffer s = scores.toHost(); HostBuffer idx = topkIdx.toHost()) {
            int tokens = s.shape().dimInt(0);
            int k = idx.shape().dimInt(1);
            double gap = Double.MAX_VALUE;
            for (int t = 0; t < tokens; t++) {
                double weakest = Double.MAX_VALUE;
                boolean[] chosen = new boolean[EXPERTS];
                for (int j = 0; j < k; j++) {
                    int e = idx.getInt((long) t * k + j);
                    chosen[e] = true;
                    weakest = Math.min(weakest, s.getFloat((long) t * EXPERTS + e) + bias[e]);
                }
                for (int e = 0; e < EXPERTS; e++) {
                    if (!chosen[e]) {
                        gap = Math.min(gap, weakest - (s.getFloat((long) t * EXPERTS + e) + bias[e]));
                    }
                }
            }
            return gap;
        }
    }

    static RankResult step(Communicator comm, Backend backend, MoeConfig cfg, long seed) {
        Random g = new Random(seed * 1_000_003L + comm.rank());
        Map<String, float[]> initial = new LinkedHashMap<>();
        Map<String, float[]> grads = new LinkedHashMap<>();
        Map<String, float[]> trained = new LinkedHashMap<>();
        try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(seed).backend(backend).build();
             HostBuffer xh = random(g, TOKENS, HIDDEN);
             HostBuffer dyh = random(g, TOKENS, HIDDEN);
             Buffer x = backend.upload(xh);
             Buffer dy = backend.upload(dyh);
             AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(LR), backend)) {
            for (Parameter p : layer.parameters()) {
                initial.put(p.name(), floats(p.value()));
            }
            boolean onDevice = true;
            double gap = Double.MAX_VALUE;
            float[] out = null;
            float[] dX = null;
            int[] topk = null;
            for (int s = 0; s < STEPS; s++) {
                MoeLayer.Forward f = layer.forward(x);
                try (Buffer y = f.output()) {
                    onDevice &= !y.device().equals(Device.CPU);
                    gap = Math.min(gap, selectionGap(f.context().route().scores(), f.context().route().topkIdx(),
                            layer.expertBias().values()));
                    if (s == 0) {
                        out = floats(y);
                        try (HostBuffer idx = f.context().route().topkIdx().toHost()) {
                            topk = idx.toIntArray();
                        }
                    }
                }
                try (Buffer d = layer.backward(f.context(), dy)) {
                    layer.reduceGradients();
                    if (s == 0) {
                        dX = floats(d);
                        for (Parameter p : layer.parameters()) {
                            grads.put(p.name(), floats(p.grad()));
                        }
                    }
                }
                opt.step();
                layer.zeroGrad();
                layer.updateExpertBias();
            }
            for (Parameter p : layer.parameters()) {
                trained.put(p.name(), floats(p.value()));
            }
            return new RankResult(onDevice, gap, initial, out, topk, dX, grads, trained);
        }
    }

    static double relError(float[] actual, float[] expected) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < expected.length; i++) {
            double d = actual[i] - (double) expected[i];
            num += d * d;
            den += (double) expected[i] * expected[i];
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    static List<Arguments> cases() {
        List<Arguments> list = new ArrayList<>();
        for (int w : new int[] {1, 2, 4}) {
            for (DType t : new DType[] {DType.F32, DType.BF16}) {
                list.add(Arguments.of(w, t));
            }
        }
        return list;
    }

    @ParameterizedTest
    @MethodSource("cases")
    void layerOnTheGpuMatchesTheCpuLayerForwardBackwardAndAdamW(int world, DType expertDtype) {
        compareWithCpu(config(world, expertDtype), expertDtype == DType.BF16 ? BF16_TOLERANCE : FP32_TOLERANCE,
                expertDtype.toString());
    }

    /** Runs {@link #step} on the CPU and on the GPU backend (redrawing near ties) and compares every result. */
    static void compareWithCpu(MoeConfig cfg, double tol, String what) {
        int world = cfg.expertParallel();
        DType expertDtype = cfg.expertDtype();
        long base = System.nanoTime();
        // about half of the draws have a near tie somewhere (measured on the CPU device): 20 draws
        // make a run of ties (and a failure for that reason) a one-in-a-million event
        for (int attempt = 0; attempt < MAX_DRAWS; attempt++) {
            long seed = base + attempt;
            System.out.println("MoeLayerGpuTest seed " + seed + " world " + world + " " + expertDtype + " " + what);
            CpuBackend cpu = new CpuBackend();
            List<RankResult> ref = LocalGroup.run(world, c -> step(c, cpu, cfg, seed));
            if (ref.stream().anyMatch(r -> r.minGap() < TIE)) {
                System.out.println("  near tie in the CPU routing; redrawing");
                continue;
            }
            List<RankResult> gpu = VirtualRankGroup.run(cuda.context(), world, TIMEOUT, c -> step(c, cuda, cfg, seed));
            for (int r = 0; r < world; r++) {
                RankResult a = gpu.get(r);
                RankResult e = ref.get(r);
                String where = "rank " + r + " seed " + seed;
                assertTrue(a.onDevice(), where + ": the layer's output is not in device memory");
                for (String name : e.initial().keySet()) {
                    assertArrayEquals(e.initial().get(name), a.initial().get(name), where + ": initial " + name);
                }
                assertArrayEquals(e.topkIdx(), a.topkIdx(), where + ": topkIdx of the first forward");
                double outErr = relError(a.out(), e.out());
                double dxErr = relError(a.dX(), e.dX());
                System.out.printf("  rank %d: output %.2e dX %.2e%n", r, outErr, dxErr);
                assertTrue(outErr < tol, where + ": output relative error " + outErr);
                assertTrue(dxErr < tol, where + ": dX relative error " + dxErr);
                for (String name : e.grads().keySet()) {
                    double err = relError(a.grads().get(name), e.grads().get(name));
                    assertTrue(err < tol, where + ": gradient of " + name + " relative error " + err);
                    double perr = relError(a.trained().get(name), e.trained().get(name));
                    assertTrue(perr < PARAM_TOLERANCE, where + ": " + name + " after " + STEPS
                            + " AdamW steps, relative error " + perr);
                }
            }
            return;
        }
        fail(MAX_DRAWS + " draws in a row had near ties in the routing; seeds from " + base);
    }

    @Test
    void optimizerKernelsOnTheGpuMatchTheCpuBitForBit() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        Random g = new Random(seed);
        int n = 70_001;
        OptimizerKernels.AdamWStep s = new OptimizerKernels.AdamWStep(1e-3f, 0.9f, 0.999f, 0.271f, 0.00299f, 1e-8f,
                0.99999f);
        try (HostBuffer p = random(g, n); HostBuffer gr = random(g, n); HostBuffer m = random(g, n);
             HostBuffer v = HostBuffer.allocate(DType.F32, n); HostBuffer acc = random(g, n)) {
            for (long i = 0; i < n; i++) {
                v.setFloat(i, (float) Math.abs(g.nextGaussian()) * 1e-3f);
            }
            try (Buffer pd = cuda.upload(p); Buffer gd = cuda.upload(gr); Buffer md = cuda.upload(m);
                 Buffer vd = cuda.upload(v); Buffer ad = cuda.upload(acc)) {
                CudaOptimizerKernels gk = new CudaOptimizerKernels(cuda);
                gk.adamW(pd, gd, md, vd, s);
                gk.accumulate(ad, gd);
                CpuOptimizerKernels ck = new CpuOptimizerKernels();
                ck.adamW(p, gr, m, v, s);
                ck.accumulate(acc, gr);
                assertArrayEquals(p.toFloatArray(), floats(pd), "param");
                assertArrayEquals(m.toFloatArray(), floats(md), "m");
                assertArrayEquals(v.toFloatArray(), floats(vd), "v");
                assertArrayEquals(acc.toFloatArray(), floats(ad), "accumulate");
            }
        }
    }

    @Test
    void eachLayerHasItsOwnDevicePoolWhoseLeakReportFiresOnClose() {
        MoeConfig cfg = config(1, DType.F32);
        VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            MoeLayer layer = MoeLayer.builder(cfg, c).seed(3).backend(cuda).build();
            Buffer kept;
            try (Buffer x = cuda.allocate(DType.F32, org.moe4j.core.Shape.of(8, cfg.hidden()))) {
                try (BufferScope step = layer.newScope()) {
                    MoeLayer.Forward f = layer.forward(x);
                    assertTrue(f.output() instanceof DeviceBuffer, "the output lives on the device");
                    f.context().close();
                    kept = step.detach(f.output()); // kept past the layer's life: a leak of the layer's pool
                }
                try (BufferScope step = layer.newScope()) {
                    MoeLayer.Forward f = layer.forward(x);
                    layer.backward(f.context(), f.output());
                    assertTrue(step.owns(f.output()), "device buffers made in a scope belong to it");
                }
            }
            IllegalStateException e = assertThrows(IllegalStateException.class, layer::close);
            assertTrue(e.getMessage().contains("MoeLayer rank 0") && e.getMessage().contains("memory leaked: 1 live buffer(s)"),
                    e.getMessage());
            assertTrue(kept.isClosed(), "the pool frees what leaked");
            return null;
        });
    }

    @Test
    void checkpointSavedFromTheGpuLoadsIntoACpuLayerBitForBit(@TempDir Path dir) {
        MoeConfig cfg = config(1, DType.BF16);
        Path file = dir.resolve("layer.safetensors");
        Map<String, float[]> saved = VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(7).backend(cuda).build()) {
                assertTrue(layer.gateWeight() instanceof DeviceBuffer, "gate weight lives on the device");
                layer.save(file, "mlp.");
                Map<String, float[]> m = new LinkedHashMap<>();
                for (Parameter p : layer.parameters()) {
                    m.put(p.name(), floats(p.value()));
                }
                // and back into another device layer
                try (MoeLayer other = MoeLayer.builder(cfg, c).seed(8).backend(cuda).build()) {
                    other.load(file, "mlp.");
                    for (Parameter p : other.parameters()) {
                        assertArrayEquals(m.get(p.name()), floats(p.value()), "device reload of " + p.name());
                    }
                }
                return m;
            }
        }).get(0);
        List<Map<String, float[]>> cpu = LocalGroup.run(1, c -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(9).backend(new CpuBackend()).build()) {
                layer.load(file, "mlp.");
                Map<String, float[]> m = new LinkedHashMap<>();
                for (Parameter p : layer.parameters()) {
                    m.put(p.name(), floats(p.value()));
                }
                return m;
            }
        });
        assertEquals(saved.keySet(), cpu.get(0).keySet());
        for (String name : saved.keySet()) {
            assertArrayEquals(saved.get(name), cpu.get(0).get(name), name);
        }
    }
}
