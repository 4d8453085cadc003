package org.moe4j.dispatch.dist;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A small TCP rendezvous for bootstrapping a distributed job (for example sharing the 128-byte
 * NCCL unique id). Rank 0 listens on {@code MASTER_PORT}; every other rank connects to
 * {@code MASTER_ADDR:MASTER_PORT}, retrying with backoff until the deadline. Ranks may live on
 * different hosts: nothing assumes a shared host, file system or clock.
 *
 * <p>Safe on a shared host: every connection proves it belongs to the job ({@link RendezvousAuth}:
 * a job id and a shared secret, checked both ways by an HMAC-SHA256 challenge-response over fresh
 * nonces; the secret never travels) before rank 0 considers its claims, and everything after the
 * handshake is encrypted and authenticated with AES-256-GCM. Rank 0 serves handshakes concurrently,
 * each bounded by 10 s and the join's deadline; connections from other
 * jobs, without the secret, idle, slow or malformed are dropped and logged and never fail or delay
 * the job. docs/distributed.md states the threat model.
 *
 * <p>The join handshake carries each rank's world size, rank, host and pid, so a wrong world size,
 * a duplicate or out-of-range rank, or a missing rank gives a clear {@link RendezvousException}
 * on every rank that is connected (rank 0 relays its verdict to all). After joining, the
 * collectives {@link #broadcast(byte[])}, {@link #allGather(byte[])} and {@link #barrier()} run
 * as a star through rank 0, each bounded by the timeout; a timeout names the ranks that did not
 * arrive. Collectives must be called in the same order on every rank, by one thread at a time.
 *
 * <p>This is a bootstrap channel for small messages, not a data path.
 */
public final class TcpRendezvous implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(TcpRendezvous.class);

    static final int MAGIC = 0x4d4f4534; // "MOE4"
    /** Version 2: job id, mutual HMAC challenge-response, AES-GCM frames. Version 1 had no authentication. */
    static final int VERSION = 2;
    /** Largest payload of one message (bytes); larger blobs are refused. */
    public static final int MAX_BLOB_BYTES = 1 << 24;

    static final int HELLO = 1;
    static final int WELCOME = 2;
    static final int ERROR = 3;
    private static final int BROADCAST = 4;
    private static final int GATHER = 5;
    private static final int GATHERED = 6;
    static final int CHALLENGE = 7;
    static final int JOIN = 8;
    static final int REFUSED = 9;

    /** Largest frame of the unauthenticated handshake (bytes); anything larger is dropped. */
    static final int MAX_HANDSHAKE_FRAME = 4096;
    /** Largest authenticated frame: the largest blob, the collective header, the GCM tag and slack. */
    private static final int MAX_SEALED_FRAME = MAX_BLOB_BYTES + (1 << 16);
    /** Longest one connection's handshake may take on either side, whatever the overall timeout. */
    static final Duration HANDSHAKE_LIMIT = Duration.ofSeconds(10);
    /** Most handshakes rank 0 serves at once; further connections are closed until some finish. */
    static final int MAX_PENDING_HANDSHAKES = 256;
    /** Dropped connections logged at WARN per join; later ones at DEBUG, so a flood cannot flood the log. */
    private static final int MAX_LOGGED_DROPS = 20;
    private static final long NO_DEADLINE = Long.MAX_VALUE;

    private static final int OP_BROADCAST = 1;
    private static final int OP_ALLGATHER = 2;
    private static final int OP_BARRIER = 3;

    /** Extra time a non-zero rank waits for rank 0, so that rank 0's verdict arrives first. */
    static final Duration PEER_GRACE = Duration.ofMillis(1500);
    private static final long MAX_CONNECT_ATTEMPT_MS = 5_000;
    private static final long MAX_BACKOFF_MS = 1_000;
    private static final long POLL_MS = 50;

    private final DistEnv env;
    private final Duration timeout;
    private final String self;
    private final Conn[] peers; // rank 0 only: index = rank, [0] unused
    private final Conn master;  // other ranks only: connection to rank 0
    private int seq;
    private String broken;
    private boolean closed;
    private int droppedConnections;

    private TcpRendezvous(DistEnv env, Duration timeout, String self, Conn[] peers, Conn master) {
        this.env = env;
        this.timeout = timeout;
        this.self = self;
        this.peers = peers;
        this.master = master;
    }

    /**
     * Joins the group described by {@code env}, with the job id and secret of this process's
     * environment ({@link RendezvousAuth#fromEnvironment()}); see {@link #join(DistEnv, RendezvousAuth, Duration)}.
     * A world of one opens no socket and needs no secret.
     *
     * @param env     this process's place in the job
     * @param timeout how long to wait for the group to form, and for each later collective
     * @return the joined rendezvous; close it when done
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException if the timeout is not positive, or (world size above one) the job id
     *                                  or secret is missing or invalid in the environment (the variable is named)
     * @throws RendezvousException      if the group does not form in time or is inconsistent (the
     *                                  message names the missing or conflicting ranks)
     */
    public static TcpRendezvous join(DistEnv env, Duration timeout) {
        Objects.requireNonNull(env, "env");
        checkTimeout(timeout);
        if (env.worldSize() == 1) {
            return new TcpRendezvous(env, timeout, describeSelf(env.rank()), new Conn[1], null);
        }
        return join(env, RendezvousAuth.fromEnvironment(), timeout);
    }

    /**
     * Joins the group described by {@code env} as a rank of the job {@code auth} names: rank 0
     * listens and waits for every other rank, the others connect to rank 0. Every connection is
     * mutually authenticated (each side proves it holds the secret, which never travels) and then
     * encrypted; connections from other jobs, without the secret, or that stall or send malformed
     * data are dropped and logged without affecting the job. Returns when all {@code worldSize}
     * ranks have joined. A world of one opens no socket.
     *
     * @param env     this process's place in the job
     * @param auth    the job id and shared secret, the same on every rank
     * @param timeout how long to wait for the group to form, and for each later collective
     * @return the joined rendezvous; close it when done
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException if the timeout is not positive
     * @throws RendezvousException      if the group does not form in time or is inconsistent (the
     *                                  message names the missing or conflicting ranks)
     */
    public static TcpRendezvous join(DistEnv env, RendezvousAuth auth, Duration timeout) {
        Objects.requireNonNull(env, "env");
        Objects.requireNonNull(auth, "auth");
        checkTimeout(timeout);
        String self = describeSelf(env.rank());
        if (env.worldSize() == 1) {
            return new TcpRendezvous(env, timeout, self, new Conn[1], null);
        }
        return env.isMaster() ? joinAsMaster(env, auth, timeout, self) : joinAsPeer(env, auth, timeout, self);
    }

    private static void checkTimeout(Duration timeout) {
        Objects.requireNonNull(timeout, "timeout");
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
    }

    /**
     * Returns this process's rank.
     * @return this process's rank
     */
    public int rank() {
        return env.rank();
    }

    /**
     * Returns number of ranks in the group.
     * @return number of ranks in the group
     */
    public int worldSize() {
        return env.worldSize();
    }

    /**
     * Returns the environment this rendezvous was joined with.
     * @return the environment this rendezvous was joined with
     */
    public DistEnv env() {
        return env;
    }

    /** Rank 0: connections dropped while the group formed (failed handshakes, strangers, stalls). */
    int droppedConnections() {
        return droppedConnections;
    }

    /**
     * Sends rank 0's blob to every rank.
     *
     * @param blob on rank 0 the bytes to share (at most {@value #MAX_BLOB_BYTES}); ignored elsewhere (may be null)
     * @return the bytes rank 0 sent (a copy on rank 0)
     * @throws RendezvousException if a rank is unreachable or rank 0 does not send in time
     * @throws IllegalArgumentException if rank 0's blob is null or too large
     */
    public byte[] broadcast(byte[] blob) {
        int s = begin();
        if (env.isMaster()) {
            checkBlob(blob, "broadcast blob");
            byte[] payload = collective(s, OP_BROADCAST, blob);
            for (int r = 1; r < peers.length; r++) {
                send(peers[r], BROADCAST, payload, "broadcast #" + s);
            }
            return blob.clone();
        }
        ByteBuffer in = expectFromMaster(BROADCAST, s, OP_BROADCAST, "broadcast");
        byte[] out = new byte[in.remaining()];
        in.get(out);
        return out;
    }

    /**
     * Gathers one blob from every rank onto every rank.
     *
     * @param mine this rank's bytes (at most {@value #MAX_BLOB_BYTES})
     * @return the blobs indexed by rank
     * @throws RendezvousException if a rank does not arrive in time (named) or disconnects
     */
    public byte[][] allGather(byte[] mine) {
        checkBlob(mine, "allGather blob");
        return gather(begin(), OP_ALLGATHER, mine, "allGather");
    }

    /**
     * Returns once every rank has called it.
     *
     * @throws RendezvousException if a rank does not arrive in time (named) or disconnects
     */
    public void barrier() {
        gather(begin(), OP_BARRIER, new byte[0], "barrier");
    }

    /** Closes every connection. Other ranks see a disconnect at their next collective. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        closeAll();
    }

    // ---------------------------------------------------------------------------------- join

    private static TcpRendezvous joinAsMaster(DistEnv env, RendezvousAuth auth, Duration timeout, String self) {
        int world = env.worldSize();
        long deadline = System.nanoTime() + timeout.toNanos();
        Conn[] peers = new Conn[world];
        List<Conn> refused = new ArrayList<>();
        String error = null;
        int joined = 0;
        int contacts = 0;
        InetSocketAddress bind = bindAddress(env);
        Listener listener = null;
        try {
            listener = Listener.start(env, auth, bind, deadline, self);
            while (error == null ? joined < world - 1 : contacts < world - 1) {
                Joined j = listener.next(deadline);
                if (j == null) {
                    break;
                }
                Conn conn = j.conn();
                conn.who = "rank " + j.rank() + " (" + j.host() + ")";
                conn.host = j.host();
                contacts++;
                String verdict = null;
                if (j.worldSize() != world) {
                    verdict = conn.who + " has " + DistEnv.WORLD_SIZE + "=" + j.worldSize() + " but rank 0 ("
                            + self + ") has " + DistEnv.WORLD_SIZE + "=" + world;
                } else if (j.rank() == 0) {
                    verdict = "two processes claim " + DistEnv.RANK + "=0: " + self + " and " + j.host();
                } else if (j.rank() < 0 || j.rank() >= world) {
                    verdict = conn.who + " is outside [0, " + DistEnv.WORLD_SIZE + "=" + world + ")";
                } else if (peers[j.rank()] != null) {
                    verdict = "two processes claim " + DistEnv.RANK + "=" + j.rank() + ": "
                            + peers[j.rank()].host + " and " + j.host();
                }
                if (verdict != null && error == null) {
                    error = verdict;
                    LOG.debug("rank 0 rendezvous failed: {}", error);
                    for (Conn p : peers) {
                        if (p != null) {
                            sendQuietly(p, ERROR, error);
                        }
                    }
                }
                if (error != null) {
                    sendQuietly(conn, ERROR, error);
                    refused.add(conn);
                } else {
                    peers[j.rank()] = conn;
                    joined++;
                }
            }
            if (error == null && joined < world - 1) {
                List<Integer> missing = new ArrayList<>();
                for (int r = 1; r < world; r++) {
                    if (peers[r] == null) {
                        missing.add(r);
                    }
                }
                int dropped = listener.dropped();
                error = "rendezvous timed out after " + human(timeout) + ": " + (joined + 1) + " of " + world
                        + " ranks joined; missing ranks " + missing + " (rank 0 " + self + " listens on "
                        + bind + ", " + DistEnv.MASTER_ADDR + "=" + env.masterAddr() + ", job '" + auth.jobId() + "'"
                        + (dropped == 0 ? "" : "; " + dropped + " connection(s) failed the handshake: a wrong "
                        + RendezvousAuth.JOB_ID + " or token, or not moe4j ranks; see rank 0's log") + ")";
                for (Conn p : peers) {
                    if (p != null) {
                        sendQuietly(p, ERROR, error);
                    }
                }
            }
            if (error != null) {
                for (Conn p : peers) {
                    if (p != null) {
                        p.closeQuietly();
                    }
                }
                refused.forEach(Conn::closeQuietly);
                throw new RendezvousException(error);
            }
            for (int r = 1; r < world; r++) {
                send(peers[r], WELCOME, new byte[0]);
            }
        } catch (IOException e) {
            for (Conn p : peers) {
                if (p != null) {
                    p.closeQuietly();
                }
            }
            refused.forEach(Conn::closeQuietly);
            throw new RendezvousException("rank 0 (" + self + ") rendezvous failed on " + bind + ": " + e, e);
        } finally {
            if (listener != null) {
                listener.close();
            }
        }
        LOG.debug("rank 0: all {} ranks joined", world);
        TcpRendezvous rv = new TcpRendezvous(env, timeout, self, peers, null);
        rv.droppedConnections = listener.dropped();
        return rv;
    }

    private static TcpRendezvous joinAsPeer(DistEnv env, RendezvousAuth auth, Duration timeout, String self) {
        long deadline = System.nanoTime() + timeout.toNanos();
        String target = env.masterAddr() + ":" + env.masterPort();
        long backoff = 20;
        Exception last = null;
        boolean reached = false; // the last attempt reached a listener (and failed in the handshake)
        while (true) {
            long remaining = remainingMs(deadline);
            if (remaining <= 0) {
                if (reached) {
                    throw new RendezvousException("rank " + env.rank() + " (" + self + ") could not join job '"
                            + auth.jobId() + "' at rank 0 at " + target + " within " + human(timeout) + " (last error: "
                            + (last == null ? null : last.getMessage()) + "); are " + RendezvousAuth.JOB_ID
                            + " and the token the same on every rank?", last);
                }
                throw new RendezvousException("rank " + env.rank() + " (" + self + ") could not reach rank 0 at "
                        + target + " within " + human(timeout) + " (last error: " + last + "); is rank 0 running,"
                        + " and are " + DistEnv.MASTER_ADDR + "/" + DistEnv.MASTER_PORT + " the same on every rank?",
                        last);
            }
            Socket s = new Socket();
            Conn master = null;
            try {
                InetSocketAddress addr = new InetSocketAddress(env.masterAddr(), env.masterPort());
                if (addr.isUnresolved()) {
                    throw new UnknownHostException(env.masterAddr());
                }
                s.connect(addr, (int) Math.max(1, Math.min(remaining, MAX_CONNECT_ATTEMPT_MS)));
            } catch (IOException e) {
                last = e;
                reached = false;
                closeQuietly(s);
                s = null;
            }
            if (s != null) {
                reached = true;
                try {
                    master = handshakeWithMaster(s, env, auth, self, target, deadline);
                } catch (IOException | Refused e) {
                    last = e;
                    LOG.debug("rank {}: handshake with {} failed: {}", env.rank(), target, e.toString());
                    closeQuietly(s);
                }
            }
            if (master != null) {
                TcpRendezvous rv = new TcpRendezvous(env, timeout, self, null, master);
                try {
                    rv.expectFromMasterRaw(WELCOME, "join", deadline);
                    master.deadline(NO_DEADLINE);
                    return rv;
                } catch (Refused e) {
                    last = e;
                    master.closeQuietly();
                }
            }
            try {
                Thread.sleep(Math.max(1, Math.min(backoff, remainingMs(deadline))));
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
                throw new RendezvousException("rank " + env.rank() + " interrupted while connecting to " + target, ie);
            }
            backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        }
    }

    /**
     * A joining rank's side of the handshake: HELLO (job id, client nonce); rank 0 answers CHALLENGE
     * (server nonce, proof) which must verify before this rank proves itself in JOIN, so nothing this
     * rank sends helps a process that does not hold the secret.
     */
    private static Conn handshakeWithMaster(Socket socket, DistEnv env, RendezvousAuth auth, String self, String target,
                                            long deadline) throws IOException {
        Conn c = Conn.open(socket, "rank 0 at " + target);
        c.deadline(Math.min(deadline, System.nanoTime() + HANDSHAKE_LIMIT.toNanos()));
        byte[] clientNonce = RendezvousCrypto.nonce();
        byte[] job = auth.jobId().getBytes(StandardCharsets.UTF_8);
        writeClear(c, HELLO, ByteBuffer.allocate(12 + job.length + clientNonce.length).putInt(MAGIC).putInt(VERSION)
                .putInt(job.length).put(job).put(clientNonce).array());
        Frame answer = readClear(c);
        if (answer.type == REFUSED || answer.type == ERROR) {
            throw new Refused("rank 0 at " + target + " refused: " + printable(answer.text()));
        }
        if (answer.type != CHALLENGE || answer.payload.length != RendezvousCrypto.NONCE_BYTES + RendezvousCrypto.PROOF_BYTES) {
            throw new IOException("the process at " + target + " answered with message type " + answer.type + " of "
                    + answer.payload.length + " bytes instead of a moe4j challenge");
        }
        byte[] serverNonce = Arrays.copyOfRange(answer.payload, 0, RendezvousCrypto.NONCE_BYTES);
        byte[] proof = Arrays.copyOfRange(answer.payload, RendezvousCrypto.NONCE_BYTES, answer.payload.length);
        if (!RendezvousCrypto.sameProof(RendezvousCrypto.serverProof(auth.key(), auth.jobId(), clientNonce, serverNonce),
                proof)) {
            throw new Refused("the process listening at " + target + " could not prove it holds job '" + auth.jobId()
                    + "''s secret (rank 0 has a different token, or another process is listening on "
                    + DistEnv.MASTER_PORT + ")");
        }
        byte[] host = self.getBytes(StandardCharsets.UTF_8);
        byte[] mine = RendezvousCrypto.clientProof(auth.key(), auth.jobId(), clientNonce, serverNonce, env.worldSize(),
                env.rank(), self);
        writeClear(c, JOIN, ByteBuffer.allocate(mine.length + 12 + host.length).put(mine).putInt(env.worldSize())
                .putInt(env.rank()).putInt(host.length).put(host).array());
        c.session = RendezvousCrypto.session(auth.key(), clientNonce, serverNonce, false);
        return c;
    }

    // ---------------------------------------------------------------------------- collectives

    private int begin() {
        if (closed) {
            throw new IllegalStateException("rendezvous of rank " + env.rank() + " is closed");
        }
        if (broken != null) {
            throw new RendezvousException("rendezvous is unusable after an earlier failure: " + broken);
        }
        return ++seq;
    }

    private byte[][] gather(int s, int op, byte[] mine, String name) {
        int world = env.worldSize();
        if (world == 1) {
            return new byte[][] {mine.clone()};
        }
        if (!env.isMaster()) {
            try {
                writeFrame(master, GATHER, collective(s, op, mine));
            } catch (IOException e) {
                throw fail("rank " + env.rank() + " lost its connection to rank 0 during " + name + " #" + s + ": " + e, e);
            }
            ByteBuffer in = expectFromMaster(GATHERED, s, op, name);
            byte[][] all = new byte[world][];
            for (int r = 0; r < world; r++) {
                all[r] = new byte[in.getInt()];
                in.get(all[r]);
            }
            return all;
        }
        long deadline = System.nanoTime() + timeout.toNanos();
        byte[][] all = new byte[world][];
        all[0] = mine.clone();
        List<Integer> missing = new ArrayList<>();
        for (int r = 1; r < world; r++) {
            Conn p = peers[r];
            Frame f;
            try {
                long wait = missing.isEmpty() ? Math.max(1, remainingMs(deadline)) : POLL_MS;
                p.deadline(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(wait));
                f = readFrame(p);
            } catch (SocketTimeoutException e) {
                missing.add(r);
                continue;
            } catch (IOException e) {
                throw fail(p.who + " disconnected during " + name + " #" + s + " (" + e + ")", e);
            }
            if (f.type == ERROR) {
                throw fail(p.who + " failed: " + f.text());
            }
            ByteBuffer in = ByteBuffer.wrap(f.payload);
            int ps = in.getInt();
            int pop = in.getInt();
            if (f.type != GATHER || ps != s || pop != op) {
                throw fail(p.who + " called " + opName(pop) + " #" + ps + " while rank 0 called " + name + " #" + s
                        + " (collectives must be called in the same order on every rank)");
            }
            all[r] = new byte[in.remaining()];
            in.get(all[r]);
        }
        if (!missing.isEmpty()) {
            throw fail(name + " #" + s + " timed out after " + human(timeout) + ": ranks " + missing
                    + " did not arrive (" + describe(missing) + ")", null);
        }
        int total = 8;
        for (byte[] b : all) {
            total += 4 + b.length;
        }
        ByteBuffer out = ByteBuffer.allocate(total).putInt(s).putInt(op);
        for (byte[] b : all) {
            out.putInt(b.length).put(b);
        }
        for (int r = 1; r < world; r++) {
            send(peers[r], GATHERED, out.array(), name + " #" + s);
        }
        return all;
    }

    private ByteBuffer expectFromMaster(int type, int s, int op, String name) {
        long deadline = System.nanoTime() + timeout.toNanos();
        Frame f = expectFromMasterRaw(type, name + " #" + s, deadline);
        ByteBuffer in = ByteBuffer.wrap(f.payload);
        int ms = in.getInt();
        int mop = in.getInt();
        if (ms != s || mop != op) {
            throw fail("rank 0 is in " + opName(mop) + " #" + ms + " while rank " + env.rank() + " called " + name
                    + " #" + s + " (collectives must be called in the same order on every rank)", null);
        }
        return in;
    }

    private Frame expectFromMasterRaw(int type, String what, long deadline) {
        Frame f;
        try {
            long wait = Math.max(1, remainingMs(deadline) + PEER_GRACE.toMillis());
            master.deadline(System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(wait));
            f = readFrame(master);
        } catch (SocketTimeoutException e) {
            throw fail("rank " + env.rank() + " (" + self + ") got no answer from " + master.who + " for " + what
                    + " within " + human(timeout) + " (rank 0 is stuck, or other ranks never arrived)", e);
        } catch (IOException e) {
            throw fail(master.who + " closed the connection during " + what + " of rank " + env.rank()
                    + " (" + e + "); rank 0 failed or exited", e);
        }
        if (f.type == REFUSED) {
            throw new Refused("rank 0 refused the join: " + printable(f.text()));
        }
        if (f.type == ERROR) {
            throw fail("rendezvous failed (reported by rank 0 to rank " + env.rank() + "): " + f.text(), null);
        }
        if (f.type != type) {
            throw fail("rank " + env.rank() + " expected message type " + type + " from rank 0 during " + what
                    + " but got type " + f.type, null);
        }
        return f;
    }

    private RendezvousException fail(String message, Throwable cause) {
        return fail(message, cause, true);
    }

    private RendezvousException fail(String message) {
        return fail(message, null, true);
    }

    private RendezvousException fail(String message, Throwable cause, boolean relay) {
        broken = message;
        if (relay && peers != null) {
            for (int r = 1; r < peers.length; r++) {
                if (peers[r] != null) {
                    sendQuietly(peers[r], ERROR, message);
                }
            }
        }
        closeAll();
        return new RendezvousException(message, cause);
    }

    private void send(Conn c, int type, byte[] payload, String what) {
        try {
            writeFrame(c, type, payload);
        } catch (IOException e) {
            throw fail(c.who + " is unreachable during " + what + " (" + e + ")", e);
        }
    }

    private String describe(List<Integer> ranks) {
        StringBuilder sb = new StringBuilder();
        for (int r : ranks) {
            if (!sb.isEmpty()) {
                sb.append(", ");
            }
            sb.append(peers[r].who);
        }
        return sb.toString();
    }

    private void closeAll() {
        if (peers != null) {
            for (Conn p : peers) {
                if (p != null) {
                    p.closeQuietly();
                }
            }
        }
        if (master != null) {
            master.closeQuietly();
        }
    }

    // -------------------------------------------------------------------------------- framing

    private static byte[] collective(int s, int op, byte[] data) {
        return ByteBuffer.allocate(8 + data.length).putInt(s).putInt(op).put(data).array();
    }

    private static void send(Conn c, int type, byte[] payload) throws IOException {
        writeFrame(c, type, payload);
    }

    private static void sendQuietly(Conn c, int type, String text) {
        try {
            c.socket.setSoTimeout((int) POLL_MS);
            writeFrame(c, type, text.getBytes(StandardCharsets.UTF_8));
        } catch (IOException e) {
            LOG.debug("could not tell {}: {}", c.who, e.toString());
        }
    }

    /** Writes one frame, sealed once the connection is authenticated. */
    private static void writeFrame(Conn c, int type, byte[] payload) throws IOException {
        writeClear(c, type, c.session == null ? payload : c.session.seal(type, payload));
    }

    private static void writeClear(Conn c, int type, byte[] payload) throws IOException {
        c.out.writeInt(type);
        c.out.writeInt(payload.length);
        c.out.write(payload);
        c.out.flush();
    }

    /**
     * Reads the next authentic frame of an authenticated connection within the connection's
     * deadline. Frames that do not open (forged, corrupted, replayed) are dropped and logged; the
     * wait goes on. Until the first authentic frame a joining rank also accepts rank 0's plain
     * {@code REFUSED}, which can only make it retry.
     */
    private static Frame readFrame(Conn c) throws IOException {
        while (true) {
            int type = c.in.readInt();
            int length = c.in.readInt();
            if (type == REFUSED && !c.authenticated) {
                return new Frame(type, readPayload(c, length, MAX_HANDSHAKE_FRAME));
            }
            byte[] sealed = readPayload(c, length, MAX_SEALED_FRAME);
            byte[] plain = c.session.open(type, sealed);
            if (plain == null) {
                LOG.warn("dropped a forged or corrupted rendezvous message (type {}, {} bytes) from {}",
                        type, length, c.who);
                continue;
            }
            c.authenticated = true;
            return new Frame(type, plain);
        }
    }

    /** Reads one unauthenticated handshake frame, at most {@value #MAX_HANDSHAKE_FRAME} bytes. */
    private static Frame readClear(Conn c) throws IOException {
        int type = c.in.readInt();
        int length = c.in.readInt();
        return new Frame(type, readPayload(c, length, MAX_HANDSHAKE_FRAME));
    }

    private static byte[] readPayload(Conn c, int length, int max) throws IOException {
        if (length < 0 || length > max) {
            throw new IOException("malformed message from " + c.who + ": length " + length + " (at most " + max + ")");
        }
        byte[] payload = new byte[length];
        c.in.readFully(payload);
        return payload;
    }

    private static void checkBlob(byte[] blob, String what) {
        if (blob == null) {
            throw new IllegalArgumentException(what + " must not be null");
        }
        if (blob.length > MAX_BLOB_BYTES) {
            throw new IllegalArgumentException(what + " has " + blob.length + " bytes; at most "
                    + MAX_BLOB_BYTES + " allowed");
        }
    }

    private static String opName(int op) {
        return switch (op) {
            case OP_BROADCAST -> "broadcast";
            case OP_ALLGATHER -> "allGather";
            case OP_BARRIER -> "barrier";
            default -> "unknown operation " + op;
        };
    }

    private static InetSocketAddress bindAddress(DistEnv env) {
        try {
            InetAddress a = InetAddress.getByName(env.masterAddr());
            if (a.isLoopbackAddress()) {
                return new InetSocketAddress(a, env.masterPort());
            }
        } catch (UnknownHostException e) {
            LOG.debug("MASTER_ADDR={} does not resolve on rank 0; listening on all interfaces", env.masterAddr());
        }
        return new InetSocketAddress(env.masterPort());
    }

    private static String describeSelf(int rank) {
        String host;
        try {
            host = InetAddress.getLocalHost().getHostName();
        } catch (UnknownHostException e) {
            String h = System.getenv("HOSTNAME");
            host = h == null ? "unknown-host" : h;
        }
        return host + " pid " + ProcessHandle.current().pid();
    }

    private static long remainingMs(long deadlineNanos) {
        return Math.max(0, (deadlineNanos - System.nanoTime()) / 1_000_000);
    }

    private static String human(Duration d) {
        long ms = d.toMillis();
        return ms % 1000 == 0 ? (ms / 1000) + " s" : ms + " ms";
    }

    private static void closeQuietly(java.io.Closeable s) {
        try {
            s.close();
        } catch (IOException e) {
            LOG.trace("close", e);
        }
    }

    /** Text from an unauthenticated peer, made safe for messages and logs: printable ASCII, bounded. */
    static String printable(String s) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < s.length() && sb.length() < 300; i++) {
            char c = s.charAt(i);
            sb.append(c >= 0x20 && c < 0x7f ? c : '?');
        }
        return s.length() > 300 ? sb + "..." : sb.toString();
    }

    private record Frame(int type, byte[] payload) {
        String text() {
            return new String(payload, StandardCharsets.UTF_8);
        }
    }

    /** One TCP connection with its buffered streams, its session once authenticated, and a description. */
    private static final class Conn {
        final Socket socket;
        final DeadlineInput raw;
        final DataInputStream in;
        final DataOutputStream out;
        String who;
        String host = "?";
        RendezvousCrypto.Session session;
        boolean authenticated;

        private Conn(Socket socket, String who) throws IOException {
            this.socket = socket;
            this.who = who;
            socket.setTcpNoDelay(true);
            this.raw = new DeadlineInput(socket);
            this.in = new DataInputStream(new BufferedInputStream(raw));
            this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream()));
        }

        /** Every later read fails with a {@link SocketTimeoutException} once {@code nanos} has passed. */
        void deadline(long nanos) {
            raw.deadline = nanos;
        }

        static Conn open(Socket socket, String who) throws IOException {
            return new Conn(socket, who);
        }

        void closeQuietly() {
            TcpRendezvous.closeQuietly(socket);
        }
    }

    /**
     * The socket's input with an absolute deadline: each read waits at most until the deadline, so
     * a peer that trickles bytes cannot stretch a bounded wait (a per-read timeout alone would restart).
     */
    private static final class DeadlineInput extends InputStream {
        private final Socket socket;
        private final InputStream in;
        volatile long deadline = NO_DEADLINE;

        DeadlineInput(Socket socket) throws IOException {
            this.socket = socket;
            this.in = socket.getInputStream();
        }

        @Override
        public int read() throws IOException {
            arm();
            return in.read();
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            arm();
            return in.read(b, off, len);
        }

        private void arm() throws IOException {
            long d = deadline;
            if (d == NO_DEADLINE) {
                socket.setSoTimeout(0);
                return;
            }
            long nanos = d - System.nanoTime();
            if (nanos <= 0) {
                throw new SocketTimeoutException("deadline passed");
            }
            socket.setSoTimeout((int) Math.max(1, Math.min(Integer.MAX_VALUE, TimeUnit.NANOSECONDS.toMillis(nanos) + 1)));
        }
    }

    /** A plain-text refusal from the other side of an unauthenticated exchange: the joining rank retries. */
    private static final class Refused extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Refused(String message) {
            super(message, null, false, false);
        }
    }

    /** A connection that passed the handshake, with the claims its proof covers. */
    private record Joined(Conn conn, int worldSize, int rank, String host) {
    }

    /**
     * Rank 0's side of the join: one thread accepts, and every connection's handshake runs on its own
     * virtual thread, bounded by {@link #HANDSHAKE_LIMIT} and the overall deadline, so a slow, idle
     * or malicious connection cannot delay another. Authenticated joins are queued for the caller.
     */
    private static final class Listener implements AutoCloseable {
        private final ServerSocket server;
        private final RendezvousAuth auth;
        private final InetSocketAddress bind;
        private final long deadline;
        private final String self;
        private final BlockingQueue<Joined> joined = new LinkedBlockingQueue<>();
        private final Set<Socket> open = ConcurrentHashMap.newKeySet();
        private final Set<Thread> handshakes = ConcurrentHashMap.newKeySet();
        private final AtomicInteger pending = new AtomicInteger();
        private final AtomicInteger dropped = new AtomicInteger();
        private final Thread acceptor;
        private volatile boolean closing;

        private Listener(ServerSocket server, RendezvousAuth auth, InetSocketAddress bind, long deadline, String self) {
            this.server = server;
            this.auth = auth;
            this.bind = bind;
            this.deadline = deadline;
            this.self = self;
            this.acceptor = Thread.ofPlatform().daemon().name("moe4j-rendezvous-accept").unstarted(this::acceptLoop);
        }

        static Listener start(DistEnv env, RendezvousAuth auth, InetSocketAddress bind, long deadline, String self)
                throws IOException {
            ServerSocket server = new ServerSocket();
            try {
                server.setReuseAddress(true);
                server.bind(bind, Math.max(64, env.worldSize()));
            } catch (BindException e) {
                closeQuietly(server);
                throw new RendezvousException("rank 0 could not listen on " + bind + " (" + e.getMessage()
                        + "); is another job or another RANK=0 process using " + DistEnv.MASTER_PORT + "="
                        + env.masterPort() + "?", e);
            } catch (IOException e) {
                closeQuietly(server);
                throw e;
            }
            LOG.debug("rank 0 listening on {} for {} ranks of job '{}'", bind, env.worldSize() - 1, auth.jobId());
            Listener l = new Listener(server, auth, bind, deadline, self);
            l.acceptor.start();
            return l;
        }

        /** @return the next authenticated join, or null once the deadline has passed */
        Joined next(long deadlineNanos) {
            try {
                long nanos = deadlineNanos - System.nanoTime();
                Joined j = nanos <= 0 ? joined.poll() : joined.poll(nanos, TimeUnit.NANOSECONDS);
                if (j != null) {
                    open.remove(j.conn().socket);
                }
                return j;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new RendezvousException("rank 0 (" + self + ") interrupted while waiting for ranks to join", e);
            }
        }

        int dropped() {
            return dropped.get();
        }

        private void acceptLoop() {
            while (!closing) {
                Socket s;
                try {
                    s = server.accept();
                } catch (IOException e) {
                    if (closing || server.isClosed()) {
                        return;
                    }
                    // e.g. out of file descriptors under a flood of connections: keep serving once some close
                    LOG.warn("rank 0 rendezvous could not accept on {}: {}", bind, e.toString());
                    try {
                        Thread.sleep(POLL_MS);
                    } catch (InterruptedException ie) {
                        return;
                    }
                    continue;
                }
                if (pending.incrementAndGet() > MAX_PENDING_HANDSHAKES) {
                    pending.decrementAndGet();
                    drop(s, String.valueOf(s.getRemoteSocketAddress()),
                            "more than " + MAX_PENDING_HANDSHAKES + " handshakes in progress");
                    continue;
                }
                open.add(s);
                Thread t = Thread.ofVirtual().name("moe4j-rendezvous-handshake").unstarted(() -> {
                    try {
                        handshake(s);
                    } finally {
                        pending.decrementAndGet();
                        handshakes.remove(Thread.currentThread());
                    }
                });
                handshakes.add(t);
                t.start();
                if (closing) {
                    closeQuietly(s);
                }
            }
        }

        private void handshake(Socket socket) {
            String from = String.valueOf(socket.getRemoteSocketAddress());
            try {
                Conn conn = Conn.open(socket, "connection from " + from);
                conn.deadline(Math.min(deadline, System.nanoTime() + HANDSHAKE_LIMIT.toNanos()));
                Frame hello = readClear(conn);
                ByteBuffer b = ByteBuffer.wrap(hello.payload);
                if (hello.type != HELLO || b.remaining() < 8 || b.getInt() != MAGIC) {
                    drop(socket, from, "not a moe4j handshake (message type " + hello.type + ", "
                            + hello.payload.length + " bytes)");
                    return;
                }
                int version = b.getInt();
                if (version != VERSION) {
                    sendClearQuietly(conn, ERROR, "rank 0 (" + self + ") speaks rendezvous protocol version " + VERSION
                            + " but this rank speaks version " + version + " (mixed moe4j versions?)");
                    drop(socket, from, "speaks rendezvous protocol version " + version + ", not " + VERSION
                            + " (mixed moe4j versions?)");
                    return;
                }
                int n = b.getInt();
                if (n < 0 || n > b.remaining() - RendezvousCrypto.NONCE_BYTES
                        || b.remaining() != n + RendezvousCrypto.NONCE_BYTES) {
                    drop(socket, from, "malformed moe4j handshake");
                    return;
                }
                byte[] job = new byte[n];
                b.get(job);
                byte[] clientNonce = new byte[RendezvousCrypto.NONCE_BYTES];
                b.get(clientNonce);
                String jobId = new String(job, StandardCharsets.UTF_8);
                if (!jobId.equals(auth.jobId())) {
                    sendClearQuietly(conn, REFUSED, "rank 0 at " + bind + " serves job '" + auth.jobId()
                            + "', not job '" + printable(jobId) + "' (" + RendezvousAuth.JOB_ID + " differs)");
                    drop(socket, from, "asked for job '" + printable(jobId) + "' but this is job '" + auth.jobId() + "'");
                    return;
                }
                byte[] serverNonce = RendezvousCrypto.nonce();
                byte[] proof = RendezvousCrypto.serverProof(auth.key(), jobId, clientNonce, serverNonce);
                writeClear(conn, CHALLENGE, ByteBuffer.allocate(serverNonce.length + proof.length)
                        .put(serverNonce).put(proof).array());
                Frame join = readClear(conn);
                ByteBuffer j = ByteBuffer.wrap(join.payload);
                if (join.type != JOIN || j.remaining() < RendezvousCrypto.PROOF_BYTES + 12) {
                    drop(socket, from, "sent message type " + join.type + " of " + join.payload.length
                            + " bytes instead of a join");
                    return;
                }
                byte[] theirs = new byte[RendezvousCrypto.PROOF_BYTES];
                j.get(theirs);
                int world = j.getInt();
                int rank = j.getInt();
                int h = j.getInt();
                if (h < 0 || h != j.remaining()) {
                    drop(socket, from, "malformed join");
                    return;
                }
                byte[] hostBytes = new byte[h];
                j.get(hostBytes);
                String host = new String(hostBytes, StandardCharsets.UTF_8);
                byte[] expected = RendezvousCrypto.clientProof(auth.key(), jobId, clientNonce, serverNonce, world, rank,
                        host);
                if (!RendezvousCrypto.sameProof(expected, theirs)) {
                    sendClearQuietly(conn, REFUSED, "authentication failed for job '" + auth.jobId()
                            + "': the joining rank does not hold rank 0's secret (are " + RendezvousAuth.TOKEN + " / "
                            + RendezvousAuth.TOKEN_FILE + " the same on every rank?)");
                    drop(socket, from, "failed authentication (claimed rank " + rank + "): a wrong token,"
                            + " or not a rank of this job");
                    return;
                }
                conn.session = RendezvousCrypto.session(auth.key(), clientNonce, serverNonce, true);
                conn.authenticated = true;
                conn.deadline(NO_DEADLINE);
                conn.host = printable(host);
                joined.add(new Joined(conn, world, rank, conn.host));
            } catch (EOFException e) {
                drop(socket, from, closing ? "the join ended before its handshake finished"
                        : "closed the connection before finishing its handshake");
            } catch (SocketTimeoutException e) {
                drop(socket, from, "did not finish its handshake within " + human(HANDSHAKE_LIMIT)
                        + " or the join's deadline");
            } catch (IOException | RuntimeException e) {
                drop(socket, from, closing ? "the join ended before its handshake finished" : e.toString());
            }
        }

        private void drop(Socket socket, String from, String why) {
            int n = dropped.incrementAndGet(); // counted before the peer can see the close
            open.remove(socket);
            closeQuietly(socket);
            if (n <= MAX_LOGGED_DROPS) {
                LOG.warn("rank 0 rendezvous (job '{}') dropped a connection from {}: {}", auth.jobId(), from, why);
            } else {
                if (n == MAX_LOGGED_DROPS + 1) {
                    LOG.warn("rank 0 rendezvous (job '{}'): more than {} dropped connections; further ones at DEBUG",
                            auth.jobId(), MAX_LOGGED_DROPS);
                }
                LOG.debug("rank 0 rendezvous (job '{}') dropped a connection from {}: {}", auth.jobId(), from, why);
            }
        }

        private static void sendClearQuietly(Conn c, int type, String text) {
            try {
                writeClear(c, type, text.getBytes(StandardCharsets.UTF_8));
            } catch (IOException e) {
                LOG.debug("could not tell {}: {}", c.who, e.toString());
            }
        }

        /** Stops accepting, closes every connection not handed out, and waits briefly for the handshake threads. */
        @Override
        public void close() {
            closing = true;
            closeQuietly(server);
            for (Socket s : open) {
                closeQuietly(s);
            }
            for (Joined j; (j = joined.poll()) != null; ) {
                j.conn().closeQuietly();
            }
            try {
                acceptor.join(TimeUnit.SECONDS.toMillis(5));
                for (Thread t : handshakes) {
                    t.join(TimeUnit.SECONDS.toMillis(1));
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            for (Joined j; (j = joined.poll()) != null; ) {
                j.conn().closeQuietly();
            }
        }
    }
}
