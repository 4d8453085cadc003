package org.moe4j.dispatch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;

class LocalGroupTest {
    static final Duration SHORT = Duration.ofMillis(500);
    /** For collectives that fail as soon as every rank has arrived: generous, so a slow thread start is no timeout. */
    static final Duration ARRIVAL = Duration.ofSeconds(5);
    static final Duration BOUND = Duration.ofSeconds(10);

    @Test
    void allReduceSumsInRankOrderIdenticallyOnEveryRank() {
        long seed = System.nanoTime();
        System.out.println("allReduce seed=" + seed);
        int world = 5;
        float[][] data = new float[world][33];
        Random rnd = new Random(seed);
        for (float[] d : data) {
            for (int i = 0; i < d.length; i++) {
                d[i] = (float) rnd.nextGaussian() * 1e3f;
            }
        }
        List<float[]> got = LocalGroup.run(world, comm -> {
            try (HostBuffer b = HostBuffer.ofFloats(data[comm.rank()], 3, 11)) {
                comm.allReduce(b, ReduceOp.SUM);
                return b.toFloatArray();
            }
        });
        float[] want = new float[33];
        for (int i = 0; i < 33; i++) {
            float acc = data[0][i];
            for (int r = 1; r < world; r++) {
                acc += data[r][i];
            }
            want[i] = acc;
        }
        for (float[] g : got) {
            assertArrayEquals(want, g);
        }
        List<long[]> ints = LocalGroup.run(3, comm -> {
            try (HostBuffer i32 = HostBuffer.ofInts(new int[] {comm.rank(), 10 * comm.rank() + 1}, 2);
                    HostBuffer i64 = HostBuffer.allocate(DType.I64, 1)) {
                i64.segment().set(java.lang.foreign.ValueLayout.JAVA_LONG, 0, 1L << 40);
                comm.allReduce(i32, ReduceOp.SUM);
                comm.allReduce(i64, ReduceOp.SUM);
                return new long[] {i32.getInt(0), i32.getInt(1), i64.getLong(0)};
            }
        });
        for (long[] v : ints) {
            assertArrayEquals(new long[] {3, 33, 3L << 40}, v);
        }
    }

    @Test
    void allToAllVAllGatherVAndReduceScatterVMoveTheRightRows() {
        int world = 3;
        List<float[][]> got = LocalGroup.run(world, comm -> {
            int r = comm.rank();
            // rank r sends (d + 1) rows of value 100r + d to rank d
            long[] sendRows = {1, 2, 3};
            long[] recvRows = {r + 1, r + 1, r + 1};
            float[] send = new float[6 * 2];
            int row = 0;
            for (int d = 0; d < world; d++) {
                for (int i = 0; i < d + 1; i++, row++) {
                    send[row * 2] = 100 * r + d;
                    send[row * 2 + 1] = -(100 * r + d);
                }
            }
            try (HostBuffer s = HostBuffer.ofFloats(send, 6, 2);
                    HostBuffer rcv = HostBuffer.allocate(DType.F32, 3L * (r + 1), 2);
                    HostBuffer mine = HostBuffer.ofFloats(java.util.Collections.nCopies(r + 1, (float) r).stream()
                            .collect(() -> new float[r + 1], (a, v) -> java.util.Arrays.fill(a, v), (a, b) -> { }), r + 1, 1);
                    HostBuffer all = HostBuffer.allocate(DType.F32, 6, 1);
                    HostBuffer rs = HostBuffer.allocate(DType.F32, r + 1, 1)) {
                comm.allToAllV(s, sendRows, rcv, recvRows);
                comm.allGatherV(mine, all, new long[] {1, 2, 3});
                try (HostBuffer contrib = HostBuffer.ofFloats(new float[] {1, 2, 3, 4, 5, 6}, 6, 1)) {
                    comm.reduceScatterV(contrib, new long[] {1, 2, 3}, rs, ReduceOp.SUM);
                }
                return new float[][] {rcv.toFloatArray(), all.toFloatArray(), rs.toFloatArray()};
            }
        });
        for (int r = 0; r < world; r++) {
            float[] rcv = got.get(r)[0];
            int row = 0;
            for (int s = 0; s < world; s++) {
                for (int i = 0; i < r + 1; i++, row++) {
                    assertEquals(100 * s + r, rcv[row * 2], "rank " + r + " row " + row);
                    assertEquals(-(100 * s + r), rcv[row * 2 + 1]);
                }
            }
            assertArrayEquals(new float[] {0, 1, 1, 2, 2, 2}, got.get(r)[1]);
        }
        assertArrayEquals(new float[] {3}, got.get(0)[2]);
        assertArrayEquals(new float[] {6, 9}, got.get(1)[2]);
        assertArrayEquals(new float[] {12, 15, 18}, got.get(2)[2]);
    }

