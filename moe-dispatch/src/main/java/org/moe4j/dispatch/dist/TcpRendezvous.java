package org.moe4j.dispatch.dist;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
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
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A small TCP rendezvous for bootstrapping a distributed job (for example sharing the 128-byte
 * NCCL unique id). Rank 0 listens on {@code MASTER_PORT}; every other rank connects to
 * {@code MASTER_ADDR:MASTER_PORT}, retrying with backoff until the deadline. Ranks may live on
 * different hosts: nothing assumes a shared host, file system or clock.
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

    private static final int MAGIC = 0x4d4f4534; // "MOE4"
    private static final int VERSION = 1;
    /** Largest payload of one message (bytes); larger blobs are refused. */
    public static final int MAX_BLOB_BYTES = 1 << 24;

    private static final int HELLO = 1;
    private static final int WELCOME = 2;
    private static final int ERROR = 3;
    private static final int BROADCAST = 4;
    private static final int GATHER = 5;
    private static final int GATHERED = 6;

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

    private TcpRendezvous(DistEnv env, Duration timeout, String self, Conn[] peers, Conn master) {
        this.env = env;
        this.timeout = timeout;
        this.self = self;
        this.peers = peers;
        this.master = master;
    }

    /**
     * Joins the group described by {@code env}: rank 0 listens and waits for every other rank,
     * the others connect to rank 0. Returns when all {@code worldSize} ranks have joined.
     * A world of one opens no socket.
     *
     * @param env     this process's place in the job
     * @param timeout how long to wait for the group to form, and for each later collective
     * @return the joined rendezvous; close it when done
     * @throws RendezvousException if the group does not form in time or is inconsistent (the
     *                             message names the missing or conflicting ranks)
     */
    public static TcpRendezvous join(DistEnv env, Duration timeout) {
        Objects.requireNonNull(env, "env");
        Objects.requireNonNull(timeout, "timeout");
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
        String self = describeSelf(env.rank());
        if (env.worldSize() == 1) {
            return new TcpRendezvous(env, timeout, self, new Conn[1], null);
        }
        return env.isMaster() ? joinAsMaster(env, timeout, self) : joinAsPeer(env, timeout, self);
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

    private static TcpRendezvous joinAsMaster(DistEnv env, Duration timeout, String self) {
        int world = env.worldSize();
        long deadline = System.nanoTime() + timeout.toNanos();
        Conn[] peers = new Conn[world];
        List<Conn> refused = new ArrayList<>();
        String error = null;
        int joined = 0;
        int contacts = 0;
        InetSocketAddress bind = bindAddress(env);
        try (ServerSocket server = new ServerSocket()) {
            server.setReuseAddress(true);
            try {
                server.bind(bind, world);
            } catch (BindException e) {
                throw new RendezvousException("rank 0 could not listen on " + bind + " (" + e.getMessage()
                        + "); is another job or another RANK=0 process using " + DistEnv.MASTER_PORT + "="
                        + env.masterPort() + "?", e);
            }
            LOG.debug("rank 0 listening on {} for {} ranks", bind, world - 1);
            while (error == null ? joined < world - 1 : contacts < world - 1) {
                long remaining = remainingMs(deadline);
                if (remaining <= 0) {
                    break;
                }
                server.setSoTimeout((int) Math.min(remaining, Integer.MAX_VALUE));
                Socket socket;
                try {
                    socket = server.accept();
                } catch (SocketTimeoutException e) {
                    break;
                }
                Conn conn;
                Hello hello;
                try {
                    conn = Conn.open(socket, "connection from " + socket.getRemoteSocketAddress());
                    socket.setSoTimeout((int) Math.max(1, Math.min(remaining, MAX_CONNECT_ATTEMPT_MS)));
                    hello = Hello.read(conn);
                } catch (IOException e) {
                    LOG.warn("rank 0 ignored a connection from {} that sent no valid moe4j handshake: {}",
                            socket.getRemoteSocketAddress(), e.toString());
                    closeQuietly(socket);
                    continue;
                }
                contacts++;
                conn.who = "rank " + hello.rank + " (" + hello.host + ")";
                conn.host = hello.host;
                String verdict = null;
                if (hello.version != VERSION) {
                    verdict = conn.who + " speaks rendezvous protocol version " + hello.version
                            + " but rank 0 speaks version " + VERSION + " (mixed moe4j versions?)";
                } else if (hello.worldSize != world) {
                    verdict = conn.who + " has " + DistEnv.WORLD_SIZE + "=" + hello.worldSize + " but rank 0 ("
                            + self + ") has " + DistEnv.WORLD_SIZE + "=" + world;
                } else if (hello.rank == 0) {
                    verdict = "two processes claim " + DistEnv.RANK + "=0: " + self + " and " + hello.host;
                } else if (hello.rank < 0 || hello.rank >= world) {
                    verdict = conn.who + " is outside [0, " + DistEnv.WORLD_SIZE + "=" + world + ")";
                } else if (peers[hello.rank] != null) {
                    verdict = "two processes claim " + DistEnv.RANK + "=" + hello.rank + ": "
                            + peers[hello.rank].host + " and " + hello.host;
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
                    peers[hello.rank] = conn;
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
                error = "rendezvous timed out after " + human(timeout) + ": " + (joined + 1) + " of " + world
                        + " ranks joined; missing ranks " + missing + " (rank 0 " + self + " listens on "
                        + bind + ", " + DistEnv.MASTER_ADDR + "=" + env.masterAddr() + ")";
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
                peers[r].socket.setSoTimeout(0);
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
        }
        LOG.debug("rank 0: all {} ranks joined", world);
        return new TcpRendezvous(env, timeout, self, peers, null);
    }

    private static TcpRendezvous joinAsPeer(DistEnv env, Duration timeout, String self) {
        long deadline = System.nanoTime() + timeout.toNanos();
        String target = env.masterAddr() + ":" + env.masterPort();
        long backoff = 20;
        Exception last = null;
        Socket socket = null;
        while (socket == null) {
            long remaining = remainingMs(deadline);
            if (remaining <= 0) {
                throw new RendezvousException("rank " + env.rank() + " (" + self + ") could not reach rank 0 at "
                        + target + " within " + human(timeout) + " (last error: " + last + "); is rank 0 running,"
                        + " and are " + DistEnv.MASTER_ADDR + "/" + DistEnv.MASTER_PORT + " the same on every rank?",
                        last);
            }
            Socket s = new Socket();
            try {
                InetSocketAddress addr = new InetSocketAddress(env.masterAddr(), env.masterPort());
                if (addr.isUnresolved()) {
                    throw new UnknownHostException(env.masterAddr());
                }
                s.connect(addr, (int) Math.max(1, Math.min(remaining, MAX_CONNECT_ATTEMPT_MS)));
                socket = s;
            } catch (IOException e) {
                last = e;
                closeQuietly(s);
                try {
                    Thread.sleep(Math.max(1, Math.min(backoff, remainingMs(deadline))));
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new RendezvousException("rank " + env.rank() + " interrupted while connecting to " + target, ie);
                }
                backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
            }
        }
        Conn master;
        try {
            master = Conn.open(socket, "rank 0 at " + target);
            master.out.writeInt(HELLO);
            byte[] host = self.getBytes(StandardCharsets.UTF_8);
            master.out.writeInt(20 + host.length);
            master.out.writeInt(MAGIC);
            master.out.writeInt(VERSION);
            master.out.writeInt(env.worldSize());
            master.out.writeInt(env.rank());
            master.out.writeInt(host.length);
            master.out.write(host);
            master.out.flush();
        } catch (IOException e) {
            closeQuietly(socket);
            throw new RendezvousException("rank " + env.rank() + " could not send its handshake to rank 0 at "
                    + target + ": " + e, e);
        }
        TcpRendezvous rv = new TcpRendezvous(env, timeout, self, null, master);
        rv.expectFromMasterRaw(WELCOME, "join", deadline);
        socketTimeoutQuietly(socket, 0);
        return rv;
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
                master.socket.setSoTimeout(0);
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
                p.socket.setSoTimeout((int) Math.min(wait, Integer.MAX_VALUE));
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
            master.socket.setSoTimeout((int) Math.min(wait, Integer.MAX_VALUE));
            f = readFrame(master);
        } catch (SocketTimeoutException e) {
            throw fail("rank " + env.rank() + " (" + self + ") got no answer from " + master.who + " for " + what
                    + " within " + human(timeout) + " (rank 0 is stuck, or other ranks never arrived)", e);
        } catch (IOException e) {
            throw fail(master.who + " closed the connection during " + what + " of rank " + env.rank()
                    + " (" + e + "); rank 0 failed or exited", e);
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

    private static void writeFrame(Conn c, int type, byte[] payload) throws IOException {
        c.out.writeInt(type);
        c.out.writeInt(payload.length);
        c.out.write(payload);
        c.out.flush();
    }

    private static Frame readFrame(Conn c) throws IOException {
        int type = c.in.readInt();
        int length = c.in.readInt();
        if (length < 0 || length > MAX_BLOB_BYTES + (1 << 16)) {
            throw new IOException("malformed message from " + c.who + ": length " + length);
        }
        byte[] payload = new byte[length];
        c.in.readFully(payload);
        return new Frame(type, payload);
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

    private static void closeQuietly(Socket s) {
        try {
            s.close();
        } catch (IOException e) {
            LOG.trace("close", e);
        }
    }

    private static void socketTimeoutQuietly(Socket s, int ms) {
        try {
            s.setSoTimeout(ms);
        } catch (IOException e) {
            LOG.trace("setSoTimeout", e);
        }
    }

    private record Frame(int type, byte[] payload) {
        String text() {
            return new String(payload, StandardCharsets.UTF_8);
        }
    }

    private record Hello(int version, int worldSize, int rank, String host) {
        static Hello read(Conn c) throws IOException {
            int type = c.in.readInt();
            int length = c.in.readInt();
            if (type != HELLO || length < 20 || length > 4096) {
                throw new IOException("not a moe4j handshake (type " + type + ", length " + length + ")");
            }
            byte[] payload = new byte[length];
            c.in.readFully(payload);
            ByteBuffer b = ByteBuffer.wrap(payload);
            if (b.getInt() != MAGIC) {
                throw new IOException("not a moe4j handshake (bad magic)");
            }
            int version = b.getInt();
            int world = b.getInt();
            int rank = b.getInt();
            int n = b.getInt();
            if (n < 0 || n > b.remaining()) {
                throw new IOException("malformed moe4j handshake");
            }
            byte[] host = Arrays.copyOfRange(payload, b.position(), b.position() + n);
            return new Hello(version, world, rank, new String(host, StandardCharsets.UTF_8));
        }
    }

    /** One TCP connection with its buffered streams and a description for messages. */
    private static final class Conn {
        final Socket socket;
        final DataInputStream in;
        final DataOutputStream out;
        String who;
        String host = "?";

        private Conn(Socket socket, String who) throws IOException {
            this.socket = socket;
            this.who = who;
            socket.setTcpNoDelay(true);
            this.in = new DataInputStream(new BufferedInputStream(socket.getInputStream()));
            this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream()));
        }

        static Conn open(Socket socket, String who) throws IOException {
            return new Conn(socket, who);
        }

        void closeQuietly() {
            TcpRendezvous.closeQuietly(socket);
        }
    }
}
