package org.moe4j.cuda.comm;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.comm.internal.VirtualRankCommunicator;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.LocalGroupException;
import org.moe4j.dispatch.internal.Rendezvous;

/**
 * {@code W} in-process ranks sharing one GPU, one thread each: the expert-parallel group for
 * single-GPU hosts (NCCL refuses two ranks on one device). Collectives are device-to-device copies
 * between the ranks' {@link org.moe4j.cuda.DeviceBuffer}s behind the same
 * {@link org.moe4j.dispatch.Communicator} interface, with {@link LocalGroup}'s semantics: the same
 * results bit for bit (reductions in rank order, fp32 accumulation, done on the host), and the same
 * failure behaviour — a collective a rank never joins times out on every rank naming the missing
 * ranks, a rank that throws fails the others' current or next collective with its cause, and
 * {@link #run} then throws a {@link LocalGroupException} carrying every rank's error.
 *
 * <pre>{@code
 * try (CudaContext gpu = CudaContext.open(0)) {
 *     List<Float> losses = VirtualRankGroup.run(gpu, 4, comm -> trainStep(comm));
 * }
 * }</pre>
 *
 * <p>Every collective synchronizes the context before it reads the ranks' inputs and its own copy
 * stream before it returns, so its output is ready for any stream; this is a correctness tool and
 * a single-GPU fallback, not a fast path.
 */
public final class VirtualRankGroup {
    /** Default collective timeout. */
    public static final Duration DEFAULT_TIMEOUT = LocalGroup.DEFAULT_TIMEOUT;

    private VirtualRankGroup() {
    }

    /**
     * Runs {@code body} on {@code world} virtual ranks with the default timeout.
     *
     * @param context the shared GPU
     * @param world   number of ranks, ≥ 1
     * @param body    the per-rank code
     * @param <R>     result type
     * @return results indexed by rank
     * @throws LocalGroupException if any rank failed
     */
    public static <R> List<R> run(CudaContext context, int world, LocalGroup.RankBody<R> body) {
        return run(context, world, DEFAULT_TIMEOUT, body);
    }

    /**
     * Runs {@code body} on {@code world} virtual ranks.
     *
     * @param context the shared GPU
     * @param world   number of ranks, ≥ 1
     * @param timeout longest wait of a rank inside one collective
     * @param body    the per-rank code
     * @param <R>     result type
     * @return results indexed by rank
     * @throws IllegalArgumentException if {@code world < 1} or the timeout is not positive
     * @throws LocalGroupException      if any rank failed
     */
    public static <R> List<R> run(CudaContext context, int world, Duration timeout, LocalGroup.RankBody<R> body) {
        Objects.requireNonNull(context, "context");
        Objects.requireNonNull(body, "body");
        if (world < 1) {
            throw new IllegalArgumentException("world must be >= 1, got " + world);
        }
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
        Rendezvous rv = new Rendezvous(world, timeout.toNanos());
        Object[] results = new Object[world];
        Throwable[] errors = new Throwable[world];
        Thread[] threads = new Thread[world];
        for (int r = 0; r < world; r++) {
            int rank = r;
            threads[r] = new Thread(() -> {
                Throwable error = null;
                try {
                    context.makeCurrent();
                    try (VirtualRankCommunicator comm = new VirtualRankCommunicator(rv, rank, context)) {
                        results[rank] = body.run(comm);
                    }
                } catch (Throwable t) {
                    error = t;
                    errors[rank] = t;
                } finally {
                    rv.depart(rank, error);
                }
            }, "moe4j-virtual-rank-" + r);
            threads[r].setDaemon(true);
        }
        for (Thread t : threads) {
            t.start();
        }
        awaitAll(rv, threads, errors);
        boolean failed = Arrays.stream(errors).anyMatch(Objects::nonNull);
        if (!failed) {
            List<R> out = new ArrayList<>(world);
            for (Object o : results) {
                @SuppressWarnings("unchecked")
                R cast = (R) o;
                out.add(cast);
            }
            return out;
        }
        CommunicatorException group = rv.failure();
        Throwable root = group != null ? group.getCause() : null;
        if (root == null) {
            root = Arrays.stream(errors).filter(e -> e != null && !(e instanceof CommunicatorException))
                    .findFirst().orElse(null);
        }
        String message = group != null ? group.getMessage() : "a rank failed: " + root;
        throw new LocalGroupException("VirtualRankGroup of " + world + " ranks on " + context.location() + " failed: "
                + message, root, Arrays.asList(errors));
    }

    /** Joins every rank; once the group has failed, waits at most one more timeout, then abandons stragglers. */
    private static void awaitAll(Rendezvous rv, Thread[] threads, Throwable[] errors) {
        long grace = rv.timeoutNanos();
        for (Thread t : threads) {
            while (t.isAlive()) {
                try {
                    t.join(50);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    rv.fail("the thread running VirtualRankGroup.run was interrupted", e);
                    for (Thread other : threads) {
                        other.interrupt();
                    }
                    return;
                }
                if (t.isAlive() && rv.failure() != null && System.nanoTime() - rv.failedAtNanos() > grace) {
                    for (int s = 0; s < threads.length; s++) {
                        if (threads[s].isAlive()) {
                            threads[s].interrupt();
                            if (errors[s] == null) {
                                errors[s] = new CommunicatorException("virtual rank " + s + " did not finish within "
                                        + grace / 1_000_000 + " ms after the group failed; abandoned");
                            }
                        }
                    }
                    return;
                }
            }
        }
    }
}
