package org.moe4j.dispatch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.moe4j.core.DType;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.dispatch.Harness.Pass;
import org.moe4j.dispatch.Harness.Problem;

/** The static-shape (equal-split) all-to-all: overflow contract, bounds, and no host read in a step. */
class StaticAllToAllTest {
    static final int[] WORLDS = {1, 2, 4};

    static DispatchConfig staticConfig(int experts, int chunkRows, DropPolicy policy) {
        return DispatchConfig.of(experts).withOptions(new DispatchOptions(DispatchOptions.STATIC_ALL_TO_ALL, false, false, 0,
                chunkRows)).withDropPolicy(policy);
    }

    /** The largest number of slots one rank routes to one destination rank. */
    static int largestChunk(Problem p, int world) {
        int[] split = Harness.split(p.tokens(), world);
        int local = p.experts() / world;
        int most = 0;
        for (int r = 0; r < world; r++) {
            int[] perDest = new int[world];
            for (int s = split[r] * p.topK(); s < split[r + 1] * p.topK(); s++) {
                if (p.topkIdx()[s] >= 0) {
                    most = Math.max(most, ++perDest[p.topkIdx()[s] / local]);
                }
            }
        }
        return most;
    }

    /**
     * The routing with the slots a static chunk of {@code cap} rows drops set to -1, computed here
     * independently of the kernels: per (source rank, destination rank), keep the {@code cap} lowest
     * slot indices (BY_POSITION) or highest weights, ties to the lower slot (BY_SCORE).
     */
    static int[] dropOverflow(Problem p, int world, int cap, DropPolicy policy, long[] droppedPerRank) {
        int[] split = Harness.split(p.tokens(), world);
        int local = p.experts() / world;
        int[] idx = p.topkIdx().clone();
        for (int r = 0; r < world; r++) {
            for (int d = 0; d < world; d++) {
                List<Integer> slots = new ArrayList<>();
                for (int s = split[r] * p.topK(); s < split[r + 1] * p.topK(); s++) {
                    if (idx[s] >= 0 && idx[s] / local == d) {
                        slots.add(s);
                    }
                }
                if (policy == DropPolicy.BY_SCORE) {
                    slots.sort((a, b) -> p.weights()[a] != p.weights()[b] ? Float.compare(p.weights()[b], p.weights()[a])
                            : Integer.compare(a, b));
                }
                for (int i = cap; i < slots.size(); i++) {
                    idx[slots.get(i)] = -1;
                    droppedPerRank[r]++;
                }
            }
        }
        return idx;
    }

    @Test
    void aChunkBoundJustLargeEnoughGivesTheCountExchangeResultsBitForBit() {
        long seed = DispatcherTest.seed("static bound");
        Problem p = Harness.problem(seed, 41, 12, 8, 3, DType.F32, 0.1);
        for (int world : WORLDS) {
            Pass want = Harness.run(p, world, DispatchConfig.of(p.experts()), 2);
            int cap = largestChunk(p, world);
            Pass got = Harness.run(p, world, staticConfig(p.experts(), cap, DropPolicy.BY_SCORE).withGroupAlignment(4), 2);
            String what = "W=" + world + " chunkRows=" + cap + " seed=" + seed;
            DispatcherTest.assertBitwise(want.out(), got.out(), "out " + what);
            DispatcherTest.assertBitwise(want.dX(), got.dX(), "dX " + what);
            DispatcherTest.assertBitwise(want.dW(), got.dW(), "dTopkWeights " + what);
            DispatcherTest.assertBitwise(want.dYSlots(), got.dYSlots(), "dExpertOutput " + what);
            assertArrayEquals(want.load(), got.load(), "tokensPerLocalExpert " + what);
        }
    }

    @ParameterizedTest
    @EnumSource(DropPolicy.class)
    void overflowDropsByThePolicyCountsTheDropsAndEqualsRoutingWithoutThem(DropPolicy policy) {
        long seed = DispatcherTest.seed("static overflow " + policy);
        Problem p = Harness.problem(seed, 40, 8, 8, 3, DType.F32, 0.05);
        for (int world : WORLDS) {
            int cap = Math.max(1, largestChunk(p, world) / 2);
            long[] dropped = new long[world];
            int[] kept = dropOverflow(p, world, cap, policy, dropped);
            assertTrue(Arrays.stream(dropped).sum() > 0, "the bound must overflow somewhere");
            Problem reduced = new Problem(p.tokens(), p.hidden(), p.experts(), p.topK(), p.dtype(), p.x(), kept, p.weights(),
                    p.dOut());
            Pass want = Harness.run(reduced, world, DispatchConfig.of(p.experts()), 1);
            Pass got = Harness.run(p, world, staticConfig(p.experts(), cap, policy), 1);
            String what = policy + " W=" + world + " chunkRows=" + cap + " seed=" + seed;
            DispatcherTest.assertBitwise(want.out(), got.out(), "out " + what);
            DispatcherTest.assertBitwise(want.dX(), got.dX(), "dX " + what);
            DispatcherTest.assertBitwise(want.dW(), got.dW(), "dTopkWeights " + what);
            DispatcherTest.assertBitwise(want.dYSlots(), got.dYSlots(), "dExpertOutput " + what);
            assertArrayEquals(dropped, overflowPerRank(p, world, staticConfig(p.experts(), cap, policy)), what);
        }
    }

