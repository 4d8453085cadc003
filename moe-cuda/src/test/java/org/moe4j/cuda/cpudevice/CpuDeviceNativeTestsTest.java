package org.moe4j.cuda.cpudevice;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Runs the CPU device's standalone C++ test programs (native/cpudevice/test), so that they run in
 * CI: the PTX emulation tests and the NCCL subset test. Each script builds its program with g++ and
 * exits with the test's status. Needs g++ and bash, not the CPU device library.
 */
@Tag("cpudevice")
class CpuDeviceNativeTestsTest {
    private static final long TIMEOUT_S = 600;

    static Path repoRoot() {
        return Path.of(System.getProperty("moe4j.repo.root", "..")).toAbsolutePath().normalize();
    }

    @ParameterizedTest
    @ValueSource(strings = {"run-ptx-emu-test.sh", "run-nccl-test.sh"})
    void nativeTestProgramPasses(String script) throws IOException, InterruptedException {
        Path path = repoRoot().resolve("native/cpudevice/test").resolve(script);
        assumeTrue(Files.isRegularFile(path), "no " + path + " (set -Dmoe4j.repo.root to the repository root)");
        assumeTrue(onPath(System.getenv().getOrDefault("CXX", "g++")), "no C++ compiler (g++, or $CXX) on the PATH to build "
                + script + "'s program");
        Process p = new ProcessBuilder("bash", path.toString()).redirectErrorStream(true).start();
        p.getOutputStream().close();
        // drain the output while the program runs
        StringBuilder out = new StringBuilder();
        Thread reader = Thread.ofPlatform().daemon().start(() -> {
            try {
                out.append(new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8));
            } catch (IOException e) {
                out.append("(reading the output failed: ").append(e).append(')');
            }
        });
        boolean done = p.waitFor(TIMEOUT_S, TimeUnit.SECONDS);
        if (!done) {
            p.destroyForcibly();
        }
        reader.join(10_000);
        System.out.println("---- " + script + " ----");
        System.out.println(out);
        assertTrue(done, script + " did not finish within " + TIMEOUT_S + " s:\n" + out);
        assertEquals(0, p.exitValue(), script + " failed (exit " + p.exitValue() + "):\n" + out);
    }

    private static boolean onPath(String cmd) {
        if (cmd.contains("/")) {
            return Files.isExecutable(Path.of(cmd));
        }
        for (String dir : System.getenv().getOrDefault("PATH", "").split(java.io.File.pathSeparator)) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, cmd))) {
                return true;
            }
        }
        return false;
    }
}
