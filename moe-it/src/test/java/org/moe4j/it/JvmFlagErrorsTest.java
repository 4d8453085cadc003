package org.moe4j.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** A JVM started without a flag moe4j needs fails on first use with a message naming that flag. */
class JvmFlagErrorsTest {

    private record Run(int exit, String output) {
    }

    private static Run java(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path")));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(2, TimeUnit.MINUTES), "probe JVM did not finish");
        return new Run(p.exitValue(), new String(out, StandardCharsets.UTF_8));
    }

    @Test
    void withoutTheVectorModuleTheFirstLayerUseNamesTheFlag() throws Exception {
        Run r = java("--enable-native-access=ALL-UNNAMED", "-Dmoe4j.backend=cpu", FlagProbe.class.getName(), "layer");
        assertNotEquals(0, r.exit(), r.output());
        assertTrue(r.output().contains("add the JVM flag --add-modules jdk.incubator.vector"), r.output());
        assertFalse(r.output().contains("NoClassDefFoundError"), r.output());
    }

    @Test
    void withTheVectorModuleTheSameProgramRuns() throws Exception {
        Run r = java("--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "-Dmoe4j.backend=cpu", FlagProbe.class.getName(), "layer");
        assertEquals(0, r.exit(), r.output());
        assertTrue(r.output().contains("forward ran"), r.output());
    }

    @Test
    void withoutNativeAccessTheCudaBackendNamesTheFlag() throws Exception {
        Run r = java("--add-modules", "jdk.incubator.vector", "-Dmoe4j.backend=cuda", FlagProbe.class.getName(),
                "backend");
        assertNotEquals(0, r.exit(), r.output());
        assertTrue(r.output().contains("--enable-native-access=ALL-UNNAMED"), r.output());
        assertFalse(r.output().contains("restricted method"), "refused before any restricted call: " + r.output());
    }
}
