package org.moe4j.it;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

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

    static Path classes(String module) {
        Path c = root().resolve(module).resolve("target").resolve("classes");
        assumeTrue(Files.isDirectory(c), "no " + c + ": build the libraries first");
        return c;
    }
}
