package org.moe4j.dispatch.spi;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.moe4j.dispatch.CommunicatorException;

/**
 * The meeting point of the in-process ranks of one {@link org.moe4j.dispatch.LocalGroup}: each
 * collective is one or two rounds of {@link #exchange} in which every rank posts a payload and
 * receives every rank's payload.
 *
 * <p>Failure is shared: a timeout, a rank that fails or leaves without joining, or ranks that call
 * different collectives set one failure that every waiting and every later caller sees. Nothing
 * waits longer than the timeout.
 */
public final class Rendezvous {
    private final int world;
    private final long timeoutNanos;
    private final Object lock = new Object();
    private final Object[] payloads;
    private final String[] ops;
    private final boolean[] joined;
    private final boolean[] departed;
    private long generation;
    private int arrived;
    private Object[] snapshot;
    private CommunicatorException failure;
    private long failedAtNanos;
    private boolean anyDeparted;
    private long firstDepartNanos;

    /**
     * Creates the meeting point of {@code world} ranks.
     *
     * @param world        number of ranks, in {@code [1, }{@link RankThreads#MAX_WORLD}{@code ]}
     * @param timeoutNanos longest wait of one round, positive and at most {@link RankThreads#MAX_TIMEOUT}
     * @throws IllegalArgumentException if {@code world} or {@code timeoutNanos} is out of range
     */
    public Rendezvous(int world, long timeoutNanos) {
        if (world < 1 || world > RankThreads.MAX_WORLD) {
            throw new IllegalArgumentException("world must be in [1, " + RankThreads.MAX_WORLD + "], got " + world);
        }
        if (timeoutNanos <= 0 || timeoutNanos > RankThreads.MAX_TIMEOUT.toNanos()) {
            throw new IllegalArgumentException("timeoutNanos must be in [1, " + RankThreads.MAX_TIMEOUT.toNanos()
                    + "], got " + timeoutNanos);
        }
        this.world = world;
        this.timeoutNanos = timeoutNanos;
        this.payloads = new Object[world];
        this.ops = new String[world];
        this.joined = new boolean[world];
        this.departed = new boolean[world];
    }

    /**
     * Returns the number of ranks.
     * @return number of ranks
     */
    public int world() {
        return world;
    }

    /**
     * Returns the round timeout in nanoseconds.
     * @return the round timeout in nanoseconds
     */
    public long timeoutNanos() {
        return timeoutNanos;
    }

    /**
     * Posts this rank's payload and waits until every rank has posted.
     *
     * @param rank    the caller's rank
     * @param op      name of the collective (and phase); all ranks must agree
     * @param payload this rank's payload
     * @return every rank's payload, indexed by rank (do not modify)
     * @throws CommunicatorException on timeout, disagreement, or another rank's failure
     * @throws IllegalArgumentException if {@code rank} is not in {@code [0, world)}
     * @throws NullPointerException     if {@code op} is null
     * @throws IllegalStateException    if {@code rank} already posted in this round or already departed
     *                                  (two callers for one rank); the rendezvous is left unchanged
     */
    public Object[] exchange(int rank, String op, Object payload) {
        checkRank(rank);
        Objects.requireNonNull(op, "op");
        synchronized (lock) {
            throwIfFailed(rank);
            if (joined[rank] || departed[rank]) {
                throw new IllegalStateException("rank " + rank + " " + (departed[rank] ? "already departed" : "already posted")
                        + " and cannot join " + op + " (one caller per rank)");
            }
            payloads[rank] = payload;
            ops[rank] = op;
            joined[rank] = true;
            arrived++;
            long gen = generation;
            if (arrived == world) {
                for (int r = 1; r < world; r++) {
                    if (!ops[r].equals(ops[0])) {
                        fail("collective #" + gen + ": ranks disagree on the operation: rank 0 called " + ops[0]
                                + " but rank " + r + " called " + ops[r], null);
                        throwIfFailed(rank);
                    }
                }
                snapshot = payloads.clone();
                Arrays.fill(payloads, null);
                Arrays.fill(joined, false);
                arrived = 0;
                generation++;
                lock.notifyAll();
                return snapshot;
            }
            long deadline = System.nanoTime() + timeoutNanos;
            while (generation == gen) {
                throwIfFailed(rank);
                List<Integer> gone = new ArrayList<>();
                for (int r = 0; r < world; r++) {
                    if (departed[r] && !joined[r]) {
                        gone.add(r);
                    }
                }
                if (!gone.isEmpty()) {
                    fail("collective #" + gen + " (" + op + "): rank(s) " + gone
                            + " finished without joining it; waiting: " + waiting(), null);
                    throwIfFailed(rank);
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    fail("collective #" + gen + " (" + op + ") timed out after " + timeoutNanos / 1_000_000
                            + " ms: rank(s) " + missing() + " never joined; waiting: " + waiting(), null);
                    throwIfFailed(rank);
                }
                try {
                    lock.wait(Math.max(1, left / 1_000_000), 0);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    fail("collective #" + gen + " (" + op + "): rank " + rank + " was interrupted", e);
                    throwIfFailed(rank);
                }
            }
            return snapshot;
        }
    }

