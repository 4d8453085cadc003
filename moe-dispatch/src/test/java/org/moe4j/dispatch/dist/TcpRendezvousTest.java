package org.moe4j.dispatch.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.Inet4Address;
import java.net.InetAddress;
import java.net.NetworkInterface;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collections;
import java.util.List;
import java.util.OptionalInt;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

class TcpRendezvousTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    /** Long enough for every rank's thread to start and connect on a busy machine; expiring it is what is tested. */
    private static final Duration SHORT = Duration.ofSeconds(2);
    private static final int NCCL_UNIQUE_ID_BYTES = 128;

    private static String messageOf(Object result) {
        Throwable t = assertInstanceOf(RendezvousException.class, result,
                () -> "expected a RendezvousException, got " + result);
        return t.getMessage();
    }

    @Test
    void broadcastAllGatherAndBarrierAgreeOnEveryRank() throws Exception {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        byte[] uniqueId = new byte[NCCL_UNIQUE_ID_BYTES];
        new Random(seed).nextBytes(uniqueId);
        int world = 4;
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(world, r -> {
            try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, world, port), Ranks.AUTH, TIMEOUT)) {
                byte[] got = rv.broadcast(r == 0 ? uniqueId : null);
                rv.barrier();
                byte[][] all = rv.allGather(("rank-" + r).getBytes(StandardCharsets.UTF_8));
                for (int i = 0; i < world; i++) {
                    assertEquals("rank-" + i, new String(all[i], StandardCharsets.UTF_8));
                }
                rv.barrier();
                byte[] second = rv.broadcast(r == 0 ? new byte[] {7} : null);
                assertArrayEquals(new byte[] {7}, second);
                return got;
            }
        });
        for (Object o : results) {
            if (o instanceof Throwable t) {
                throw new AssertionError(t);
            }
            assertArrayEquals(uniqueId, (byte[]) o);
        }
    }

    @Test
    void worldOfOneNeedsNoPeers() {
        try (TcpRendezvous rv = TcpRendezvous.join(DistEnv.single(1), SHORT)) {
            assertArrayEquals(new byte[] {1, 2}, rv.broadcast(new byte[] {1, 2}));
            rv.barrier();
            assertArrayEquals(new byte[] {3}, rv.allGather(new byte[] {3})[0]);
        }
    }

    @Test
    void missingRankTimesOutAndIsNamedOnEveryRank() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(2, r -> TcpRendezvous.join(Ranks.env(r, 3, port), Ranks.AUTH, SHORT));
        for (Object o : results) {
            String msg = messageOf(o);
            assertTrue(msg.contains("2 of 3 ranks joined; missing ranks [2]"), msg);
        }
    }

    @Test
    void rankWithoutMasterTimesOutNamingTheAddress() {
        int port = Ranks.freePort();
        String msg = assertThrows(RendezvousException.class,
                () -> TcpRendezvous.join(Ranks.env(1, 2, port), Ranks.AUTH, SHORT)).getMessage();
        assertTrue(msg.contains("could not reach rank 0 at 127.0.0.1:" + port), msg);
    }

    @Test
    void wrongWorldSizeIsReportedOnEveryRank() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(3, r -> TcpRendezvous.join(Ranks.env(r, r == 2 ? 4 : 3, port), Ranks.AUTH, TIMEOUT));
        for (Object o : results) {
            String msg = messageOf(o);
            assertTrue(msg.contains("rank 2 (") && msg.contains("has WORLD_SIZE=4 but rank 0"), msg);
            assertTrue(msg.contains("has WORLD_SIZE=3"), msg);
        }
    }

    @Test
    void duplicateRankIsReportedOnEveryRank() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(3, i -> TcpRendezvous.join(Ranks.env(Math.min(i, 1), 3, port), Ranks.AUTH, TIMEOUT));
        for (Object o : results) {
            String msg = messageOf(o);
            assertTrue(msg.contains("two processes claim RANK=1"), msg);
        }
    }

    @Test
    void secondRankZeroCannotListenOnTheSamePort() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(2, i -> {
            if (i == 1) {
                Thread.sleep(200);
            }
            return TcpRendezvous.join(Ranks.env(0, 2, port), Ranks.AUTH, SHORT);
        });
        // whichever thread binds first listens and times out; the other cannot listen (usually thread 0 binds first)
        String a = messageOf(results.get(0));
        String b = messageOf(results.get(1));
        String listener = a.contains("could not listen") ? b : a;
        String refused = a.contains("could not listen") ? a : b;
        assertTrue(listener.contains("missing ranks [1]"), listener);
        assertTrue(refused.contains("rank 0 could not listen on") && refused.contains("MASTER_PORT=" + port), refused);
    }

    @Test
    void lateRankInBarrierIsNamedOnEveryRank() throws Exception {
        int port = Ranks.freePort();
        CountDownLatch othersDone = new CountDownLatch(2);
        List<Object> results = Ranks.run(3, r -> {
            try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, 3, port), Ranks.AUTH, Duration.ofSeconds(2))) {
                if (r == 2) {
                    othersDone.await(Ranks.JOIN_LIMIT_SECONDS, TimeUnit.SECONDS);
                    return "late";
                }
                try {
                    rv.barrier();
                    return "passed";
                } finally {
                    othersDone.countDown();
                }
            }
        });
        assertTrue(messageOf(results.get(0)).contains("barrier #1 timed out after 2 s: ranks [2] did not arrive"),
                messageOf(results.get(0)));
        assertTrue(messageOf(results.get(1)).contains("reported by rank 0 to rank 1"), messageOf(results.get(1)));
        assertTrue(messageOf(results.get(1)).contains("ranks [2] did not arrive"), messageOf(results.get(1)));
    }

    @Test
    void rankThatLeavesIsReportedAsDisconnected() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(3, r -> {
            try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, 3, port), Ranks.AUTH, TIMEOUT)) {
                if (r == 2) {
                    return "left";
                }
                rv.barrier();
                return "passed";
            }
        });
        assertTrue(messageOf(results.get(0)).contains("rank 2 (") && messageOf(results.get(0)).contains(
                "disconnected during barrier #1"), messageOf(results.get(0)));
        assertTrue(messageOf(results.get(1)).contains("disconnected during barrier #1"), messageOf(results.get(1)));
    }

    @Test
    void collectivesCalledInDifferentOrderAreReported() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(2, r -> {
            try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, 2, port), Ranks.AUTH, TIMEOUT)) {
                if (r == 0) {
                    rv.allGather(new byte[] {1});
                } else {
                    rv.barrier();
                }
                return "passed";
            }
        });
        String msg = messageOf(results.get(0));
        assertTrue(msg.contains("rank 1 (") && msg.contains("called barrier #1 while rank 0 called allGather #1"), msg);
        assertTrue(messageOf(results.get(1)).contains("called barrier #1 while rank 0 called allGather #1"));
    }

    @Test
    void failedRendezvousRefusesFurtherCalls() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(2, r -> {
            TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, 2, port), Ranks.AUTH, TIMEOUT);
            if (r == 1) {
                rv.close();
                return "left";
            }
            RendezvousException first = assertThrows(RendezvousException.class, rv::barrier);
            RendezvousException again = assertThrows(RendezvousException.class, () -> rv.broadcast(new byte[1]));
            assertTrue(again.getMessage().contains("unusable after an earlier failure: " + first.getMessage()),
                    again.getMessage());
            return "checked";
        });
        assertEquals(List.of("checked", "left"), results);
    }

    @Test
    void badArgumentsAreRefused() {
        assertTrue(assertThrows(IllegalArgumentException.class,
                () -> TcpRendezvous.join(DistEnv.single(1), Duration.ZERO)).getMessage().contains("timeout must be positive"));
        try (TcpRendezvous rv = TcpRendezvous.join(DistEnv.single(1), SHORT)) {
            assertTrue(assertThrows(IllegalArgumentException.class, () -> rv.broadcast(null)).getMessage()
                    .contains("broadcast blob must not be null"));
            assertTrue(assertThrows(IllegalArgumentException.class,
                    () -> rv.allGather(new byte[TcpRendezvous.MAX_BLOB_BYTES + 1])).getMessage()
                    .contains("at most " + TcpRendezvous.MAX_BLOB_BYTES));
        }
    }

    @Test
    void rendezvousWorksOverANonLoopbackAddress() throws Exception {
        InetAddress self = nonLoopbackAddress();
        assumeTrue(self != null, "this host has no non-loopback address");
        int port = Ranks.freePort();
        int world = 3;
        List<Object> results = Ranks.run(world, r -> {
            DistEnv env = new DistEnv(r, world, 0, OptionalInt.empty(), self.getHostAddress(), port);
            try (TcpRendezvous rv = TcpRendezvous.join(env, Ranks.AUTH, TIMEOUT)) {
                return rv.broadcast(r == 0 ? new byte[] {4, 2} : null);
            }
        });
        for (Object o : results) {
            if (o instanceof Throwable t) {
                throw new AssertionError(t);
            }
            assertArrayEquals(new byte[] {4, 2}, (byte[]) o);
        }
    }

    private static InetAddress nonLoopbackAddress() throws Exception {
        for (NetworkInterface nif : Collections.list(NetworkInterface.getNetworkInterfaces())) {
            if (!nif.isUp() || nif.isLoopback()) {
                continue;
            }
            for (InetAddress a : Collections.list(nif.getInetAddresses())) {
                if (a instanceof Inet4Address) {
                    return a;
                }
            }
        }
        return null;
    }
}
