package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The GPU bundle's scripts, exercised on fake and real bundle trees: layout check, wheel NCCL discovery,
 * and scripts/gpu-run.sh's plan, deadline, step timeouts and crash reporting.
 *
 * <p>The public helpers ({@link #realBundle}, {@link #scriptClassPath}, {@link #runScript}) also serve
 * {@code org.moe4j.cuda.cpudevice.GpuRunScriptOnCpuDeviceTest}, which runs the whole plan on the CPU device.
 */
public class GpuBundleScriptsTest {
    static final Path SCRIPTS = KernelResourcesTest.repoRoot().resolve("scripts");
    /** Every step of gpu-run.sh's default plan, in order (sanitizer only on request). */
    public static final List<String> DEFAULT_PLAN = List.of("env", "smoke", "routing", "gemm-mma", "gemm-wgmma",
            "layer-mma", "layer-wgmma", "calibrate", "gemm-bench", "comm", "graph", "bench-more");
    /** What the device tool brings back of an OUT folder: at most this many files. */
    public static final int MAX_OUT_FILES = 8;

    @TempDir
    Path tmp;

    /** The outcome of one script run: exit status, stdout and stderr together, wall time. */
    public record Result(int exit, String output, double seconds) {
    }

    @BeforeAll
    static void needBash() {
        assumeTrue(Files.isExecutable(Path.of("/bin/bash")), "bash is needed to test the bundle scripts");
    }

    /**
     * Runs {@code /bin/bash args...} in {@code dir} with the inherited environment minus every {@code MOE4J_*}
     * variable (so that neither the CPU device nor a caller's knobs leak in), plus {@code env}; kills the
     * whole process tree when it outlives {@code limitSeconds}.
     */
    public static Result runScript(Path dir, Map<String, String> env, long limitSeconds, String... args)
            throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("/bin/bash"));
        cmd.addAll(List.of(args));
        Path log = Files.createTempFile(dir, "script-", ".out");
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true)
                .redirectOutput(log.toFile()).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
        pb.environment().keySet().removeIf(k -> k.startsWith("MOE4J_"));
        pb.environment().putAll(env);
        long t0 = System.nanoTime();
        Process p = pb.start();
        boolean done = p.waitFor(limitSeconds, TimeUnit.SECONDS);
        double seconds = (System.nanoTime() - t0) / 1e9;
        if (!done) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        String out = Files.readString(log, StandardCharsets.UTF_8);
        assertTrue(done, "script did not finish within " + limitSeconds + " s (killed): " + String.join(" ", args)
                + "\n" + out);
        return new Result(p.exitValue(), out, seconds);
    }

    private Result bash(Map<String, String> env, String... args) throws IOException, InterruptedException {
        return runScript(tmp, env, 60, args);
    }

    private static Path touch(Path root, String relative, String content) throws IOException {
        Path f = root.resolve(relative);
        Files.createDirectories(f.getParent());
        Files.writeString(f, content);
        return f;
    }

    /** @return the regular files under {@code out} */
    public static List<Path> files(Path out) throws IOException {
        try (Stream<Path> walk = Files.walk(out)) {
            return walk.filter(Files::isRegularFile).sorted().toList();
        }
    }

    /** Asserts that OUT holds at most {@link #MAX_OUT_FILES} files. */
    public static void assertAtMostEightFiles(Path out, String context) throws IOException {
        List<Path> files = files(out);
        assertTrue(files.size() <= MAX_OUT_FILES, "the device tool brings back " + MAX_OUT_FILES + " files; run.sh left "
                + files.size() + ": " + files + "\n" + context);
    }

    // ---- real bundles: the test JVM's own runtime, the real console launcher, the test class path ----

    /** @return target/console/junit-platform-console-standalone-*.jar (maven-dependency-plugin, generate-test-resources) */
    static Path consoleJar() throws IOException {
        String basedir = System.getProperty("basedir");
        Path dir = (basedir != null ? Path.of(basedir) : KernelResourcesTest.repoRoot().resolve("moe-cuda"))
                .resolve("target/console");
        Path jar = null;
        if (Files.isDirectory(dir)) {
            try (Stream<Path> s = Files.list(dir)) {
                jar = s.filter(f -> f.getFileName().toString().matches("junit-platform-console-standalone-.*\\.jar"))
                        .findFirst().orElse(null);
            }
        }
        assumeTrue(jar != null, "no JUnit console launcher in " + dir + " (moe-cuda's build copies it there at "
                + "generate-test-resources: run the tests through Maven)");
        return jar;
    }

    /**
     * A bundle in {@code parent}/bundle that runs for real: {@code jre} links to this JVM's java.home,
     * lib/ holds the real JUnit console launcher, run.sh is scripts/gpu-run.sh. The classes come from
     * {@code MOE4J_CLASS_PATH} ({@link #scriptClassPath}).
     */
    public static Path realBundle(Path parent) throws IOException {
        Path console = consoleJar();
        Path b = Files.createDirectories(parent.resolve("bundle"));
        Files.createSymbolicLink(b.resolve("jre"), Path.of(System.getProperty("java.home")));
        Files.createDirectories(b.resolve("lib"));
        Files.copy(console, b.resolve("lib").resolve(console.getFileName()));
        Files.writeString(b.resolve("BUNDLE.txt"), "moe4j GPU bundle (test)\ncommit:  test\n");
        Path run = Files.copy(SCRIPTS.resolve("gpu-run.sh"), b.resolve("run.sh"));
        run.toFile().setExecutable(true);
        return b;
    }

    /**
     * The test class path (surefire.test.class.path, else java.class.path) without JUnit, opentest4j,
     * apiguardian and surefire jars (the console launcher brings its own JUnit), every entry copied into
     * {@code snapshot}: other builds in the same checkout may recompile target/classes while the script runs.
     *
     * @return the copies, path-separated, for MOE4J_CLASS_PATH
     */
    public static String scriptClassPath(Path snapshot) throws IOException {
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        List<String> kept = new ArrayList<>();
        int i = 0;
        for (String e : cp.split(File.pathSeparator)) {
            if (e.isBlank()) {
                continue;
            }
            Path src = Path.of(e);
            String name = src.getFileName() == null ? "" : src.getFileName().toString();
            if (name.startsWith("junit-") || name.startsWith("opentest4j") || name.startsWith("apiguardian")
                    || name.contains("surefire") || !Files.exists(src)) {
                continue;
            }
            Path dst = snapshot.resolve(String.format("%02d-%s", i++, name));
            copyTree(src, dst);
            kept.add(dst.toString());
        }
        return String.join(File.pathSeparator, kept);
    }

    private static void copyTree(Path src, Path dst) throws IOException {
        if (!Files.isDirectory(src)) {
            Files.createDirectories(dst.getParent());
            Files.copy(src, dst, StandardCopyOption.COPY_ATTRIBUTES);
            return;
        }
        try (Stream<Path> walk = Files.walk(src)) {
            for (Path f : (Iterable<Path>) walk::iterator) {
                Path t = dst.resolve(src.relativize(f).toString());
                if (Files.isDirectory(f)) {
                    Files.createDirectories(t);
                } else if (Files.isRegularFile(f)) {
                    Files.copy(f, t, StandardCopyOption.COPY_ATTRIBUTES);
                }
            }
        }
    }

    // ---- the tests ----

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

    /** A bundle of placeholder files whose jre/bin/java is the given shell script body. */
    private Path fakeBundle(String javaBody) throws IOException {
        Path b = tmp.resolve("bundle");
        for (String f : List.of("BUNDLE.txt", "lib/moe.jar", "lib/tests/moe-cuda-tests.jar",
                "lib/junit-platform-console-standalone-1.11.4.jar")) {
            touch(b, f, "x");
        }
        Path java = touch(b, "jre/bin/java", "#!/bin/sh\n" + javaBody);
        java.toFile().setExecutable(true);
        Path run = touch(b, "run.sh", Files.readString(SCRIPTS.resolve("gpu-run.sh")));
        run.toFile().setExecutable(true);
        return b;
    }

    private Path fakeBundle() throws IOException {
        return fakeBundle(""); // java is a no-op: every step runs and "passes"
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

    /** @return whether {@code summary} has a line for {@code step} (its name first, as run.sh writes it) */
    public static boolean hasStepLine(String summary, String step) {
        return summary.lines().anyMatch(l -> l.startsWith(step + " "));
    }

    /** @return the summary line of {@code step} */
    public static String stepLine(String summary, String step) {
        return summary.lines().filter(l -> l.startsWith(step + " ")).findFirst()
                .orElseThrow(() -> new AssertionError("no line for step " + step + " in the summary:\n" + summary));
    }

    @Test
    void runnerRunsTheWholeDefaultPlanAndLeavesAtMostEightFiles() throws Exception {
        Path b = fakeBundle();
        Path out = tmp.resolve("out");
        Result r = bash(Map.of(), b.resolve("run.sh").toString(), out.toString());
        assertEquals(0, r.exit(), r.output());
        assertAtMostEightFiles(out, r.output());
        String summary = Files.readString(out.resolve("summary.txt"));
        for (String step : DEFAULT_PLAN) {
            assertTrue(hasStepLine(summary, step), "step " + step + " in the summary:\n" + summary);
        }
        assertTrue(!hasStepLine(summary, "sanitizer"), "sanitizer runs only on request:\n" + summary);
        assertTrue(r.output().endsWith(summary), "the summary is printed last:\n" + r.output());
    }

    @Test
    void runnerRunsOnlyTheStepsNamedInMoe4jSteps() throws Exception {
        Path b = fakeBundle();
        Path out = tmp.resolve("out");
        Result r = bash(Map.of("MOE4J_STEPS", "routing,smoke"), b.resolve("run.sh").toString(), out.toString());
        assertEquals(0, r.exit(), r.output());
        String summary = Files.readString(out.resolve("summary.txt"));
        for (String step : DEFAULT_PLAN) {
            assertEquals(step.equals("smoke") || step.equals("routing"), hasStepLine(summary, step), step + ":\n" + summary);
        }
        assertTrue(summary.indexOf("\nsmoke ") < summary.indexOf("\nrouting "), "plan order, not MOE4J_STEPS order:\n" + summary);

        Result bad = bash(Map.of("MOE4J_STEPS", "smoke,gpu"), b.resolve("run.sh").toString(), tmp.resolve("outx").toString());
        assertEquals(2, bad.exit(), bad.output());
        assertTrue(bad.output().contains("unknown step 'gpu'"), bad.output());
    }

    @Test
    void planListsEveryStep() throws Exception {
        Path b = fakeBundle();
        Result r = bash(Map.of(), b.resolve("run.sh").toString(), "--plan");
        assertEquals(0, r.exit(), r.output());
        List<String> listed = r.output().lines().map(String::strip).map(l -> l.split("\\s+")[0]).toList();
        for (String step : DEFAULT_PLAN) {
            assertTrue(listed.contains(step), "step " + step + " in --plan:\n" + r.output());
        }
        assertTrue(listed.contains("sanitizer"), "--plan names the on-request sanitizer step:\n" + r.output());
    }

    @Test
    void aBadDeadlineIsRefusedNamingTheVariable() throws Exception {
        Path b = fakeBundle();
        for (String bad : List.of("abc", "0")) {
            Result r = bash(Map.of("MOE4J_DEADLINE_S", bad), b.resolve("run.sh").toString(), tmp.resolve("out").toString());
            assertEquals(2, r.exit(), bad + ": " + r.output());
            assertTrue(r.output().contains("MOE4J_DEADLINE_S"), "names the variable: " + r.output());
            assertTrue(r.output().contains("'" + bad + "'"), "names the value: " + r.output());
        }
    }

    @Test
    void runnerRefusesAnIncompleteBundleClearly() throws Exception {
        Path b = fakeBundle();
        Files.delete(b.resolve("jre/bin/java"));
        Result r = bash(Map.of(), b.resolve("run.sh").toString(), tmp.resolve("out").toString());
        assertEquals(2, r.exit(), r.output());
        assertTrue(r.output().contains("missing: not a complete bundle (build it with scripts/gpu-bundle.sh)"), r.output());
    }

    /** A step that hangs costs its timeout, clipped to the deadline; later steps are skipped for lack of time. */
    @Test
    void aHungStepTimesOutAndTheStepsAfterItAreSkippedForLackOfTime() throws Exception {
        Path b = fakeBundle("sleep 1000\n");
        Path out = tmp.resolve("out");
        // env runs java as a probe (its own test below); here the first test step hangs
        List<String> steps = DEFAULT_PLAN.subList(1, DEFAULT_PLAN.size());
        Result r = runScript(tmp, Map.of("MOE4J_DEADLINE_S", "15", "MOE4J_MIN_STEP_S", "3", "MOE4J_STEPS",
                String.join(",", steps)), 60, b.resolve("run.sh").toString(), out.toString());
        assertHungRun(r, out, "smoke", steps.subList(1, steps.size()));
    }

    /** The env step's probes run java too: a hung JVM there (cuInit on a sick host) must not outlive the deadline. */
    @Test
    void aHungJavaInTheEnvStepStaysWithinTheDeadline() throws Exception {
        Path b = fakeBundle("sleep 1000\n");
        Path out = tmp.resolve("out");
        Result r = runScript(tmp, Map.of("MOE4J_DEADLINE_S", "15", "MOE4J_MIN_STEP_S", "3"), 60,
                b.resolve("run.sh").toString(), out.toString());
        assertHungRun(r, out, "env", DEFAULT_PLAN.subList(1, DEFAULT_PLAN.size()));
    }

    private static void assertHungRun(Result r, Path out, String hung, List<String> skipped) throws IOException {
        assertTrue(r.seconds() < 25, "a 15 s deadline, returned after " + r.seconds() + " s:\n" + r.output());
        assertEquals(1, r.exit(), r.output());
        assertAtMostEightFiles(out, r.output());
        Path summaryFile = out.resolve("summary.txt");
        assertTrue(Files.isRegularFile(summaryFile), "summary.txt written:\n" + r.output());
        String summary = Files.readString(summaryFile);
        assertTrue(stepLine(summary, hung).contains("TIMEOUT"), hung + " timed out:\n" + summary);
        for (String step : skipped) {
            String line = stepLine(summary, step);
            assertTrue(line.contains("skipped") && line.contains("left before the deadline"),
                    step + " skipped for lack of time:\n" + summary);
        }
    }

    /**
     * A JVM that dies (here: -XX:AbortVMOnException on the assumption every GPU test throws without a GPU)
     * leaves its hs_err file in OUT, its step says CRASHED, and run.sh fails.
     */
    @Test
    void aCrashedJvmLeavesItsErrorFileAndTheStepSaysCrashed() throws Exception {
        assumeFalse(Files.exists(Path.of("/dev/nvidiactl")) || Files.exists(Path.of("/proc/driver/nvidia")),
                "an NVIDIA driver is here: the smoke tests would run instead of aborting by assumption");
        Path b = realBundle(tmp);
        String cp = scriptClassPath(Files.createDirectories(tmp.resolve("cp")));
        Path out = tmp.resolve("out");
        Map<String, String> env = new HashMap<>();
        env.put("MOE4J_CLASS_PATH", cp);
        env.put("MOE4J_STEPS", "smoke");
        // no MOE4J_LIBCUDA (runScript drops every MOE4J_* it inherits): no CPU device, so every GPU test aborts
        env.put("MOE4J_JVM_OPTS", "-XX:+UnlockDiagnosticVMOptions -XX:AbortVMOnException=org.opentest4j.TestAbortedException "
                + "-XX:-CreateCoredumpOnCrash");
        Result r = runScript(tmp, env, 120, b.resolve("run.sh").toString(), out.toString());
        assertEquals(1, r.exit(), r.output());
        assertAtMostEightFiles(out, r.output());
        List<String> crashFiles = files(out).stream().map(f -> f.getFileName().toString())
                .filter(n -> n.matches("hs_err_[0-9]+\\.log")).toList();
        assertEquals(1, crashFiles.size(), "one hs_err_<pid>.log in OUT: " + files(out) + "\n" + r.output());
        String summary = Files.readString(out.resolve("summary.txt"));
        assertTrue(stepLine(summary, "smoke").contains("CRASHED"), summary);
        assertTrue(summary.contains(crashFiles.get(0)), "the summary names the crash file:\n" + summary);
    }
}
