package org.moe4j.cuda.comm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.NcclComm;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.LocalGroupException;
import org.moe4j.dispatch.dist.DistEnv;
import org.moe4j.dispatch.dist.RendezvousAuth;

/**
 * The device communicators against the CPU reference ({@link LocalGroup}): every collective's
 * output bitwise equal, for real NCCL at world size 1 and virtual ranks at W = 2, 4, 8 on one GPU.
 */
@Tag("gpu")
class DeviceCommGpuTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(60);
    /** The rendezvous identity the test's in-process ranks share (a fresh secret per run). */
    private static final RendezvousAuth TEST_JOB = RendezvousAuth.of("nccl-test",
            RendezvousAuth.newToken().getBytes(java.nio.charset.StandardCharsets.UTF_8));
    private static CudaContext gpu;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        gpu = CudaContext.open(0);
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    private static void assertSame(List<Map<String, byte[]>> expected, List<Map<String, byte[]>> actual, long seed) {
        assertEquals(expected.size(), actual.size());
        for (int r = 0; r < expected.size(); r++) {
            assertEquals(expected.get(r).keySet(), actual.get(r).keySet());
            for (String k : expected.get(r).keySet()) {
                assertArrayEquals(expected.get(r).get(k), actual.get(r).get(k), "rank " + r + " " + k + " seed " + seed);
            }
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {2, 4, 8})
    void virtualRanksMatchTheCpuReferenceBitForBit(int world) {
        long seed = System.nanoTime();
        System.out.println("seed " + seed + " world " + world);
        List<Map<String, byte[]>> reference = LocalGroup.run(world, c -> CommExercise.run(c, CommExercise.host(), seed));
        List<Map<String, byte[]>> device = VirtualRankGroup.run(gpu, world, TIMEOUT,
                c -> CommExercise.run(c, CommExercise.device(gpu), seed));
        assertSame(reference, device, seed);
    }

    @Test
    void ncclAtWorldSizeOneMatchesTheCpuReferenceBitForBit() throws IOException {
        try {
            NcclComm.version();
        } catch (RuntimeException | LinkageError e) {
            assumeTrue(false, "libnccl not found: " + e.getMessage());
        }
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        List<Map<String, byte[]>> reference = LocalGroup.run(1, c -> CommExercise.run(c, CommExercise.host(), seed));
        try (NcclCommunicator nccl = NcclCommunicator.create(gpu, DistEnv.single(freePort()), TIMEOUT)) {
            assertEquals(0, nccl.rank());
            assertEquals(1, nccl.size());
            assertSame(reference, List.of(CommExercise.run(nccl, CommExercise.device(gpu), seed)), seed);
        }
    }

    /**
     * NcclCommunicator with its ranks as threads of this process, each with its own communicator,
     * bootstrapped over the TCP rendezvous like separate processes. Real NCCL refuses two ranks on one
     * GPU, so this runs on the CPU device only (native/cpudevice, whose NCCL ranks meet in shared memory).
     */
    @ParameterizedTest
    @ValueSource(ints = {2, 4, 8})
    void ncclRanksAsThreadsMatchTheCpuReferenceBitForBit(int world) throws Exception {
        assumeTrue(gpu.device().name().contains("moe4j CPU device"),
                "several NCCL ranks on one GPU: only the CPU device allows it");
        try {
            NcclComm.version();
        } catch (RuntimeException | LinkageError e) {
            assumeTrue(false, "libnccl not found: " + e.getMessage());
        }
        long seed = System.nanoTime();
        System.out.println("seed " + seed + " world " + world + " (NCCL ranks as threads)");
        List<Map<String, byte[]>> reference = LocalGroup.run(world, c -> CommExercise.run(c, CommExercise.host(), seed));
        int port = freePort();
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(world);
        try {
            List<java.util.concurrent.Future<Map<String, byte[]>>> ranks = new java.util.ArrayList<>();
            for (int r = 0; r < world; r++) {
                DistEnv env = new DistEnv(r, world, r, java.util.OptionalInt.of(world), "127.0.0.1", port);
                ranks.add(pool.submit(() -> {
                    try (NcclCommunicator nccl = NcclCommunicator.create(gpu, env, TEST_JOB, TIMEOUT)) {
                        assertEquals(env.rank(), nccl.rank());
                        assertEquals(world, nccl.size());
                        return CommExercise.run(nccl, CommExercise.device(gpu), seed);
                    }
                }));
            }
            List<Map<String, byte[]>> device = new java.util.ArrayList<>();
            for (var f : ranks) {
                device.add(f.get(TIMEOUT.toSeconds() * 2, java.util.concurrent.TimeUnit.SECONDS));
            }
            assertSame(reference, device, seed);
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void virtualRankThatNeverJoinsFailsEveryRankNamingIt() {
        LocalGroupException e = assertThrows(LocalGroupException.class, () -> VirtualRankGroup.run(gpu, 3,
                Duration.ofMillis(500), c -> {
                    if (c.rank() != 2) {
                        c.barrier();
                    } else {
                        Thread.sleep(3_000);
                    }
                    return c.rank();
                }));
        assertTrue(e.getMessage().contains("VirtualRankGroup of 3 ranks"), e.getMessage());
        assertTrue(e.getMessage().contains("[2]"), e.getMessage());
        assertTrue(e.rankErrors().get(0) != null && e.rankErrors().get(1) != null, e.rankErrors()::toString);
    }

    @Test
    void virtualRankThatThrowsFailsTheOthersWithItsCause() {
        IllegalStateException boom = new IllegalStateException("rank 1 exploded");
        LocalGroupException e = assertThrows(LocalGroupException.class, () -> VirtualRankGroup.run(gpu, 2, TIMEOUT, c -> {
            if (c.rank() == 1) {
                throw boom;
            }
            c.barrier();
            return 0;
        }));
        assertEquals(boom, e.getCause());
        assertTrue(e.rankErrors().get(0) != null, "rank 0 must fail too");
    }

    @Test
    void virtualRanksRefuseHostBuffers() {
        LocalGroupException e = assertThrows(LocalGroupException.class, () -> VirtualRankGroup.run(gpu, 1, TIMEOUT, c -> {
            try (var h = org.moe4j.core.buffer.HostBuffer.allocate(org.moe4j.core.DType.F32, 1)) {
                c.allReduce(h, org.moe4j.dispatch.ReduceOp.SUM);
            }
            return 0;
        }));
        assertTrue(e.getCause().getMessage().contains("VirtualRankGroup needs device buffers"), e.getCause().getMessage());
    }
}
