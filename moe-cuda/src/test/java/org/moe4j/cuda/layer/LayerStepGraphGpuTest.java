package org.moe4j.cuda.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.LayerStepGraph;
import org.moe4j.cuda.comm.VirtualRankGroup;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;

/**
 * {@link LayerStepGraph}: a whole training step of a sync-free {@link MoeLayer} captured once and
 * replayed is bitwise the eager step (output, input gradient, every weight and gradient, the expert
 * bias, the AdamW moments and counts), across refreshes of AdamW's device bias table; bad arguments
 * and configurations that need the host are refused before anything runs; closing releases the
 * graph's memory. Runs on a GPU or on the CPU device (where an operation on the legacy default stream
 * inside the capture fails as on the driver).
 */
@Tag("gpu")
class LayerStepGraphGpuTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(300);
    private static final int TOKENS = 32;
    private static final int REPLAYS = 4; // with a 2-row bias table: the table is moved on twice
    private static CudaBackend cuda;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        cuda = new CudaBackend();
    }

    private static AdamW adamW(MoeLayer layer, int tableRows) {
        AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2), cuda);
        if (tableRows > 0) {
            opt.deviceTableSteps(tableRows);
        }
        return opt;
    }

    /** The eager reference step, written out: the same sequence as the captured one. */
    private static void eagerStep(MoeLayer layer, AdamW opt, Buffer x, Buffer dy, HostBuffer yOut, HostBuffer dxOut) {
        layer.zeroGrad();
        MoeLayer.Forward f = layer.forward(x);
        try (Buffer y = f.output(); Buffer dX = layer.backward(f.context(), dy)) {
            layer.reduceGradients();
            y.copyTo(yOut);
            dX.copyTo(dxOut);
        }
        layer.stepExpertBias();
        opt.stepOnDevice();
    }

    private static float[] floats(Buffer b) {
        try (HostBuffer h = b.toHost()) {
            return h.toFloatArray();
        }
    }

    private static void fill(Random g, HostBuffer h) {
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) g.nextGaussian());
        }
    }

    private static void assertBitwise(float[] expected, float[] actual, String what) {
        assertEquals(expected.length, actual.length, what + ": length");
        for (int i = 0; i < expected.length; i++) {
            if (Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(actual[i])) {
                throw new AssertionError(what + "[" + i + "]: eager " + expected[i] + " but replayed " + actual[i]);
            }
        }
    }

    @ParameterizedTest(name = "bias-table rows {0}")
    @ValueSource(ints = {0, 2})
    void replaysAreBitwiseTheEagerStepsAcrossBiasTableRefreshes(int tableRows) {
        MoeConfig cfg = SyncFreeLayerStepGpuTest.staticConfig(1);
        long seed = System.nanoTime();
        System.out.println("LayerStepGraphGpuTest seed " + seed + " tableRows " + tableRows);
        VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            Random g = new Random(seed);
            try (MoeLayer eager = MoeLayer.builder(cfg, c).seed(seed).backend(cuda).build();
                 MoeLayer graphed = MoeLayer.builder(cfg, c).seed(seed).backend(cuda).build();
                 AdamW eagerOpt = adamW(eager, tableRows);
                 AdamW graphOpt = adamW(graphed, tableRows);
                 HostBuffer xh = HostBuffer.allocate(DType.F32, TOKENS, cfg.hidden());
                 HostBuffer dyh = HostBuffer.allocate(DType.F32, TOKENS, cfg.hidden());
                 HostBuffer yEager = HostBuffer.allocate(DType.F32, TOKENS, cfg.hidden());
                 HostBuffer dxEager = HostBuffer.allocate(DType.F32, TOKENS, cfg.hidden());
                 Buffer x = cuda.allocate(DType.F32, xh.shape());
                 Buffer dy = cuda.allocate(DType.F32, dyh.shape())) {
                fill(g, xh);
                fill(g, dyh);
                x.copyFrom(xh);
                dy.copyFrom(dyh);
                eagerStep(eager, eagerOpt, x, dy, yEager, dxEager);
                try (LayerStepGraph step = LayerStepGraph.capture(graphed, graphOpt, x, dy)) {
                    String first = "the capture's eager step";
                    assertBitwise(yEager.toFloatArray(), floats(step.output()), first + ": y");
                    assertBitwise(dxEager.toFloatArray(), floats(step.inputGrad()), first + ": dX");
                    for (int r = 0; r < REPLAYS; r++) {
                        fill(g, xh); // the next batch, through the same fixed buffers
                        fill(g, dyh);
                        x.copyFrom(xh);
                        dy.copyFrom(dyh);
                        eagerStep(eager, eagerOpt, x, dy, yEager, dxEager);
                        step.replay();
                        String at = "replay " + r + " (seed " + seed + ")";
                        assertBitwise(yEager.toFloatArray(), floats(step.output()), at + ": y");
                        assertBitwise(dxEager.toFloatArray(), floats(step.inputGrad()), at + ": dX");
                    }
                    assertEquals(REPLAYS, step.replays());
                    List<Parameter> ep = eager.parameters();
                    List<Parameter> gp = graphed.parameters();
                    for (int i = 0; i < ep.size(); i++) {
                        String name = ep.get(i).name();
                        assertBitwise(floats(ep.get(i).value()), floats(gp.get(i).value()), name);
                        assertBitwise(floats(ep.get(i).grad()), floats(gp.get(i).grad()), name + ".grad");
                        assertBitwise(floats(eagerOpt.firstMoment(ep.get(i).value())),
                                floats(graphOpt.firstMoment(gp.get(i).value())), name + " first moment");
                        assertBitwise(floats(eagerOpt.secondMoment(ep.get(i).value())),
                                floats(graphOpt.secondMoment(gp.get(i).value())), name + " second moment");
                    }
                    assertBitwise(eager.expertBias().values(), graphed.expertBias().values(), "expert bias");
                    assertArrayEquals(eager.expertBias().load(), graphed.expertBias().load(), "expert load");
                    assertEquals(eager.expertBias().microBatches(), graphed.expertBias().microBatches(), "micro-batches");
                    assertEquals(REPLAYS + 1L, eagerOpt.steps(), "eager AdamW steps");
                    assertEquals(REPLAYS + 1L, graphOpt.steps(), "AdamW steps read back from the device after replays");
                    assertEquals(0, graphOpt.skippedSteps());
                    graphed.checkStep(); // finite logits: nothing deferred
                }
            }
            return null;
        });
    }

    @Test
    void closingReleasesTheGraphMemoryAndAReplayAfterCloseThrows() {
        MoeConfig cfg = SyncFreeLayerStepGpuTest.staticConfig(1);
        VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            Random g = new Random(5);
            try (HostBuffer xh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
                 Buffer x = cuda.upload(xh);
                 Buffer dy = cuda.upload(xh)) {
                MoeLayer layer = MoeLayer.builder(cfg, c).seed(3).backend(cuda).build();
                AdamW opt = adamW(layer, 0);
                DeviceBuffer w = (DeviceBuffer) layer.gateWeight();
                LayerStepGraph first = LayerStepGraph.capture(layer, opt, x, dy); // makes the layer's tables
                first.replay();
                first.close();
                first.close(); // idempotent
                assertThrows(BufferClosedException.class, first::replay);
                int liveWithoutGraph = w.pool().liveCount();
                long freeWithoutGraph = cuda.context().memoryInfo().free();
                LayerStepGraph second = LayerStepGraph.capture(layer, opt, x, dy);
                second.replay();
                assertEquals(liveWithoutGraph + 2, w.pool().liveCount(), "a live graph holds its two outputs in the pool");
                long freeWithGraph = cuda.context().memoryInfo().free();
                second.close();
                assertEquals(liveWithoutGraph, w.pool().liveCount(), "closed: the outputs are back");
                if (Boolean.getBoolean("moe4j.cpudevice")) { // the driver's own pool may cache graph memory on a GPU
                    long outputs = 2L * TOKENS * cfg.hidden() * Float.BYTES;
                    assertTrue(freeWithoutGraph - freeWithGraph > outputs, "the graph holds memory of its own beyond the "
                            + "outputs: " + (freeWithoutGraph - freeWithGraph) + " bytes");
                    assertEquals(freeWithoutGraph, cuda.context().memoryInfo().free(),
                            "closing the graph gives every byte back to the device");
                }
                opt.close();
                layer.close(); // fails on leaked buffers of its pool
            }
            return null;
        });
    }

    @Test
    void aGraphKeepsItsTablesAliveAndRefusesReplaysAfterAnOptionsChange() {
        MoeConfig cfg = SyncFreeLayerStepGpuTest.staticConfig(1);
        VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            Random g = new Random(7);
            try (HostBuffer xh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
                 Buffer x = cuda.upload(xh);
                 Buffer dy = cuda.upload(xh);
                 MoeLayer layer = MoeLayer.builder(cfg, c).seed(3).backend(cuda).build();
                 AdamW opt = adamW(layer, 0);
                 LayerStepGraph step = LayerStepGraph.capture(layer, opt, x, dy)) {
                step.replay();
                // eager steps at more new token counts than the layer keeps tables for: the graph holds its own
                // tables, so the next replay reads live memory (the CPU device checks every kernel access)
                for (int t = 1; t <= 9; t++) {
                    try (HostBuffer th = MoeLayerGpuTest.random(g, t, cfg.hidden()); Buffer tx = cuda.upload(th)) {
                        MoeLayer.Forward f = layer.forward(tx);
                        try (Buffer out = f.output(); Buffer dIn = layer.backward(f.context(), tx)) {
                            assertEquals(t, dIn.shape().dim(0));
                        }
                    }
                }
                step.replay();
                float[] replayed = floats(step.output());
                for (int i = 0; i < replayed.length; i++) {
                    assertTrue(Float.isFinite(replayed[i]), "replay after other token counts: y[" + i + "]");
                }
                assertEquals(2, step.replays());
                // the optimiser's options are arguments of the captured kernels: a change makes replays refuse
                AdamW.Options captured = opt.options();
                opt.options(AdamW.Options.defaults(2e-2));
                IllegalStateException changed = assertThrows(IllegalStateException.class, step::replay);
                assertTrue(changed.getMessage().contains("options changed since the capture"), changed.getMessage());
                assertEquals(2, step.replays(), "the refused replay launched nothing");
                opt.options(captured);
                step.replay();
                assertEquals(3, step.replays());
                step.stepEagerly(); // the same step without the graph: counted by the optimiser, not as a replay
                step.replay();
                assertEquals(4, step.replays());
                assertEquals(1 + 4 + 1, opt.steps(), "the capture's step, the replays and the eager step");
            }
            return null;
        });
    }

    @Test
    void argumentsAndConfigurationsThatCannotBeCapturedAreRefusedBeforeAnythingRuns() {
        MoeConfig cfg = SyncFreeLayerStepGpuTest.staticConfig(1);
        MoeConfig aux = cfg.toBuilder().auxLoss(new AuxLoss(1e-2, 0, 0, 0)).build();
        VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            Random g = new Random(9);
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(1).backend(cuda).build();
                 MoeLayer other = MoeLayer.builder(cfg, c).seed(2).backend(cuda).build();
                 MoeLayer auxLayer = MoeLayer.builder(aux, c).seed(1).backend(cuda).build();
                 AdamW opt = adamW(layer, 0);
                 AdamW auxOpt = adamW(auxLayer, 0);
                 AdamW partial = new AdamW(layer.parameters().subList(0, 1), AdamW.Options.defaults(1e-2), cuda);
                 HostBuffer xh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
                 Buffer x = cuda.upload(xh);
                 Buffer dy = cuda.upload(xh);
                 Buffer shortDy = cuda.allocate(DType.F32, org.moe4j.core.Shape.of(TOKENS - 1, cfg.hidden()));
                 Buffer wide = cuda.allocate(DType.F32, org.moe4j.core.Shape.of(TOKENS, cfg.hidden() + 1));
                 Buffer bf16 = cuda.allocate(DType.BF16, org.moe4j.core.Shape.of(TOKENS, cfg.hidden()))) {
                float[] before = floats(layer.gateWeight());
                float[] otherBefore = floats(other.gateWeight());
                IllegalStateException e = assertThrows(IllegalStateException.class,
                        () -> LayerStepGraph.capture(auxLayer, auxOpt, x, dy));
                assertTrue(e.getMessage().contains("auxLoss"), e.getMessage());
                assertRefused(IllegalArgumentException.class, "x is on cpu", () -> LayerStepGraph.capture(layer, opt, xh, dy));
                assertRefused(IllegalArgumentException.class, "dY must be F32 [32, hidden=",
                        () -> LayerStepGraph.capture(layer, opt, x, shortDy));
                assertRefused(IllegalArgumentException.class, "x must be F32", () -> LayerStepGraph.capture(layer, opt, wide, dy));
                assertRefused(IllegalArgumentException.class, "x must be F32", () -> LayerStepGraph.capture(layer, opt, bf16, dy));
                assertRefused(IllegalArgumentException.class, "does not update the layer's",
                        () -> LayerStepGraph.capture(layer, partial, x, dy));
                assertRefused(IllegalArgumentException.class, "not a parameter of this layer",
                        () -> LayerStepGraph.capture(other, opt, x, dy));
                assertThrows(NullPointerException.class, () -> LayerStepGraph.capture(layer, opt, null, dy));
                try (Buffer closed = cuda.upload(xh)) {
                    closed.close();
                    assertRefused(IllegalArgumentException.class, "x is closed", () -> LayerStepGraph.capture(layer, opt, closed, dy));
                }
                assertBitwise(before, floats(layer.gateWeight()), "gate weight after refused captures");
                assertBitwise(otherBefore, floats(other.gateWeight()), "the other layer's gate weight");
                assertEquals(0, opt.steps(), "no optimiser step ran");
                IllegalStateException unprepared = assertThrows(IllegalStateException.class, opt::recordReplayedStep);
                assertTrue(unprepared.getMessage().contains("no device step was prepared"), unprepared.getMessage());
            }
            return null;
        });
    }

    private static void assertRefused(Class<? extends RuntimeException> type, String message,
            org.junit.jupiter.api.function.Executable call) {
        RuntimeException e = assertThrows(type, call);
        assertTrue(e.getMessage().contains(message), "expected '" + message + "' in: " + e.getMessage());
    }

    @Test
    void aLayerOnAnotherBackendIsRefusedNamingIt() {
        MoeConfig cfg = SyncFreeLayerStepGpuTest.staticConfig(1);
        org.moe4j.dispatch.LocalGroup.run(1, TIMEOUT, c -> {
            org.moe4j.core.backend.CpuBackend cpu = new org.moe4j.core.backend.CpuBackend();
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(1).backend(cpu).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2));
                 HostBuffer xh = MoeLayerGpuTest.random(new Random(2), TOKENS, cfg.hidden());
                 Buffer x = cuda.upload(xh)) {
                assertRefused(IllegalArgumentException.class, "backend not cuda", () -> LayerStepGraph.capture(layer, opt, x, x));
                assertEquals(0, opt.steps());
            }
            return null;
        });
    }

    @Test
    void expertParallelLayersAreRefusedNamingWhy() {
        MoeConfig cfg = SyncFreeLayerStepGpuTest.staticConfig(2);
        List<String> messages = VirtualRankGroup.run(cuda.context(), 2, TIMEOUT, c -> {
            Random g = new Random(4 + c.rank());
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(1).backend(cuda).build();
                 AdamW opt = adamW(layer, 0);
                 HostBuffer xh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
                 Buffer x = cuda.upload(xh)) {
                return assertThrows(IllegalStateException.class, () -> LayerStepGraph.capture(layer, opt, x, x)).getMessage();
            }
        });
        for (String m : messages) {
            assertTrue(m.contains("expert parallelism over 2 ranks cannot be captured"), m);
        }
    }
}
