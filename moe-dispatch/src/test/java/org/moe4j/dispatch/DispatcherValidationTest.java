package org.moe4j.dispatch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

class DispatcherValidationTest {
    static final Duration SHORT = Duration.ofSeconds(2);

    interface Body {
        void run(Dispatcher d, HostBuffer x, HostBuffer idx, HostBuffer w) throws Exception;
    }

    /** Runs body on one rank with a valid 5-token, E=4, K=2 problem; returns the exception it threw. */
    static Throwable refused(DispatchConfig config, Body body) {
        LocalGroupException e = assertThrows(LocalGroupException.class, () -> LocalGroup.run(1, SHORT, comm -> {
            Dispatcher d = Dispatcher.create(config, comm, new CpuBackend(), Harness.kernels(1));
            try (HostBuffer x = HostBuffer.ofFloats(new float[15], 5, 3);
                    HostBuffer idx = HostBuffer.ofInts(new int[] {0, 1, 2, 3, -1, 0, 1, 2, 3, -1}, 5, 2);
                    HostBuffer w = HostBuffer.ofFloats(new float[10], 5, 2)) {
                body.run(d, x, idx, w);
            }
            return null;
        }));
        return e.getCause();
    }

    static void assertMessage(Throwable t, String fragment) {
        assertTrue(t.getMessage().contains(fragment), "expected '" + fragment + "' in: " + t.getMessage());
    }

    @Test
    void expertIdsOutsideTheRangeAreRefusedNamingTheEntry() {
        for (DispatchStrategy s : DispatchStrategy.values()) {
            DispatchConfig c = DispatchConfig.of(4).withStrategy(s);
            Throwable t = refused(c, (d, x, idx, w) -> {
                idx.setInt(7, 4);
                d.dispatch(x, idx, w);
            });
            assertInstanceOf(IllegalArgumentException.class, t);
            assertEquals("topkIdx[3, 1] = 4 is outside [0, 4) (use -1 for no expert)", t.getMessage());
            t = refused(c, (d, x, idx, w) -> {
                idx.setInt(2, -2);
                d.dispatch(x, idx, w);
            });
            assertEquals("topkIdx[1, 0] = -2 is outside [0, 4) (use -1 for no expert)", t.getMessage());
        }
    }

    @Test
    void expertsNotDivisibleByTheWorldSizeAreRefused() {
        LocalGroupException e = assertThrows(LocalGroupException.class, () -> LocalGroup.run(4, SHORT,
                comm -> Dispatcher.create(DispatchConfig.of(6), comm, new CpuBackend(), Harness.kernels(1))));
        assertEquals("experts (6) must be divisible by the world size (4)", e.getCause().getMessage());
    }

    @Test
    void shapeAndDtypeMismatchesAreRefused() {
        DispatchConfig c = DispatchConfig.of(4);
        assertMessage(refused(c, (d, x, idx, w) -> {
            try (HostBuffer xi = HostBuffer.allocate(DType.I32, 5, 3)) {
                d.dispatch(xi, idx, w);
            }
        }), "x: expected a floating-point [tokens, hidden] buffer but got I32 [5, 3]");
        assertMessage(refused(c, (d, x, idx, w) -> {
            try (HostBuffer fi = HostBuffer.allocate(DType.F32, 5, 2)) {
                d.dispatch(x, fi, w);
            }
        }), "topkIdx: expected I32 [tokens, topK] but got F32 [5, 2]");
        assertMessage(refused(c, (d, x, idx, w) -> {
            try (HostBuffer i4 = HostBuffer.allocate(DType.I32, 4, 2)) {
                d.dispatch(x, i4, w);
            }
        }), "topkIdx: expected shape [5, 2] but got [4, 2]");
        assertMessage(refused(c, (d, x, idx, w) -> {
            try (HostBuffer wb = HostBuffer.allocate(DType.BF16, 5, 2)) {
                d.dispatch(x, idx, wb);
            }
        }), "topkWeights: expected dtype F32 but got BF16");
        assertMessage(refused(c, (d, x, idx, w) -> {
            try (HostBuffer w3 = HostBuffer.allocate(DType.F32, 5, 3)) {
                d.dispatch(x, idx, w3);
            }
        }), "topkWeights: expected shape [5, 2] but got [5, 3]");
        for (DispatchStrategy s : DispatchStrategy.values()) {
            DispatchConfig cs = DispatchConfig.of(4).withStrategy(s);
            // static shape: W * C = 1 * (5 tokens * 2 slots) rows; the others: the 8 routed slots
            String rows = s == DispatchStrategy.STATIC_ALL_TO_ALL ? "10" : "8";
            assertMessage(refused(cs, (d, x, idx, w) -> {
                try (DispatchResult r = d.dispatch(x, idx, w); HostBuffer y = HostBuffer.allocate(DType.F32, r.rows() + 1, 3)) {
                    d.combine(r, y);
                }
            }), "expertOutput: expected a floating-point [" + rows + ", 3] buffer but got F32 [" + (Integer.parseInt(rows) + 1)
                    + ", 3]");
            assertMessage(refused(cs, (d, x, idx, w) -> {
                try (DispatchResult r = d.dispatch(x, idx, w); HostBuffer g = HostBuffer.allocate(DType.F32, 5, 4)) {
                    d.combine(r, r.expertInput()).close();
                    d.combineBackward(r, g);
                }
            }), "dOut: expected a floating-point [5, 3] buffer but got F32 [5, 4]");
            assertMessage(refused(cs, (d, x, idx, w) -> {
                try (DispatchResult r = d.dispatch(x, idx, w); HostBuffer g = HostBuffer.allocate(DType.I32, 8, 3)) {
                    d.dispatchBackward(r, g);
                }
            }), "dExpertInput: expected a floating-point [" + rows + ", 3] buffer but got I32 [8, 3]");
            assertMessage(refused(cs, (d, x, idx, w) -> {
                try (DispatchResult r = d.dispatch(x, idx, w); HostBuffer g = HostBuffer.allocate(DType.F32, 5, 3)) {
                    d.combineBackward(r, g);
                }
            }), "combineBackward needs combine(...) to have run on this DispatchResult");
        }
    }

