package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.moe4j.core.ConcurrentUseException;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.experts.internal.CpuExpertKernels;
import org.moe4j.optim.Parameter;

/** A refused or failed MoeLayer call changes nothing, on this rank or any other; misuse is detected. */
class MoeLayerAllOrNothingTest {
    static final int TOKENS = 8;
    static final int HIDDEN = 8;
    static final Duration TIMEOUT = Duration.ofSeconds(5);
    static final Duration BOUND = Duration.ofSeconds(60);

    static MoeConfig config(int world) {
        return MoeConfig.builder().hidden(HIDDEN).experts(4).topK(2).ffn(8).scoreFunction(ScoreFunction.SIGMOID)
                .expertBiasCoeff(0.01).sharedExperts(1, 8).expertParallel(world).build();
    }

    static HostBuffer x(long seed) {
        Random r = new Random(seed);
        float[] v = new float[TOKENS * HIDDEN];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return HostBuffer.ofFloats(v, TOKENS, HIDDEN);
    }

    static List<float[]> grads(MoeLayer layer) {
        List<float[]> out = new ArrayList<>();
        for (Parameter p : layer.parameters()) {
            out.add(((HostBuffer) p.grad()).toFloatArray());
        }
        return out;
    }

    static void assertGradsZero(MoeLayer layer) {
        for (Parameter p : layer.parameters()) {
            for (float g : ((HostBuffer) p.grad()).toFloatArray()) {
                assertEquals(0f, g, p.name() + " was touched by a refused call");
            }
        }
    }

