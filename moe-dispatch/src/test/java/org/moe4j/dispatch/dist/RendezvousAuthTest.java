package org.moe4j.dispatch.dist;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The job identity and secret: where they come from, and every bad value refused by name without printing a secret. */
class RendezvousAuthTest {
    private static final String SECRET = "0123456789abcdef-secret-of-this-job";

    private static Map<String, String> env(String... kv) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(kv[i], kv[i + 1]);
        }
        return m;
    }

    private static String refused(Map<String, String> env) {
        String msg = assertThrows(IllegalArgumentException.class, () -> RendezvousAuth.fromMap(env)).getMessage();
        assertFalse(msg.contains(SECRET), "a message must never print the secret: " + msg);
        return msg;
    }

    private static Path privateFile(Path dir, String content, String perms) throws Exception {
        assumeTrue(FileSystems.getDefault().supportedFileAttributeViews().contains("posix"), "no POSIX permissions here");
        Path f = dir.resolve("token");
        Files.writeString(f, content);
        Files.setPosixFilePermissions(f, PosixFilePermissions.fromString(perms));
        return f;
    }

    @Test
    void jobIdComesFromMoe4jThenTorchrunThenSlurm() {
        assertEquals("mine", RendezvousAuth.fromMap(env(RendezvousAuth.JOB_ID, "mine", RendezvousAuth.TORCHELASTIC_RUN_ID,
                "torch", RendezvousAuth.TOKEN, SECRET)).jobId());
        assertEquals("torch", RendezvousAuth.fromMap(env(RendezvousAuth.TORCHELASTIC_RUN_ID, "torch",
                RendezvousAuth.SLURM_JOB_ID, "77", RendezvousAuth.TOKEN, SECRET)).jobId());
        assertEquals("77.3", RendezvousAuth.fromMap(env(RendezvousAuth.TORCHELASTIC_RUN_ID, "none",
                RendezvousAuth.SLURM_JOB_ID, "77", RendezvousAuth.SLURM_STEP_ID, "3", RendezvousAuth.TOKEN, SECRET)).jobId());
    }

    @Test
    void missingOrInvalidValuesAreRefusedByName() {
        assertTrue(refused(env(RendezvousAuth.TOKEN, SECRET)).contains("no job id: set " + RendezvousAuth.JOB_ID));
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "j")).contains("no rendezvous secret: set " + RendezvousAuth.TOKEN));
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN, SECRET, RendezvousAuth.TOKEN_FILE, "/x"))
                .contains("both " + RendezvousAuth.TOKEN + " and " + RendezvousAuth.TOKEN_FILE));
        String shortToken = assertThrows(IllegalArgumentException.class, () -> RendezvousAuth.fromMap(
                env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN, "short"))).getMessage();
        assertTrue(shortToken.contains(RendezvousAuth.TOKEN + " has 5 bytes") && !shortToken.contains("short\""), shortToken);
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "bad job\n", RendezvousAuth.TOKEN, SECRET))
                .contains(RendezvousAuth.JOB_ID + "='bad job"));
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "x".repeat(RendezvousAuth.MAX_JOB_ID_CHARS + 1),
                RendezvousAuth.TOKEN, SECRET)).contains("must be 1 to " + RendezvousAuth.MAX_JOB_ID_CHARS));
        assertThrows(NullPointerException.class, () -> RendezvousAuth.of(null, new byte[32]));
        assertThrows(NullPointerException.class, () -> RendezvousAuth.of("j", null));
        assertThrows(IllegalArgumentException.class, () -> RendezvousAuth.of("j", new byte[RendezvousAuth.MAX_TOKEN_BYTES + 1]));
        assertThrows(IllegalArgumentException.class, () -> RendezvousAuth.of("", new byte[32]));
    }

    @Test
    void privateTokenFileGivesTheSameIdentityAsTheToken(@TempDir Path dir) throws Exception {
        Path f = privateFile(dir, SECRET + "\n", "rw-------");
        RendezvousAuth fromFile = RendezvousAuth.fromMap(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN_FILE, f.toString()));
        RendezvousAuth fromVar = RendezvousAuth.fromMap(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN, SECRET));
        assertArrayEquals(fromVar.key(), fromFile.key());
        assertArrayEquals(fromVar.key(), RendezvousAuth.fromTokenFile("j", f).key());
        assertNotEquals(HexKey.of(fromVar), HexKey.of(RendezvousAuth.fromMap(
                env(RendezvousAuth.JOB_ID, "k", RendezvousAuth.TOKEN, SECRET))), "the job id is part of the key");
    }

    @Test
    void tokenFileReadableByGroupOrOthersIsRefused(@TempDir Path dir) throws Exception {
        for (String perms : new String[] {"rw-r-----", "rw----r--", "rw-rw-rw-", "rw-----w-"}) {
            Path f = privateFile(dir, SECRET, perms);
            String msg = refused(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN_FILE, f.toString()));
            assertTrue(msg.contains(RendezvousAuth.TOKEN_FILE + "=" + f) && msg.contains("has permissions " + perms)
                    && msg.contains("chmod 600"), msg);
        }
    }

    @Test
    void missingLinkedOrShortTokenFilesAreRefused(@TempDir Path dir) throws Exception {
        Path f = privateFile(dir, SECRET, "rw-------");
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN_FILE, dir.resolve("nope").toString()))
                .contains("does not exist"));
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN_FILE, dir.toString()))
                .contains("is not a regular file"));
        Path link = Files.createSymbolicLink(dir.resolve("link"), f);
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN_FILE, link.toString()))
                .contains("symbolic link"));
        Files.writeString(f, "short\n");
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN_FILE, f.toString()))
                .contains("has 5 bytes"));
        Files.write(f, new byte[RendezvousAuth.MAX_TOKEN_BYTES + 100]);
        assertTrue(refused(env(RendezvousAuth.JOB_ID, "j", RendezvousAuth.TOKEN_FILE, f.toString()))
                .contains("at most " + RendezvousAuth.MAX_TOKEN_BYTES));
    }

    @Test
    void secretIsNeverPrintedAndNewTokensAreFreshAndLongEnough() {
        RendezvousAuth a = RendezvousAuth.of("job-1", SECRET.getBytes(StandardCharsets.UTF_8));
        assertFalse(a.toString().contains(SECRET), a.toString());
        assertTrue(a.toString().contains("job-1"), a.toString());
        String t1 = RendezvousAuth.newToken();
        String t2 = RendezvousAuth.newToken();
        assertTrue(t1.matches("[0-9a-f]{64}"), t1);
        assertNotEquals(t1, t2);
    }

    /** The derived key as text, for assertNotEquals. */
    private record HexKey(String hex) {
        static HexKey of(RendezvousAuth a) {
            return new HexKey(java.util.HexFormat.of().formatHex(a.key()));
        }
    }
    /**
     * The file read is the file checked: a symbolic link, another file, or widened permissions swapped
     * in between the check and the read are refused and never read (the read opens without following
     * links and compares the file key).
     */
    @Test
    void aTokenFileSwappedAfterItsCheckIsNeverRead(@TempDir Path dir) throws Exception {
        Path f = privateFile(dir, SECRET, "rw-------");
        Path other = dir.resolve("other");
        String otherSecret = "another-secret-that-must-not-be-read-0123";
        Files.writeString(other, otherSecret);
        Files.setPosixFilePermissions(other, PosixFilePermissions.fromString("rw-------"));
        assertArrayEquals(SECRET.getBytes(StandardCharsets.UTF_8), RendezvousAuth.readTokenFile(f, "token file", () -> { }));

        String link = assertThrows(IllegalArgumentException.class, () -> RendezvousAuth.readTokenFile(f, "token file", () -> io(() -> {
            Files.delete(f);
            Files.createSymbolicLink(f, other);
        }))).getMessage();
        assertTrue(link.contains("without following links"), link);
        assertFalse(link.contains(otherSecret) || link.contains(SECRET), link);

        Files.delete(f);
        privateFile(dir, SECRET, "rw-------");
        String replaced = assertThrows(IllegalArgumentException.class, () -> RendezvousAuth.readTokenFile(f, "token file",
                () -> io(() -> { // an atomic swap: the new file exists before the old one goes
                    Path next = Files.copy(other, dir.resolve("next"));
                    Files.move(next, f, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                            java.nio.file.StandardCopyOption.ATOMIC_MOVE);
                }))).getMessage();
        assertTrue(replaced.contains("was replaced or changed between its check and the read"), replaced);

        Files.delete(f);
        privateFile(dir, SECRET, "rw-------");
        String widened = assertThrows(IllegalArgumentException.class, () -> RendezvousAuth.readTokenFile(f, "token file",
                () -> io(() -> Files.setPosixFilePermissions(f, PosixFilePermissions.fromString("rw-r--r--")))))
                .getMessage();
        assertTrue(widened.contains("was replaced or changed between its check and the read"), widened);
    }

    private interface IoAction {
        void run() throws Exception;
    }

    private static void io(IoAction action) {
        try {
            action.run();
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }
}
