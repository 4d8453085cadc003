package org.moe4j.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** {@code moe launch}: environment, output prefixes, failure propagation, and cleanup of every process. */
class LaunchCommandTest {

    private record Result(int exit, List<String> out, List<String> err) {
    }

    private static Result launch(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int exit;
        try (PrintStream o = new PrintStream(out, true, StandardCharsets.UTF_8);
             PrintStream e = new PrintStream(err, true, StandardCharsets.UTF_8)) {
            CommandLine cl = new CommandLine(new LaunchCommand(o, e));
            cl.setErr(new java.io.PrintWriter(e, true));
            exit = cl.execute(args);
        }
        return new Result(exit, lines(out), lines(err));
    }

    private static List<String> lines(ByteArrayOutputStream b) {
        String s = b.toString(StandardCharsets.UTF_8);
        return s.isEmpty() ? List.of() : Arrays.asList(s.split("\n"));
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void everyRankSeesTheTorchrunEnvironmentAndItsOutputIsPrefixed() {
        Result r = launch("--nproc", "3", "--master-port", "29517", "--",
                "bash", "-c", "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT\"; "
                        + "echo \"to stderr $RANK\" >&2; echo second line");
        assertEquals(0, r.exit, () -> String.join("\n", r.err));
        for (int rank = 0; rank < 3; rank++) {
            assertTrue(r.out.contains("[rank " + rank + "] " + rank + " 3 " + rank + " 3 127.0.0.1 29517"), r.out::toString);
            assertTrue(r.out.contains("[rank " + rank + "] second line"), r.out::toString);
            assertTrue(r.err.contains("[rank " + rank + "] to stderr " + rank), r.err::toString);
        }
        assertEquals(6, r.out.size(), r.out::toString);
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void everyLaunchGivesItsRanksOneJobIdAndAFreshSecret() {
        String script = "echo \"job=$MOE4J_JOB_ID token=$MOE4J_RDZV_TOKEN file=${MOE4J_RDZV_TOKEN_FILE:-unset}\"";
        Result first = launch("--nproc", "2", "--", "bash", "-c", script);
        Result second = launch("--nproc", "2", "--job-id", "train-42", "--", "bash", "-c", script);
        assertEquals(0, first.exit, () -> String.join("\n", first.err));
        assertEquals(0, second.exit, () -> String.join("\n", second.err));
        String a = rankLine(first, 0);
        String b = rankLine(second, 0);
        assertEquals(a, rankLine(first, 1), "both ranks of one launch share the job id and the secret");
        assertEquals(b, rankLine(second, 1), "both ranks of one launch share the job id and the secret");
        assertTrue(a.matches("job=moe-launch-[0-9a-f]{16} token=[0-9a-f]{64} file=unset"), a);
        assertTrue(b.matches("job=train-42 token=[0-9a-f]{64} file=unset"), b);
        assertNotEquals(a.substring(a.indexOf("token=")), b.substring(b.indexOf("token=")), "two launches share a secret");
        assertTrue(first.err.stream().anyMatch(l -> l.contains("MOE4J_JOB_ID=moe-launch-") && !l.contains(
                a.substring(a.indexOf("token=") + 6, a.indexOf(" file")))), "the secret is printed: " + first.err);
    }

    private static String rankLine(Result r, int rank) {
        String prefix = "[rank " + rank + "] ";
        return r.out.stream().filter(l -> l.startsWith(prefix)).findFirst().orElseThrow().substring(prefix.length());
    }

    @Test
    void invalidJobIdIsRefused() {
        Result r = launch("--nproc", "2", "--job-id", "bad id", "--", "true");
        assertEquals(LaunchCommand.USAGE_ERROR, r.exit);
        assertTrue(r.err.stream().anyMatch(l -> l.startsWith("moe launch: --job-id: job id='bad id' must be")),
                r.err::toString);
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void defaultPortIsAFreePortSharedByAllRanks() {
        Result r = launch("--nproc", "2", "--", "bash", "-c", "echo port=$MASTER_PORT");
        assertEquals(0, r.exit);
        String p0 = r.out.stream().filter(l -> l.startsWith("[rank 0] port=")).findFirst().orElseThrow();
        String p1 = r.out.stream().filter(l -> l.startsWith("[rank 1] port=")).findFirst().orElseThrow();
        assertEquals(p0.substring(9), p1.substring(9));
        int port = Integer.parseInt(p0.substring("[rank 0] port=".length()));
        assertTrue(port > 0 && port <= 65535, p0);
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    void failingRankStopsAllOthersWithTheirChildrenAndGivesItsExitCode(@TempDir Path dir) throws Exception {
        String d = dir.toString();
        // ranks 0 and 2 start a child and wait on it forever; rank 1 fails once both children exist
        String script = "if [ \"$RANK\" = 1 ]; then "
                + "while [ ! -s " + d + "/child0 ] || [ ! -s " + d + "/child2 ]; do sleep 0.05; done; "
                + "echo failing; exit 7; fi; "
                + "sleep 300 & echo $! > " + d + "/child$RANK.tmp; mv " + d + "/child$RANK.tmp " + d + "/child$RANK; "
                + "echo $$ > " + d + "/shell$RANK; wait";
        try {
            Result r = launch("--nproc", "3", "--stop-grace-ms", "3000", "--", "bash", "-c", script);
            assertEquals(7, r.exit, () -> String.join("\n", r.err));
            assertTrue(r.out.contains("[rank 1] failing"), r.out::toString);
            assertTrue(r.err.stream().anyMatch(l -> l.contains("rank 1 exited with code 7; stopping the other ranks")),
                    r.err::toString);
            List<Long> pids = new ArrayList<>();
            for (String f : new String[] {"child0", "child2", "shell0", "shell2"}) {
                pids.add(Long.parseLong(Files.readString(dir.resolve(f)).trim()));
            }
            for (long pid : pids) {
                assertFalse(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false),
                        "process " + pid + " outlived the launch");
            }
        } finally {
            killRecorded(dir);
        }
    }

    @Test
    void nonPositiveProcessCountIsRefused() {
        Result r = launch("--nproc", "0", "--", "true");
        assertEquals(LaunchCommand.USAGE_ERROR, r.exit);
        assertTrue(r.err.contains("moe launch: --nproc must be >= 1, got 0"), r.err::toString);
    }

    @Test
    void commandThatCannotStartIsReported() {
        Result r = launch("--nproc", "2", "--", "/nonexistent/moe4j-no-such-program");
        assertEquals(LaunchCommand.USAGE_ERROR, r.exit);
        assertTrue(r.err.stream().anyMatch(l -> l.startsWith("moe launch: could not start rank 0 (/nonexistent/")),
                r.err::toString);
    }

    @Test
    void missingCommandIsAUsageError() {
        Result r = launch("--nproc", "2");
        assertEquals(LaunchCommand.USAGE_ERROR, r.exit);
        assertTrue(String.join("\n", r.err).contains("Missing required parameter: 'COMMAND'"), r.err::toString);
    }

    @Test
    @Timeout(value = 90, unit = TimeUnit.SECONDS)
    void stoppingTheLauncherStopsEveryRankAndItsChildren(@TempDir Path dir) throws Exception {
        String java = ProcessHandle.current().info().command().orElseThrow();
        String d = dir.toString();
        Process launcher = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), MoeCli.class.getName(),
                "launch", "--nproc", "2", "--stop-grace-ms", "2000", "--", "bash", "-c",
                "sleep 300 & echo $! > " + d + "/child$RANK.tmp; mv " + d + "/child$RANK.tmp " + d + "/child$RANK; wait")
                .redirectErrorStream(true).redirectOutput(dir.resolve("launcher.log").toFile()).start();
        try {
            Path c0 = dir.resolve("child0");
            Path c1 = dir.resolve("child1");
            while (!(Files.exists(c0) && Files.exists(c1))) {
                assertTrue(launcher.isAlive(), () -> "launcher exited early: " + read(dir.resolve("launcher.log")));
                Thread.sleep(50);
            }
            long[] children = {Long.parseLong(Files.readString(c0).trim()), Long.parseLong(Files.readString(c1).trim())};
            launcher.destroy(); // SIGTERM, as from Ctrl-C or a scheduler
            assertTrue(launcher.waitFor(60, TimeUnit.SECONDS), "launcher did not exit after SIGTERM");
            for (long pid : children) {
                assertFalse(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false),
                        "child " + pid + " outlived the stopped launcher");
            }
        } finally {
            launcher.descendants().forEach(ProcessHandle::destroyForcibly);
            launcher.destroyForcibly();
            killRecorded(dir);
        }
    }

    /** Kills, after the assertions had their look, every process whose pid a test script wrote under {@code dir}. */
    private static void killRecorded(Path dir) throws java.io.IOException {
        try (var files = Files.list(dir)) {
            for (Path p : files.filter(f -> f.getFileName().toString().matches("(child|shell)\\d+")).toList()) {
                try {
                    long pid = Long.parseLong(Files.readString(p).trim());
                    ProcessHandle.of(pid)
                            .filter(h -> h.info().command().map(c -> c.endsWith("/sleep") || c.endsWith("/bash")).orElse(false))
                            .ifPresent(ProcessHandle::destroyForcibly); // only our scripts' processes, never a reused pid
                } catch (NumberFormatException e) {
                    // a file being written: nothing to kill yet
                }
            }
        }
    }

    private static String read(Path p) {
        try {
            return Files.readString(p);
        } catch (java.io.IOException e) {
            return e.toString();
        }
    }
}
