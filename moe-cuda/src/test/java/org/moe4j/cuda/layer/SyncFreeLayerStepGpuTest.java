package org.moe4j.cuda.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Random;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.comm.VirtualRankGroup;
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

    /**
     * One training step: forward, backward, gradient reduction, AdamW, and (when {@code biasStep})
     * the expert-bias step.
     */
    static void step(MoeLayer layer, AdamW opt, Buffer x, Buffer dy, boolean biasStep) {
        MoeLayer.Forward f = layer.forward(x);
        try (Buffer y = f.output(); Buffer dX = layer.backward(f.context(), dy)) {
            layer.reduceGradients();
        }
        opt.step();
        layer.zeroGrad();
        if (biasStep) {
            layer.stepExpertBias();
        }
    }

    @ParameterizedTest(name = "W={0}")
    @ValueSource(ints = {1, 2})
    void aStaticShapeLayerStepMakesNoHostReadAfterWarmUp(int world) {
        MoeConfig cfg = staticConfig(world);
        long seed = System.nanoTime();
        System.out.println("SyncFreeLayerStepGpuTest seed " + seed + " world " + world);
        java.util.List<long[]> reads = VirtualRankGroup.run(cuda.context(), world, TIMEOUT, c -> {
            Random g = new Random(seed + c.rank());
            try (MoeLayer layer = MoeLayer.builder(cfg, c).seed(seed).backend(cuda).build();
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
                    step(layer, opt, x, dy, true);
                }
                c.barrier();
                long[] perStep = new long[STEPS];
                for (int s = 0; s < STEPS; s++) {
                    c.barrier(); // every rank between steps: the count is shared by the ranks on this device
                    long before = cuda.hostReadCount();
                    step(layer, opt, x, dy, biasInside);
                    c.barrier();
                    perStep[s] = cuda.hostReadCount() - before;
                    if (!biasInside) {
                        layer.stepExpertBias();
                    }
                }
                layer.checkStep(); // no deferred error: the logits were finite
                return perStep;
            }
        });
        for (int r = 0; r < world; r++) {
            assertArrayEquals(new long[STEPS], reads.get(r), "rank " + r + " seed " + seed
                    + ": device→host reads per step (all ranks) after warm-up");
        }
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