    /**
     * Marks a rank as gone (its body returned or threw). A rank that threw fails the group with its
     * exception as cause.
     *
     * @param rank  the rank
     * @param error its exception, or null when it returned normally
     * @throws IllegalArgumentException if {@code rank} is not in {@code [0, world)}
     */
    public void depart(int rank, Throwable error) {
        checkRank(rank);
        synchronized (lock) {
            departed[rank] = true;
            if (!anyDeparted) {
                anyDeparted = true;
                firstDepartNanos = System.nanoTime();
            }
            if (error != null && failure == null) {
                fail("rank " + rank + " failed: " + error, error);
            }
            lock.notifyAll();
        }
    }

    /**
     * Fails the group (first failure wins) and wakes every waiter.
     *
     * @param message what happened
     * @param cause   underlying exception or null
     * @throws NullPointerException if {@code message} is null
     */
    public void fail(String message, Throwable cause) {
        Objects.requireNonNull(message, "message");
        synchronized (lock) {
            if (failure == null) {
                failure = new CommunicatorException(message, cause);
                failedAtNanos = System.nanoTime();
            }
            lock.notifyAll();
        }
    }

    /**
     * Returns the group failure, or null.
     * @return the group failure, or null
     */
    public CommunicatorException failure() {
        synchronized (lock) {
            return failure;
        }
    }

    /**
     * Returns {@link System#nanoTime()} when the first rank finished (returned or threw), or {@link java.util.OptionalLong#empty()} while every rank is still running.
     * @return {@link System#nanoTime()} when the first rank finished (returned or threw), or
     *         {@link java.util.OptionalLong#empty()} while every rank is still running
     */
    public java.util.OptionalLong firstDepartNanos() {
        synchronized (lock) {
            return anyDeparted ? java.util.OptionalLong.of(firstDepartNanos) : java.util.OptionalLong.empty();
        }
    }

    /**
     * Returns whether a rank finished (its body returned or threw).
     * @param rank a rank
     * @return whether it finished (its body returned or threw)
     * @throws IllegalArgumentException if {@code rank} is not in {@code [0, world)}
     */
    public boolean departed(int rank) {
        checkRank(rank);
        synchronized (lock) {
            return departed[rank];
        }
    }

    /**
     * Returns {@link System#nanoTime()} of the failure (meaningful once failed).
     * @return {@link System#nanoTime()} of the failure (meaningful once failed)
     */
    public long failedAtNanos() {
        synchronized (lock) {
            return failedAtNanos;
        }
    }

    private void checkRank(int rank) {
        if (rank < 0 || rank >= world) {
            throw new IllegalArgumentException("rank must be in [0, " + world + "), got " + rank);
        }
    }

    private void throwIfFailed(int rank) {
        if (failure != null) {
            Throwable cause = failure.getCause() != null ? failure.getCause() : failure;
            throw new CommunicatorException("rank " + rank + ": " + failure.getMessage(), cause);
        }
    }

    private List<Integer> missing() {
        List<Integer> m = new ArrayList<>();
        for (int r = 0; r < world; r++) {
            if (!joined[r]) {
                m.add(r);
            }
        }
        return m;
    }

    private List<Integer> waiting() {
        List<Integer> m = new ArrayList<>();
        for (int r = 0; r < world; r++) {
            if (joined[r]) {
                m.add(r);
            }
        }
        return m;
    }
}