    /** {@link DispatchResult#overflow()} of every rank. */
    static long[] overflowPerRank(Problem p, int world, DispatchConfig config) {
        int[] split = Harness.split(p.tokens(), world);
        List<Long> per = LocalGroup.run(world, Harness.TIMEOUT, comm -> {
            int r = comm.rank();
            int t0 = split[r];
            int t = split[r + 1] - t0;
            int h = p.hidden();
            int k = p.topK();
            Dispatcher d = Dispatcher.create(config, comm, new CpuBackend(), Harness.kernels(1));
            try (HostBuffer x = HostBuffer.ofFloats(Arrays.copyOfRange(p.x(), t0 * h, (t0 + t) * h), t, h);
                    HostBuffer idx = HostBuffer.ofInts(Arrays.copyOfRange(p.topkIdx(), t0 * k, (t0 + t) * k), t, k);
                    HostBuffer w = HostBuffer.ofFloats(Arrays.copyOfRange(p.weights(), t0 * k, (t0 + t) * k), t, k);
                    DispatchResult res = d.dispatch(x, idx, w)) {
                return res.overflow();
            }
        });
        return per.stream().mapToLong(Long::longValue).toArray();
    }

    /**
     * A whole dispatch → combine → combine backward → dispatch backward step, with the expert output
     * taken as the expert input (no host look at the layout), counting the dispatcher's device→host
     * reads: none on the static shape, and some on the count exchange (so the counter counts).
     */
    static long hostReadsOfAStep(DispatchConfig config, int world, Problem p) {
        int[] split = Harness.split(p.tokens(), world);
        List<Long> reads = LocalGroup.run(world, Harness.TIMEOUT, comm -> {
            int r = comm.rank();
            int t0 = split[r];
            int t = split[r + 1] - t0;
            int h = p.hidden();
            int k = p.topK();
            Dispatcher d = Dispatcher.create(config, comm, new CpuBackend(), Harness.kernels(2));
            try (HostBuffer x = HostBuffer.ofFloats(Arrays.copyOfRange(p.x(), t0 * h, (t0 + t) * h), t, h);
                    HostBuffer idx = HostBuffer.ofInts(Arrays.copyOfRange(p.topkIdx(), t0 * k, (t0 + t) * k), t, k);
                    HostBuffer w = HostBuffer.ofFloats(Arrays.copyOfRange(p.weights(), t0 * k, (t0 + t) * k), t, k);
                    HostBuffer dOut = HostBuffer.ofFloats(Arrays.copyOfRange(p.dOut(), t0 * h, (t0 + t) * h), t, h)) {
                long before = d.hostReads();
                for (int step = 0; step < 2; step++) {
                    try (DispatchResult res = d.dispatch(x, idx, w);
                            Buffer out = d.combine(res, res.expertInput());
                            CombineGrads g = d.combineBackward(res, dOut);
                            Buffer dX = d.dispatchBackward(res, g.dExpertOutput())) {
                        assertEquals(t, dX.shape().dim(0));
                        assertEquals(t, out.shape().dim(0));
                    }
                }
                return d.hostReads() - before;
            }
        });
        return reads.stream().mapToLong(Long::longValue).sum();
    }

    @Test
    void aStaticShapeStepReadsNothingBackFromTheDeviceWhileTheCountExchangeDoes() {
        long seed = DispatcherTest.seed("static host reads");
        Problem p = Harness.problem(seed, 24, 8, 8, 2, DType.F32, 0.1);
        for (int world : WORLDS) {
            assertEquals(0, hostReadsOfAStep(staticConfig(p.experts(), p.tokens() * p.topK(), DropPolicy.BY_SCORE)
                    .withGroupAlignment(4), world, p), "static-all-to-all W=" + world);
            assertTrue(hostReadsOfAStep(DispatchConfig.of(p.experts()), world, p) >= 2L * world,
                    "the count exchange reads its counts back, W=" + world);
        }
        assertTrue(Dispatchers.provider(DispatchOptions.STATIC_ALL_TO_ALL).hostSyncFree());
        assertTrue(!Dispatchers.provider(DispatchOptions.ALL_TO_ALL).hostSyncFree());
    }

