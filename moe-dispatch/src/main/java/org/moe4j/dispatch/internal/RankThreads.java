package org.moe4j.dispatch.internal;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.CommunicatorException;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.LocalGroupException;

/**
 * The thread and failure handling shared by the in-process groups ({@link LocalGroup} and the CUDA
 * backend's virtual ranks): one thread per rank around a {@link Rendezvous}, each rank's
 * communicator closed when its body returns, every rank joined (stragglers abandoned one timeout
 * after the group failed), and a {@link LocalGroupException} carrying every rank's error.
 */
public final class RankThreads {
    private RankThreads() {
    }

    /**
     * Opens one rank's communicator on that rank's thread.
     */
    @FunctionalInterface
    public interface Opener {
        /**
         * @param rv   the group's rendezvous
         * @param rank the rank whose thread calls this
         * @return that rank's communicator; the group closes it after the body
         * @throws Exception any failure; it fails the group
         */
        Communicator open(Rendezvous rv, int rank) throws Exception;
    }

    /**
     * Names the group in threads and messages.
     *
     * @param group        what failed, e.g. {@code "LocalGroup of 4 ranks"}
     * @param caller       the public method, e.g. {@code "LocalGroup.run"}
     * @param rankNoun     how one rank is called, e.g. {@code "rank"} or {@code "virtual rank"}
     * @param threadPrefix thread name prefix; the rank number is appended
     */
    public record Names(String group, String caller, String rankNoun, String threadPrefix) {
    }

    /**
     * Checks the arguments shared by every group's {@code run}.
     *
     * @param world   number of ranks
     * @param timeout collective timeout
     * @param body    the per-rank code
     * @throws IllegalArgumentException if {@code world < 1} or the timeout is not positive
     */
    public static void validate(int world, Duration timeout, LocalGroup.RankBody<?> body) {
        Objects.requireNonNull(body, "body");
        Objects.requireNonNull(timeout, "timeout");
        if (world < 1) {
            throw new IllegalArgumentException("world must be >= 1, got " + world);
        }
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
    }

    /**
     * Runs {@code body} on {@code world} ranks, one thread each, and waits for all of them.
     *
     * @param world   number of ranks, ≥ 1 (see {@link #validate})
     * @param timeout longest wait of a rank inside one collective
     * @param names   how threads and messages name the group
     * @param opener  opens each rank's communicator
     * @param body    the per-rank code
     * @param <R>     result type
     * @return the results indexed by rank
     * @throws LocalGroupException if any rank failed
     */
    public static <R> List<R> run(int world, Duration timeout, Names names, Opener opener, LocalGroup.RankBody<R> body) {
        validate(world, timeout, body);
        Rendezvous rv = new Rendezvous(world, timeout.toNanos());
        Object[] results = new Object[world];
        Throwable[] errors = new Throwable[world];
        Thread[] threads = new Thread[world];
        for (int r = 0; r < world; r++) {
            int rank = r;
            threads[r] = new Thread(() -> {
                Throwable error = null;
                try (Communicator comm = opener.open(rv, rank)) {
                    results[rank] = body.run(comm);
                } catch (Throwable t) {
                    error = t;
                    errors[rank] = t;
                } finally {
                    rv.depart(rank, error);
                }
            }, names.threadPrefix() + r);
            threads[r].setDaemon(true);
        }
        for (Thread t : threads) {
            t.start();
        }
        awaitAll(rv, threads, errors, names);
        if (Arrays.stream(errors).noneMatch(Objects::nonNull)) {
            List<R> out = new ArrayList<>(world);
            for (Object o : results) {
                @SuppressWarnings("unchecked")
                R cast = (R) o;
                out.add(cast);
            }
            return out;
        }
        CommunicatorException groupFailure = rv.failure();
        Throwable root = groupFailure != null ? groupFailure.getCause() : null;
        if (root == null) {
            root = Arrays.stream(errors).filter(e -> e != null && !(e instanceof CommunicatorException))
                    .findFirst().orElse(null);
        }
        String message = groupFailure != null ? groupFailure.getMessage() : "a rank failed: " + root;
        throw new LocalGroupException(names.group() + " failed: " + message, root, Arrays.asList(errors));
    }

    /** Joins every rank; once the group has failed, waits at most one more timeout, then abandons stragglers. */
    private static void awaitAll(Rendezvous rv, Thread[] threads, Throwable[] errors, Names names) {
        long grace = rv.timeoutNanos();
        for (Thread t : threads) {
            while (t.isAlive()) {
                try {
                    t.join(50);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    rv.fail("the thread running " + names.caller() + " was interrupted", e);
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
                                errors[s] = new CommunicatorException(names.rankNoun() + " " + s + " did not finish within "
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
