package org.moe4j.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The README's "Use it in your project" section, done as a new user would: the README's install command,
 * taken out of README.md, runs in a copy of the source tree (what a fresh clone holds: no {@code target}
 * directories) and installs moe4j into a fresh, empty local repository; then the README's
 * {@code pom.xml} and program, copied verbatim out of README.md, are built and run with the README's
 * commands: once on the class path, once on the module path with the README's {@code module-info.java}.
 * Third-party artifacts and plugins come from the outer build's own local repository, the mirror of every
 * remote repository (a {@code file:} URL, so no network is used).
 */
class ConsumerProjectTest {
    private static final Pattern LOSS = Pattern.compile("moe4j quickstart: (\\d+) steps, loss ([0-9.]+) -> ([0-9.]+)");
    private static final long TIMEOUT_MINUTES = 5;
    /** The inner install builds every module from source (with Javadoc and sources jars). */
    private static final long INSTALL_TIMEOUT_MINUTES = 20;
    /** What a clone does not hold (.gitignore): build outputs anywhere, and these directories at the root. */
    private static final Set<String> IGNORED_ANYWHERE = Set.of("target", ".git", "__pycache__");
    private static final Set<String> IGNORED_AT_ROOT = Set.of("build", "gpu-bundle", "runs", ".idea");

    private static Path work;
    private static Path repo;
    private static Path settings;
    private static String readme;

    @BeforeAll
    static void installWithTheReadmeCommand() throws IOException, InterruptedException {
        assumeFalse(Boolean.getBoolean("moe4j.skipConsumerTest"), "-Dmoe4j.skipConsumerTest=true");
        String v = Build.version();
        Path root = Build.root();
        readme = Files.readString(root.resolve("README.md"), StandardCharsets.UTF_8);
        work = root.resolve("moe-it").resolve("target").resolve("consumer");
        delete(work);
        repo = Files.createDirectories(work.resolve("repository"));
        String outer = System.getProperty("moe4j.outerRepository",
                Path.of(System.getProperty("user.home"), ".m2", "repository").toString());
        settings = Files.writeString(work.resolve("settings.xml"), """
                <settings>
                  <mirrors><mirror><id>outer-local-repository</id><mirrorOf>*</mirrorOf><url>%s</url></mirror></mirrors>
                </settings>
                """.formatted(Path.of(outer).toUri()));
        Path clone = copySourceTree(root, work.resolve("source"));
        List<String> install = new ArrayList<>(installCommand(readme));
        install.add("-Dmoe4j.skipConsumerTest=true"); // should the README's command ever run tests: no recursion
        mvn(clone, INSTALL_TIMEOUT_MINUTES, install);
        for (String m : Build.LIBRARIES) {
            for (String file : List.of(".pom", ".jar", "-sources.jar", "-javadoc.jar")) {
                assertInstalled(m, v, m + "-" + v + file);
            }
        }
        assertInstalled("moe4j-bom", v, "moe4j-bom-" + v + ".pom");
        assertInstalled("moe4j-parent", v, "moe4j-parent-" + v + ".pom");
    }

    /**
     * The arguments of the README's install command (the {@code sh} block after the
     * {@code consumer-install} marker), checked to be one plain {@code mvn ... install ...} command.
     */
    static List<String> installCommand(String text) {
        String command = snippet(text, "consumer-install", "sh").strip();
        assertTrue(command.matches("mvn( [-\\w.=:/]+)+"), "README's install command is no longer one plain"
                + " `mvn <goals and -D options>` command this test can run: " + command);
        List<String> words = List.of(command.split(" "));
        assertTrue(words.contains("install"), "README's install command does not run `install`: " + command);
        return words.subList(1, words.size());
    }

    private static void assertInstalled(String artifact, String version, String file) {
        Path p = repo.resolve("org/moe4j").resolve(artifact).resolve(version).resolve(file);
        assertTrue(Files.isRegularFile(p), "the README's install command did not install " + p);
    }