    @Test
    void aCollectiveThatARankNeverJoinsTimesOutOnEveryRank() {
        CountDownLatch never = new CountDownLatch(1);
        LocalGroupException e = assertTimeoutPreemptively(BOUND, () -> assertThrows(LocalGroupException.class,
                () -> LocalGroup.run(3, SHORT, comm -> {
                    if (comm.rank() == 1) {
                        never.await(30, TimeUnit.SECONDS); // stuck outside any collective
                        return null;
                    }
                    comm.barrier();
                    return null;
                })));
        assertTrue(e.getMessage().contains("timed out after 500 ms: rank(s) [1] never joined"), e.getMessage());
        for (int r : new int[] {0, 2}) {
            Throwable err = e.rankErrors().get(r);
            assertInstanceOf(CommunicatorException.class, err);
            assertTrue(err.getMessage().contains("timed out"), err.getMessage());
        }
        assertTrue(e.rankErrors().get(1) != null, "the stuck rank is reported (interrupted or abandoned)");
    }

    @Test
    void aRankThatFinishesWithoutJoiningFailsTheCollectiveAtOnce() {
        LocalGroupException e = assertTimeoutPreemptively(BOUND, () -> assertThrows(LocalGroupException.class,
                () -> LocalGroup.run(2, Duration.ofSeconds(60), comm -> {
                    if (comm.rank() == 0) {
                        comm.barrier();
                    }
                    return null;
                })));
        assertTrue(e.getMessage().contains("rank(s) [1] finished without joining it"), e.getMessage());
        assertNull(e.rankErrors().get(1));
    }

    @Test
    void aRankThatThrowsMakesEveryOtherRankFailWithItsCause() {
        IllegalStateException boom = new IllegalStateException("boom on rank 2");
        LocalGroupException e = assertTimeoutPreemptively(BOUND, () -> assertThrows(LocalGroupException.class,
                () -> LocalGroup.run(4, Duration.ofSeconds(60), comm -> {
                    try (HostBuffer b = HostBuffer.ofFloats(new float[] {1}, 1)) {
                        comm.allReduce(b, ReduceOp.SUM);
                        if (comm.rank() == 2) {
                            throw boom;
                        }
                        comm.allReduce(b, ReduceOp.SUM);
                        return b.getFloat(0);
                    }
                })));
        assertSame(boom, e.getCause());
        assertTrue(e.getMessage().contains("rank 2 failed"), e.getMessage());
        for (int r : new int[] {0, 1, 3}) {
            Throwable err = e.rankErrors().get(r);
            assertInstanceOf(CommunicatorException.class, err);
            assertSame(boom, err.getCause(), "rank " + r + " fails with rank 2's exception as cause");
        }
    }

    @Test
    void ranksCallingDifferentCollectivesFailWithBothNames() {
        LocalGroupException e = assertTimeoutPreemptively(BOUND, () -> assertThrows(LocalGroupException.class,
                () -> LocalGroup.run(2, ARRIVAL, comm -> {
                    if (comm.rank() == 0) {
                        comm.barrier();
                    } else {
                        try (HostBuffer b = HostBuffer.ofFloats(new float[] {1}, 1)) {
                            comm.allReduce(b, ReduceOp.SUM);
                        }
                    }
                    return null;
                })));
        assertTrue(e.getMessage().contains("ranks disagree on the operation: rank 0 called barrier but rank 1 called allReduce"),
                e.getMessage());
    }

    @Test
    void allToAllVWithCountsThatDisagreeAcrossRanksFailsEveryRank() {
        LocalGroupException e = assertTimeoutPreemptively(BOUND, () -> assertThrows(LocalGroupException.class,
                () -> LocalGroup.run(2, ARRIVAL, comm -> {
                    long[] recv = comm.rank() == 0 ? new long[] {1, 2} : new long[] {1, 1};
                    try (HostBuffer s = HostBuffer.allocate(DType.F32, 2, 4);
                            HostBuffer r = HostBuffer.allocate(DType.F32, recv[0] + recv[1], 4)) {
                        comm.allToAllV(s, new long[] {1, 1}, r, recv);
                    }
                    return null;
                })));
        assertTrue(e.getMessage().contains("rank 1 sends 1 rows to rank 0 but rank 0 expects 2"), e.getMessage());
    }

    @Test
    void badArgumentsAreRefusedOnTheCallingRank() {
        LocalGroupException e = assertThrows(LocalGroupException.class, () -> LocalGroup.run(1, SHORT, comm -> {
            try (HostBuffer s = HostBuffer.allocate(DType.F32, 3, 4); HostBuffer r = HostBuffer.allocate(DType.F32, 3, 4)) {
                comm.allToAllV(s, new long[] {2}, r, new long[] {3});
            }
            return null;
        }));
        assertInstanceOf(IllegalArgumentException.class, e.getCause());
        assertTrue(e.getCause().getMessage().contains("allToAllV sendRows sum to 2 rows but the buffer"),
                e.getCause().getMessage());
        IllegalArgumentException w = assertThrows(IllegalArgumentException.class, () -> LocalGroup.run(0, comm -> null));
        assertEquals("world must be >= 1, got 0", w.getMessage());
    }
}
