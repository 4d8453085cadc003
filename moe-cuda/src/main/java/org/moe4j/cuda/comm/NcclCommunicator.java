package org.moe4j.cuda.comm;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntToLongFunction;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.CudaEvent;
import org.moe4j.cuda.CudaException;
import org.moe4j.cuda.CudaStream;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.DevicePool;
import org.moe4j.cuda.NcclComm;
import org.moe4j.cuda.comm.internal.CudaQuery;
import org.moe4j.cuda.comm.internal.RankOrderReduce;
import org.moe4j.cuda.comm.internal.RowLayout;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.ReduceOp;
import org.moe4j.dispatch.dist.DistEnv;
import org.moe4j.dispatch.dist.RendezvousAuth;
import org.moe4j.dispatch.dist.TcpRendezvous;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A {@link Communicator} over NCCL, one process per GPU, on {@link DeviceBuffer}s.
 *
 * <p>Created from the torchrun environment ({@link DistEnv}): every rank joins a
 * {@link TcpRendezvous}, checks that NCCL and its device are usable and tells the others, rank 0
 * makes the NCCL unique id and broadcasts it, then all ranks call {@code ncclCommInitRank}.
 *
 * <p>Collectives: all-to-all-v of rows is a group of {@code ncclSend}/{@code ncclRecv} (one pair
 * per peer, self included), all-gather uses {@code ncclAllGather} or grouped send/recv for
 * variable rows. Reductions keep the {@link Communicator} contract (rank order, fp32
 * accumulation, identical on every rank) by gathering the ranks' inputs on the device and reducing
 * them in rank order, so results are bitwise equal to {@code LocalGroup}'s; this costs a host
 * round trip and is meant for counts, losses and small gradients, not as a fast path.
 *
 * <p>Ordering and failure: every call is queued on this communicator's stream after all work
 * queued in the context so far, and returns when it has completed (its output is ready for any
 * stream). A watchdog bounds every call: the NCCL calls are issued from a helper thread and the
 * stream is polled ({@code cuEventQuery}) together with {@code ncclCommGetAsyncError}; on an
 * asynchronous error or after the timeout the communicator is aborted ({@code ncclCommAbort}) and
 * a {@link CommunicatorException} names the call, the rank and the reason. The peers of a failed
 * or vanished rank fail the same way, at the latest after their timeout — never a hang. After a
 * failure every call throws. Not thread-safe: one thread per rank issues the collectives.
 */
public final class NcclCommunicator implements Communicator {
    private static final Logger LOG = LoggerFactory.getLogger(NcclCommunicator.class);

    /** Default timeout of the bootstrap and of each collective. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofMinutes(5);
    private static final long MAX_POLL_NANOS = 1_000_000;

    private final CudaContext context;
    private final boolean ownsContext;
    private final NcclComm comm;
    private final int rank;
    private final int world;
    private final Duration timeout;
    private final CudaStream stream;
    private final CudaEvent done;
    private final DevicePool pool;
    private final ExecutorService issuer;
    private long calls;
    private volatile String aborted;
    private boolean closed;

    private NcclCommunicator(CudaContext context, boolean ownsContext, NcclComm comm, Duration timeout) {
        this.context = context;
        this.ownsContext = ownsContext;
        this.comm = comm;
        this.rank = comm.rank();
        this.world = comm.worldSize();
        this.timeout = timeout;
        this.stream = context.createStream();
        this.done = context.createEvent(false);
        this.pool = context.createPool();
        this.issuer = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "moe4j-nccl-rank-" + comm.rank());
            t.setDaemon(true);
            return t;
        });
    }

    /**
     * Bootstraps from the process environment with the {@linkplain #DEFAULT_TIMEOUT default timeout},
     * on GPU {@code LOCAL_RANK}.
     *
     * @return this process's communicator; close it when done (it then releases the device context)
     * @throws CommunicatorException if the bootstrap fails on any rank (the message names it)
     */
    public static NcclCommunicator fromEnvironment() {
        DistEnv env = DistEnv.fromEnvironment();
        return create(null, env, DEFAULT_TIMEOUT);
    }

