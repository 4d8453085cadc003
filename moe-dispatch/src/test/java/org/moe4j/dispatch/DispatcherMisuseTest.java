package org.moe4j.dispatch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.moe4j.core.ConcurrentUseException;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.HostBuffer;

/** Non-finite routing weights, closed inputs and concurrent use are refused before anything is sent. */
class DispatcherMisuseTest {
    static final Duration TIMEOUT = Duration.ofSeconds(5);
    static final Duration BOUND = Duration.ofSeconds(30);
    static final int TOKENS = 5;
    static final int HIDDEN = 3;

    static HostBuffer x(int rank) {
        float[] v = new float[TOKENS * HIDDEN];
        for (int i = 0; i < v.length; i++) {
            v[i] = rank * 100 + i;
        }
        return HostBuffer.ofFloats(v, TOKENS, HIDDEN);
    }

    static HostBuffer idx() {
        return HostBuffer.ofInts(new int[] {0, 1, 2, 3, -1, 0, 1, 2, 3, -1}, TOKENS, 2);
    }

    static HostBuffer weights() {
        return HostBuffer.ofFloats(new float[] {0.5f, 0.5f, 1, 0, 0.25f, 0.75f, 1, 0, 0.5f, 0.5f}, TOKENS, 2);
    }

    /**
     * Rank 0 first makes a refused call, then both ranks dispatch and combine for real. If the refused
     * call had started a collective, the ranks' collectives would no longer line up and the group
     * would fail; so success proves nothing was sent.
     */
    static void refusedThenLockstep(DispatchStrategy strategy, String expected, RefusedCall call) {
        List<float[]> outs = assertTimeoutPreemptively(BOUND, () -> LocalGroup.run(2, TIMEOUT, comm -> {
            Dispatcher d = Dispatcher.create(DispatchConfig.of(4).withStrategy(strategy), comm, new CpuBackend(),
                    Harness.kernels(1));
            try (HostBuffer x = x(comm.rank()); HostBuffer idx = idx(); HostBuffer w = weights()) {
                if (comm.rank() == 0) {
                    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> call.run(d, x, idx, w));
                    assertEquals(expected, e.getMessage());
                }
                try (DispatchResult r = d.dispatch(x, idx, w);
                     HostBuffer out = (HostBuffer) d.combine(r, r.expertInput())) {
                    return out.toFloatArray();
                }
            }
        }));
        // identity experts: combine(dispatch(x)) = x · (sum of the weights of the non-empty slots)
        float[] sums = {1, 1, 0.75f, 1, 0.5f};
        for (int r = 0; r < 2; r++) {
            for (int t = 0; t < TOKENS; t++) {
                for (int c = 0; c < HIDDEN; c++) {
                    float xv = r * 100 + t * HIDDEN + c;
                    assertEquals(xv * sums[t], outs.get(r)[t * HIDDEN + c], 1e-4, "rank " + r + " token " + t);
                }
            }
        }
    }

    interface RefusedCall {
        void run(Dispatcher d, HostBuffer x, HostBuffer idx, HostBuffer w) throws Exception;
    }

    @Test
    void nonFiniteRoutingWeightsAreRefusedLikeBadExpertIdsBeforeAnythingIsSent() {
        for (DispatchStrategy s : DispatchStrategy.values()) {
            refusedThenLockstep(s, "topkWeights[2, 1] is not finite (NaN or Inf) for expert 0; refused before anything"
                    + " is sent", (d, x, idx, w) -> {
                        try (HostBuffer bad = weights()) {
                            bad.setFloat(5, Float.NaN);
                            d.dispatch(x, idx, bad);
                        }
                    });
            refusedThenLockstep(s, "topkWeights[0, 0] is not finite (NaN or Inf) for expert 0; refused before anything"
                    + " is sent", (d, x, idx, w) -> {
                        try (HostBuffer bad = weights()) {
                            bad.setFloat(0, Float.NEGATIVE_INFINITY);
                            d.dispatch(x, idx, bad);
                        }
                    });
        }
    }

    @Test
    void aNonFiniteWeightInAnEmptySlotIsIgnored() {
        LocalGroup.run(1, TIMEOUT, comm -> {
            Dispatcher d = Dispatcher.create(DispatchConfig.of(4), comm, new CpuBackend(), Harness.kernels(1));
            try (HostBuffer x = x(0); HostBuffer idx = idx(); HostBuffer w = weights()) {
                w.setFloat(4, Float.POSITIVE_INFINITY); // slot [2, 0] has topkIdx -1
                d.dispatch(x, idx, w).close();
            }
            return null;
        });
    }

    @Test
    void closedInputsAreRefusedBeforeAnythingIsSent() {
        refusedThenLockstep(DispatchStrategy.ALL_TO_ALL, "x is closed (F32 [5, 3])", (d, x, idx, w) -> {
            HostBuffer closed = x(0);
            closed.close();
            d.dispatch(closed, idx, w);
        });
        refusedThenLockstep(DispatchStrategy.ALL_GATHER, "topkWeights is closed (F32 [5, 2])",
                (d, x, idx, w) -> {
                    HostBuffer closed = weights();
                    closed.close();
                    d.dispatch(x, idx, closed);
                });
    }

    /**
     * A backend whose non-finite weight scan reads device memory back (the host-staged default, as on
     * CUDA today) has that read counted once per dispatch; the CPU kernels, reading host memory in
     * place, add nothing.
     */
    @Test
    void aHostStagedNonFiniteWeightScanIsCountedAsAHostRead() {
        DispatchKernels cpu = Harness.kernels(1);
        DispatchKernels staged = (DispatchKernels) Proxy.newProxyInstance(DispatchKernels.class.getClassLoader(),
                new Class<?>[] {DispatchKernels.class}, (proxy, method, args) -> {
                    if (method.getName().equals("nonFiniteWeightScanReadsBack")) {
                        return true;
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        assertFalse(cpu.nonFiniteWeightScanReadsBack());
        for (DispatchStrategy strategy : DispatchStrategy.values()) {
            long[] extra = LocalGroup.run(1, TIMEOUT, comm -> {
                DispatchConfig config = DispatchConfig.of(4).withStrategy(strategy);
                Dispatcher plain = Dispatcher.create(config, comm, new CpuBackend(), cpu);
                Dispatcher counted = Dispatcher.create(config, comm, new CpuBackend(), staged);
                long[] reads = new long[2];
                try (HostBuffer x = x(0); HostBuffer idx = idx(); HostBuffer w = weights()) {
                    for (int i = 0; i < 2; i++) {
                        Dispatcher d = i == 0 ? plain : counted;
                        long before = d.hostReads();
                        for (int step = 0; step < 3; step++) {
                            d.dispatch(x, idx, w).close();
                        }
                        reads[i] = d.hostReads() - before;
                    }
                }
                return new long[] {reads[1] - reads[0]};
            }).get(0);
            assertEquals(3, extra[0], strategy + ": one counted read per dispatch");
        }
    }

    @Test
    void aSecondThreadIsRefusedWhileADispatchRuns() throws Exception {
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        java.util.concurrent.atomic.AtomicInteger routed = new java.util.concurrent.atomic.AtomicInteger();
        DispatchKernels cpu = Harness.kernels(1);
        DispatchKernels blocking = (DispatchKernels) Proxy.newProxyInstance(DispatchKernels.class.getClassLoader(),
                new Class<?>[] {DispatchKernels.class}, (proxy, method, args) -> {
                    if (method.getName().equals("countRoutes")) {
                        routed.incrementAndGet();
                    }
                    if (method.getName().equals("countRoutes") && Thread.currentThread().getName().equals("dispatch-A")) {
                        inside.countDown();
                        release.await(10, TimeUnit.SECONDS);
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        LocalGroup.run(1, TIMEOUT, comm -> {
            Dispatcher d = Dispatcher.create(DispatchConfig.of(4), comm, new CpuBackend(), blocking);
            AtomicReference<Throwable> error = new AtomicReference<>();
            Thread a = new Thread(() -> {
                try (HostBuffer x = x(0); HostBuffer idx = idx(); HostBuffer w = weights()) {
                    d.dispatch(x, idx, w).close();
                } catch (Throwable t) {
                    error.set(t);
                }
            }, "dispatch-A");
            a.start();
            assertTrue(inside.await(10, TimeUnit.SECONDS));
            try (HostBuffer x = x(0); HostBuffer idx = idx(); HostBuffer w = weights()) {
                ConcurrentUseException e = assertThrows(ConcurrentUseException.class, () -> d.dispatch(x, idx, w));
                assertTrue(e.getMessage().startsWith("Dispatcher.dispatch called on thread '"
                        + Thread.currentThread().getName() + "' while Dispatcher.dispatch is running on thread"
                        + " 'dispatch-A'"), e.getMessage());
            } finally {
                release.countDown();
            }
            a.join(10_000);
            assertNull(error.get());
            try (HostBuffer x = x(0); HostBuffer idx = idx(); HostBuffer w = weights()) {
                d.dispatch(x, idx, w).close(); // usable again
            }
            return null;
        });
        assertEquals(2, routed.get(), "only thread A's dispatch and the later one reach the kernels; the refused"
                + " call must not");
    }
}
