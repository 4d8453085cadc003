package org.moe4j.dispatch.dist;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.security.SecureRandom;
import java.util.EnumSet;
import java.util.HexFormat;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * Who may join a {@link TcpRendezvous}: the job identity (torchrun's {@code --rdzv-id} idea) and the
 * shared secret every rank proves it holds.
 *
 * <p>Two jobs with different job ids never merge, even when they share a port and a secret. The
 * secret never travels: each joining rank and rank 0 prove to each other that they hold it with an
 * HMAC-SHA256 challenge-response over fresh random nonces, and everything after the handshake is
 * encrypted and authenticated (AES-256-GCM) with keys derived from the secret and both nonces.
 *
 * <p>From the environment ({@link #fromMap}): the job id is {@value #JOB_ID}, else torchrun's
 * {@code TORCHELASTIC_RUN_ID}, else SLURM's {@code SLURM_JOB_ID} (with {@code SLURM_STEP_ID});
 * the secret is exactly one of {@value #TOKEN} (the token itself) or {@value #TOKEN_FILE} (a file
 * readable only by its owner, the current user). {@code moe launch} generates both for every job.
 * See docs/distributed.md for the threat model.
 */
public final class RendezvousAuth {
    /** Variable holding the job identity; every rank of one job must have the same. */
    public static final String JOB_ID = "MOE4J_JOB_ID";
    /** Variable holding the shared secret itself (at least {@value #MIN_TOKEN_BYTES} bytes). */
    public static final String TOKEN = "MOE4J_RDZV_TOKEN";
    /** Variable holding the path of a file with the shared secret, readable only by its owner. */
    public static final String TOKEN_FILE = "MOE4J_RDZV_TOKEN_FILE";
    /** torchrun's run id, used as the job id when {@value #JOB_ID} is not set. */
    public static final String TORCHELASTIC_RUN_ID = "TORCHELASTIC_RUN_ID";
    /** SLURM's job id, used as the job id when neither {@value #JOB_ID} nor torchrun's run id is set. */
    public static final String SLURM_JOB_ID = "SLURM_JOB_ID";
    /** SLURM's step id, appended to {@value #SLURM_JOB_ID} when set. */
    public static final String SLURM_STEP_ID = "SLURM_STEP_ID";

    /** Shortest secret accepted, in bytes (UTF-8 of the token). */
    public static final int MIN_TOKEN_BYTES = 16;
    /** Longest secret accepted, in bytes; also the largest token file read. */
    public static final int MAX_TOKEN_BYTES = 4096;
    /** Longest job id accepted, in characters. */
    public static final int MAX_JOB_ID_CHARS = 128;

    private static final Pattern JOB_ID_CHARS = Pattern.compile("[A-Za-z0-9._:@+=/-]+");
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final Set<PosixFilePermission> OTHERS = EnumSet.of(
            PosixFilePermission.GROUP_READ, PosixFilePermission.GROUP_WRITE, PosixFilePermission.GROUP_EXECUTE,
            PosixFilePermission.OTHERS_READ, PosixFilePermission.OTHERS_WRITE, PosixFilePermission.OTHERS_EXECUTE);

    private final String jobId;
    private final byte[] key; // HMAC(token, label | jobId): the token itself is not kept

    private RendezvousAuth(String jobId, byte[] key) {
        this.jobId = jobId;
        this.key = key;
    }

    /**
     * An identity from explicit values.
     *
     * @param jobId the job id: 1 to {@value #MAX_JOB_ID_CHARS} characters of {@code [A-Za-z0-9._:@+=/-]}
     * @param token the shared secret, {@value #MIN_TOKEN_BYTES} to {@value #MAX_TOKEN_BYTES} bytes (copied)
     * @return the identity
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException if the job id or the token length is out of range (the token is never printed)
     */
    public static RendezvousAuth of(String jobId, byte[] token) {
        Objects.requireNonNull(jobId, "jobId");
        Objects.requireNonNull(token, "token");
        checkJobId(jobId, "job id");
        checkToken(token.length, "token");
        return new RendezvousAuth(jobId, RendezvousCrypto.jobKey(token, jobId));
    }

    /**
     * An identity from explicit values, the secret read from a file that only its owner can read.
     *
     * @param jobId     the job id (see {@link #of})
     * @param tokenFile a regular file owned by the current user, without group or other permissions,
     *                  holding the secret (surrounding whitespace, such as a final newline, is ignored)
     * @return the identity
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException if the job id is invalid, or the file is missing, not a regular file,
     *                                  readable or writable by group or others, owned by another user, too
     *                                  large or holds a too-short secret (the message names the file)
     */
    public static RendezvousAuth fromTokenFile(String jobId, Path tokenFile) {
        Objects.requireNonNull(jobId, "jobId");
        Objects.requireNonNull(tokenFile, "tokenFile");
        checkJobId(jobId, "job id");
        return new RendezvousAuth(jobId, RendezvousCrypto.jobKey(readTokenFile(tokenFile, "token file"), jobId));
    }

    /**
     * Reads the identity from the process environment (see {@link #fromMap}).
     *
     * @return the identity of this job
     * @throws IllegalArgumentException naming the variable that is missing or invalid
     */
    public static RendezvousAuth fromEnvironment() {
        return fromMap(System.getenv());
    }

    /**
     * Reads the identity from variables: the job id from {@value #JOB_ID}, else
     * {@value #TORCHELASTIC_RUN_ID} (unless it is {@code none}), else {@value #SLURM_JOB_ID}
     * (plus {@code .}{@value #SLURM_STEP_ID} when set); the secret from exactly one of
     * {@value #TOKEN} and {@value #TOKEN_FILE}.
     *
     * @param env variable names to values
     * @return the identity
     * @throws NullPointerException     if {@code env} is null
     * @throws IllegalArgumentException naming the variable that is missing or invalid (never printing a secret)
     */
    public static RendezvousAuth fromMap(Map<String, String> env) {
        Objects.requireNonNull(env, "env");
        String jobId = jobIdFrom(env);
        String token = env.get(TOKEN);
        String file = env.get(TOKEN_FILE);
        boolean hasToken = token != null && !token.isBlank();
        boolean hasFile = file != null && !file.isBlank();
        if (hasToken && hasFile) {
            throw new IllegalArgumentException("both " + TOKEN + " and " + TOKEN_FILE + " are set; set only one");
        }
        if (!hasToken && !hasFile) {
            throw new IllegalArgumentException("no rendezvous secret: set " + TOKEN + " (at least " + MIN_TOKEN_BYTES
                    + " bytes, e.g. $(openssl rand -hex 32)) or " + TOKEN_FILE
                    + " (a file only you can read) on every rank; `moe launch` sets one for you");
        }
        byte[] secret;
        if (hasToken) {
            secret = token.strip().getBytes(StandardCharsets.UTF_8);
            checkToken(secret.length, TOKEN);
        } else {
            secret = readTokenFile(Path.of(file.strip()), TOKEN_FILE + "=" + file.strip());
        }
        return new RendezvousAuth(jobId, RendezvousCrypto.jobKey(secret, jobId));
    }

    /**
     * A fresh random secret for one job: 32 bytes from {@link SecureRandom} as 64 hex digits.
     *
     * @return the token, suitable for {@value #TOKEN}
     */
    public static String newToken() {
        byte[] b = new byte[32];
        RANDOM.nextBytes(b);
        return HexFormat.of().formatHex(b);
    }

    /**
     * The job's identity.
     *
     * @return the job id every rank of this job shares
     */
    public String jobId() {
        return jobId;
    }

    /** The key all proofs and session keys derive from (HMAC of the token and the job id). */
    byte[] key() {
        return key;
    }

    /**
     * Describes this identity without its secret.
     *
     * @return the job id; the secret is never printed
     */
    @Override
    public String toString() {
        return "RendezvousAuth[jobId=" + jobId + ", token=<redacted>]";
    }

    private static String jobIdFrom(Map<String, String> env) {
        String v = env.get(JOB_ID);
        if (v != null && !v.isBlank()) {
            checkJobId(v.strip(), JOB_ID);
            return v.strip();
        }
        v = env.get(TORCHELASTIC_RUN_ID);
        if (v != null && !v.isBlank() && !v.strip().equals("none")) {
            checkJobId(v.strip(), TORCHELASTIC_RUN_ID);
            return v.strip();
        }
        v = env.get(SLURM_JOB_ID);
        if (v != null && !v.isBlank()) {
            String step = env.get(SLURM_STEP_ID);
            String id = step == null || step.isBlank() ? v.strip() : v.strip() + "." + step.strip();
            checkJobId(id, SLURM_JOB_ID + (step == null || step.isBlank() ? "" : "." + SLURM_STEP_ID));
            return id;
        }
        throw new IllegalArgumentException("no job id: set " + JOB_ID + " to the same value on every rank of the job"
                + " (torchrun's " + TORCHELASTIC_RUN_ID + " or SLURM's " + SLURM_JOB_ID
                + " are used when set; `moe launch` sets one for you)");
    }

    private static void checkJobId(String jobId, String what) {
        if (jobId.isEmpty() || jobId.length() > MAX_JOB_ID_CHARS || !JOB_ID_CHARS.matcher(jobId).matches()) {
            throw new IllegalArgumentException(what + "='" + printable(jobId) + "' must be 1 to " + MAX_JOB_ID_CHARS
                    + " characters of [A-Za-z0-9._:@+=/-]");
        }
    }

    private static void checkToken(int bytes, String what) {
        if (bytes < MIN_TOKEN_BYTES || bytes > MAX_TOKEN_BYTES) {
            throw new IllegalArgumentException(what + " has " + bytes + " bytes; a rendezvous secret must have "
                    + MIN_TOKEN_BYTES + " to " + MAX_TOKEN_BYTES + " bytes");
        }
    }

    private static byte[] readTokenFile(Path file, String what) {
        return readTokenFile(file, what, () -> { });
    }

    /**
     * Checks the file, then opens it without following links and verifies (same file key, still
     * private) that the opened file is the checked one before reading through that channel: a link
     * or another file swapped in between the check and the read is refused, never read.
     *
     * @param afterCheck runs between the permission check and the open (tests swap the file there)
     */
    static byte[] readTokenFile(Path file, String what, Runnable afterCheck) {
        PosixFileAttributes attrs;
        try {
            attrs = Files.readAttributes(file, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(what + ": " + file + " does not exist", e);
        } catch (UnsupportedOperationException e) {
            throw new IllegalArgumentException(what + ": " + file + " is on a file system without POSIX permissions,"
                    + " so it cannot be checked to be private; use " + TOKEN + " instead", e);
        } catch (IOException e) {
            throw new IllegalArgumentException(what + ": cannot read the attributes of " + file + ": " + e, e);
        }
        if (!attrs.isRegularFile()) {
            throw new IllegalArgumentException(what + ": " + file + " is not a regular file"
                    + (attrs.isSymbolicLink() ? " (a symbolic link; name the file itself)" : ""));
        }
        Set<PosixFilePermission> open = EnumSet.noneOf(PosixFilePermission.class);
        open.addAll(attrs.permissions());
        open.retainAll(OTHERS);
        if (!open.isEmpty()) {
            throw new IllegalArgumentException(what + ": " + file + " has permissions "
                    + java.nio.file.attribute.PosixFilePermissions.toString(attrs.permissions())
                    + "; a secret must be readable only by its owner (chmod 600 " + file + ")");
        }
        Integer me = currentUid();
        if (me != null) {
            Integer owner;
            try {
                owner = (Integer) Files.getAttribute(file, "unix:uid", LinkOption.NOFOLLOW_LINKS);
            } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
                owner = null;
            }
            if (owner != null && !owner.equals(me)) {
                throw new IllegalArgumentException(what + ": " + file + " is owned by uid " + owner
                        + ", not by this process's uid " + me);
            }
        }
        if (attrs.size() > MAX_TOKEN_BYTES + 64) {
            throw new IllegalArgumentException(what + ": " + file + " has " + attrs.size() + " bytes; at most "
                    + MAX_TOKEN_BYTES + " expected");
        }
        afterCheck.run();
        byte[] raw;
        try (java.nio.channels.SeekableByteChannel ch = Files.newByteChannel(file,
                java.nio.file.StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS)) {
            PosixFileAttributes now = Files.readAttributes(file, PosixFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
            Set<PosixFilePermission> nowOpen = EnumSet.noneOf(PosixFilePermission.class);
            nowOpen.addAll(now.permissions());
            nowOpen.retainAll(OTHERS);
            if (attrs.fileKey() == null || !attrs.fileKey().equals(now.fileKey()) || !now.isRegularFile()
                    || !nowOpen.isEmpty()) {
                throw new IllegalArgumentException(what + ": " + file + " was replaced or changed between its check"
                        + " and the read; refused");
            }
            java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocate(MAX_TOKEN_BYTES + 65);
            while (buf.hasRemaining() && ch.read(buf) >= 0) {
                // read at most one byte past the limit
            }
            if (!buf.hasRemaining()) {
                throw new IllegalArgumentException(what + ": " + file + " has more than " + (MAX_TOKEN_BYTES + 64)
                        + " bytes; at most " + MAX_TOKEN_BYTES + " expected");
            }
            raw = java.util.Arrays.copyOf(buf.array(), buf.position());
        } catch (IOException e) {
            throw new IllegalArgumentException(what + ": cannot read " + file + " without following links (a symbolic"
                    + " link or a removal after its check is refused): " + e, e);
        }
        byte[] secret = new String(raw, StandardCharsets.UTF_8).strip().getBytes(StandardCharsets.UTF_8);
        checkToken(secret.length, what + " (" + file + ")");
        return secret;
    }

    /** The real uid of this process where the platform shows it (Linux {@code /proc/self}), else null. */
    private static Integer currentUid() {
        try {
            return (Integer) Files.getAttribute(Path.of("/proc/self"), "unix:uid");
        } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
            return null;
        }
    }

    private static String printable(String s) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < s.length() && i < MAX_JOB_ID_CHARS + 8; i++) {
            char c = s.charAt(i);
            sb.append(c >= 0x20 && c < 0x7f ? String.valueOf(c) : String.format("\\u%04x", (int) c));
        }
        return s.length() > MAX_JOB_ID_CHARS + 8 ? sb + "..." : sb.toString();
    }
}
