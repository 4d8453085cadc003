package org.moe4j.dispatch.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

/**
 * The rendezvous on a shared host: strangers, other jobs, fake rank 0s, idle and slow connections
 * and garbage neither join, learn the NCCL unique id, delay the real ranks beyond the deadline,
 * nor kill the forming job.
 */
class TcpRendezvousSecurityTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    /** Long enough for the threads to start on a busy machine; expiring it is what is tested. */
    private static final Duration SHORT = Duration.ofSeconds(2);
    private static final int NCCL_UNIQUE_ID_BYTES = 128;
    /** How long a stranger waits for rank 0 to answer or close. */
    private static final int STRANGER_READ_MS = 15_000;
    private static final RendezvousAuth WRONG_TOKEN = RendezvousAuth.of(Ranks.AUTH.jobId(),
            "not the secret of this job, 32+ b".getBytes(StandardCharsets.UTF_8));

    private static String messageOf(Object result) {
        return assertInstanceOf(RendezvousException.class, result, () -> "expected a RendezvousException, got " + result)
                .getMessage();
    }

    private static void assertOk(Object result) {
        if (result instanceof Throwable t) {
            throw new AssertionError(t);
        }
    }

    private static byte[] randomId(String test) {
        long seed = System.nanoTime();
        System.out.println(test + " seed " + seed);
        byte[] id = new byte[NCCL_UNIQUE_ID_BYTES];
        new Random(seed).nextBytes(id);
        return id;
    }

    /** A connection to rank 0's port made as soon as it listens (retrying until then). */
    private static Socket connect(int port) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Ranks.JOIN_LIMIT_SECONDS);
        while (true) {
            Socket s = new Socket();
            try {
                s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 1000);
                s.setSoTimeout(STRANGER_READ_MS);
                return s;
            } catch (IOException e) {
                s.close();
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(20);
            }
        }
    }

    private static byte[] frame(int type, byte[] payload) {
        return ByteBuffer.allocate(8 + payload.length).putInt(type).putInt(payload.length).put(payload).array();
    }

    private static byte[] hello(int version, String jobId, byte[] clientNonce) {
        byte[] job = jobId.getBytes(StandardCharsets.UTF_8);
        return frame(TcpRendezvous.HELLO, ByteBuffer.allocate(12 + job.length + clientNonce.length).putInt(TcpRendezvous.MAGIC)
                .putInt(version).putInt(job.length).put(job).put(clientNonce).array());
    }

    /** A version-1 handshake (no authentication) claiming a rank and a world size. */
    private static byte[] legacyHello(int world, int rank) {
        byte[] host = "stranger pid 1".getBytes(StandardCharsets.UTF_8);
        return frame(TcpRendezvous.HELLO, ByteBuffer.allocate(20 + host.length).putInt(TcpRendezvous.MAGIC).putInt(1)
                .putInt(world).putInt(rank).putInt(host.length).put(host).array());
    }

    /** Everything the peer sends until it closes the connection (or the read limit passes). */
    private static byte[] readToEnd(Socket s) throws IOException {
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        InputStream in = s.getInputStream();
        byte[] buf = new byte[4096];
        try {
            for (int n; (n = in.read(buf)) >= 0; ) {
                all.write(buf, 0, n);
            }
        } catch (SocketTimeoutException | java.net.SocketException e) {
            // rank 0 kept it open or reset it: what came so far is what the stranger learned
        }
        return all.toByteArray();
    }

    private static boolean contains(byte[] hay, byte[] needle) {
        for (int i = 0; i + needle.length <= hay.length; i++) {
            if (Arrays.equals(hay, i, i + needle.length, needle, 0, needle.length)) {
                return true;
            }
        }
        return false;
    }

    /**
     * A process that speaks the protocol without the secret: it sends a good HELLO, receives the
     * challenge, and answers with a made-up proof claiming rank 1 with a wrong world size.
     */
    private static byte[] strangerWithoutTheSecret(int port) throws Exception {
        try (Socket s = connect(port)) {
            OutputStream out = s.getOutputStream();
            byte[] clientNonce = RendezvousCrypto.nonce();
            out.write(hello(TcpRendezvous.VERSION, Ranks.AUTH.jobId(), clientNonce));
            DataInputStream in = new DataInputStream(s.getInputStream());
            int type = in.readInt();
            byte[] challenge = new byte[in.readInt()];
            in.readFully(challenge);
            assertEquals(TcpRendezvous.CHALLENGE, type, "rank 0 answers a good HELLO with a challenge");
            byte[] serverNonce = Arrays.copyOf(challenge, RendezvousCrypto.NONCE_BYTES);
            byte[] host = "stranger pid 2".getBytes(StandardCharsets.UTF_8);
            byte[] proof = RendezvousCrypto.clientProof(WRONG_TOKEN.key(), Ranks.AUTH.jobId(), clientNonce, serverNonce,
                    99, 1, "stranger pid 2");
            out.write(frame(TcpRendezvous.JOIN, ByteBuffer.allocate(proof.length + 12 + host.length).put(proof).putInt(99)
                    .putInt(1).putInt(host.length).put(host).array()));
            out.flush();
            ByteArrayOutputStream learned = new ByteArrayOutputStream();
            learned.write(challenge);
            learned.write(readToEnd(s));
            return learned.toByteArray();
        }
    }

    @Test
    void strangerWithoutTheSecretCannotJoinLearnTheIdOrKillTheJob() throws Exception {
        byte[] uniqueId = randomId("stranger");
        int world = 3;
        int port = Ranks.freePort();
        CountDownLatch strangersDone = new CountDownLatch(1);
        List<Object> results = Ranks.run(world + 1, i -> {
            if (i == world) {
                try {
                    byte[] learned = strangerWithoutTheSecret(port);
                    byte[] legacy;
                    try (Socket s = connect(port)) {
                        // the unauthenticated protocol of moe4j 0.1: a wrong world size used to fail the whole job
                        s.getOutputStream().write(legacyHello(5, 1));
                        legacy = readToEnd(s);
                    }
                    return new byte[][] {learned, legacy};
                } finally {
                    strangersDone.countDown();
                }
            }
            if (i > 0) {
                strangersDone.await(Ranks.JOIN_LIMIT_SECONDS, TimeUnit.SECONDS);
            }
            try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(i, world, port), Ranks.AUTH, TIMEOUT)) {
                byte[] got = rv.broadcast(i == 0 ? uniqueId : null);
                rv.barrier();
                return i == 0 ? new Object[] {got, rv.droppedConnections()} : got;
            }
        });
        Object[] master = (Object[]) results.get(0);
        assertOk(master);
        assertArrayEquals(uniqueId, (byte[]) master[0]);
        assertTrue((Integer) master[1] >= 2, "rank 0 counts both strangers as dropped: " + master[1]);
        for (int r = 1; r < world; r++) {
            assertOk(results.get(r));
            assertArrayEquals(uniqueId, (byte[]) results.get(r), "rank " + r);
        }
        assertOk(results.get(world));
        byte[][] learned = (byte[][]) results.get(world);
        for (byte[] l : learned) {
            assertFalse(contains(l, Arrays.copyOf(uniqueId, 16)), "a stranger received the unique id");
            String text = new String(l, StandardCharsets.ISO_8859_1);
            assertFalse(text.contains("two processes claim") || text.contains("WORLD_SIZE=99"),
                    "a stranger's claims reached the job: " + text);
        }
        assertTrue(new String(learned[0], StandardCharsets.UTF_8).contains("authentication failed"),
                "the stranger is told it failed authentication");
        assertTrue(new String(learned[1], StandardCharsets.UTF_8).contains("protocol version 2 but this rank speaks version 1"),
                "an old moe4j rank is told why");
    }

    @Test
    void rankOfAnotherJobIsRefusedAndTheJobStillForms() throws Exception {
        byte[] uniqueId = randomId("otherJob");
        int port = Ranks.freePort();
        RendezvousAuth otherJob = RendezvousAuth.of("another-job", "a test secret of 32 bytes length".getBytes(
                StandardCharsets.UTF_8));
        CountDownLatch otherDone = new CountDownLatch(1);
        List<Object> results = Ranks.run(3, i -> {
            switch (i) {
                case 0 -> {
                    try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(0, 2, port), Ranks.AUTH, TIMEOUT)) {
                        return rv.broadcast(uniqueId);
                    }
                }
                case 1 -> {
                    // same port, same secret, same rank, other job id: started first, it must not take rank 1's place
                    try {
                        return TcpRendezvous.join(Ranks.env(1, 2, port), otherJob, SHORT);
                    } finally {
                        otherDone.countDown();
                    }
                }
                default -> {
                    otherDone.await(Ranks.JOIN_LIMIT_SECONDS, TimeUnit.SECONDS);
                    try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(1, 2, port), Ranks.AUTH, TIMEOUT)) {
                        return rv.broadcast(null);
                    }
                }
            }
        });
        assertOk(results.get(0));
        assertArrayEquals(uniqueId, (byte[]) results.get(0));
        assertOk(results.get(2));
        assertArrayEquals(uniqueId, (byte[]) results.get(2));
        String msg = messageOf(results.get(1));
        assertTrue(msg.contains("could not join job 'another-job' at rank 0 at 127.0.0.1:" + port)
                && msg.contains("serves job '" + Ranks.AUTH.jobId() + "', not job 'another-job'"), msg);
    }

    @Test
    void rankWithTheWrongTokenCannotJoinAndSaysWhy() throws Exception {
        int port = Ranks.freePort();
        List<Object> results = Ranks.run(2, i -> TcpRendezvous.join(Ranks.env(i, 2, port),
                i == 0 ? Ranks.AUTH : WRONG_TOKEN, SHORT));
        String master = messageOf(results.get(0));
        assertTrue(master.contains("missing ranks [1]") && master.contains("failed the handshake"), master);
        String peer = messageOf(results.get(1));
        assertTrue(peer.contains("could not prove it holds job '" + Ranks.AUTH.jobId() + "''s secret"), peer);
    }

    @Test
    void fakeRankZeroLearnsNothingAndIsNotBelieved() throws Exception {
        try (ServerSocket fake = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            int port = fake.getLocalPort();
            List<Integer> received = new ArrayList<>();
            AtomicBoolean stop = new AtomicBoolean();
            Thread squatter = Thread.ofPlatform().daemon().start(() -> {
                Random rnd = new Random(42);
                while (!stop.get()) {
                    try (Socket s = fake.accept()) {
                        s.setSoTimeout(STRANGER_READ_MS);
                        DataInputStream in = new DataInputStream(s.getInputStream());
                        while (true) {
                            int type = in.readInt();
                            in.readFully(new byte[in.readInt()]);
                            synchronized (received) {
                                received.add(type);
                            }
                            byte[] made = new byte[RendezvousCrypto.NONCE_BYTES + RendezvousCrypto.PROOF_BYTES];
                            rnd.nextBytes(made);
                            s.getOutputStream().write(frame(TcpRendezvous.CHALLENGE, made));
                            s.getOutputStream().write(frame(TcpRendezvous.WELCOME, new byte[0]));
                        }
                    } catch (IOException e) {
                        // the rank hung up: wait for its next attempt
                    }
                }
            });
            String msg = assertThrows(RendezvousException.class,
                    () -> TcpRendezvous.join(Ranks.env(1, 2, port), Ranks.AUTH, SHORT)).getMessage();
            stop.set(true);
            fake.close();
            squatter.join(TimeUnit.SECONDS.toMillis(Ranks.JOIN_LIMIT_SECONDS));
            assertTrue(msg.contains("could not prove it holds job '" + Ranks.AUTH.jobId() + "''s secret"), msg);
            synchronized (received) {
                assertFalse(received.isEmpty(), "the rank never tried the fake rank 0");
                assertTrue(received.stream().allMatch(t -> t == TcpRendezvous.HELLO),
                        "the rank sent the fake rank 0 more than its HELLO: message types " + received);
            }
        }
    }

    @Test
    void idleAndSlowConnectionsDoNotDelayTheRealRanks() throws Exception {
        byte[] uniqueId = randomId("idle");
        int world = 3;
        int idle = 6;
        int slow = 3;
        int port = Ranks.freePort();
        CountDownLatch opened = new CountDownLatch(idle + slow);
        AtomicBoolean stop = new AtomicBoolean();
        List<Socket> sockets = java.util.Collections.synchronizedList(new ArrayList<>());
        List<Thread> slowlorises = new ArrayList<>();
        try {
            Thread opener = Thread.ofPlatform().daemon().start(() -> {
                try {
                    for (int k = 0; k < idle + slow; k++) {
                        Socket s = connect(port);
                        sockets.add(s);
                        if (k >= idle) {
                            // a slowloris: a valid HELLO, one byte every 100 ms, so each read succeeds in time
                            byte[] h = hello(TcpRendezvous.VERSION, Ranks.AUTH.jobId(), RendezvousCrypto.nonce());
                            slowlorises.add(Thread.ofPlatform().daemon().start(() -> {
                                try {
                                    for (int b = 0; b < h.length && !stop.get(); b = (b + 1) % h.length) {
                                        s.getOutputStream().write(h[b]);
                                        s.getOutputStream().flush();
                                        Thread.sleep(100);
                                    }
                                } catch (IOException | InterruptedException e) {
                                    // rank 0 closed it: that is the point
                                }
                            }));
                        }
                        opened.countDown();
                    }
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            List<Object> results = Ranks.run(world, r -> {
                if (r > 0) {
                    opened.await(Ranks.JOIN_LIMIT_SECONDS, TimeUnit.SECONDS);
                }
                long t0 = System.nanoTime();
                try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(r, world, port), Ranks.AUTH, TIMEOUT)) {
                    byte[] got = rv.broadcast(r == 0 ? uniqueId : null);
                    rv.barrier();
                    System.out.println("rank " + r + " joined past " + idle + " idle and " + slow + " slow connections in "
                            + TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0) + " ms");
                    return got;
                }
            });
            opener.join(TimeUnit.SECONDS.toMillis(Ranks.JOIN_LIMIT_SECONDS));
            for (Object o : results) {
                assertOk(o);
                assertArrayEquals(uniqueId, (byte[]) o);
            }
        } finally {
            stop.set(true);
            for (Socket s : sockets) {
                s.close();
            }
        }
    }

    @Test
    void slowConnectionCannotStretchTheDeadline() throws Exception {
        int port = Ranks.freePort();
        AtomicBoolean stop = new AtomicBoolean();
        long t0 = System.nanoTime();
        List<Object> results = Ranks.run(2, i -> {
            if (i == 0) {
                return TcpRendezvous.join(Ranks.env(0, 2, port), Ranks.AUTH, SHORT);
            }
            // rank 1 never comes; a slowloris trickles a HELLO byte by byte (each read well within any read timeout)
            try (Socket s = connect(port)) {
                byte[] h = hello(TcpRendezvous.VERSION, Ranks.AUTH.jobId(), RendezvousCrypto.nonce());
                for (int b = 0; !stop.get() && System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(Ranks.JOIN_LIMIT_SECONDS);
                     b = (b + 1) % h.length) {
                    s.getOutputStream().write(h[b]);
                    Thread.sleep(50);
                }
            } catch (IOException e) {
                // rank 0 closed it
            }
            return "slowloris done";
        });
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        stop.set(true);
        String msg = messageOf(results.get(0));
        assertTrue(msg.contains("1 of 2 ranks joined; missing ranks [1]"), msg);
        assertTrue(ms < TcpRendezvous.HANDSHAKE_LIMIT.toMillis(),
                "rank 0 gave up after " + ms + " ms: the slow connection stretched its " + SHORT + " deadline");
    }

    @Test
    void slowFakeRankZeroCannotStretchAJoiningRanksDeadline() throws Exception {
        try (ServerSocket fake = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            int port = fake.getLocalPort();
            Thread squatter = Thread.ofPlatform().daemon().start(() -> {
                byte[] made = frame(TcpRendezvous.CHALLENGE, new byte[RendezvousCrypto.NONCE_BYTES + RendezvousCrypto.PROOF_BYTES]);
                while (!fake.isClosed()) {
                    try (Socket s = fake.accept()) {
                        // a byte every 200 ms: every read succeeds quickly, the whole challenge takes 14 s
                        for (byte b : made) {
                            s.getOutputStream().write(b);
                            s.getOutputStream().flush();
                            Thread.sleep(200);
                        }
                    } catch (IOException | InterruptedException e) {
                        // the rank hung up
                    }
                }
            });
            long t0 = System.nanoTime();
            List<Object> results = Ranks.run(1, i -> TcpRendezvous.join(Ranks.env(1, 2, port), Ranks.AUTH, SHORT));
            long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
            fake.close();
            squatter.join(TimeUnit.SECONDS.toMillis(Ranks.JOIN_LIMIT_SECONDS));
            String msg = messageOf(results.get(0));
            assertTrue(msg.contains("could not join job '" + Ranks.AUTH.jobId() + "'"), msg);
            assertTrue(ms < TcpRendezvous.HANDSHAKE_LIMIT.toMillis(),
                    "the rank gave up after " + ms + " ms: the slow fake rank 0 stretched its " + SHORT + " deadline");
        }
    }

    @Test
    void garbageIsDroppedAndTheJobStillForms() throws Exception {
        long seed = System.nanoTime();
        System.out.println("garbage seed " + seed);
        Random rnd = new Random(seed);
        byte[] uniqueId = new byte[NCCL_UNIQUE_ID_BYTES];
        rnd.nextBytes(uniqueId);
        byte[] noise = new byte[256];
        rnd.nextBytes(noise);
        ByteBuffer.wrap(noise).putInt(0x7fff_0000 | rnd.nextInt(0xffff)).putInt(-1 - rnd.nextInt(1000));
        List<byte[]> garbage = List.of(
                noise,
                "GET / HTTP/1.1\r\nHost: x\r\n\r\n".getBytes(StandardCharsets.US_ASCII),
                frame(TcpRendezvous.HELLO, new byte[] {1, 2, 3}),
                ByteBuffer.allocate(8).putInt(TcpRendezvous.HELLO).putInt(Integer.MAX_VALUE).array(),
                ByteBuffer.allocate(8).putInt(TcpRendezvous.HELLO).putInt(-5).array(),
                frame(TcpRendezvous.HELLO, ByteBuffer.allocate(48).putInt(0xdeadbeef).array()),
                Arrays.copyOf(hello(TcpRendezvous.VERSION, Ranks.AUTH.jobId(), RendezvousCrypto.nonce()), 30),
                frame(TcpRendezvous.HELLO, ByteBuffer.allocate(12 + 32).putInt(TcpRendezvous.MAGIC)
                        .putInt(TcpRendezvous.VERSION).putInt(1 << 30).array()),
                frame(TcpRendezvous.WELCOME, new byte[0]),
                frame(TcpRendezvous.JOIN, new byte[80]));
        int world = 3;
        int port = Ranks.freePort();
        CountDownLatch garbageDone = new CountDownLatch(1);
        List<Object> results = Ranks.run(world + 1, i -> {
            if (i == world) {
                try {
                    for (byte[] g : garbage) {
                        try (Socket s = connect(port)) {
                            s.getOutputStream().write(g);
                            s.shutdownOutput();
                            readToEnd(s);
                        }
                    }
                    // a good HELLO, then garbage where the JOIN belongs
                    try (Socket s = connect(port)) {
                        s.getOutputStream().write(hello(TcpRendezvous.VERSION, Ranks.AUTH.jobId(), RendezvousCrypto.nonce()));
                        s.getOutputStream().write(noise);
                        s.shutdownOutput();
                        readToEnd(s);
                    }
                    return "sent";
                } finally {
                    garbageDone.countDown();
                }
            }
            if (i > 0) {
                garbageDone.await(Ranks.JOIN_LIMIT_SECONDS, TimeUnit.SECONDS);
            }
            try (TcpRendezvous rv = TcpRendezvous.join(Ranks.env(i, world, port), Ranks.AUTH, TIMEOUT)) {
                byte[] got = rv.broadcast(i == 0 ? uniqueId : null);
                rv.barrier();
                return i == 0 ? new Object[] {got, rv.droppedConnections()} : got;
            }
        });
        assertOk(results.get(world));
        Object[] master = (Object[]) results.get(0);
        assertArrayEquals(uniqueId, (byte[]) master[0]);
        assertEquals(garbage.size() + 1, (Integer) master[1], "rank 0 dropped (and logged) every garbage connection");
        for (int r = 1; r < world; r++) {
            assertOk(results.get(r));
            assertArrayEquals(uniqueId, (byte[]) results.get(r));
        }
    }

    @Test
    void joinWithoutAnIdentityInTheEnvironmentIsRefusedBeforeAnySocket() {
        assumeTrue(System.getenv(RendezvousAuth.JOB_ID) == null && System.getenv(RendezvousAuth.TOKEN) == null
                && System.getenv(RendezvousAuth.TOKEN_FILE) == null && System.getenv(RendezvousAuth.TORCHELASTIC_RUN_ID) == null
                && System.getenv(RendezvousAuth.SLURM_JOB_ID) == null, "this JVM's environment names a job");
        String msg = assertThrows(IllegalArgumentException.class,
                () -> TcpRendezvous.join(Ranks.env(1, 2, Ranks.freePort()), SHORT)).getMessage();
        assertTrue(msg.contains("no job id: set " + RendezvousAuth.JOB_ID), msg);
        assertThrows(NullPointerException.class, () -> TcpRendezvous.join(Ranks.env(1, 2, 1), null, SHORT));
    }
}
