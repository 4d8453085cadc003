package org.moe4j.dispatch.dist;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.List;
import java.util.OptionalInt;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

/** Test helper: runs one body per rank in its own thread and collects results or failures. */
final class Ranks {
    /** Generous bound on one test's ranks; never reached unless something hangs. */
    static final long JOIN_LIMIT_SECONDS = 30;

    interface Body {
        Object run(int index) throws Exception;
    }

    private Ranks() {
    }

    /** @return a TCP port that was free a moment ago on loopback */
    static int freePort() {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            s.setReuseAddress(true);
            return s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The job id and secret the tests' ranks share. */
    static final RendezvousAuth AUTH = RendezvousAuth.of("test-job", "a test secret of 32 bytes length".getBytes(
            java.nio.charset.StandardCharsets.UTF_8));

    static DistEnv env(int rank, int world, int port) {
        return new DistEnv(rank, world, 0, OptionalInt.empty(), "127.0.0.1", port);
    }

    /** Runs {@code n} bodies concurrently; element i is body i's result or the Throwable it threw. */
    static List<Object> run(int n, Body body) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(n);
        try {
            List<Future<Object>> futures = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                int idx = i;
                futures.add(pool.submit(() -> {
                    try {
                        return body.run(idx);
                    } catch (Throwable t) {
                        return t;
                    }
                }));
            }
            List<Object> out = new ArrayList<>();
            for (Future<Object> f : futures) {
                out.add(f.get(JOIN_LIMIT_SECONDS, TimeUnit.SECONDS));
            }
            return out;
        } finally {
            pool.shutdownNow();
        }
    }
}