    @Test
    void aResultFromAnotherDispatcherOrAClosedResultIsRefused() {
        DispatchConfig c = DispatchConfig.of(4);
        assertMessage(refused(c, (d, x, idx, w) -> {
            Dispatcher other = Dispatcher.create(c, new SingleRank(), new CpuBackend(), Harness.kernels(1));
            try (DispatchResult r = other.dispatch(x, idx, w)) {
                d.combine(r, r.expertInput());
            }
        }), "this DispatchResult was produced by another dispatcher");
        assertMessage(refused(c, (d, x, idx, w) -> {
            DispatchResult r = d.dispatch(x, idx, w);
            Buffer y = r.expertInput();
            r.close();
            d.combine(r, y);
        }), "DispatchResult is closed");
    }

    @Test
    void groupRowsThatOverflowAnI32IndexAreRefused() {
        DispatchConfig c = DispatchConfig.of(4).withGroupAlignment(1 << 30);
        assertMessage(refused(c, (d, x, idx, w) -> d.dispatch(x, idx, w)),
                "rank 0: expert input rows overflow an I32 index at local expert 1");
    }

    @Test
    void badInputOnOneRankFailsTheOtherRanksWithItsCauseBeforeAnythingIsSent() {
        LocalGroupException e = assertTimeoutPreemptively(Duration.ofSeconds(10), () -> assertThrows(
                LocalGroupException.class, () -> LocalGroup.run(2, Duration.ofSeconds(60), comm -> {
                    Dispatcher d = Dispatcher.create(DispatchConfig.of(4), comm, new CpuBackend(), Harness.kernels(1));
                    int bad = comm.rank() == 1 ? 9 : 0;
                    try (HostBuffer x = HostBuffer.ofFloats(new float[6], 2, 3);
                            HostBuffer idx = HostBuffer.ofInts(new int[] {0, 1, 2, bad}, 2, 2);
                            HostBuffer w = HostBuffer.ofFloats(new float[4], 2, 2);
                            DispatchResult r = d.dispatch(x, idx, w)) {
                        return r.rows();
                    }
                })));
        assertInstanceOf(IllegalArgumentException.class, e.getCause());
        assertEquals("topkIdx[1, 1] = 9 is outside [0, 4) (use -1 for no expert)", e.getCause().getMessage());
        assertSame(e.getCause(), e.rankErrors().get(0).getCause(), "rank 0 fails with rank 1's error as cause");
    }

    @Test
    void invalidConfigsAreRefused() {
        assertEquals("DispatchConfig.experts must be >= 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> DispatchConfig.of(0)).getMessage());
        assertEquals("DispatchConfig.groupAlignment must be >= 1, got 0",
                assertThrows(IllegalArgumentException.class, () -> DispatchConfig.of(4).withGroupAlignment(0)).getMessage());
        assertEquals("DispatchOptions: perRankDedup and weightBeforeReturn apply to the all-to-all strategy only, not "
                + "'all-gather'",
                assertThrows(IllegalArgumentException.class,
                        () -> DispatchConfig.of(4).withPerRankDedup(true).withStrategy(DispatchStrategy.ALL_GATHER)).getMessage());
    }

    /** A trivial one-rank communicator, to build a second dispatcher outside the group. */
    static final class SingleRank implements Communicator {
        @Override
        public int rank() {
            return 0;
        }

        @Override
        public int size() {
            return 1;
        }

        private static void copy(Buffer a, Buffer b) {
            java.lang.foreign.MemorySegment.copy(((HostBuffer) a).segment(), 0, ((HostBuffer) b).segment(), 0, a.byteSize());
        }

        @Override
        public void allToAll(Buffer send, Buffer recv) {
            copy(send, recv);
        }

        @Override
        public void allToAllV(Buffer send, long[] sendRows, Buffer recv, long[] recvRows) {
            copy(send, recv);
        }

        @Override
        public void allReduce(Buffer buffer, ReduceOp op) {
        }

        @Override
        public void allGather(Buffer send, Buffer recv) {
            copy(send, recv);
        }

        @Override
        public void allGatherV(Buffer send, Buffer recv, long[] recvRows) {
            copy(send, recv);
        }

        @Override
        public void reduceScatterV(Buffer send, long[] rows, Buffer recv, ReduceOp op) {
            copy(send, recv);
        }

        @Override
        public void barrier() {
        }

        @Override
        public void close() {
        }
    }
}
