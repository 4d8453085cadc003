package org.moe4j.dispatch.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Repeats short joins, broadcasts and order-mismatch failures back to back, so that the races
 * between rank 0's listener shutdown, a relayed ERROR frame and the close of a connection show up
 * on a busy machine (kept under a few seconds for CI).
 */
class TcpRendezvousStressTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    private static final long BUDGET_NANOS = Duration.ofSeconds(4).toNanos();

    @Test
    void repeatedJoinsBroadcastsAndRelayedErrorsNeverLoseAFrame() throws Exception {
        long end = System.nanoTime() + BUDGET_NANOS;
        int rounds = 0;
        while (rounds < 4 || System.nanoTime() < end) {
            rounds++;
            int world = 2 + rounds % 3;
            int port = Ranks.freePort();
            List<Object> ok = Ranks.run(world, r -> {
                try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, world, port), Ranks.AUTH, TIMEOUT)) {
                    rv.barrier();
                    return rv.broadcast(r == 0 ? new byte[] {4, 2} : null);
                }
            });
            for (Object o : ok) {
                if (o instanceof Throwable t) {
                    throw new AssertionError("round " + rounds + ", world " + world, t);
                }
                assertArrayEquals(new byte[] {4, 2}, (byte[]) o);
            }
            int port2 = Ranks.freePort();
            List<Object> bad = Ranks.run(2, r -> {
                try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, 2, port2), Ranks.AUTH, TIMEOUT)) {
                    if (r == 0) {
                        rv.allGather(new byte[] {1});
                    } else {
                        rv.barrier();
                    }
                    return "passed";
                }
            });
            for (Object o : bad) {
                assertTrue(o instanceof RendezvousException e
                        && e.getMessage().contains("called barrier #1 while rank 0 called allGather #1"),
                        "round " + rounds + ": " + o);
            }
        }
    }
}
