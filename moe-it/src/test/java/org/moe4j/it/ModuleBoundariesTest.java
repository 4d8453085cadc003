package org.moe4j.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.lang.module.ModuleDescriptor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.jar.JarFile;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Every library jar is a named module that exports each of its public packages and no internal one,
 * not even by qualified export to another moe4j module (what another module needs gets a public or
 * SPI home, such as {@code org.moe4j.dispatch.spi}). When a new package is added, this test fails until
 * module-info.java exports it (or the package is named {@code ...internal...}).
 */
class ModuleBoundariesTest {
    private static final Map<String, String> NAMES = Map.of("moe-core", "org.moe4j.core", "moe-routing",
            "org.moe4j.routing", "moe-dispatch", "org.moe4j.dispatch", "moe-cuda", "org.moe4j.cuda");

    private static ModuleDescriptor descriptor(Path classes) throws IOException {
        Path mi = classes.resolve("module-info.class");
        assertTrue(Files.isRegularFile(mi), "no module-info.class in " + classes);
        try (InputStream in = Files.newInputStream(mi)) {
            return ModuleDescriptor.read(in);
        }
    }

    private static Set<String> packagesWithClasses(Path classes) throws IOException {
        try (Stream<Path> files = Files.walk(classes)) {
            return files.filter(f -> f.toString().endsWith(".class") && !f.getFileName().toString().equals("module-info.class"))
                    .map(f -> classes.relativize(f.getParent()).toString().replace('/', '.'))
                    .collect(Collectors.toCollection(TreeSet::new));
        }
    }

    @Test
    void everyPublicPackageIsExportedAndNoInternalOneIsExportedAtAll() throws IOException {
        for (String module : Build.LIBRARIES) {
            Path classes = Build.classes(module);
            ModuleDescriptor d = descriptor(classes);
            assertEquals(NAMES.get(module), d.name(), module);
            Map<String, ModuleDescriptor.Exports> exports = d.exports().stream()
                    .collect(Collectors.toMap(ModuleDescriptor.Exports::source, e -> e));
            for (String pkg : packagesWithClasses(classes)) {
                ModuleDescriptor.Exports e = exports.get(pkg);
                if (pkg.contains(".internal")) {
                    assertTrue(e == null, module + ": internal package " + pkg + " is exported ("
                            + e + "); give what another module needs a public or SPI home instead"
                            + " (see docs/architecture.md, Module boundaries)");
                } else {
                    assertTrue(e != null && !e.isQualified(), module + ": public package " + pkg + " is not exported;"
                            + " add `exports " + pkg + ";` to " + module + "/src/main/java/module-info.java");
                }
            }
        }
    }

    @Test
    void everyExportedPackageSaysWhatLivesThere() throws IOException {
        for (String module : Build.LIBRARIES) {
            for (ModuleDescriptor.Exports e : descriptor(Build.classes(module)).exports()) {
                if (e.isQualified()) {
                    continue;
                }
                Path info = Build.root().resolve(module).resolve("src/main/java")
                        .resolve(e.source().replace('.', '/')).resolve("package-info.java");
                assertTrue(Files.isRegularFile(info), module + ": exported package " + e.source()
                        + " has no package-info.java saying what lives there");
            }
        }
    }

    /**
     * On the module path ServiceLoader ignores META-INF/services: every registration there must also be a
     * {@code provides} of module-info (and the other way round), or the module path silently loses it.
     */
    @Test
    void everyServiceRegistrationIsAlsoProvidedByTheModule() throws IOException {
        for (String module : Build.LIBRARIES) {
            Path classes = Build.classes(module);
            Map<String, Set<String>> provided = descriptor(classes).provides().stream().collect(Collectors.toMap(
                    ModuleDescriptor.Provides::service, p -> new TreeSet<>(p.providers())));
            Map<String, Set<String>> registered = new java.util.TreeMap<>();
            Path services = classes.resolve("META-INF/services");
            if (Files.isDirectory(services)) {
                try (Stream<Path> files = Files.list(services)) {
                    for (Path f : files.toList()) {
                        Set<String> impls = Files.readAllLines(f).stream().map(l -> l.replaceAll("#.*", "").strip())
                                .filter(l -> !l.isEmpty()).map(l -> l.replace('$', '.'))
                                .collect(Collectors.toCollection(TreeSet::new));
                        registered.put(f.getFileName().toString(), impls);
                    }
                }
            }
            Map<String, Set<String>> providedDotted = new java.util.TreeMap<>();
            provided.forEach((k, v) -> providedDotted.put(k, v.stream().map(n -> n.replace('$', '.'))
                    .collect(Collectors.toCollection(TreeSet::new))));
            assertEquals(registered, providedDotted, module + ": META-INF/services and the provides of module-info.java"
                    + " must list the same implementations");
        }
    }

    @Test
    void qualifiedExportsGoOnlyToMoe4jModules() throws IOException {
        for (String module : Build.LIBRARIES) {
            for (ModuleDescriptor.Exports e : descriptor(Build.classes(module)).exports()) {
                for (String target : e.targets()) {
                    assertTrue(NAMES.containsValue(target), module + " exports " + e.source() + " to " + target);
                }
            }
        }
    }

    @Test
    void packagedJarsAreTheSameModules() throws IOException {
        for (String module : Build.LIBRARIES) {
            try (JarFile jar = new JarFile(Build.jar(module).toFile())) {
                assertFalse(jar.getEntry("module-info.class") == null, module + " jar has no module-info.class");
                try (InputStream in = jar.getInputStream(jar.getEntry("module-info.class"))) {
                    assertEquals(NAMES.get(module), ModuleDescriptor.read(in).name());
                }
            }
        }
    }
}
