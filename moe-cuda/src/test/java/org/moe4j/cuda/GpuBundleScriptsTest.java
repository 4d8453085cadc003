package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The GPU bundle's scripts, exercised on fake trees: layout check, wheel NCCL discovery, benchmark list. */
class GpuBundleScriptsTest {
    static final Path SCRIPTS = KernelResourcesTest.repoRoot().resolve("scripts");

    @TempDir
    Path tmp;

    record Result(int exit, String output) {
    }

    @BeforeAll
    static void needBash() {
        assumeTrue(Files.isExecutable(Path.of("/bin/bash")), "bash is needed to test the bundle scripts");
    }

    static Result bash(Map<String, String> env, String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("/bin/bash"));
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
        pb.environment().putAll(env);
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "script finished");
        return new Result(p.exitValue(), out);
    }

    private Path touch(Path root, String relative, String content) throws IOException {
        Path f = root.resolve(relative);
        Files.createDirectories(f.getParent());
        Files.writeString(f, content);
        return f;
    }

    @Test
    void bothScriptsAreValidBash() throws Exception {
        for (String s : List.of("gpu-bundle.sh", "gpu-run.sh")) {
            Result r = bash(Map.of(), "-n", SCRIPTS.resolve(s).toString());
            assertEquals(0, r.exit(), s + ": " + r.output());
        }
    }

    @Test
    void runnerFindsNcclInPythonWheelLayoutsWithoutPython() throws Exception {
        Path a = touch(tmp, "usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2", "x").getParent();
        Path b = touch(tmp, "opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnccl.so.2", "x").getParent();
        touch(tmp, "usr/lib/python3/dist-packages/nvidia/cublas/lib/libcublas.so.13", "x");
        Result r = bash(Map.of("MOE4J_SEARCH_ROOT", tmp.toString(), "HOME", "/nonexistent-home"),
                SCRIPTS.resolve("gpu-run.sh").toString(), "--nccl-dirs");
        assertEquals(0, r.exit(), r.output());
        List<String> dirs = r.output().lines().toList();
        assertTrue(dirs.contains(a.toString()), r.output());
        assertTrue(dirs.contains(b.toString()), r.output());
        assertEquals(2, dirs.size(), "only directories holding libnccl.so.2: " + r.output());
    }

    private Path fakeBundle() throws IOException {
        Path b = tmp.resolve("bundle");
        for (String f : List.of("benchmarks.txt", "BUNDLE.txt", "lib/moe.jar", "lib/tests/moe-cuda-tests.jar",
                "lib/junit-platform-console-standalone-1.11.4.jar")) {
            touch(b, f, "x");
        }
        Path java = touch(b, "jre/bin/java", "#!/bin/sh\n");
        java.toFile().setExecutable(true);
        Path run = touch(b, "run.sh", Files.readString(SCRIPTS.resolve("gpu-run.sh")));
        run.toFile().setExecutable(true);
        return b;
    }

    @Test
    void layoutCheckAcceptsACompleteBundleAndNamesWhatIsMissing() throws Exception {
        Path b = fakeBundle();
        Result ok = bash(Map.of(), SCRIPTS.resolve("gpu-bundle.sh").toString(), "--check", b.toString());
        assertEquals(0, ok.exit(), ok.output());
        assertTrue(ok.output().contains("is complete"), ok.output());

        Files.delete(b.resolve("lib/moe.jar"));
        Files.delete(b.resolve("lib/tests/moe-cuda-tests.jar"));
        Result bad = bash(Map.of(), SCRIPTS.resolve("gpu-bundle.sh").toString(), "--check", b.toString());
        assertEquals(1, bad.exit(), bad.output());
        assertTrue(bad.output().contains("gpu-bundle: " + b + "/lib/moe.jar is missing"), bad.output());
        assertTrue(bad.output().contains("no test jars in " + b + "/lib/tests"), bad.output());
    }

    @Test
    void layoutCheckRefusesABundleOverTheSizeLimit() throws Exception {
        Path b = fakeBundle();
        Files.write(b.resolve("lib/moe.jar"), new byte[3 << 20]);
        Result r = bash(Map.of("MOE4J_BUNDLE_MAX_MB", "2"), SCRIPTS.resolve("gpu-bundle.sh").toString(), "--check", b.toString());
        assertEquals(1, r.exit(), r.output());
        assertTrue(r.output().contains("MB, over the 2 MB limit"), r.output());
    }

    @Test
    void runnerRunsTheChosenStepsAndLeavesAtMostEightFiles() throws Exception {
        Path b = fakeBundle(); // its java is a no-op script: every step runs and "passes"
        for (String steps : new String[] {"", "bench,peers"}) {
            Path out = tmp.resolve("out" + steps.length());
            Map<String, String> env = steps.isEmpty() ? Map.of() : Map.of("MOE4J_STEPS", steps);
            Result r = bash(env, b.resolve("run.sh").toString(), out.toString());
            assertEquals(0, r.exit(), r.output());
            long files;
            try (var walk = Files.walk(out)) {
                files = walk.filter(Files::isRegularFile).count();
            }
            assertTrue(files <= 8, "the device tool brings back 8 files; run.sh left " + files + ": " + r.output());
            String summary = Files.readString(out.resolve("summary.txt"));
            if (steps.isEmpty()) {
                assertTrue(summary.contains("layer on wgmma:"), summary);
            } else {
                assertTrue(summary.contains("tests: not run (MOE4J_STEPS)"), summary);
                assertTrue(summary.contains("compute-sanitizer:\n  not run (MOE4J_STEPS)"), summary);
            }
        }
        Result bad = bash(Map.of("MOE4J_STEPS", "tests,gpu"), b.resolve("run.sh").toString(), tmp.resolve("outx").toString());
        assertEquals(2, bad.exit(), bad.output());
        assertTrue(bad.output().contains("unknown step 'gpu'"), bad.output());
    }

    @Test
    void runnerRefusesAnIncompleteBundleClearly() throws Exception {
        Path b = fakeBundle();
        Files.delete(b.resolve("jre/bin/java"));
        Result r = bash(Map.of(), b.resolve("run.sh").toString(), tmp.resolve("out").toString());
        assertEquals(2, r.exit(), r.output());
        assertTrue(r.output().contains("missing: not a complete bundle (build it with scripts/gpu-bundle.sh)"), r.output());
    }

    @Test
    void benchmarkListHasUniqueNamesAndAMainClassPerLine() throws IOException {
        Set<String> names = new HashSet<>();
        for (String line : Files.readAllLines(SCRIPTS.resolve("gpu-benchmarks.txt"))) {
            String t = line.strip();
            if (t.isEmpty() || t.startsWith("#")) {
                continue;
            }
            String[] parts = t.split("\\s+");
            assertTrue(parts.length >= 2, "name and main class: " + line);
            assertTrue(parts[0].matches("[A-Za-z0-9._-]+"), "name uses letters, digits, . _ - : " + parts[0]);
            assertTrue(parts[1].matches("([a-z][a-z0-9_]*\\.)+[A-Za-z_$][A-Za-z0-9_$]*"), "main class is a qualified name: " + parts[1]);
            assertTrue(names.add(parts[0]), "unique name " + parts[0]);
        }
        assertTrue(!names.isEmpty(), "at least one benchmark listed");
    }
}