    @Test
    void aBackwardWithABadDyChangesNothingAndCanBeRetried() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        LocalGroup.run(1, TIMEOUT, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(1), comm).seed(3).build(); HostBuffer x = x(seed);
                 HostBuffer dy = x(seed + 1); HostBuffer dyBf16 = HostBuffer.allocate(DType.BF16, TOKENS, HIDDEN);
                 HostBuffer dyShort = HostBuffer.allocate(DType.F32, TOKENS - 1, HIDDEN)) {
                MoeLayer.Forward f = layer.forward(x);
                f.output().close();
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> layer.backward(f.context(), dyBf16));
                assertEquals("MoeLayer.backward: dY must be F32 [8, 8] but is BF16 [8, 8]", e.getMessage());
                e = assertThrows(IllegalArgumentException.class, () -> layer.backward(f.context(), dyShort));
                assertEquals("MoeLayer.backward: dY must be F32 [8, 8] but is F32 [7, 8]", e.getMessage());
                HostBuffer closed = x(seed);
                closed.close();
                e = assertThrows(IllegalArgumentException.class, () -> layer.backward(f.context(), closed));
                assertEquals("MoeLayer.backward: dY is closed", e.getMessage());
                assertThrows(NullPointerException.class, () -> layer.backward(f.context(), null));
                assertThrows(NullPointerException.class, () -> layer.backward(null, dy));
                assertGradsZero(layer);
                assertFalse(f.context().isClosed(), "a refused backward leaves the context usable");
                // the retry gives exactly what a first, correct backward gives
                try (Buffer dx = layer.backward(f.context(), dy)) {
                    assertTrue(f.context().isClosed());
                    List<float[]> retried = grads(layer);
                    layer.zeroGrad();
                    MoeLayer.Forward g = layer.forward(x);
                    g.output().close();
                    try (Buffer dx2 = layer.backward(g.context(), dy)) {
                        assertArrayEquals(((HostBuffer) dx2).toFloatArray(), ((HostBuffer) dx).toFloatArray());
                    }
                    List<float[]> fresh = grads(layer);
                    for (int i = 0; i < fresh.size(); i++) {
                        assertArrayEquals(fresh.get(i), retried.get(i));
                    }
                }
                e = assertThrows(IllegalArgumentException.class, () -> layer.backward(f.context(), dy));
                assertEquals("MoeLayer.backward: ctx is closed (a context is consumed by one backward)", e.getMessage());
            }
            return null;
        });
    }

    @Test
    void aBackwardWhoseForwardInputWasClosedIsRefusedBeforeAnyGradientIsAdded() {
        LocalGroup.run(1, TIMEOUT, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(1), comm).seed(3).build();
                 MoeLayer other = MoeLayer.builder(config(1), comm).seed(3).build(); HostBuffer dy = x(2)) {
                HostBuffer x = x(1);
                MoeLayer.Forward f = layer.forward(x);
                f.output().close();
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> other.backward(f.context(), dy));
                assertEquals("MoeLayer.backward: ctx was produced by another MoeLayer", e.getMessage());
                x.close();
                e = assertThrows(IllegalArgumentException.class, () -> layer.backward(f.context(), dy));
                assertEquals("MoeLayer.backward: x (the forward input, borrowed until backward) is closed", e.getMessage());
                assertGradsZero(layer);
                assertGradsZero(other);
                f.context().close();
            }
            return null;
        });
    }

    @Test
    void aRefusedForwardCountsNoLoad() {
        LocalGroup.run(1, TIMEOUT, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(1), comm).seed(3).build();
                 HostBuffer bf16 = HostBuffer.allocate(DType.BF16, TOKENS, HIDDEN);
                 HostBuffer wide = HostBuffer.allocate(DType.F32, TOKENS, HIDDEN + 1);
                 HostBuffer flat = HostBuffer.allocate(DType.F32, TOKENS * HIDDEN)) {
                HostBuffer closed = x(1);
                closed.close();
                assertEquals("MoeLayer.forward: x is closed",
                        assertThrows(IllegalArgumentException.class, () -> layer.forward(closed)).getMessage());
                assertTrue(assertThrows(IllegalArgumentException.class, () -> layer.forward(bf16)).getMessage()
                        .contains("expected dtype F32 but got BF16"));
                assertTrue(assertThrows(IllegalArgumentException.class, () -> layer.forward(wide)).getMessage()
                        .startsWith("MoeLayer.forward: x"));
                assertEquals("MoeLayer.forward: x must be F32 [tokens, hidden=8] but is F32 [64]",
                        assertThrows(IllegalArgumentException.class, () -> layer.forward(flat)).getMessage());
                assertThrows(NullPointerException.class, () -> layer.forward(null));
                assertArrayEquals(new long[4], layer.expertBias().load());
                assertEquals(0, layer.expertBias().microBatches());
            }
            return null;
        });
    }

    /**
     * Rank 1's tokens hold a NaN, so its router refuses them; rank 0's forward then fails in the
     * dispatch collective. Neither rank may keep any part of the step: no load counted.
     */
    @Test
    void aForwardThatFailsOnOneRankLeavesNoRankWithAHalfStep() {
        List<long[]> loads = assertTimeoutPreemptively(BOUND, () -> LocalGroup.run(2, TIMEOUT, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(2), comm).seed(3).build(); HostBuffer x = x(10 + comm.rank())) {
                if (comm.rank() == 1) {
                    x.setFloat(5, Float.NaN);
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> layer.forward(x));
                    assertTrue(e.getMessage().contains("router logits of token 0 are not finite"), e.getMessage());
                } else {
                    assertInstanceOf(CommunicatorException.class,
                            assertThrows(RuntimeException.class, () -> layer.forward(x)));
                }
                assertEquals(0, layer.expertBias().microBatches(), "rank " + comm.rank());
                assertGradsZero(layer);
                return layer.expertBias().load();
            }
        }));
        assertArrayEquals(new long[4], loads.get(0));
        assertArrayEquals(new long[4], loads.get(1));
    }

    /**
     * Rank 1's expert kernels fail in the middle of its backward, after the combine-backward
     * collectives and before the dispatch-backward one; rank 0's dispatch-backward collective then
     * fails. Neither rank may keep part of the step's gradients.
     */
    /** CPU expert kernels whose {@code swigluBackward} throws while {@code armed} says so. */
    static ExpertKernels failingSwigluBackward(java.util.function.BooleanSupplier armed) {
        ExpertKernels cpu = new CpuExpertKernels();
        return (ExpertKernels) Proxy.newProxyInstance(ExpertKernels.class.getClassLoader(),
                new Class<?>[] {ExpertKernels.class}, (proxy, method, args) -> {
                    if (armed.getAsBoolean() && method.getName().equals("swigluBackward")) {
                        throw new IllegalStateException("injected expert-kernel failure");
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
    }

    @Test
    void aBackwardThatFailsOnOneRankLeavesNoRankWithHalfItsGradients() {
        ExpertKernels failing = failingSwigluBackward(() -> true);
        assertTimeoutPreemptively(BOUND, () -> LocalGroup.run(2, TIMEOUT, comm -> {
            MoeLayer.Builder b = MoeLayer.builder(config(2), comm).seed(3);
            if (comm.rank() == 1) {
                b.expertKernels(failing);
            }
            try (MoeLayer layer = b.build(); HostBuffer x = x(20 + comm.rank()); HostBuffer dy = x(30 + comm.rank())) {
                MoeLayer.Forward f = layer.forward(x);
                f.output().close();
                RuntimeException e = assertThrows(RuntimeException.class, () -> layer.backward(f.context(), dy));
                if (comm.rank() == 1) {
                    assertEquals("injected expert-kernel failure", e.getMessage());
                } else {
                    assertInstanceOf(CommunicatorException.class, e);
                }
                assertGradsZero(layer);
            }
            return null;
        }));
    }

    /**
     * As above, but the failing backward is the second one after a {@code zeroGrad()} (gradient
     * accumulation): the gradients then hold the first backward's sums, and both ranks keep exactly
     * those, bit for bit.
     */
    @Test
    void aFailingBackwardOntoAccumulatedGradientsKeepsThemBitForBit() {
        java.util.concurrent.atomic.AtomicBoolean armed = new java.util.concurrent.atomic.AtomicBoolean();
        ExpertKernels failing = failingSwigluBackward(armed::get);
        assertTimeoutPreemptively(BOUND, () -> LocalGroup.run(2, TIMEOUT, comm -> {
            MoeLayer.Builder b = MoeLayer.builder(config(2), comm).seed(3);
            if (comm.rank() == 1) {
                b.expertKernels(failing);
            }
            try (MoeLayer layer = b.build(); HostBuffer x = x(20 + comm.rank()); HostBuffer dy = x(30 + comm.rank())) {
                layer.zeroGrad();
                MoeLayer.Forward f1 = layer.forward(x);
                f1.output().close();
                layer.backward(f1.context(), dy).close();
                List<float[]> first = grads(layer);
                comm.barrier();
                if (comm.rank() == 1) {
                    armed.set(true);
                }
                MoeLayer.Forward f2 = layer.forward(x);
                f2.output().close();
                assertThrows(RuntimeException.class, () -> layer.backward(f2.context(), dy));
                List<float[]> after = grads(layer);
                assertEquals(first.size(), after.size());
                for (int i = 0; i < first.size(); i++) {
                    assertArrayEquals(first.get(i), after.get(i), "rank " + comm.rank() + " gradient " + i);
                }
            }
            return null;
        }));
    }

    @Test
    void aClosedLayerRefusesEveryCallWithATypedException() {
        LocalGroup.run(1, TIMEOUT, comm -> {
            MoeLayer layer = MoeLayer.builder(config(1), comm).seed(3).build();
            layer.close();
            layer.close(); // idempotent
            try (HostBuffer x = x(1)) {
                assertEquals("MoeLayer.forward: the layer is closed",
                        assertThrows(IllegalStateException.class, () -> layer.forward(x)).getMessage());
            }
            assertEquals("MoeLayer.zeroGrad: the layer is closed",
                    assertThrows(IllegalStateException.class, layer::zeroGrad).getMessage());
            assertEquals("MoeLayer.updateExpertBias: the layer is closed",
                    assertThrows(IllegalStateException.class, layer::updateExpertBias).getMessage());
            return null;
        });
    }

    @Test
    void aSuccessfulForwardStillCountsItsLoad() {
        LocalGroup.run(1, TIMEOUT, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(1), comm).seed(3).build(); HostBuffer x = x(4)) {
                MoeLayer.Forward f = layer.forward(x);
                f.output().close();
                long[] load = layer.expertBias().load();
                int[] selected = f.context().route().selectedPerExpert();
                for (int e = 0; e < load.length; e++) {
                    assertEquals(selected[e], load[e]);
                }
                assertEquals(TOKENS * 2L, java.util.Arrays.stream(load).sum());
                assertEquals(1, layer.expertBias().microBatches());
                f.context().close();
            }
            return null;
        });
    }

    @Test
    void aSecondThreadIsRefusedWhileAForwardRunsNamingBothCalls() {
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        ExpertKernels cpu = new CpuExpertKernels();
        ExpertKernels blocking = (ExpertKernels) Proxy.newProxyInstance(ExpertKernels.class.getClassLoader(),
                new Class<?>[] {ExpertKernels.class}, (proxy, method, args) -> {
                    if (method.getName().equals("swigluForward") && Thread.currentThread().getName().equals("layer-A")) {
                        inside.countDown();
                        release.await(10, TimeUnit.SECONDS);
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        assertTimeoutPreemptively(BOUND, () -> LocalGroup.run(1, TIMEOUT, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(1), comm).seed(3).expertKernels(blocking).build();
                 HostBuffer x = x(5); HostBuffer dy = x(6)) {
                AtomicReference<Throwable> error = new AtomicReference<>();
                Thread a = new Thread(() -> {
                    try {
                        MoeLayer.Forward f = layer.forward(x);
                        f.output().close();
                        f.context().close();
                    } catch (Throwable t) {
                        error.set(t);
                    }
                }, "layer-A");
                a.start();
                assertTrue(inside.await(10, TimeUnit.SECONDS));
                try {
                    ConcurrentUseException e = assertThrows(ConcurrentUseException.class, layer::zeroGrad);
                    assertTrue(e.getMessage().startsWith("MoeLayer.zeroGrad called on thread '"
                            + Thread.currentThread().getName() + "' while MoeLayer.forward is running on thread 'layer-A'"),
                            e.getMessage());
                    e = assertThrows(ConcurrentUseException.class, () -> layer.forward(x));
                    assertTrue(e.getMessage().contains("MoeLayer.forward called on thread"), e.getMessage());
                } finally {
                    release.countDown();
                }
                a.join(10_000);
                assertNull(error.get());
                assertEquals(1, layer.expertBias().microBatches(), "only thread A's forward counted");
                MoeLayer.Forward f = layer.forward(x); // usable again from this thread
                f.output().close();
                layer.backward(f.context(), dy).close();
            }
            return null;
        }));
    }
}
