package org.moe4j.bench.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The {@code moe} tool answers bad input in one line with exit 2, failures with exit 1, and prints plain output when redirected. */
class MoeCliTest {

    record Result(int exit, String out, String err) {
        List<String> errLines() {
            return err.isEmpty() ? List.of() : List.of(err.split("\n"));
        }
    }

    static Result moe(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int exit = MoeCli.execute(args, new PrintWriter(out, true), new PrintWriter(err, true));
        return new Result(exit, out.toString(), err.toString());
    }

    private static void assertOneLineUsageError(Result r, String mustMention) {
        assertEquals(MoeCli.USAGE_ERROR, r.exit(), r::toString);
        assertEquals(1, r.errLines().size(), () -> "one line expected: " + r.err());
        assertTrue(r.err().startsWith("moe train: "), r::err);
        assertTrue(r.err().contains(mustMention), r::err);
        assertFalse(r.err().contains("\tat "), "no stack trace: " + r.err());
        assertEquals("", r.out(), "nothing on stdout for a usage error");
    }

    @Test
    void valuesOutOfRangeAreOneLineUsageErrors(@TempDir Path dir) {
        String out = dir.resolve("run").toString();
        assertOneLineUsageError(moe("train", "--steps", "0", "--out", out), "--steps 0");
        assertOneLineUsageError(moe("train", "--tokens", "0", "--out", out), "--tokens 0");
        assertOneLineUsageError(moe("train", "--ranks", "0", "--out", out), "--ranks 0");
        assertOneLineUsageError(moe("train", "--lr", "-1", "--out", out), "--lr -1");
        assertOneLineUsageError(moe("train", "--lr", "NaN", "--out", out), "--lr NaN");
        assertOneLineUsageError(moe("train", "--bias-coeff", "-0.5", "--out", out), "--bias-coeff -0.5");
        assertOneLineUsageError(moe("train", "--teacher-skew", "Infinity", "--out", out), "--teacher-skew Infinity");
        assertOneLineUsageError(moe("train", "--experts", "1", "--out", out), "--experts 1");
        assertFalse(Files.exists(dir.resolve("run")), "a refused run writes nothing");
    }

    @Test
    void unknownPresetListsTheKnownOnes() {
        Result r = moe("train", "--preset", "nope");
        assertOneLineUsageError(r, "--preset nope");
        assertTrue(r.err().contains("deepseek-v3-tiny"), r::err);
    }

    @Test
    void ranksThatCannotSplitTheExpertsAreAUsageError() {
        assertOneLineUsageError(moe("train", "--preset", "mixtral-tiny", "--ranks", "3"), "--ranks 3");
    }

    @Test
    void missingConfigFileIsAUsageError(@TempDir Path dir) throws Exception {
        assertOneLineUsageError(moe("train", "--config", dir.resolve("absent.json").toString()), "no such file");
        assertOneLineUsageError(moe("train", "--moe-config", dir.toString()), "not a regular file");
        Path bad = Files.writeString(dir.resolve("bad.json"), "{\"model_type\": \"llama\"}");
        assertOneLineUsageError(moe("train", "--config", bad.toString()), "llama");
    }

    @Test
    void modelSourcesExcludeEachOther(@TempDir Path dir) throws Exception {
        Path f = Files.writeString(dir.resolve("c.json"), "{}");
        assertOneLineUsageError(moe("train", "--config", f.toString(), "--preset", "mixtral-tiny"), "give only one");
        assertOneLineUsageError(moe("train", "--moe-config", f.toString(), "--config", f.toString()), "give only one");
        assertOneLineUsageError(moe("train", "--no-bias", "--bias-coeff", "0.1"), "--no-bias");
    }

    @Test
    void syntaxErrorsPrintTheMessageAndTheUsage() {
        Result r = moe("train", "--steps", "abc");
        assertEquals(MoeCli.USAGE_ERROR, r.exit());
        assertTrue(r.errLines().get(0).startsWith("moe train: ") && r.errLines().get(0).contains("'abc'"), r::err);
        assertTrue(r.err().contains("Usage: moe train"), r::err);
        Result unknown = moe("nonsense");
        assertEquals(MoeCli.USAGE_ERROR, unknown.exit());
        assertTrue(unknown.errLines().get(0).startsWith("moe: "), unknown::err);
    }

    @Test
    void runtimeFailuresAreOneLineWithExit1AndTheStackTraceOnlyWhenVerbose(@TempDir Path dir) throws Exception {
        Path file = Files.writeString(dir.resolve("file"), "x");
        // --out below a regular file: the directory cannot be created (an I/O failure, not a usage error)
        String out = file.resolve("sub").toString();
        Result r = moe("train", "--steps", "1", "--tokens", "4", "--ranks", "1", "--out", out);
        assertEquals(MoeCli.RUN_ERROR, r.exit(), r::toString);
        assertEquals(1, r.errLines().size(), r::err);
        assertTrue(r.err().contains("--verbose"), r::err);
        Result v = moe("train", "--steps", "1", "--tokens", "4", "--ranks", "1", "--out", out, "--verbose");
        assertEquals(MoeCli.RUN_ERROR, v.exit());
        assertTrue(v.err().contains("\tat "), "stack trace under --verbose: " + v.err());
    }

    @Test
    void helpWorksAsOptionAndSubcommandEverywhere() {
        for (String[] args : List.of(new String[] {"--help"}, new String[] {"help"}, new String[] {"help", "train"},
                new String[] {"train", "--help"}, new String[] {"train", "help"}, new String[] {"info", "--help"},
                new String[] {"info", "help"}, new String[] {"jmh", "--help"}, new String[] {"launch", "--help"})) {
            Result r = moe(args);
            assertEquals(0, r.exit(), () -> String.join(" ", args) + ": " + r);
            assertTrue(r.out().contains("Usage: moe"), () -> String.join(" ", args) + ": " + r.out());
        }
    }

    @Test
    void infoPrintsEveryBackendOnReadableLines() {
        Result r = moe("info");
        assertEquals(0, r.exit(), r::toString);
        assertTrue(r.out().contains("cpu"), r::out);
        assertTrue(r.out().contains("selected: "), r::out);
        for (String line : r.out().split("\n")) {
            assertTrue(line.length() <= 200, () -> "line too long to read: " + line);
        }
    }

    @Test
    void redirectedOutputHasPlainLinesOnly(@TempDir Path dir) throws Exception {
        Result r = moe("train", "--preset", "mixtral-tiny", "--steps", "20", "--tokens", "8", "--ranks", "2",
                "--out", dir.toString());
        assertEquals(0, r.exit(), r::toString);
        assertFalse(r.out().contains("\r"), "no carriage return when not on a terminal");
        assertFalse(r.out().contains("\u001b"), "no escape codes when not on a terminal");
        for (String line : r.out().split("\n")) {
            assertEquals(line.stripTrailing(), line, "no trailing padding");
        }
        assertTrue(r.out().contains("step    1"), r::out);
        assertTrue(r.out().contains("step   20"), r::out);
        assertTrue(r.out().contains("mean of the last"), "the final loss says what it is: " + r.out());
        for (String f : List.of("metrics.json", "loss.png", "expert_load.png")) {
            assertTrue(Files.size(dir.resolve(f)) > 1000, f);
        }
    }
}
