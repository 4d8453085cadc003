package org.moe4j.dispatch.spi;

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
         * Returns that rank's communicator; the group closes it after the body.
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
        /**
         * Checks that every name is given.
         *
         * @throws NullPointerException if any component is null
         */
        public Names {
            Objects.requireNonNull(group, "group");
            Objects.requireNonNull(caller, "caller");
            Objects.requireNonNull(rankNoun, "rankNoun");
            Objects.requireNonNull(threadPrefix, "threadPrefix");
        }
    }

    /** Most in-process ranks one group may start (one thread each). */
    public static final int MAX_WORLD = 4096;
    /** Longest collective timeout (deadlines are {@code nanoTime + timeout} and must not overflow). */
    public static final Duration MAX_TIMEOUT = Duration.ofDays(365);

    /**
     * Checks the arguments shared by every group's {@code run}.
     *
     * @param world   number of ranks
     * @param timeout collective timeout
     * @param body    the per-rank code
     * @throws IllegalArgumentException if {@code world} is outside {@code [1, MAX_WORLD]} or the
     *                                  timeout is not positive or exceeds {@link #MAX_TIMEOUT}
     * @throws NullPointerException     if {@code timeout} or {@code body} is null
     */
    public static void validate(int world, Duration timeout, LocalGroup.RankBody<?> body) {
        Objects.requireNonNull(body, "body");
        Objects.requireNonNull(timeout, "timeout");
        if (world < 1) {
            throw new IllegalArgumentException("world must be >= 1, got " + world);
        }
        if (world > MAX_WORLD) {
            throw new IllegalArgumentException("world must be <= " + MAX_WORLD + " (one thread per rank), got " + world);
        }
        if (timeout.isNegative() || timeout.isZero()) {
            throw new IllegalArgumentException("timeout must be positive, got " + timeout);
        }
        if (timeout.compareTo(MAX_TIMEOUT) > 0) {
            throw new IllegalArgumentException("timeout must be at most " + MAX_TIMEOUT + ", got " + timeout);
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
     * @throws LocalGroupException     if any rank failed
     * @throws IllegalArgumentException as {@link #validate}
     * @throws NullPointerException     if {@code names}, {@code opener}, {@code timeout} or {@code body} is null
     */
    public static <R> List<R> run(int world, Duration timeout, Names names, Opener opener, LocalGroup.RankBody<R> body) {
        Objects.requireNonNull(names, "names");
        Objects.requireNonNull(opener, "opener");
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

    /** Longest wait for ranks to stop by themselves after the group failed, and again after interrupting them. */
    static final long MAX_GRACE_NANOS = 2_000_000_000L;

    /**
     * Joins every rank. Bounded: once a rank has finished, the others must finish within one timeout
     * (after a rank finished no collective can succeed, so a rank still running then is stalled
     * outside any collective) or the group fails naming them. Once the group has failed, stragglers
     * get {@code min(timeout, 2 s)} to stop, are then interrupted, get as long again, and are then
     * abandoned with an error naming the rank, its thread and where it was stuck.
     */
    private static void awaitAll(Rendezvous rv, Thread[] threads, Throwable[] errors, Names names) {
        long timeout = rv.timeoutNanos();
        long grace = Math.min(timeout, MAX_GRACE_NANOS);
        boolean interrupted = false;
        long interruptedAt = 0;
        while (true) {
            Thread alive = null;
            for (Thread t : threads) {
                if (t.isAlive()) {
                    alive = t;
                    break;
                }
            }
            if (alive == null) {
                return;
            }
            try {
                alive.join(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                rv.fail("the thread running " + names.caller() + " was interrupted", e);
                for (Thread other : threads) {
                    other.interrupt();
                }
                return;
            }
            long now = System.nanoTime();
            if (rv.failure() == null) {
                java.util.OptionalLong first = rv.firstDepartNanos();
                if (first.isPresent() && now - first.getAsLong() > timeout) {
                    List<String> stalled = new ArrayList<>();
                    List<Integer> done = new ArrayList<>();
                    for (int r = 0; r < threads.length; r++) {
                        if (rv.departed(r)) {
                            done.add(r);
                        } else {
                            stalled.add(r + " (thread " + threads[r].getName() + ")");
                        }
                    }
                    if (!stalled.isEmpty()) {
                        rv.fail(names.rankNoun() + "(s) " + stalled + " did not finish within " + timeout / 1_000_000
                                + " ms after " + names.rankNoun() + "(s) " + done
                                + " finished (stalled outside any collective)", null);
                    }
                }
                continue;
            }
            long sinceFailure = now - rv.failedAtNanos();
            if (!interrupted && sinceFailure > grace) {
                for (Thread t : threads) {
                    if (t.isAlive()) {
                        t.interrupt();
                    }
                }
                interrupted = true;
                interruptedAt = now;
            } else if (interrupted && now - interruptedAt > grace) {
                for (int s = 0; s < threads.length; s++) {
                    Thread t = threads[s];
                    if (t.isAlive()) {
                        CommunicatorException abandoned = new CommunicatorException(names.rankNoun() + " " + s
                                + " (thread " + t.getName() + ") was still running " + (now - rv.failedAtNanos()) / 1_000_000
                                + " ms after the group failed, " + grace / 1_000_000 + " ms after being interrupted;"
                                + " abandoned (the stack trace of this exception is where it was)");
                        abandoned.setStackTrace(t.getStackTrace());
                        if (errors[s] == null) {
                            errors[s] = abandoned;
                        } else {
                            errors[s].addSuppressed(abandoned);
                        }
                    }
                }
                return;
            }
        }
    }
}
