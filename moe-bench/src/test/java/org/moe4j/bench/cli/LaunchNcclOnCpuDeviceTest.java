package org.moe4j.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.comm.CommExercise;
import org.moe4j.cuda.comm.NcclCommunicator;
import org.moe4j.cuda.comm.NcclRankMain;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.dist.TcpRendezvous;
import picocli.CommandLine;

/**
 * NCCL ranks as separate processes started by {@code moe launch}, on the CPU device
 * (libmoe4j_cpudevice.so as libcuda and libnccl, ranks meeting in POSIX shared memory): every rank's
 * collective outputs are bitwise equal to {@link LocalGroup}, and a rank that dies makes the launcher
 * stop the others and fail instead of hanging. Runs in the {@code launch-on-cpu-device} surefire
 * execution of moe-bench/pom.xml, which sets the environment the rank processes inherit.
 */
@Tag("cpudevice")
class LaunchNcclOnCpuDeviceTest {
    /** Bound for one launch; the NCCL timeout of the dying-rank case is above it, so only the launcher can end it in time. */
    private static final long LAUNCH_LIMIT_SECONDS = 120;

    @BeforeEach
    void onTheCpuDevice() {
        String lib = System.getenv("MOE4J_LIBCUDA");
        assumeTrue(lib != null && lib.endsWith("libmoe4j_cpudevice.so") && Files.isRegularFile(Path.of(lib)),
                () -> "not on the CPU device: MOE4J_LIBCUDA=" + lib + " does not name an existing libmoe4j_cpudevice.so"
                        + " (run through moe-bench's launch-on-cpu-device surefire execution)");
        String nccl = System.getenv("MOE4J_LIBNCCL");
        assumeTrue(lib.equals(nccl), () -> "MOE4J_LIBNCCL=" + nccl + " is not the CPU device " + lib);
    }

    private record Result(int exit, List<String> out, List<String> err, long millis) {
        String all() {
            return "exit " + exit + " after " + millis + " ms\nstdout:\n" + String.join("\n", out) + "\nstderr:\n"
                    + String.join("\n", err);
        }
    }

    /** Runs {@code moe launch} in-process through picocli, capturing what it forwards. */
    private static Result launch(List<String> args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        long t0 = System.nanoTime();
        int exit;
        try (PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
             PrintStream e = new PrintStream(err, true, StandardCharsets.UTF_8)) {
            CommandLine cl = new CommandLine(new LaunchCommand(o, e));
            cl.setErr(new PrintWriter(e, true));
            exit = cl.execute(args.toArray(String[]::new));
        }
        long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
        return new Result(exit, out.toString(StandardCharsets.UTF_8).lines().toList(),
                err.toString(StandardCharsets.UTF_8).lines().toList(), millis);
    }

    /** The CPU reference: the same exercise on {@link LocalGroup}'s in-process ranks. */
    private static List<Map<String, byte[]>> reference(int world, long seed) {
        return LocalGroup.run(world, c -> CommExercise.run(c, CommExercise.host(), seed));
    }

    /** The class path of the rank's classes and their dependencies, from their code sources (Maven or a bundle). */
    private static String classPath() {
        Set<String> parts = new LinkedHashSet<>();
        for (Class<?> c : new Class<?>[] {NcclRankMain.class, NcclCommunicator.class,
                LocalGroup.class, TcpRendezvous.class, HostBuffer.class, org.slf4j.LoggerFactory.class}) {
            try {
                parts.add(new File(c.getProtectionDomain().getCodeSource().getLocation().toURI()).getPath());
            } catch (Exception e) {
                throw new IllegalStateException("cannot locate " + c, e);
            }
        }
        return String.join(File.pathSeparator, parts);
    }

    /** {@code moe launch --nproc N -- java <flags> -cp <cp> NcclRankMain <rankArgs>}. */
    private static List<String> launchArgs(int nproc, String... rankArgs) {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> args = new ArrayList<>(List.of("--nproc", Integer.toString(nproc), "--stop-grace-ms", "3000", "--",
                java, "--enable-native-access=ALL-UNNAMED", "--add-modules", "jdk.incubator.vector",
                "-cp", classPath(), NcclRankMain.class.getName()));
        args.addAll(List.of(rankArgs));
        return args;
    }

    private static List<String> rankLines(Result r, int rank) {
        String prefix = "[rank " + rank + "] ";
        return r.out().stream().filter(l -> l.startsWith(prefix)).map(l -> l.substring(prefix.length())).toList();
    }

    @ParameterizedTest(name = "nproc {0}")
    @ValueSource(ints = {2, 4, 8})
    @Timeout(value = 2 * LAUNCH_LIMIT_SECONDS, unit = TimeUnit.SECONDS)
    void everyLaunchedRankMatchesTheCpuReferenceBitForBit(int nproc) throws Exception {
        long seed = System.nanoTime();
        System.out.println("seed " + seed + " nproc " + nproc);
        List<Map<String, byte[]>> reference = reference(nproc, seed);
        Result r = launch(launchArgs(nproc, Long.toString(seed)));
        System.out.println("moe launch --nproc " + nproc + ": " + r.millis() + " ms");
        assertEquals(0, r.exit(), r::all);
        for (int rank = 0; rank < nproc; rank++) {
            int rk = rank;
            List<String> lines = rankLines(r, rank);
            assertEquals(reference.get(rank).size(), lines.stream().filter(l -> l.startsWith("output ")).count(),
                    "rank " + rank + " output lines\n" + r.all());
            for (var e : reference.get(rank).entrySet()) {
                String digest = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(e.getValue()));
                String want = "output " + e.getKey().replace(' ', '_') + " " + digest;
                assertTrue(lines.contains(want), () -> "rank " + rk + " lacks " + want + "\n" + r.all());
            }
        }
    }

    @Test
    @Timeout(value = 2 * LAUNCH_LIMIT_SECONDS, unit = TimeUnit.SECONDS)
    void rankThatDiesMakesTheLauncherStopTheOthersAndFail() {
        int nproc = 4;
        // rank 1 exits (code 9) right after the bootstrap; the others' NCCL timeout (10 minutes) is far
        // beyond the limit, so only the launcher stopping them ends the run in time
        Result r = launch(launchArgs(nproc, "1", "1", "600000"));
        System.out.println("moe launch with a dying rank: " + r.millis() + " ms");
        assertNotEquals(0, r.exit(), r::all);
        assertEquals(9, r.exit(), r::all);
        assertTrue(r.millis() < TimeUnit.SECONDS.toMillis(LAUNCH_LIMIT_SECONDS), r::all);
        assertTrue(rankLines(r, 1).contains("rank 1 exits now"), r::all);
        assertTrue(r.err().contains("moe launch: rank 1 exited with code 9; stopping the other ranks"), r::all);
        for (int rank = 0; rank < nproc; rank++) {
            assertTrue(rankLines(r, rank).stream().noneMatch(l -> l.startsWith("output ")),
                    "rank " + rank + " finished the exercise although rank 1 died\n" + r.all());
        }
    }
}
