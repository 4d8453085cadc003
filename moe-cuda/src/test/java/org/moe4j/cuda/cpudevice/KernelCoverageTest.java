package org.moe4j.cuda.cpudevice;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

/**
 * Every kernel of native/*.cu ran on the CPU device during this build's GPU tests. The CPU device
 * appends each kernel it launches to {@code MOE4J_CPUDEV_LAUNCH_LOG}; this class runs in its own
 * surefire execution after every GPU-test execution and compares that log with the kernels the
 * sources declare (the same declaration pattern as native/cpudevice/gen-registry.pl).
 */
@Tag("cpudevice-coverage")
class KernelCoverageTest {
    private static final Pattern KERNEL = Pattern.compile(
            "(?:extern\\s+\"C\"\\s+__global__|MOE4J_KERNEL)\\s+void\\s+(?:__launch_bounds__\\s*\\(\\s*\\d+[^)]*\\)\\s*)?(\\w+)\\s*\\(");

    static Set<String> declaredKernels(Path nativeDir) throws IOException {
        Set<String> names = new TreeSet<>();
        try (Stream<Path> files = Files.list(nativeDir)) {
            for (Path cu : files.filter(p -> p.toString().endsWith(".cu")).toList()) {
                String src = Files.readString(cu).replaceAll("(?s)/\\*.*?\\*/", "").replaceAll("//[^\\n]*", "");
                Matcher m = KERNEL.matcher(src);
                while (m.find()) {
                    names.add(m.group(1));
                }
            }
        }
        return names;
    }

    @Test
    void everyKernelOfNativeRanOnTheCpuDevice() throws IOException {
        String log = System.getProperty("moe4j.cpudevice.launchLog");
        assumeTrue(log != null, "moe4j.cpudevice.launchLog is not set: not run by the CPU-device coverage execution");
        assumeTrue(org.moe4j.cuda.CudaModule.isBuilt("smoke"),
                "the kernels were not built (no nvcc when this build ran): the GPU tests skipped, nothing launched");
        Set<String> declared = declaredKernels(Path.of(System.getProperty("moe4j.repo.root", "..")).toAbsolutePath().normalize().resolve("native"));
        assertTrue(declared.size() >= 30, "kernel declarations found in native/*.cu: " + declared);
        Path p = Path.of(log);
        assertTrue(Files.isRegularFile(p), "no launch log at " + p + ": did the GPU tests run on the CPU device?");
        Set<String> launched = new TreeSet<>(Files.readAllLines(p));
        Set<String> missing = new TreeSet<>(declared);
        missing.removeAll(launched);
        System.out.println(declared.size() + " kernels declared, " + (declared.size() - missing.size()) + " launched");
        assertTrue(missing.isEmpty(), "kernels no GPU test launched on the CPU device: " + missing);
    }
}