    /**
     * Bootstraps one rank, with the rendezvous job id and secret of the process environment
     * ({@link RendezvousAuth#fromEnvironment()}; not needed at world size 1).
     *
     * @param context the device of this rank, or null to open GPU {@code env.localRank()} (then owned and closed by the communicator)
     * @param env     this rank's place in the job
     * @param timeout bound of the bootstrap and of every later collective
     * @return the communicator
     * @throws NullPointerException     if {@code env} or {@code timeout} is null
     * @throws IllegalArgumentException if the timeout is not positive, or the job id or secret is missing or invalid
     *                                  in the environment (named), checked before anything is opened
     * @throws CommunicatorException    if NCCL or the device is unusable on any rank, the rendezvous fails, or NCCL init fails
     */
    public static NcclCommunicator create(CudaContext context, DistEnv env, Duration timeout) {
        Objects.requireNonNull(env, "env");
        checkTimeout(timeout);
        return create(context, env, env.worldSize() == 1 ? null : RendezvousAuth.fromEnvironment(), timeout);
    }

    /**
     * Bootstraps one rank of the job {@code auth} names.
     *
     * @param context the device of this rank, or null to open GPU {@code env.localRank()} (then owned and closed by the communicator)
     * @param env     this rank's place in the job
     * @param auth    the rendezvous job id and shared secret, the same on every rank; may be null only at world size 1
     * @param timeout bound of the bootstrap and of every later collective
     * @return the communicator
     * @throws NullPointerException     if {@code env} or {@code timeout} is null, or {@code auth} is null at a world size above 1
     * @throws IllegalArgumentException if the timeout is not positive
     * @throws CommunicatorException    if NCCL or the device is unusable on any rank, the rendezvous fails, or NCCL init fails
     */
    public static NcclCommunicator create(CudaContext context, DistEnv env, RendezvousAuth auth, Duration timeout) {
        Objects.requireNonNull(env, "env");
        checkTimeout(timeout);
        if (env.worldSize() > 1) {
            Objects.requireNonNull(auth, "auth");
        }
        CudaContext ctx = context;
        boolean owns = false;
        String problem = null;
        try {
            NcclComm.version();
            if (ctx == null) {
                ctx = CudaContext.open(env.localRank());
                owns = true;
            }
        } catch (RuntimeException | LinkageError e) {
            problem = "rank " + env.rank() + ": " + e.getMessage();
        }
        try (TcpRendezvous rv = auth == null ? TcpRendezvous.join(env, timeout) : TcpRendezvous.join(env, auth, timeout)) {
            byte[][] status = rv.allGather((problem == null ? "" : problem).getBytes(StandardCharsets.UTF_8));
            List<String> bad = new ArrayList<>();
            for (byte[] s : status) {
                if (s.length > 0) {
                    bad.add(new String(s, StandardCharsets.UTF_8));
                }
            }
            if (!bad.isEmpty()) {
                throw new CommunicatorException("NCCL bootstrap: not every rank can run NCCL: " + String.join("; ", bad));
            }
            byte[] id = rv.broadcast(env.isMaster() ? NcclComm.uniqueId() : null);
            NcclComm comm = initWithin(ctx, env, id, timeout);
            LOG.debug("rank {} of {}: NCCL communicator on {}", env.rank(), env.worldSize(), ctx.location());
            return new NcclCommunicator(ctx, owns, comm, timeout);
        } catch (RuntimeException e) {
            if (owns) {
                ctx.close();
            }
            if (e instanceof CommunicatorException c) {
                throw c;
            }
            throw new CommunicatorException("NCCL bootstrap of rank " + env.rank() + " of " + env.worldSize()
                    + " failed: " + e.getMessage(), e);
        }
    }

    private static void checkTimeout(Duration timeout) {
        Objects.requireNonNull(timeout, "timeout");
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
    }

