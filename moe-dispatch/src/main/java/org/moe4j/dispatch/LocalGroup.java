package org.moe4j.dispatch;

import java.time.Duration;
import java.util.List;
import org.moe4j.dispatch.internal.LocalCommunicator;
import org.moe4j.dispatch.spi.RankThreads;

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
 *
 * <p>{@code run} itself is bounded too, even when a rank stalls outside any collective (a loop, a
 * sleep, a lock): once one rank has finished, the others must finish within the timeout (no
 * collective can succeed after a rank finished), else the group fails naming the stalled ranks.
 * After any failure, ranks still running get {@code min(timeout, 2 s)} to stop, are then
 * interrupted, get as long again, and are then abandoned: their entry in
 * {@link LocalGroupException#rankErrors()} names the rank and its thread ({@code moe4j-rank-N}) and
 * carries the thread's stack at that moment. So {@code run} returns at most
 * {@code timeout + 2·min(timeout, 2 s)} (plus polling slack) after a rank stops making progress
 * that another rank waits for. (Ranks that all compute without waiting on each other are not timed.)
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
         * Returns this rank's result.
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
     * @throws NullPointerException     if {@code timeout} or {@code body} is null
     * @throws IllegalArgumentException if {@code world} is outside {@code [1, 4096]} or the timeout is
     *                                  not positive or longer than 365 days
     * @throws LocalGroupException      if any rank failed
     */
    public static <R> List<R> run(int world, Duration timeout, RankBody<R> body) {
        return RankThreads.run(world, timeout,
                new RankThreads.Names("LocalGroup of " + world + " ranks", "LocalGroup.run", "rank", "moe4j-rank-"),
                LocalCommunicator::new, body);
    }
}
