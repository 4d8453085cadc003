package org.moe4j.cuda.comm;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.OptionalInt;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.moe4j.cuda.Cuda;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.dist.DistEnv;
import org.moe4j.dispatch.dist.RendezvousAuth;

/** The NCCL bootstrap where NCCL cannot run on every rank: a clear error on every rank, no hang. */
class NcclBootstrapTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(20);
    /** The rendezvous identity the test's in-process ranks share (a fresh secret per run). */
    private static final RendezvousAuth TEST_JOB = RendezvousAuth.of("nccl-test",
            RendezvousAuth.newToken().getBytes(java.nio.charset.StandardCharsets.UTF_8));

    private static int usableGpus() {
        try {
            return Cuda.deviceCount();
        } catch (RuntimeException | LinkageError e) {
            return 0;
        }
    }

    @Test
    void rankWithoutNcclOrDeviceFailsEveryRankNamingIt() throws Exception {
        assumeTrue(usableGpus() < 2, "this host has two GPUs: both ranks could run NCCL");
        int port = DeviceCommGpuTest.freePort();
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try {
            List<Future<Object>> ranks = new ArrayList<>();
            for (int r = 0; r < 2; r++) {
                DistEnv env = new DistEnv(r, 2, r, OptionalInt.of(2), "127.0.0.1", port);
                ranks.add(pool.submit(() -> {
                    try (NcclCommunicator c = NcclCommunicator.create(null, env, TEST_JOB, TIMEOUT)) {
                        return c;
                    } catch (Throwable t) {
                        return t;
                    }
                }));
            }
            for (Future<Object> f : ranks) {
                Object o = f.get(60, TimeUnit.SECONDS);
                CommunicatorException e = assertInstanceOf(CommunicatorException.class, o, () -> "got " + o);
                assertTrue(e.getMessage().contains("NCCL bootstrap: not every rank can run NCCL"), e.getMessage());
                assertTrue(e.getMessage().contains("rank 1: "), e.getMessage());
            }
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void nonPositiveTimeoutIsRefused() {
        String msg = assertThrows(IllegalArgumentException.class,
                () -> NcclCommunicator.create(null, DistEnv.single(1), Duration.ZERO)).getMessage();
        assertTrue(msg.contains("timeout must be positive"), msg);
    }
}
