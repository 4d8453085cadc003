package org.moe4j.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** moe.jar's main class runs on any JVM and tells an old one which Java version moe4j needs. */
class LauncherTest {

    @Test
    void readsTheFeatureReleaseOfOldAndNewVersionStrings() {
        assertEquals(8, Launcher.feature("1.8"));
        assertEquals(17, Launcher.feature("17"));
        assertEquals(25, Launcher.feature("25"));
        assertEquals(26, Launcher.feature("26.0.1"));
        assertEquals(0, Launcher.feature("garbage"));
    }

    @Test
    void isCompiledForJava8() throws IOException {
        byte[] head = new byte[8];
        try (var in = Launcher.class.getResourceAsStream("Launcher.class")) {
            assertEquals(8, in.readNBytes(head, 0, 8));
        }
        assertEquals(52, ((head[6] & 0xff) << 8) | (head[7] & 0xff), "class file major version 52 = Java 8");
    }

    /** A JDK older than 25 installed next to the one running the tests, if any. */
    private static Optional<Path> olderJava() throws IOException {
        Path jvms = Path.of("/usr/lib/jvm");
        if (!Files.isDirectory(jvms)) {
            return Optional.empty();
        }
        try (Stream<Path> dirs = Files.list(jvms)) {
            return dirs.filter(d -> Files.isExecutable(d.resolve("bin/java")) && Files.isRegularFile(d.resolve("release")))
                    .filter(d -> {
                        try {
                            String r = Files.readString(d.resolve("release"));
                            int i = r.indexOf("JAVA_VERSION=\"");
                            return i >= 0 && Launcher.feature(r.substring(i + 14, r.indexOf('"', i + 14))) < Launcher.MIN_JAVA;
                        } catch (IOException e) {
                            return false;
                        }
                    })
                    .map(d -> d.resolve("bin/java")).findFirst();
        }
    }

    @Test
    void anOlderJavaIsToldTheVersionItNeeds() throws Exception {
        Optional<Path> java = olderJava();
        assumeTrue(java.isPresent(), "no JDK older than " + Launcher.MIN_JAVA + " under /usr/lib/jvm");
        Path classes = Path.of(Launcher.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        Process p = new ProcessBuilder(java.get().toString(), "-cp", classes.toString(), Launcher.class.getName(), "info")
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(1, TimeUnit.MINUTES));
        assertEquals(2, p.exitValue(), out);
        assertTrue(out.startsWith("moe: needs Java " + Launcher.MIN_JAVA + " or newer; this is Java "), out);
        assertTrue(!out.contains("UnsupportedClassVersionError"), out);
    }
}
