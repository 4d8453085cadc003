package org.moe4j.cuda.comm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.OptionalInt;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.Cuda;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.NcclComm;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.dist.DistEnv;
import org.moe4j.dispatch.dist.RendezvousAuth;
import org.moe4j.dispatch.dist.TcpRendezvous;

/**
 * Real NCCL across processes, one per GPU (needs at least two GPUs): every collective bitwise equal
 * to {@link LocalGroup}, and a rank that dies makes the others fail instead of hanging.
 */
@Tag("gpu")
class NcclMultiProcessGpuTest {
    private static final long PROCESS_LIMIT_SECONDS = 300;
    private static int world;

    @BeforeAll
    static void needTwoGpus() {
        GpuTestSupport.assumeGpu();
        try {
            NcclComm.version();
        } catch (RuntimeException | LinkageError e) {
            assumeTrue(false, "libnccl not found: " + e.getMessage());
        }
        world = Math.min(Cuda.deviceCount(), 4);
        assumeTrue(world >= 2, "one GPU only: NCCL refuses two ranks on one GPU (virtual ranks cover this host)");
    }

    /** The class path of this test's classes and their dependencies, wherever they come from (Maven or the bundle). */
    private static String classPath() {
        Set<String> parts = new LinkedHashSet<>();
        for (Class<?> c : new Class<?>[] {NcclRankMain.class, NcclCommunicator.class, LocalGroup.class, TcpRendezvous.class,
                HostBuffer.class, org.slf4j.LoggerFactory.class}) {
            try {
                parts.add(new File(c.getProtectionDomain().getCodeSource().getLocation().toURI()).getPath());
            } catch (Exception e) {
                throw new IllegalStateException("cannot locate " + c, e);
            }
        }
        return String.join(File.pathSeparator, parts);
    }

    private static List<Process> start(long seed, String... extra) throws Exception {
        String java = ProcessHandle.current().info().command().orElse("java");
        int port = DeviceCommGpuTest.freePort();
        String token = RendezvousAuth.newToken();
        List<Process> ps = new ArrayList<>();
        for (int r = 0; r < world; r++) {
            List<String> cmd = new ArrayList<>(List.of(java, "--enable-native-access=ALL-UNNAMED", "--add-modules",
                    "jdk.incubator.vector", "-cp", classPath(), NcclRankMain.class.getName(), Long.toString(seed)));
            cmd.addAll(List.of(extra));
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
            pb.environment().putAll(new DistEnv(r, world, r, OptionalInt.of(world), "127.0.0.1", port).toMap());
            pb.environment().remove(RendezvousAuth.TOKEN_FILE);
            pb.environment().put(RendezvousAuth.JOB_ID, "nccl-multi-process-" + seed);
            pb.environment().put(RendezvousAuth.TOKEN, token);
            ps.add(pb.start());
        }
        return ps;
    }

    private static List<String> finish(Process p) throws Exception {
        try {
            assertTrue(p.waitFor(PROCESS_LIMIT_SECONDS, TimeUnit.SECONDS), "a rank did not finish in time (a hang)");
            return new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).lines().toList();
        } finally {
            p.destroyForcibly();
        }
    }

    @Test
    void ncclAcrossProcessesMatchesTheCpuReferenceBitForBit() throws Exception {
        long seed = System.nanoTime();
        System.out.println("seed " + seed + " world " + world);
        List<Map<String, byte[]>> reference = LocalGroup.run(world, c -> CommExercise.run(c, CommExercise.host(), seed));
        List<Process> ps = start(seed);
        for (int r = 0; r < world; r++) {
            List<String> lines = finish(ps.get(r));
            assertEquals(0, ps.get(r).exitValue(), "rank " + r + ": " + String.join("\n", lines));
            for (var e : reference.get(r).entrySet()) {
                String digest = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(e.getValue()));
                String want = "output " + e.getKey().replace(' ', '_') + " " + digest;
                assertTrue(lines.contains(want), "rank " + r + " lacks " + want + " in " + lines);
            }
        }
    }

    @Test
    void rankThatDiesMakesTheOthersFailInsteadOfHanging() throws Exception {
        List<Process> ps = start(1, "1", "20000");
        for (int r = 0; r < world; r++) {
            List<String> lines = finish(ps.get(r));
            int code = ps.get(r).exitValue();
            if (r == 1) {
                assertEquals(9, code, String.join("\n", lines));
            } else {
                assertEquals(3, code, "rank " + r + ": " + String.join("\n", lines));
                String prefix = "CommunicatorException: NCCL rank " + r;
                assertTrue(lines.stream().anyMatch(l -> l.startsWith(prefix)), lines::toString);
            }
        }
    }
}