    /** {@code ncclCommInitRank} blocks until every rank joins; run it where a vanished peer cannot hang us. */
    private static NcclComm initWithin(CudaContext ctx, DistEnv env, byte[] id, Duration timeout) {
        ExecutorService init = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "moe4j-nccl-init-rank-" + env.rank());
            t.setDaemon(true);
            return t;
        });
        try {
            Future<NcclComm> f = init.submit(() -> NcclComm.initRank(ctx, env.worldSize(), id, env.rank()));
            return f.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            throw new CommunicatorException("ncclCommInitRank on rank " + env.rank() + " of " + env.worldSize()
                    + " did not complete within " + timeout + " (a peer failed or exited during NCCL init)", e);
        } catch (ExecutionException e) {
            throw new CommunicatorException("ncclCommInitRank on rank " + env.rank() + " of " + env.worldSize()
                    + " failed: " + e.getCause().getMessage(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new CommunicatorException("interrupted in ncclCommInitRank on rank " + env.rank(), e);
        } finally {
            init.shutdown();
        }
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return world;
    }

    /**
     * Returns the stream the collectives run on.
     * @return the stream the collectives run on
     */
    public CudaStream stream() {
        return stream;
    }

    /**
     * Returns the device context of this rank.
     * @return the device context of this rank
     */
    public CudaContext context() {
        return context;
    }

    @Override
    public void allToAll(Buffer send, Buffer recv) {
        DeviceBuffer s = device("allToAll send", send);
        DeviceBuffer r = device("allToAll recv", recv);
        if (RowLayout.rows(s) != world) {
            throw new IllegalArgumentException("allToAll send: expected dim 0 = " + world + " (one block per rank) but got "
                    + s.shape());
        }
        if (r.dtype() != s.dtype() || !r.shape().equals(s.shape())) {
            throw new IllegalArgumentException("allToAll: recv " + r.describe() + " must match send " + s.describe());
        }
        long[] ones = new long[world];
        java.util.Arrays.fill(ones, 1);
        allToAllV(s, ones, r, ones);
    }

    @Override
    public void allToAllV(Buffer send, long[] sendRows, Buffer recv, long[] recvRows) {
        DeviceBuffer s = device("allToAllV send", send);
        DeviceBuffer r = device("allToAllV recv", recv);
        RowLayout.checkCounts("allToAllV sendRows", sendRows, world, s);
        RowLayout.checkCounts("allToAllV recvRows", recvRows, world, r);
        if (r.dtype() != s.dtype() || RowLayout.rowBytes(r) != RowLayout.rowBytes(s)) {
            throw new IllegalArgumentException("allToAllV: recv " + r.describe() + " and send " + s.describe()
                    + " differ in dtype or row size");
        }
        long[] sr = sendRows.clone();
        long[] rr = recvRows.clone();
        long rowElems = RowLayout.rowElements(s);
        exchangeRows("allToAllV", s, p -> RowLayout.prefix(sr, p), p -> sr[p], r, rr, rowElems);
    }

    /**
     * One NCCL group of point-to-point transfers: to each peer {@code p}, {@code sendRows(p)} rows of
     * {@code s} from row {@code sendStart(p)}; from {@code p}, {@code recvRows[p]} rows into {@code r}
     * after those of the lower ranks. Empty transfers are skipped.
     */
    private void exchangeRows(String what, DeviceBuffer s, IntToLongFunction sendStart, IntToLongFunction sendRows,
                              DeviceBuffer r, long[] recvRows, long rowElems) {
        collective(what, () -> {
            List<DeviceBuffer> views = new ArrayList<>();
            try {
                NcclComm.groupStart();
                try {
                    for (int p = 0; p < world; p++) {
                        long n = sendRows.applyAsLong(p);
                        if (n > 0) {
                            comm.send(rowsView(s, sendStart.applyAsLong(p), n, rowElems, views), p, stream);
                        }
                        if (recvRows[p] > 0) {
                            comm.recv(rowsView(r, RowLayout.prefix(recvRows, p), recvRows[p], rowElems, views), p, stream);
                        }
                    }
                } finally {
                    NcclComm.groupEnd();
                }
            } finally {
                views.forEach(DeviceBuffer::close);
            }
        });
    }

    @Override
    public void allReduce(Buffer buffer, ReduceOp op) {
        DeviceBuffer b = device("allReduce buffer", buffer);
        Objects.requireNonNull(op, "op");
        long n = b.numel();
        try (DeviceBuffer gathered = pool.allocateUninitialized(b.dtype(), Shape.of(world * n))) {
            collective("allReduce (gather)", () -> {
                try (DeviceBuffer flat = b.view(b.dtype(), Shape.of(n), 0)) {
                    comm.allGather(flat, gathered, stream);
                }
            });
            reduceOnHost("allReduce", gathered, n, op, b);
        }
    }

    @Override
    public void allGather(Buffer send, Buffer recv) {
        DeviceBuffer s = device("allGather send", send);
        DeviceBuffer r = device("allGather recv", recv);
        if (r.dtype() != s.dtype() || r.numel() != s.numel() * world) {
            throw new IllegalArgumentException("allGather: recv " + r.describe() + " must hold " + world + " x send "
                    + s.describe());
        }
        collective("allGather", () -> {
            try (DeviceBuffer sf = s.view(s.dtype(), Shape.of(s.numel()), 0);
                 DeviceBuffer rf = r.view(r.dtype(), Shape.of(r.numel()), 0)) {
                comm.allGather(sf, rf, stream);
            }
        });
    }

    @Override
    public void allGatherV(Buffer send, Buffer recv, long[] recvRows) {
        DeviceBuffer s = device("allGatherV send", send);
        DeviceBuffer r = device("allGatherV recv", recv);
        RowLayout.checkCounts("allGatherV recvRows", recvRows, world, r);
        if (RowLayout.rows(s) != recvRows[rank]) {
            throw new IllegalArgumentException("allGatherV: send has " + RowLayout.rows(s) + " rows but recvRows[" + rank
                    + "] = " + recvRows[rank]);
        }
        if (r.dtype() != s.dtype() || RowLayout.rowBytes(r) != RowLayout.rowBytes(s)) {
            throw new IllegalArgumentException("allGatherV: recv " + r.describe() + " and send " + s.describe()
                    + " differ in dtype or row size");
        }
        long[] rr = recvRows.clone();
        long rowElems = RowLayout.rowElements(r);
        exchangeRows("allGatherV", s, p -> 0, p -> rr[rank], r, rr, rowElems);
    }

    @Override
    public void reduceScatterV(Buffer send, long[] rows, Buffer recv, ReduceOp op) {
        DeviceBuffer s = device("reduceScatterV send", send);
        DeviceBuffer r = device("reduceScatterV recv", recv);
        Objects.requireNonNull(op, "op");
        RowLayout.checkCounts("reduceScatterV rows", rows, world, s);
        if (RowLayout.rows(r) != rows[rank] || r.dtype() != s.dtype() || RowLayout.rowBytes(r) != RowLayout.rowBytes(s)) {
            throw new IllegalArgumentException("reduceScatterV: recv " + r.describe() + " must be " + s.dtype() + " with "
                    + rows[rank] + " rows (rows[" + rank + "]) of the send row size");
        }
        long[] blocks = rows.clone();
        long rowElems = RowLayout.rowElements(s);
        long mine = blocks[rank] * rowElems;
        try (DeviceBuffer gathered = pool.allocateUninitialized(s.dtype(), Shape.of(world * mine))) {
            collective("reduceScatterV (exchange)", () -> {
                List<DeviceBuffer> views = new ArrayList<>();
                try {
                    NcclComm.groupStart();
                    try {
                        for (int p = 0; p < world; p++) {
                            if (blocks[p] > 0) {
                                comm.send(rowsView(s, RowLayout.prefix(blocks, p), blocks[p], rowElems, views), p, stream);
                            }
                            if (mine > 0) {
                                comm.recv(flatView(gathered, p * mine, mine, views), p, stream);
                            }
                        }
                    } finally {
                        NcclComm.groupEnd();
                    }
                } finally {
                    views.forEach(DeviceBuffer::close);
                }
            });
            reduceOnHost("reduceScatterV", gathered, mine, op, r);
        }
    }

    @Override
    public void barrier() {
        checkUsable();
        try (DeviceBuffer token = pool.allocate(DType.I32, Shape.of(1))) {
            collective("barrier", () -> comm.allReduce(token, token, NcclComm.ReduceOp.SUM, stream));
        }
    }

    /** Destroys the NCCL communicator (after its queued work), the stream and, if owned, the context. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        issuer.shutdownNow();
        try {
            if (aborted == null) {
                comm.close();
            }
        } finally {
            done.close();
            stream.close();
            pool.close();
            if (ownsContext) {
                context.close();
            }
        }
    }

    // ------------------------------------------------------------------------------ internals

    /**
     * Issues {@code enqueue} on the helper thread after all earlier work of the context, then waits
     * for the stream; aborts on error or timeout.
     */
    private void collective(String what, Runnable enqueue) {
        checkUsable();
        String call = what + " #" + (++calls);
        long deadline = System.nanoTime() + timeout.toNanos();
        context.synchronize();
        Future<?> issued = issuer.submit(() -> {
            context.makeCurrent();
            enqueue.run();
        });
        try {
            issued.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            throw abort(call + ": the NCCL calls did not return within " + timeout
                    + " (a peer is missing, failed, or called a different collective)", e);
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof IllegalArgumentException iae) {
                throw iae;
            }
            throw abort(call + ": " + cause.getMessage(), cause);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw abort(call + ": interrupted", e);
        }
        awaitStream(call, deadline);
    }

    /** Polls the stream's completion and NCCL's asynchronous error until the deadline. */
    private void awaitStream(String call, long deadline) {
        done.record(stream);
        long pause = 10_000;
        while (true) {
            context.makeCurrent();
            int status = CudaQuery.cuEventQuery(done.handle());
            if (status == CudaQuery.CUDA_SUCCESS) {
                return;
            }
            if (status != CudaQuery.CUDA_ERROR_NOT_READY) {
                throw abort(call + ": the stream failed: " + CudaException.describe(status), null);
            }
            try {
                comm.checkAsyncError();
            } catch (RuntimeException e) {
                throw abort(call + ": NCCL reported an asynchronous error: " + e.getMessage(), e);
            }
            if (System.nanoTime() - deadline > 0) {
                throw abort(call + " did not complete within " + timeout
                        + " (a peer is missing, failed, or called a different collective or row counts)", null);
            }
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, MAX_POLL_NANOS);
        }
    }

    private void reduceOnHost(String what, DeviceBuffer gathered, long n, ReduceOp op, DeviceBuffer out) {
        try (HostBuffer all = HostBuffer.allocate(gathered.dtype(), gathered.shape());
             HostBuffer result = HostBuffer.allocate(out.dtype(), out.shape())) {
            gathered.copyToAsync(all, stream);
            awaitStream(what + " (to host)", System.nanoTime() + timeout.toNanos());
            RankOrderReduce.reduce(out.dtype(), op, all.segment(), world, n, result.segment());
            out.copyFromAsync(result, stream);
            awaitStream(what + " (to device)", System.nanoTime() + timeout.toNanos());
        }
    }

    private CommunicatorException abort(String reason, Throwable cause) {
        String message = "NCCL rank " + rank + " of " + world + ": " + reason + "; communicator aborted";
        if (aborted == null) {
            aborted = message;
            LOG.error(message);
            try {
                comm.abort();
            } catch (RuntimeException e) {
                LOG.warn("ncclCommAbort on rank {} failed: {}", rank, e.toString());
            }
        }
        return new CommunicatorException(message, cause);
    }

    private void checkUsable() {
        if (closed) {
            throw new IllegalStateException("NcclCommunicator of rank " + rank + " is closed");
        }
        if (aborted != null) {
            throw new CommunicatorException("NcclCommunicator of rank " + rank + " is unusable after: " + aborted);
        }
    }

    private DeviceBuffer device(String what, Buffer b) {
        checkUsable();
        Objects.requireNonNull(b, what);
        if (b instanceof DeviceBuffer d) {
            if (!d.device().equals(context.location())) {
                throw new IllegalArgumentException(what + ": " + d.describe() + " is not on this rank's device "
                        + context.location());
            }
            return d;
        }
        throw new IllegalArgumentException(what + ": NcclCommunicator needs device buffers but got "
                + b.getClass().getSimpleName() + " on " + b.device());
    }

    private static DeviceBuffer rowsView(DeviceBuffer b, long firstRow, long rows, long rowElems, List<DeviceBuffer> views) {
        return flatView(b, firstRow * rowElems, rows * rowElems, views);
    }

    private static DeviceBuffer flatView(DeviceBuffer b, long firstElem, long elems, List<DeviceBuffer> views) {
        DeviceBuffer v = b.view(b.dtype(), Shape.of(elems), firstElem * b.dtype().byteSize());
        views.add(v);
        return v;
    }
}
