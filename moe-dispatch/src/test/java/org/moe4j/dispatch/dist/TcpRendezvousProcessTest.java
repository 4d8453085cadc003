package org.moe4j.dispatch.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.OptionalInt;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The rendezvous across real processes on loopback, as a launcher would start them. */
class TcpRendezvousProcessTest {
    private static final long PROCESS_LIMIT_SECONDS = 60;
    private static final String TIMEOUT_MS = "30000";

    private record Outcome(int exit, String out, String err) {
    }

    /** The job's identity as a launcher passes it: a job id and a token (or a token file). */
    private static Map<String, String> job(String jobId, String token, Path tokenFile) {
        Map<String, String> m = new HashMap<>();
        m.put(RendezvousAuth.JOB_ID, jobId);
        if (tokenFile != null) {
            m.put(RendezvousAuth.TOKEN_FILE, tokenFile.toString());
        } else {
            m.put(RendezvousAuth.TOKEN, token);
        }
        return m;
    }

    private static List<Process> start(int[] ranks, int[] worlds, int port, String blobHex, Map<String, String> job)
            throws IOException {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<Process> list = new ArrayList<>();
        for (int i = 0; i < ranks.length; i++) {
            ProcessBuilder pb = new ProcessBuilder(java, "-XX:TieredStopAtLevel=1", "-Xshare:auto",
                    "-cp", System.getProperty("java.class.path"), RendezvousMain.class.getName(), TIMEOUT_MS, blobHex);
            var env = pb.environment();
            env.remove(RendezvousAuth.TOKEN);
            env.remove(RendezvousAuth.TOKEN_FILE);
            env.putAll(job);
            env.putAll(new DistEnv(ranks[i], worlds[i], ranks[i], OptionalInt.empty(), "localhost", port).toMap());
            list.add(pb.start());
        }
        return list;
    }

    private static List<Outcome> finish(List<Process> processes) throws Exception {
        List<Outcome> out = new ArrayList<>();
        try {
            for (Process p : processes) {
                boolean done = p.waitFor(PROCESS_LIMIT_SECONDS, TimeUnit.SECONDS);
                assertTrue(done, "a rank process did not finish within " + PROCESS_LIMIT_SECONDS + " s");
                out.add(new Outcome(p.exitValue(),
                        new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim(),
                        new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8).trim()));
            }
        } finally {
            processes.forEach(Process::destroyForcibly);
        }
        return out;
    }

    @Test
    void fourProcessesShareRankZeroBlob(@TempDir Path dir) throws Exception {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        byte[] uniqueId = new byte[128];
        new Random(seed).nextBytes(uniqueId);
        String hex = HexFormat.of().formatHex(uniqueId);
        int port = Ranks.freePort();
        // started in reverse order: ranks 1..3 must retry until rank 0 listens
        Path tokenFile = dir.resolve("token");
        Files.writeString(tokenFile, RendezvousAuth.newToken() + "\n");
        Files.setPosixFilePermissions(tokenFile, PosixFilePermissions.fromString("rw-------"));
        List<Process> ps = start(new int[] {3, 2, 1, 0}, new int[] {4, 4, 4, 4}, port, hex,
                job("process-test-" + seed, null, tokenFile));
        List<Outcome> outcomes = finish(ps);
        String pids = null;
        for (int i = 0; i < 4; i++) {
            Outcome o = outcomes.get(i);
            int rank = 3 - i;
            assertEquals(0, o.exit, () -> "rank " + rank + " failed: " + o.err);
            assertTrue(o.out.startsWith("rank " + rank + " of 4 blob " + hex + " pids "), o.out);
            String mine = o.out.substring(o.out.indexOf(" pids ") + 6);
            assertEquals(4, mine.split(",").length, mine);
            assertEquals(Long.toString(ps.get(i).pid()), mine.split(",")[rank], mine);
            if (pids != null) {
                assertEquals(pids, mine, "every rank gathers the same pids");
            }
            pids = mine;
        }
    }

    @Test
    void wrongWorldSizeFailsEveryProcessWithTheSameMessage() throws Exception {
        int port = Ranks.freePort();
        List<Outcome> outcomes = finish(start(new int[] {0, 1, 2}, new int[] {3, 3, 5}, port, "00",
                job("process-test-world", RendezvousAuth.newToken(), null)));
        for (Outcome o : outcomes) {
            assertEquals(3, o.exit, o.err);
            assertTrue(o.err.contains("has WORLD_SIZE=5 but rank 0"), o.err);
        }
    }
}
