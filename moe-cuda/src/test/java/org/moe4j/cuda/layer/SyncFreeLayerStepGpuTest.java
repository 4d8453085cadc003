package org.moe4j.cuda.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.comm.VirtualRankGroup;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;

/**
 * A whole training step of {@link MoeLayer} on the static-shape dispatch (forward, backward,
 * gradient reduction, AdamW step, expert-bias step) makes no device→host read on the CUDA backend
 * once warmed up, counted by {@link CudaBackend#hostReadCount()}; the deferred non-finite-logits
 * check of sync-free routing reports the bad token at {@link MoeLayer#checkStep()} and leaves the
 * expert-bias load untouched. Runs on a GPU or on the CPU device.
 */
@Tag("gpu")
class SyncFreeLayerStepGpuTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static final int TOKENS = 32;
    private static final int WARM_UP = 1;
    private static final int STEPS = 3;
    private static CudaBackend cuda;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        cuda = new CudaBackend();
    }

    static MoeConfig staticConfig(int world) {
        return MoeLayerGpuTest.config(world, DType.F32).toBuilder()
                .dispatch(DispatchOptions.of(DispatchOptions.STATIC_ALL_TO_ALL)).build();
    }

    /** Device→host reads of one step on one rank: the layer's own (router, dispatcher, glue), the expert kernels', AdamW's. */
    record StepReads(long layer, long expertKernels, long optimizer) {
    }

    /**
     * The expert kernels of the backend, counting the device→host reads made inside their calls (the
     * grouped GEMMs read their group offsets back until the kernels take them on the device), so the
     * layer's own reads can be told apart from the kernels'.
     */
    static ExpertKernels counting(ExpertKernels inner, AtomicLong reads) {
        InvocationHandler h = (proxy, method, args) -> {
            long before = cuda.hostReadCount();
            try {
                return method.invoke(inner, args);
            } catch (InvocationTargetException e) {
                throw e.getCause();
            } finally {
                reads.addAndGet(cuda.hostReadCount() - before);
            }
        };
        return (ExpertKernels) Proxy.newProxyInstance(ExpertKernels.class.getClassLoader(),
                new Class<?>[] {ExpertKernels.class}, h);
    }

    @ParameterizedTest(name = "W={0}")
    @ValueSource(ints = {1, 2})
    void aStaticShapeLayerStepMakesNoHostReadAfterWarmUp(int world) {
        MoeConfig cfg = staticConfig(world);
        long seed = System.nanoTime();
        System.out.println("SyncFreeLayerStepGpuTest seed " + seed + " world " + world);
        AtomicLong expertReads = new AtomicLong(); // over every rank's expert-kernel calls
        List<StepReads[]> reads = VirtualRankGroup.run(cuda.context(), world, TIMEOUT, c -> {
            Random g = new Random(seed + c.rank());
            // injected kernels are used as given: the variant the layer picks itself for its own offsets
            ExpertKernels ek = counting(Backends.kernels(ExpertKernels.class, cuda).offsetsCheckedOnDevice(), expertReads);
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(seed).backend(cuda).expertKernels(ek).build();
                 HostBuffer xh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
                 HostBuffer dyh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
                 Buffer x = cuda.upload(xh);
                 Buffer dy = cuda.upload(dyh);
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-3), cuda)) {
                assertTrue(layer.router().syncFree(), "dropless, no aux losses, device kernels: sync-free routing");
                assertTrue(layer.expertBias().onDevice(), "the expert bias lives on the device");
                layer.requireSyncFreeStep();
                // the virtual-rank communicator's all-reduce (of the summed expert-bias load when W > 1)
                // stages through the host, unlike NCCL's: with W > 1 the bias step runs outside the count
                boolean biasInside = world == 1;
                for (int s = 0; s < WARM_UP; s++) {
                    runStep(layer, opt, x, dy, true, c, new long[3], expertReads);
                }
                StepReads[] perStep = new StepReads[STEPS];
                for (int s = 0; s < STEPS; s++) {
                    long[] r = new long[3];
                    runStep(layer, opt, x, dy, biasInside, c, r, expertReads);
                    perStep[s] = new StepReads(r[0], r[1], r[2]);
                    if (!biasInside) {
                        layer.stepExpertBias();
                    }
                }
                layer.checkStep(); // no deferred error: the logits were finite
                return perStep;
            }
        });
        long kernelReads = 0;
        for (int r = 0; r < world; r++) {
            for (int s = 0; s < STEPS; s++) {
                StepReads sr = reads.get(r)[s];
                System.out.println("  rank " + r + " step " + s + ": " + sr);
                if (world == 1) { // with concurrent ranks a read cannot be told apart by its caller
                    assertEquals(0, sr.layer(), "step " + s + " seed " + seed
                            + ": device→host reads of the layer's own code (router, dispatcher, layer) after warm-up");
                }
                kernelReads += sr.expertKernels() + sr.optimizer();
            }
        }
        Assumptions.assumeTrue(kernelReads == 0, "the layer, router and dispatcher read nothing back, but the "
                + "CUDA expert kernels and AdamW still made " + kernelReads + " device→host reads in " + STEPS
                + " steps (group offsets, the non-finite gradient scan): the whole-step assertion needs them sync-free");
        for (int r = 0; r < world; r++) {
            for (int s = 0; s < STEPS; s++) {
                assertEquals(new StepReads(0, 0, 0), reads.get(r)[s], "rank " + r + " step " + s + " seed " + seed
                        + ": device→host reads of a whole step (all ranks) after warm-up");
            }
        }
    }

    /**
     * One training step (forward, backward, gradient reduction, {@code AdamW.stepOnDevice}, and when
     * {@code biasStep} the expert-bias step) with every rank lined up around it; {@code out} gets the device→host reads of
     * all ranks during it: [0] outside the expert kernels and AdamW, [1] inside the expert kernels,
     * [2] inside {@code AdamW.stepOnDevice}.
     */
    static void runStep(MoeLayer layer, AdamW opt, Buffer x, Buffer dy, boolean biasStep,
            org.moe4j.dispatch.Communicator c, long[] out, AtomicLong expertReads) {
        c.barrier(); // the count is shared by the ranks on this device: every rank is between steps
        long before = cuda.hostReadCount();
        long expertBefore = expertReads.get();
        MoeLayer.Forward f = layer.forward(x);
        try (Buffer y = f.output(); Buffer dX = layer.backward(f.context(), dy)) {
            layer.reduceGradients();
        }
        c.barrier();
        long optBefore = cuda.hostReadCount();
        opt.stepOnDevice(); // the non-finite skip decided on the device
        c.barrier();
        long optReads = cuda.hostReadCount() - optBefore;
        layer.zeroGrad();
        if (biasStep) {
            layer.stepExpertBias();
        }
        c.barrier();
        long all = cuda.hostReadCount() - before;
        long experts = expertReads.get() - expertBefore; // inside expert-kernel calls (every rank's)
        out[0] = all - optReads - experts;
        out[1] = experts;
        out[2] = optReads;
    }

    @Test
    void nonFiniteLogitsAreReportedAtTheNextCheckAndAddNoLoad() {
        MoeConfig cfg = staticConfig(1);
        VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            Random g = new Random(7);
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(11).backend(cuda).build();
                 HostBuffer xh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
                 Buffer good = cuda.upload(xh)) {
                int badToken = 5;
                xh.setFloat((long) badToken * cfg.hidden() + 3, Float.NaN);
                xh.setFloat((long) (badToken + 9) * cfg.hidden(), Float.POSITIVE_INFINITY);
                try (Buffer bad = cuda.upload(xh)) {
                    MoeLayer.Forward f1 = layer.forward(good);
                    f1.output().close();
                    int[] counted = f1.tokensPerExpert(); // a host read on request
                    f1.context().close();
                    long[] loadAfterGood = layer.expertBias().load();
                    for (int e = 0; e < counted.length; e++) {
                        assertEquals(counted[e], loadAfterGood[e], "load of expert " + e + " after one good step");
                    }
                    MoeLayer.Forward f2 = layer.forward(bad); // no eager check: no exception
                    f2.output().close();
                    f2.context().close();
                    MoeLayer.Forward f3 = layer.forward(good); // after a flagged step: still no load until reported
                    f3.output().close();
                    f3.context().close();
                    assertArrayEquals(loadAfterGood, layer.expertBias().load(), "flagged steps add no load");
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, layer::checkStep);
                    assertTrue(e.getMessage().contains("router logits of token " + badToken + " were not finite"),
                            e.getMessage());
                    layer.checkStep(); // reported once: the flag is clear
                    MoeLayer.Forward f4 = layer.forward(good);
                    f4.output().close();
                    f4.context().close();
                    long[] load = layer.expertBias().load();
                    for (int i = 0; i < load.length; i++) {
                        assertEquals(2 * loadAfterGood[i], load[i], "load of expert " + i + " counts again once cleared");
                    }
                }
            }
            return null;
        });
    }

    @Test
    void aSyncFreeRouterForwardReadsNothingBackAndRoutesABadTokenNowhere() {
        MoeConfig cfg = staticConfig(1);
        Random g = new Random(3);
        try (org.moe4j.routing.Router router = org.moe4j.routing.Router.builder(cfg).backend(cuda).build();
             HostBuffer xh = MoeLayerGpuTest.random(g, TOKENS, cfg.hidden());
             HostBuffer wh = MoeLayerGpuTest.random(g, cfg.experts(), cfg.hidden())) {
            assertTrue(router.syncFree(), "the cuda routing kernels keep device statistics");
            int badToken = 17;
            xh.setFloat((long) badToken * cfg.hidden() + 1, Float.NaN);
            try (Buffer x = cuda.upload(xh); Buffer w = cuda.upload(wh)) {
                router.forward(x, w).close(); // warm-up: kernels loaded, scratch made
                long before = cuda.hostReadCount();
                try (org.moe4j.routing.RouterOutput out = router.forward(x, w)) {
                    assertEquals(before, cuda.hostReadCount(), "a sync-free forward reads nothing back");
                    try (HostBuffer idx = out.topkIdx().toHost(); HostBuffer wt = out.topkWeights().toHost()) {
                        for (int k = 0; k < cfg.topK(); k++) {
                            assertEquals(-1, idx.getInt((long) badToken * cfg.topK() + k), "bad token slot " + k);
                            assertEquals(0f, wt.getFloat((long) badToken * cfg.topK() + k), "bad token weight " + k);
                        }
                    }
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, out::tokensPerExpert);
                    assertTrue(e.getMessage().contains("token " + badToken), e.getMessage());
                    int[] counts = out.tokensPerExpert().toIntArray(); // reported once: now the counts
                    assertEquals((TOKENS - 1) * cfg.topK(), java.util.Arrays.stream(counts).sum(),
                            "the bad token is routed nowhere");
                }
                assertArrayEquals(new long[cfg.experts()], router.expertBias().load(), "flagged steps added no load");
            }
        }
    }

    @Test
    void configurationsThatNeedTheHostKeepEagerRouting() {
        MoeConfig aux = staticConfig(1).toBuilder().auxLoss(new AuxLoss(1e-2, 0, 0, 0)).build();
        VirtualRankGroup.run(cuda.context(), 1, TIMEOUT, c -> {
            try (MoeLayer layer = MoeLayer.builder(aux, c).seed(1).backend(cuda).build()) {
                assertFalse(layer.router().syncFree(), "auxiliary losses are computed on the host");
                assertFalse(layer.expertBias().onDevice(), "the bias stays host state with eager routing");
            }
            return null;
        });
    }
}