    /** Copies what a clone of the repository holds (no build outputs), keeping file modes. */
    private static Path copySourceTree(Path root, Path to) throws IOException {
        Files.walkFileTree(root, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult preVisitDirectory(Path dir, BasicFileAttributes attrs) throws IOException {
                String name = dir.getFileName() == null ? "" : dir.getFileName().toString();
                if (!dir.equals(root) && (IGNORED_ANYWHERE.contains(name)
                        || dir.getParent().equals(root) && IGNORED_AT_ROOT.contains(name))) {
                    return FileVisitResult.SKIP_SUBTREE;
                }
                Files.createDirectories(to.resolve(root.relativize(dir).toString()));
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                String name = file.getFileName().toString();
                if (!name.endsWith(".class") && !name.endsWith(".iml")) {
                    Files.copy(file, to.resolve(root.relativize(file).toString()), StandardCopyOption.COPY_ATTRIBUTES);
                }
                return FileVisitResult.CONTINUE;
            }
        });
        return to;
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

    /** A finished process: its exit status and its output (stdout and stderr together). */
    private record Result(int exit, String out) {
    }

    private static Path thisJdk() {
        return Path.of(System.getProperty("java.home")); // the JDK 25 the tests run on
    }

    private static String mvn(Path dir, String... args) throws IOException, InterruptedException {
        return mvn(dir, TIMEOUT_MINUTES, List.of(args));
    }

    private static String mvn(Path dir, long timeoutMinutes, List<String> args) throws IOException, InterruptedException {
        Result r = mvnOn(dir, timeoutMinutes, thisJdk(), thisJdk(), args);
        assertEquals(0, r.exit(), () -> "mvn " + String.join(" ", args) + " in " + dir + " failed:\n" + r.out());
        return r.out();
    }

    /**
     * Runs Maven with the README's settings on {@code mavenJdk} ({@code JAVA_HOME}), with {@code pathJdk}'s
     * {@code bin} first on the {@code PATH} (what a plain {@code java} or {@code javac} means).
     */
    private static Result mvnOn(Path dir, long timeoutMinutes, Path mavenJdk, Path pathJdk, List<String> args)
            throws IOException, InterruptedException {
        String home = System.getProperty("moe4j.mavenHome");
        assumeTrue(home != null && Files.isExecutable(Path.of(home, "bin", "mvn")), "no Maven home (moe4j.mavenHome)");
        List<String> cmd = new ArrayList<>(List.of(Path.of(home, "bin", "mvn").toString(), "-B", "-q", "-s",
                settings.toString(), "-Dmaven.repo.local=" + repo));
        cmd.addAll(args);
        Map<String, String> env = Map.of("JAVA_HOME", mavenJdk.toString(),
                "PATH", pathJdk.resolve("bin") + File.pathSeparator + System.getenv("PATH"),
                "MAVEN_OPTS", mavenJdk.equals(thisJdk()) ? "--sun-misc-unsafe-memory-access=allow" : "");
        return exec(dir, timeoutMinutes, cmd, env);
    }

