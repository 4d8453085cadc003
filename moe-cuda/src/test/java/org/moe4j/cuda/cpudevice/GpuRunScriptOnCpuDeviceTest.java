package org.moe4j.cuda.cpudevice;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.reflect.Method;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.cuda.GpuBundleScriptsTest;
import org.moe4j.cuda.GpuBundleScriptsTest.Result;

/**
 * scripts/gpu-run.sh's whole default plan on the CPU device, as the GPU host would run it from the bundle:
 * this JVM's runtime as jre/, the real JUnit console launcher, the test classes, the CPU device as libcuda
 * and libnccl (four devices for the multi-process NCCL test), the small shapes. Every test step must pass
 * with tests run; the benchmarks may run out of their 20 s on the emulator (TIMEOUT is accepted here).
 */
@Tag("cpudevice")
class GpuRunScriptOnCpuDeviceTest {
    /** The steps that run JUnit (one testfeed line per test in tests.log). */
    static final List<String> TEST_STEPS = List.of("smoke", "routing", "gemm-mma", "gemm-wgmma", "layer-mma",
            "layer-wgmma", "comm", "graph");
    static final List<String> BENCHMARKS = List.of("GroupedGemmGpuBench", "RouterGpuBench", "PermuteGpuBench");
    static final Pattern RUN_COUNT = Pattern.compile("^\\S+\\s+ok: (\\d+) run, 0 failed, 0 errors, \\d+ skipped$");
    static final Pattern FINISHED = Pattern.compile(".* :: (SUCCESSFUL|FAILED|ABORTED|SKIPPED)\\b.*");

    @TempDir
    Path tmp;

    @Test
    void theWholePlanPassesOnTheCpuDevice() throws Exception {
        CpuDevice.assumeCpuDevice();
        assumeTrue(Files.isExecutable(Path.of("/bin/bash")), "bash is needed to run scripts/gpu-run.sh");
        assumeTrue(org.moe4j.cuda.CudaModule.isBuilt("smoke"),
                "the kernels were not built (no nvcc when this build ran): every GPU test of the plan would skip");
        String lib = System.getProperty("moe4j.cuda.lib");
        Path bundle = GpuBundleScriptsTest.realBundle(tmp);
        Map<String, String> env = new HashMap<>();
        env.put("MOE4J_CLASS_PATH", GpuBundleScriptsTest.scriptClassPath(Files.createDirectories(tmp.resolve("cp"))));
        env.put("MOE4J_LIBCUDA", lib);
        env.put("MOE4J_LIBNCCL", lib);
        env.put("MOE4J_CPUDEV_DEVICES", "4");
        env.put("MOE4J_JVM_OPTS", "-Dmoe4j.gpu.small=true");
        env.put("MOE4J_BENCH_ROWS", "128 256");
        env.put("MOE4J_DEADLINE_S", "640"); // the emulator is slower than the GPU the default 470 s are sized for
        env.put("MOE4J_BENCH_TIMEOUT", "8");  // the benchmarks may time out on the CPU device; that is allowed here
        Path out = tmp.resolve("out");

        Result r = GpuBundleScriptsTest.runScript(tmp, env, 780, bundle.resolve("run.sh").toString(), out.toString());

        String summary = Files.readString(out.resolve("summary.txt"));
        String tests = Files.readString(out.resolve("tests.log"));
        System.out.printf("gpu-run.sh on the CPU device: exit %d after %.0f s%n%s%nsteps of tests.log:%n%s%n", r.exit(),
                r.seconds(), summary, String.join("\n", tests.lines().filter(l -> l.startsWith("===== ")).toList()));

        for (String step : GpuBundleScriptsTest.DEFAULT_PLAN) {
            assertTrue(GpuBundleScriptsTest.hasStepLine(summary, step), "step " + step + " in the summary:\n" + summary);
        }
        for (String step : TEST_STEPS) {
            String line = GpuBundleScriptsTest.stepLine(summary, step);
            Matcher m = RUN_COUNT.matcher(line);
            assertTrue(m.matches() && Integer.parseInt(m.group(1)) > 0, step + " ok with tests run:\n" + summary + "\n"
                    + section(tests, step));
            assertEquals(Integer.parseInt(m.group(1)), finishedLines(section(tests, step)).size(),
                    step + ": one tests.log line per test run\n" + section(tests, step));
        }
        assertTrue(GpuBundleScriptsTest.stepLine(summary, "calibrate").contains("skipped"),
                "no calibrate binary in this bundle:\n" + summary);
        for (String bench : BENCHMARKS) {
            assertTrue(summary.lines().anyMatch(l -> l.matches("\\s+" + bench + "\\s+(ok|TIMEOUT) in \\d+ s")),
                    bench + " ok, or out of time on the emulator:\n" + summary);
        }
        assertTrue(r.exit() == 0 || r.exit() == 1 && summary.contains("TIMEOUT"),
                "exit 0, or 1 for a benchmark that ran out of time: " + r.exit() + "\n" + r.output());
        for (String f : List.of("summary.txt", "env.txt", "tests.log", "bench.log")) {
            assertTrue(Files.isRegularFile(out.resolve(f)), f + " in OUT: " + GpuBundleScriptsTest.files(out));
        }
        GpuBundleScriptsTest.assertAtMostEightFiles(out, r.output());

        // one testfeed line per test as it finishes: every @Test of CudaSmokeGpuTest once
        List<String> smokeLines = finishedLines(section(tests, "smoke")).stream()
                .filter(l -> l.contains("> CudaSmokeGpuTest > ")).toList();
        long smokeTests = 0;
        for (Method m : Class.forName("org.moe4j.cuda.CudaSmokeGpuTest").getDeclaredMethods()) {
            if (m.isAnnotationPresent(Test.class)) {
                smokeTests++;
            }
        }
        assertEquals(smokeTests, smokeLines.size(), "one line per CudaSmokeGpuTest test:\n" + section(tests, "smoke"));
        assertTrue(smokeLines.stream().allMatch(l -> l.endsWith(":: SUCCESSFUL")), String.join("\n", smokeLines));
    }

    /** @return the part of tests.log between "===== step: HH:MM:SS" and "===== step: exit N" */
    static String section(String testsLog, String step) {
        List<String> lines = new ArrayList<>();
        boolean in = false;
        for (String l : testsLog.lines().toList()) {
            if (l.matches("===== " + Pattern.quote(step) + ": \\d\\d:\\d\\d:\\d\\d")) {
                in = true;
            } else if (in && l.startsWith("===== " + step + ": exit ")) {
                break;
            } else if (in) {
                lines.add(l);
            }
        }
        return String.join("\n", lines);
    }

    static List<String> finishedLines(String section) {
        return section.lines().filter(l -> FINISHED.matcher(l).matches()).toList();
    }
}
