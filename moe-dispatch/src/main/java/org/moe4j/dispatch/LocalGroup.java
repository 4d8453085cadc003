package org.moe4j.dispatch;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.moe4j.dispatch.internal.LocalCommunicator;
import org.moe4j.dispatch.internal.Rendezvous;

/**
 * {@code W} in-process ranks, one thread each, sharing memory: the expert-parallel group used for
 * tests, single-machine training and as the reference for real communicators.
 *
 * <pre>{@code
 * List<Float> losses = LocalGroup.run(4, comm -> trainStep(comm));
 * }</pre>
 *
 * <p>Failure is never a hang: a collective that some rank does not join within the timeout fails
 * on every rank with a message naming the missing ranks; a rank that finishes without joining a
 * collective the others wait in fails it at once; a rank that throws makes every other rank's
 * current or next collective throw a {@link CommunicatorException} whose cause is that exception.
 * {@link #run} then throws a {@link LocalGroupException} carrying every rank's error.
 */
public final class LocalGroup {
    /** Default collective timeout. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(60);

    private LocalGroup() {
    }

    /**
     * The code one rank runs.
     *
     * @param <R> its result type
     */
    @FunctionalInterface
    public interface RankBody<R> {
        /**
         * @param comm this rank's communicator (closed by the group afterwards)
         * @return this rank's result
         * @throws Exception any failure; it fails the group
         */
        R run(Communicator comm) throws Exception;
    }

    /**
     * Runs {@code body} on {@code world} ranks with the {@linkplain #DEFAULT_TIMEOUT default timeout}.
     *
     * @param world number of ranks, ≥ 1
     * @param body  the per-rank code
     * @param <R>   result type
     * @return the results indexed by rank
     * @throws LocalGroupException if any rank failed
     */
    public static <R> List<R> run(int world, RankBody<R> body) {
        return run(world, DEFAULT_TIMEOUT, body);
    }

    /**
     * Runs {@code body} on {@code world} ranks.
     *
     * @param world   number of ranks, ≥ 1
     * @param timeout longest wait of a rank inside one collective
     * @param body    the per-rank code
     * @param <R>     result type
     * @return the results indexed by rank
     * @throws IllegalArgumentException if {@code world < 1} or the timeout is not positive
     * @throws LocalGroupException      if any rank failed
     */
    public static <R> List<R> run(int world, Duration timeout, RankBody<R> body) {
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
                try (LocalCommunicator comm = new LocalCommunicator(rv, rank)) {
                    results[rank] = body.run(comm);
                } catch (Throwable t) {
                    error = t;
                    errors[rank] = t;
                } finally {
                    rv.depart(rank, error);
                }
            }, "moe4j-rank-" + r);
            threads[r].setDaemon(true);
        }
        for (Thread t : threads) {
            t.start();
        }
        awaitAll(rv, threads, errors);
        boolean failed = false;
        for (Throwable e : errors) {
            failed |= e != null;
        }
        if (!failed) {
            List<R> out = new ArrayList<>(world);
            for (Object o : results) {
                @SuppressWarnings("unchecked")
                R cast = (R) o;
                out.add(cast);
            }
            return out;
        }
        CommunicatorException groupFailure = rv.failure();
        Throwable root = groupFailure != null && groupFailure.getCause() != null ? groupFailure.getCause() : null;
        if (root == null) {
            for (Throwable e : errors) {
                if (e != null && !(e instanceof CommunicatorException)) {
                    root = e;
                    break;
                }
            }
        }
        String message = groupFailure != null ? groupFailure.getMessage() : "a rank failed: " + root;
        LocalGroupException ex = new LocalGroupException("LocalGroup of " + world + " ranks failed: " + message, root,
                Arrays.asList(errors));
        return rethrow(ex);
    }

    private static <R> R rethrow(LocalGroupException ex) {
        throw ex;
    }

    /** Joins every rank; once the group has failed, waits at most one more timeout, then abandons stragglers. */
    private static void awaitAll(Rendezvous rv, Thread[] threads, Throwable[] errors) {
        long grace = rv.timeoutNanos();
        for (int r = 0; r < threads.length; r++) {
            Thread t = threads[r];
            while (t.isAlive()) {
                try {
                    t.join(50);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    rv.fail("the thread running LocalGroup.run was interrupted", e);
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
                                errors[s] = new CommunicatorException("rank " + s + " did not finish within "
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
