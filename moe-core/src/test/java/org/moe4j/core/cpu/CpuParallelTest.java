package org.moe4j.core.cpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class CpuParallelTest {
    private static final long SEED = 20250101L;
    /** Guards against a hang; not a speed assertion. */
    private static final long HANG_GUARD_SECONDS = 60;

    private static Set<List<Integer>> boundaries(CpuParallel p, int n, int chunk) {
        Set<List<Integer>> seen = ConcurrentHashMap.newKeySet();
        p.forEachChunk(n, chunk, (c, from, to) -> seen.add(List.of(c, from, to)));
        return seen;
    }

    @Test
    void chunkBoundariesDoNotDependOnTheThreadCount() {
        for (int n : new int[] {0, 1, 7, 64, 1000}) {
            Set<List<Integer>> expected;
            try (CpuParallel one = new CpuParallel(1)) {
                expected = boundaries(one, n, 16);
            }
            assertEquals(CpuParallel.chunks(n, 16), expected.size());
            for (int threads : new int[] {2, 3, 8}) {
                try (CpuParallel p = new CpuParallel(threads)) {
                    assertEquals(expected, boundaries(p, n, 16), "n=" + n + " threads=" + threads);
                }
            }
        }
    }

    @Test
    void perChunkReductionCombinedInChunkOrderIsBitwiseThreadCountInvariant() {
        SplittableRandom rnd = new SplittableRandom(SEED);
        System.out.println("seed " + SEED);
        float[] x = new float[10_007];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (rnd.nextGaussian() * Math.exp(rnd.nextInt(-10, 10)));
        }
        int chunk = 97;
        Integer expected = null;
        for (int threads : new int[] {1, 2, 4, 7}) {
            try (CpuParallel p = new CpuParallel(threads)) {
                float[] partial = new float[CpuParallel.chunks(x.length, chunk)];
                p.forEachChunk(x.length, chunk, (c, from, to) -> {
                    float s = 0;
                    for (int i = from; i < to; i++) {
                        s += x[i];
                    }
                    partial[c] = s;
                });
                float total = 0;
                for (float s : partial) {
                    total += s;
                }
                int bits = Float.floatToRawIntBits(total);
                if (expected == null) {
                    expected = bits;
                }
                assertEquals(expected.intValue(), bits, "threads=" + threads);
            }
        }
    }

    @Test
    void theFirstExceptionPropagatesAndThePoolStaysUsable() {
        try (CpuParallel p = new CpuParallel(4)) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> p.forEachChunk(100, 1, (c, from, to) -> {
                        if (c == 37) {
                            throw new IllegalArgumentException("bad token 37");
                        }
                    }));
            assertEquals("bad token 37", e.getMessage());
            AssertionError err = assertThrows(AssertionError.class,
                    () -> p.forEachChunk(10, 1, (c, from, to) -> {
                        throw new AssertionError("chunk failed");
                    }));
            assertEquals("chunk failed", err.getMessage());
            AtomicInteger count = new AtomicInteger();
            p.forEachChunk(50, 3, (c, from, to) -> count.addAndGet(to - from));
            assertEquals(50, count.get());
        }
    }

    @Test
    void aNestedCallRunsInlineOnTheCallingWorker() {
        try (CpuParallel p = new CpuParallel(2)) {
            AtomicInteger inner = new AtomicInteger();
            AtomicInteger foreign = new AtomicInteger();
            p.forEachChunk(8, 1, (c, from, to) -> {
                Thread outer = Thread.currentThread();
                p.forEachChunk(16, 1, (c2, f2, t2) -> {
                    inner.incrementAndGet();
                    if (Thread.currentThread() != outer) {
                        foreign.incrementAndGet();
                    }
                });
            });
            assertEquals(8 * 16, inner.get());
            assertEquals(0, foreign.get(), "nested chunks ran on another thread");
        }
    }

    @Test
    void concurrentCallersMakeProgressEvenWhenWorkersAreBusy() throws Exception {
        // One pool worker. Caller A's chunk 0 blocks until caller B has finished; B must finish on its
        // own thread although the only worker may be stuck in A's chunk.
        try (CpuParallel p = new CpuParallel(2)) {
            ExecutorService callers = Executors.newFixedThreadPool(2);
            try {
                CountDownLatch bDone = new CountDownLatch(1);
                CountDownLatch aStarted = new CountDownLatch(1);
                Future<?> a = callers.submit(() -> p.forEachChunk(4, 1, (c, from, to) -> {
                    aStarted.countDown();
                    if (c == 0 || c == 1) {
                        try {
                            assertTrue(bDone.await(HANG_GUARD_SECONDS, TimeUnit.SECONDS), "caller B never finished");
                        } catch (InterruptedException e) {
                            throw new IllegalStateException(e);
                        }
                    }
                }));
                assertTrue(aStarted.await(HANG_GUARD_SECONDS, TimeUnit.SECONDS));
                AtomicInteger bSum = new AtomicInteger();
                Future<?> b = callers.submit(() -> {
                    p.forEachChunk(100, 7, (c, from, to) -> bSum.addAndGet(to - from));
                    bDone.countDown();
                });
                b.get(HANG_GUARD_SECONDS, TimeUnit.SECONDS);
                a.get(HANG_GUARD_SECONDS, TimeUnit.SECONDS);
                assertEquals(100, bSum.get());
            } finally {
                callers.shutdownNow();
            }
        }
    }

    @Test
    void manyConcurrentCallersAllGetCorrectResults() throws Exception {
        try (CpuParallel p = new CpuParallel(3)) {
            ExecutorService callers = Executors.newFixedThreadPool(6);
            try {
                List<Future<Long>> results = new ArrayList<>();
                for (int r = 0; r < 6; r++) {
                    int n = 1000 + r;
                    results.add(callers.submit(() -> {
                        long[] partial = new long[CpuParallel.chunks(n, 10)];
                        p.forEachChunk(n, 10, (c, from, to) -> {
                            for (int i = from; i < to; i++) {
                                partial[c] += i;
                            }
                        });
                        long s = 0;
                        for (long v : partial) {
                            s += v;
                        }
                        return s;
                    }));
                }
                for (int r = 0; r < 6; r++) {
                    long n = 1000 + r;
                    assertEquals(n * (n - 1) / 2, results.get(r).get(HANG_GUARD_SECONDS, TimeUnit.SECONDS));
                }
            } finally {
                callers.shutdownNow();
            }
        }
    }

    @Test
    void badArgumentsAreRefused() {
        assertEquals("threads must be >= 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> new CpuParallel(0)).getMessage());
        CpuParallel p = CpuParallel.common();
        assertEquals("chunk must be >= 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> p.forEachChunk(4, 0, (c, f, t) -> { })).getMessage());
        assertEquals("n must be >= 0, got -1",
                assertThrows(IllegalArgumentException.class, () -> p.forEachChunk(-1, 4, (c, f, t) -> { })).getMessage());
        assertSame(p, CpuParallel.common());
        assertEquals(Integer.MAX_VALUE / 1000 + 1, CpuParallel.chunks(Integer.MAX_VALUE, 1000));
    }
}
