package org.moe4j.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The README's "Use it in your project" section, done as a new user would: the moe4j artifacts are
 * installed into a fresh, empty local repository (exactly the files {@code mvn install} puts there:
 * each module's POM and jar with its -sources and -javadoc jars, the parent POM and the BOM), then the
 * README's {@code pom.xml} and program, copied verbatim out of README.md, are built and run with the
 * README's commands: once on the class path, once on the module path with the README's
 * {@code module-info.java}. Third-party artifacts and plugins come from the build's own local
 * repository, used as the only remote repository (no network).
 */
class ConsumerProjectTest {
    private static final Pattern LOSS = Pattern.compile("moe4j quickstart: (\\d+) steps, loss ([0-9.]+) -> ([0-9.]+)");
    private static final long TIMEOUT_MINUTES = 5;

    private static Path work;
    private static Path repo;
    private static Path settings;
    private static String readme;

    @BeforeAll
    static void installIntoAFreshRepository() throws IOException {
        assumeFalse(Boolean.getBoolean("moe4j.skipConsumerTest"), "-Dmoe4j.skipConsumerTest=true");
        String v = Build.version();
        Path root = Build.root();
        readme = Files.readString(root.resolve("README.md"), StandardCharsets.UTF_8);
        work = root.resolve("moe-it").resolve("target").resolve("consumer");
        delete(work);
        repo = Files.createDirectories(work.resolve("repository"));
        install(root.resolve("pom.xml"), "moe4j-parent", v, "pom");
        install(root.resolve("moe4j-bom").resolve("pom.xml"), "moe4j-bom", v, "pom");
        for (String m : Build.LIBRARIES) {
            Path target = root.resolve(m).resolve("target");
            install(root.resolve(m).resolve("pom.xml"), m, v, "pom");
            install(Build.jar(m), m, v, "jar");
            for (String classifier : List.of("sources", "javadoc")) {
                Path extra = target.resolve(m + "-" + v + "-" + classifier + ".jar");
                if (Files.isRegularFile(extra)) {
                    install(extra, m, v, classifier + ".jar");
                }
            }
        }
        String outer = System.getProperty("moe4j.outerRepository",
                Path.of(System.getProperty("user.home"), ".m2", "repository").toString());
        String url = Path.of(outer).toUri().toString();
        String repoXml = "<releases><enabled>true</enabled></releases><snapshots><enabled>false</enabled></snapshots>";
        settings = Files.writeString(work.resolve("settings.xml"), """
                <settings>
                  <profiles><profile><id>offline-cache</id>
                    <repositories><repository><id>central</id><url>%1$s</url>%2$s</repository></repositories>
                    <pluginRepositories><pluginRepository><id>central</id><url>%1$s</url>%2$s</pluginRepository></pluginRepositories>
                  </profile></profiles>
                  <activeProfiles><activeProfile>offline-cache</activeProfile></activeProfiles>
                </settings>
                """.formatted(url, repoXml));
    }

    private static void install(Path file, String artifact, String version, String suffix) throws IOException {
        Path dir = Files.createDirectories(repo.resolve("org/moe4j").resolve(artifact).resolve(version));
        String name = artifact + "-" + version + (suffix.equals("pom") ? ".pom" : suffix.equals("jar") ? ".jar" : "-" + suffix);
        Files.copy(file, dir.resolve(name), StandardCopyOption.REPLACE_EXISTING);
    }

    private static void delete(Path dir) throws IOException {
        if (Files.exists(dir)) {
            try (Stream<Path> s = Files.walk(dir)) {
                for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                    Files.delete(p);
                }
            }
        }
    }

    /** The fenced block of the given language that follows the marker comment in README.md. */
    static String snippet(String text, String marker, String language) {
        int at = text.indexOf("<!-- " + marker);
        assertTrue(at >= 0, "README.md lost its <!-- " + marker + " --> marker");
        int open = text.indexOf("```" + language + "\n", at);
        assertTrue(open >= 0, "no ```" + language + " block after <!-- " + marker + " -->");
        int start = open + language.length() + 4;
        int end = text.indexOf("\n```", start);
        return text.substring(start, end + 1);
    }

    private static Path project(String name, boolean modular) throws IOException {
        Path dir = Files.createDirectories(work.resolve(name));
        Files.writeString(dir.resolve("pom.xml"), snippet(readme, "consumer-pom", "xml"));
        Path src = Files.createDirectories(dir.resolve("src/main/java/example"));
        Files.writeString(src.resolve("Quickstart.java"), snippet(readme, "consumer-main", "java"));
        if (modular) {
            Files.writeString(dir.resolve("src/main/java/module-info.java"), snippet(readme, "consumer-module-info", "java"));
        }
        return dir;
    }

    private static String mvn(Path dir, String... args) throws IOException, InterruptedException {
        String home = System.getProperty("moe4j.mavenHome");
        assumeTrue(home != null && Files.isExecutable(Path.of(home, "bin", "mvn")), "no Maven home (moe4j.mavenHome)");
        List<String> cmd = new ArrayList<>(List.of(Path.of(home, "bin", "mvn").toString(), "-B", "-q", "-s",
                settings.toString(), "-Dmaven.repo.local=" + repo));
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true);
        String javaHome = System.getProperty("java.home"); // the JDK 25 the tests run on
        pb.environment().put("JAVA_HOME", javaHome);
        pb.environment().put("PATH", Path.of(javaHome, "bin") + java.io.File.pathSeparator + System.getenv("PATH"));
        pb.environment().put("MAVEN_OPTS", "--sun-misc-unsafe-memory-access=allow");
        Path log = dir.resolve("mvn.log");
        pb.redirectOutput(log.toFile());
        Process p = pb.start();
        if (!p.waitFor(TIMEOUT_MINUTES, TimeUnit.MINUTES)) {
            p.destroyForcibly().waitFor();
            throw new AssertionError("mvn " + String.join(" ", args) + " did not finish in " + TIMEOUT_MINUTES
                    + " minutes; log: " + Files.readString(log));
        }
        String out = Files.readString(log);
        assertEquals(0, p.exitValue(), () -> "mvn " + String.join(" ", args) + " in " + dir + " failed:\n" + out);
        return out;
    }

    private static void assertTrained(String out) {
        Matcher m = LOSS.matcher(out);
        assertTrue(m.find(), "the quickstart did not report its loss:\n" + out);
        assertEquals(20, Integer.parseInt(m.group(1)));
        double first = Double.parseDouble(m.group(2));
        double last = Double.parseDouble(m.group(3));
        assertTrue(last < first, "the loss did not go down: " + first + " -> " + last);
    }

    @Test
    void readmeDocumentsTheCurrentVersionAndTheInstallCommand() {
        assertTrue(snippet(readme, "consumer-pom", "xml").contains("<version>" + Build.version() + "</version>"),
                "README's pom.xml must use version " + Build.version());
        assertTrue(readme.contains("```sh\nmvn install -DskipTests -Dmoe4j.skipCpuDevice=true\n```"),
                "README's install command");
    }

    @Test
    void readmeProjectTrainsOnTheClassPath() throws Exception {
        Path dir = project("classpath", false);
        assertTrained(mvn(dir, "compile", "exec:exec"));
    }

    @Test
    void readmeProjectTrainsOnTheModulePath() throws Exception {
        Path dir = project("modulepath", true);
        String cmd = readme.substring(readme.indexOf("mvn -q compile exec:exec -Dexec.args=\""));
        String execArgs = cmd.substring(cmd.indexOf('"') + 1, cmd.indexOf('"', cmd.indexOf('"') + 1));
        assertTrue(execArgs.contains("-p %classpath"), execArgs);
        String out = mvn(dir, "compile", "exec:exec", "-Dexec.args=" + execArgs);
        assertTrained(out);
    }
}
