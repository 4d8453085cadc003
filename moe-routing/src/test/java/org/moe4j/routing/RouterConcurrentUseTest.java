package org.moe4j.routing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.moe4j.core.ConcurrentUseException;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.routing.internal.CpuRoutingKernels;

/** One router used from two threads at once: the second call is refused, naming both calls. */
class RouterConcurrentUseTest {
    static final int TOKENS = 6;
    static final int EXPERTS = 4;

    @Test
    void aSecondThreadIsRefusedWhileAForwardRunsAndNothingIsLost() throws Exception {
        MoeConfig cfg = MoeConfig.builder().hidden(4).experts(EXPERTS).topK(2).ffn(1).expertBiasCoeff(0.01).build();
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        try (CpuParallel pool = new CpuParallel(1)) {
            CpuRoutingKernels cpu = new CpuRoutingKernels(pool);
            RoutingKernels blocking = (RoutingKernels) Proxy.newProxyInstance(RoutingKernels.class.getClassLoader(),
                    new Class<?>[] {RoutingKernels.class}, (proxy, method, args) -> {
                        if (method.getName().equals("route") && Thread.currentThread().getName().equals("router-A")) {
                            inside.countDown();
                            release.await(10, TimeUnit.SECONDS);
                        }
                        try {
                            return method.invoke(cpu, args);
                        } catch (InvocationTargetException e) {
                            throw e.getCause();
                        }
                    });
            Router router = Router.builder(cfg).kernels(blocking).parallel(pool).build();
            AtomicReference<Throwable> error = new AtomicReference<>();
            Thread a = new Thread(() -> {
                try (HostBuffer logits = logits(); RouterOutput out = router.forwardLogits(logits)) {
                    assertTrue(out.tokens() == TOKENS);
                } catch (Throwable t) {
                    error.set(t);
                }
            }, "router-A");
            a.start();
            assertTrue(inside.await(10, TimeUnit.SECONDS), "thread A entered forwardLogits");
            try (HostBuffer logits = logits()) {
                ConcurrentUseException e = assertThrows(ConcurrentUseException.class, () -> router.forwardLogits(logits));
                assertTrue(e.getMessage().startsWith("Router.forwardLogits called on thread '"
                        + Thread.currentThread().getName() + "' while Router.forwardLogits is running on thread 'router-A'"),
                        e.getMessage());
            }
            release.countDown();
            a.join(10_000);
            assertNull(error.get());
            // exactly one forward's load was counted: the refused call added nothing
            long[] expected = new long[EXPERTS];
            try (HostBuffer logits = logits(); RouterOutput out = router.forwardLogits(logits)) {
                int[] sel = out.selectedPerExpert();
                for (int e = 0; e < EXPERTS; e++) {
                    expected[e] = 2L * sel[e];
                }
            }
            assertArrayEquals(expected, router.expertBias().load());
            router.expertBias().close();
        }
    }

    @Test
    void closedInputsAreRefusedByNameAndCountNoLoad() {
        MoeConfig cfg = MoeConfig.builder().hidden(4).experts(EXPERTS).topK(2).ffn(1).build();
        try (CpuParallel pool = new CpuParallel(1)) {
            Router router = Router.builder(cfg).parallel(pool).build();
            HostBuffer logits = logits();
            logits.close();
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> router.forwardLogits(logits));
            assertTrue(e.getMessage().equals("Router.forwardLogits: logits is closed"), e.getMessage());
            try (HostBuffer gate = HostBuffer.allocate(org.moe4j.core.DType.F32, EXPERTS, 4)) {
                HostBuffer x = HostBuffer.allocate(org.moe4j.core.DType.F32, TOKENS, 4);
                x.close();
                e = assertThrows(IllegalArgumentException.class, () -> router.forward(x, gate));
                assertTrue(e.getMessage().equals("Router.forward: x is closed"), e.getMessage());
            }
            try (HostBuffer x = HostBuffer.allocate(org.moe4j.core.DType.F32, TOKENS, 4)) {
                HostBuffer gate = HostBuffer.allocate(org.moe4j.core.DType.F32, EXPERTS, 4);
                gate.close();
                e = assertThrows(IllegalArgumentException.class, () -> router.forward(x, gate));
                assertTrue(e.getMessage().equals("Router.forward: gateWeight is closed"), e.getMessage());
            }
            assertArrayEquals(new long[EXPERTS], router.expertBias().load());
            router.expertBias().close();
        }
    }

    static HostBuffer logits() {
        float[] v = new float[TOKENS * EXPERTS];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) Math.cos(i * 1.3);
        }
        return HostBuffer.ofFloats(v, TOKENS, EXPERTS);
    }
}
