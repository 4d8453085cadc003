package org.moe4j.it;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.io.IOException;
import java.util.List;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/** Where the reactor's outputs are, as the moe-it pom passes them in. */
final class Build {
    /** The library modules a user depends on, bottom-up. */
    static final List<String> LIBRARIES = List.of("moe-core", "moe-routing", "moe-dispatch", "moe-cuda");

    private Build() {
    }

    static Path root() {
        return Path.of(System.getProperty("moe4j.root", "..")).toAbsolutePath().normalize();
    }

    static String version() {
        String v = System.getProperty("moe4j.version");
        assumeTrue(v != null && !v.isEmpty(), "moe4j.version is not set: run through Maven (mvn verify)");
        return v;
    }

    /**
     * @param module a library module directory name
     * @return its packaged jar, assumed present (the reactor packages it before this module's tests)
     */
    static Path jar(String module) {
        Path jar = root().resolve(module).resolve("target").resolve(module + "-" + version() + ".jar");
        assumeTrue(Files.isRegularFile(jar), "no " + jar + ": run `mvn verify` (package the libraries first)");
        return jar;
    }

    private static final Pattern JAVA_VERSION = Pattern.compile("(?m)^JAVA_VERSION=\"(\\d+)");

    /**
     * A JDK older than the one moe4j compiles for: {@code -Dmoe4j.oldJdk} when set, else the first JDK
     * under {@code /usr/lib/jvm} whose {@code release} file names a Java version below 25.
     *
     * @return its home, or empty when none is found
     */
    static Optional<Path> oldJdk() {
        String set = System.getProperty("moe4j.oldJdk", "");
        if (!set.isBlank()) {
            return Optional.of(Path.of(set));
        }
        Path jvms = Path.of("/usr/lib/jvm");
        if (!Files.isDirectory(jvms)) {
            return Optional.empty();
        }
        try (Stream<Path> homes = Files.list(jvms)) {
            return homes.sorted().filter(h -> Files.isExecutable(h.resolve("bin/javac"))).filter(h -> {
                try {
                    Matcher m = JAVA_VERSION.matcher(Files.readString(h.resolve("release")));
                    return m.find() && Integer.parseInt(m.group(1)) < 25;
                } catch (IOException e) {
                    return false;
                }
            }).findFirst();
        } catch (IOException e) {
            return Optional.empty();
        }
    }

    static Path classes(String module) {
        Path c = root().resolve(module).resolve("target").resolve("classes");
        assumeTrue(Files.isDirectory(c), "no " + c + ": build the libraries first");
        return c;
    }
}