    @Test
    void theBuiltInStrategiesAreFoundThroughTheSpiAndAnUnknownOneIsRefusedByName() {
        assertTrue(Dispatchers.ids().containsAll(List.of("all-to-all", "all-gather", "static-all-to-all")),
                Dispatchers.ids().toString());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Dispatchers.provider("deep-ep"));
        assertTrue(e.getMessage().startsWith("no dispatch strategy 'deep-ep' is registered; known: ["), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> DispatchConfig.of(4).withStrategy("Bad Name"));
        assertEquals("DispatchOptions: chunkRows/chunkFactor apply to the static-all-to-all strategy only, not 'all-to-all'",
                assertThrows(IllegalArgumentException.class, () -> new DispatchOptions("all-to-all", false, false, 0, 8))
                        .getMessage());
        assertEquals("DispatchOptions: chunkRows=8 and chunkFactor=1.5 both set; give at most one static chunk capacity",
                assertThrows(IllegalArgumentException.class,
                        () -> new DispatchOptions("static-all-to-all", false, false, 1.5, 8)).getMessage());
    }

    @Test
    void theChunkCapacityComesFromTheBoundTheFactorOrTheWorstCase() {
        assertEquals(30, DispatchOptions.of("static-all-to-all").chunkCapacity(10, 3, 4), "worst case tokens*topK");
        assertEquals(12, new DispatchOptions("static-all-to-all", false, false, 1.5, 0).chunkCapacity(10, 3, 4),
                "ceil(1.5*10*3/4)");
        assertEquals(7, new DispatchOptions("static-all-to-all", false, false, 0, 7).chunkCapacity(10, 3, 4));
        assertEquals(500, new DispatchOptions("static-all-to-all", false, false, 0, 500).chunkCapacity(10, 3, 4),
                "a bound is global: the same whatever the rank's tokens");
        assertEquals(30, new DispatchOptions("static-all-to-all", false, false, 9, 0).chunkCapacity(10, 3, 4),
                "a factor never goes above the worst case");
        assertEquals(1, DispatchOptions.of("static-all-to-all").chunkCapacity(0, 3, 4), "an empty batch keeps one row");
    }
    /**
     * Without chunkRows the capacity follows each rank's own token count, so ranks with different
     * T would post mismatched fixed splits (an NCCL hang or corruption). Every rank refuses instead,
     * naming each rank's counts, before anything is sent; equal T afterwards works (checked once).
     */
    @Test
    void unevenTokenCountsWithoutChunkRowsAreRefusedOnEveryRank() {
        for (DispatchOptions options : new DispatchOptions[] {
            new DispatchOptions(DispatchOptions.STATIC_ALL_TO_ALL, false, false, 0, 0),
            new DispatchOptions(DispatchOptions.STATIC_ALL_TO_ALL, false, false, 1.5, 0)}) {
            DispatchConfig config = DispatchConfig.of(4).withOptions(options);
            List<String> messages = org.junit.jupiter.api.Assertions.assertTimeoutPreemptively(
                    java.time.Duration.ofSeconds(30), () -> LocalGroup.run(2, Harness.TIMEOUT, comm -> {
                        Dispatcher d = Dispatcher.create(config, comm, new CpuBackend(), Harness.kernels(1));
                        int t = comm.rank() == 0 ? 5 : 4;
                        String message;
                        try (HostBuffer x = HostBuffer.allocate(DType.F32, t, 3);
                                HostBuffer idx = HostBuffer.ofInts(new int[2 * t], t, 2);
                                HostBuffer w = HostBuffer.ofFloats(new float[2 * t], t, 2)) {
                            message = assertThrows(IllegalArgumentException.class, () -> d.dispatch(x, idx, w))
                                    .getMessage();
                        }
                        try (HostBuffer x = HostBuffer.allocate(DType.F32, 4, 3);
                                HostBuffer idx = HostBuffer.ofInts(new int[] {0, 1, 2, 3, 1, 2, 3, 0}, 4, 2);
                                HostBuffer w = HostBuffer.ofFloats(new float[8], 4, 2);
                                DispatchResult r = d.dispatch(x, idx, w)) {
                            assertEquals(0, r.overflow());
                        }
                        return message;
                    }));
            for (int r = 0; r < 2; r++) {
                assertEquals("static all-to-all without chunkRows: the ranks' token counts differ (rank 0: T=5, K=2,"
                        + " rank 1: T=4, K=2); the chunk capacity C follows T and K, so every rank must dispatch the"
                        + " same [T, K], or set chunkRows to fix C; nothing was sent", messages.get(r), "rank " + r);
            }
        }
    }
}
