package org.moe4j.dispatch.spi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/**
 * The public SPI of moe-dispatch validates its arguments like any public call: bad values are refused
 * with a message naming them, before any state changes, so a rejected call leaves a rendezvous usable.
 */
class DispatchSpiValidationTest {
    private static final long SECOND = 1_000_000_000L;

    @Test
    void rendezvousRefusesBadWorldAndTimeout() {
        assertTrue(assertThrows(IllegalArgumentException.class, () -> new Rendezvous(0, SECOND)).getMessage()
                .contains("got 0"));
        assertThrows(IllegalArgumentException.class, () -> new Rendezvous(RankThreads.MAX_WORLD + 1, SECOND));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> new Rendezvous(2, 0)).getMessage()
                .contains("timeoutNanos"));
        assertThrows(IllegalArgumentException.class, () -> new Rendezvous(2, -5));
        assertThrows(IllegalArgumentException.class, () -> new Rendezvous(2, RankThreads.MAX_TIMEOUT.toNanos() + 1));
    }

    @Test
    void rejectedCallsLeaveTheRendezvousUsable() throws Exception {
        Rendezvous rv = new Rendezvous(2, 30 * SECOND);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> rv.exchange(2, "op", "x")).getMessage()
                .contains("got 2"));
        assertThrows(IllegalArgumentException.class, () -> rv.exchange(-1, "op", "x"));
        assertTrue(assertThrows(NullPointerException.class, () -> rv.exchange(0, null, "x")).getMessage()
                .contains("op"));
        assertThrows(IllegalArgumentException.class, () -> rv.depart(2, null));
        assertThrows(IllegalArgumentException.class, () -> rv.departed(-1));
        assertThrows(NullPointerException.class, () -> rv.fail(null, null));

        AtomicReference<Thread> rank0 = new AtomicReference<>();
        CompletableFuture<Object[]> first = CompletableFuture.supplyAsync(() -> {
            rank0.set(Thread.currentThread());
            return rv.exchange(0, "op", "a");
        });
        long deadline = System.nanoTime() + 30 * SECOND;
        while (rank0.get() == null || rank0.get().getState() != Thread.State.TIMED_WAITING) {
            assertTrue(System.nanoTime() < deadline, "rank 0 never started waiting");
            Thread.onSpinWait();
        }
        IllegalStateException twice = assertThrows(IllegalStateException.class, () -> rv.exchange(0, "op", "again"));
        assertTrue(twice.getMessage().contains("rank 0 already posted"), twice.getMessage());
        assertArrayEquals(new Object[] {"a", "b"}, rv.exchange(1, "op", "b"));
        assertArrayEquals(new Object[] {"a", "b"}, first.get(30, TimeUnit.SECONDS));
        assertNull(rv.failure());

        rv.depart(1, null);
        assertTrue(rv.departed(1));
        assertFalse(rv.departed(0));
        assertTrue(assertThrows(IllegalStateException.class, () -> rv.exchange(1, "op", "late")).getMessage()
                .contains("already departed"));
    }

    @Test
    void rankThreadsRefusesMissingPartsBeforeStartingThreads() {
        RankThreads.Names names = new RankThreads.Names("g", "G.run", "rank", "t-");
        assertThrows(NullPointerException.class, () -> new RankThreads.Names(null, "c", "r", "t"));
        assertThrows(NullPointerException.class, () -> new RankThreads.Names("g", "c", "r", null));
        assertTrue(assertThrows(NullPointerException.class, () -> RankThreads.run(1, Duration.ofSeconds(1), names, null,
                comm -> 1)).getMessage().contains("opener"));
        assertTrue(assertThrows(NullPointerException.class, () -> RankThreads.run(1, Duration.ofSeconds(1), null,
                (rv, rank) -> null, comm -> 1)).getMessage().contains("names"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> RankThreads.run(0, Duration.ofSeconds(1), names,
                (rv, rank) -> null, comm -> 1)).getMessage().contains("got 0"));
        assertThrows(IllegalArgumentException.class, () -> RankThreads.validate(1, Duration.ZERO, comm -> 1));
    }

    @Test
    void firstNonFiniteWeightChecksTheSlotCount() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment idx = arena.allocate(ValueLayout.JAVA_INT, 4);
            MemorySegment w = arena.allocate(ValueLayout.JAVA_FLOAT, 3);
            w.setAtIndex(ValueLayout.JAVA_FLOAT, 2, Float.NaN);
            assertEquals(2, DispatchArgs.firstNonFiniteWeight(idx, w, 3));
            idx.setAtIndex(ValueLayout.JAVA_INT, 2, -1);
            assertEquals(-1, DispatchArgs.firstNonFiniteWeight(idx, w, 3));
            assertTrue(assertThrows(IllegalArgumentException.class, () -> DispatchArgs.firstNonFiniteWeight(idx, w, 4))
                    .getMessage().contains("slots 4"));
            assertThrows(IllegalArgumentException.class, () -> DispatchArgs.firstNonFiniteWeight(idx, w, -1));
            assertTrue(assertThrows(NullPointerException.class, () -> DispatchArgs.firstNonFiniteWeight(null, w, 0))
                    .getMessage().contains("topkIdx"));
            assertThrows(NullPointerException.class, () -> DispatchArgs.rows(null));
            assertThrows(NullPointerException.class, () -> DispatchArgs.visitedRows(null));
            assertThrows(NullPointerException.class, () -> DispatchArgs.requireSameBytes(null, null));
        }
    }
}
