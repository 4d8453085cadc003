package org.moe4j.dispatch;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.Arrays;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

/** LocalGroup.run returns within its bound even when a rank stalls outside any collective. */
class LocalGroupStallTest {
    static final Duration TIMEOUT = Duration.ofMillis(500);
    /** timeout + 2·min(timeout, 2 s) + polling, with ample slack for a loaded 2-core machine. */
    static final Duration BOUND = Duration.ofSeconds(15);

    @Test
    void aRankStalledAfterTheOthersFinishedFailsTheGroupNamingItsThread() {
        CountDownLatch never = new CountDownLatch(1);
        LocalGroupException e = assertTimeoutPreemptively(BOUND, () -> assertThrows(LocalGroupException.class,
                () -> LocalGroup.run(3, TIMEOUT, comm -> {
                    comm.barrier();
                    if (comm.rank() == 2) {
                        never.await(60, TimeUnit.SECONDS); // stalls outside any collective; interruptible
                    }
                    return comm.rank();
                })));
        assertTrue(e.getMessage().contains("rank(s) [2 (thread moe4j-rank-2)] did not finish within 500 ms after rank(s)"
                + " [0, 1] finished (stalled outside any collective)"), e.getMessage());
        assertNull(e.rankErrors().get(0));
        assertNull(e.rankErrors().get(1));
        assertInstanceOf(InterruptedException.class, e.rankErrors().get(2), "the stalled rank was interrupted");
    }

    @Test
    void aRankThatIgnoresInterruptsIsAbandonedNamingItsThreadAndWhereItWas() throws Exception {
        AtomicBoolean stop = new AtomicBoolean();
        try {
            LocalGroupException e = assertTimeoutPreemptively(BOUND, () -> assertThrows(LocalGroupException.class,
                    () -> LocalGroup.run(2, TIMEOUT, comm -> {
                        if (comm.rank() == 1) {
                            spinUntil(stop); // ignores interrupts
                            return null;
                        }
                        comm.barrier(); // times out: rank 1 never joins
                        return null;
                    })));
            assertTrue(e.getMessage().contains("timed out after 500 ms: rank(s) [1] never joined"), e.getMessage());
            Throwable abandoned = e.rankErrors().get(1);
            assertInstanceOf(CommunicatorException.class, abandoned);
            assertTrue(abandoned.getMessage().startsWith("rank 1 (thread moe4j-rank-1) was still running"),
                    abandoned.getMessage());
            assertTrue(abandoned.getMessage().contains("after being interrupted; abandoned"), abandoned.getMessage());
            assertTrue(Arrays.stream(abandoned.getStackTrace()).anyMatch(f -> f.getMethodName().equals("spinUntil")),
                    "the error carries the stalled thread's stack: " + Arrays.toString(abandoned.getStackTrace()));
        } finally {
            stop.set(true); // let the abandoned daemon thread end
        }
    }

    @Test
    void ranksThatFinishAtDifferentTimesWithinTheTimeoutSucceed() {
        var results = LocalGroup.run(2, Duration.ofSeconds(30), comm -> {
            comm.barrier();
            if (comm.rank() == 1) {
                Thread.sleep(200); // legitimate work after the last collective, shorter than the timeout
            }
            return comm.rank() * 10;
        });
        assertTrue(results.equals(java.util.List.of(0, 10)), results.toString());
    }

    @Test
    void worldAndTimeoutOutOfRangeAreRefusedBeforeAnyThreadStarts() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LocalGroup.run(100_000, comm -> null));
        assertTrue(e.getMessage().equals("world must be <= 4096 (one thread per rank), got 100000"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> LocalGroup.run(2, Duration.ofNanos(Long.MAX_VALUE), comm -> null));
        assertTrue(e.getMessage().startsWith("timeout must be at most PT8760H, got "), e.getMessage());
        assertThrows(NullPointerException.class, () -> LocalGroup.run(2, null, comm -> null));
    }

    static void spinUntil(AtomicBoolean stop) {
        long x = 0;
        while (!stop.get()) {
            x += System.nanoTime() & 1;
            Thread.onSpinWait();
        }
        if (x == -1) {
            throw new AssertionError("unreachable");
        }
    }
}