    private static Result exec(Path dir, long timeoutMinutes, List<String> cmd, Map<String, String> env)
            throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true);
        pb.environment().putAll(env);
        Path log = Files.createTempFile(dir, "process", ".log");
        pb.redirectOutput(log.toFile());
        Process p = pb.start();
        if (!p.waitFor(timeoutMinutes, TimeUnit.MINUTES)) {
            p.destroyForcibly().waitFor();
            throw new AssertionError(String.join(" ", cmd) + " did not finish in " + timeoutMinutes
                    + " minutes; log: " + Files.readString(log));
        }
        return new Result(p.exitValue(), Files.readString(log));
    }

    private static Path oldJdk() {
        Optional<Path> old = Build.oldJdk();
        assumeTrue(old.isPresent(), "no JDK older than 25 found (set -Dmoe4j.oldJdk=<its home>)");
        return old.get();
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
    void readmeDocumentsTheCurrentVersion() {
        assertTrue(snippet(readme, "consumer-pom", "xml").contains("<version>" + Build.version() + "</version>"),
                "README's pom.xml must use version " + Build.version());
    }

    /**
     * Maven runs on JDK 25 while the {@code java} on the {@code PATH} may be older (the machine's default):
     * the README's pom runs the program on the JDK Maven runs on, so it trains either way.
     */
    @Test
    void readmeProjectTrainsOnTheClassPath() throws Exception {
        Path dir = project("classpath", false);
        Result r = mvnOn(dir, TIMEOUT_MINUTES, thisJdk(), Build.oldJdk().orElse(thisJdk()), List.of("compile", "exec:exec"));
        assertEquals(0, r.exit(), () -> "mvn compile exec:exec in " + dir + " failed:\n" + r.out());
        assertTrained(r.out());
    }

    /** Maven on an older JDK: the README's pom stops before compiling, naming Java 25 and the JVM flags. */
    @Test
    void readmeProjectOnAnOldJdkSaysItNeedsJava25() throws Exception {
        Path old = oldJdk();
        Path dir = project("oldjdk", false);
        Result r = mvnOn(dir, TIMEOUT_MINUTES, old, old, List.of("compile", "exec:exec"));
        assertTrue(r.exit() != 0, "Maven on " + old + " built the README project:\n" + r.out());
        assertTrue(r.out().contains("moe4j needs Java 25"), "no `moe4j needs Java 25` in:\n" + r.out());
        assertTrue(r.out().contains("--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED"),
                "the message does not name the JVM flags:\n" + r.out());
        assertFalse(Files.exists(dir.resolve("target/classes/example/Quickstart.class")), "compiled anyway");
    }

    /**
     * Without Maven an older javac or java reports the class file version itself, and README.md says
     * which messages those are and that they mean Java 25: check that they are the messages a JDK 17
     * really prints for moe4j's jars.
     */
    @Test
    void oldJavacAndJavaPrintTheMessagesTheReadmeExplains() throws Exception {
        Path old = oldJdk();
        Path dir = project("oldjdk-plain", false);
        String jars = Build.LIBRARIES.stream().map(m -> repo.resolve("org/moe4j").resolve(m).resolve(Build.version())
                .resolve(m + "-" + Build.version() + ".jar").toString()).collect(Collectors.joining(File.pathSeparator));
        String source = dir.resolve("src/main/java/example/Quickstart.java").toString();
        Result javac = exec(dir, TIMEOUT_MINUTES, List.of(old.resolve("bin/javac").toString(), "-cp", jars, "-d",
                dir.resolve("old-classes").toString(), source), Map.of());
        assertTrue(javac.exit() != 0, "javac of " + old + " compiled against moe4j:\n" + javac.out());
        String javacSays = "class file has wrong version 69.0";
        assertTrue(javac.out().contains(javacSays), javac.out());

        Path classes = dir.resolve("release17-classes");
        Result compiled = exec(dir, TIMEOUT_MINUTES, List.of(thisJdk().resolve("bin/javac").toString(), "--release", "17",
                "-cp", jars, "-d", classes.toString(), source), Map.of());
        assertEquals(0, compiled.exit(), compiled.out());
        Result java = exec(dir, TIMEOUT_MINUTES, List.of(old.resolve("bin/java").toString(), "-cp",
                jars + File.pathSeparator + classes, "example.Quickstart", "1"), Map.of());
        assertTrue(java.exit() != 0, "java of " + old + " ran moe4j:\n" + java.out());
        String javaSays = "class file version 69.0";
        assertTrue(java.out().contains("UnsupportedClassVersionError: org/moe4j/") && java.out().contains(javaSays),
                java.out());

        int at = readme.indexOf("**Older JDKs.**");
        assertTrue(at >= 0, "README.md lost its **Older JDKs.** paragraph");
        String explained = readme.substring(at);
        assertTrue(explained.contains(javacSays) && explained.contains(javaSays) && explained.contains("Java 25"),
                "README's paragraph on older JDKs must quote `" + javacSays + "` and `" + javaSays
                + "` and say they mean Java 25");
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
