package org.moe4j.dispatch.internal;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
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
     * @param world        number of ranks
     * @param timeoutNanos longest wait of one round
     */
    public Rendezvous(int world, long timeoutNanos) {
        this.world = world;
        this.timeoutNanos = timeoutNanos;
        this.payloads = new Object[world];
        this.ops = new String[world];
        this.joined = new boolean[world];
        this.departed = new boolean[world];
    }

    /** @return number of ranks */
    public int world() {
        return world;
    }

    /** @return the round timeout in nanoseconds */
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
     */
    public Object[] exchange(int rank, String op, Object payload) {
        synchronized (lock) {
            throwIfFailed(rank);
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
     */
    public void depart(int rank, Throwable error) {
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
     */
    public void fail(String message, Throwable cause) {
        synchronized (lock) {
            if (failure == null) {
                failure = new CommunicatorException(message, cause);
                failedAtNanos = System.nanoTime();
            }
            lock.notifyAll();
        }
    }

    /** @return the group failure, or null */
    public CommunicatorException failure() {
        synchronized (lock) {
            return failure;
        }
    }

    /**
     * @return {@link System#nanoTime()} when the first rank finished (returned or threw), or
     *         {@link java.util.OptionalLong#empty()} while every rank is still running
     */
    public java.util.OptionalLong firstDepartNanos() {
        synchronized (lock) {
            return anyDeparted ? java.util.OptionalLong.of(firstDepartNanos) : java.util.OptionalLong.empty();
        }
    }

    /**
     * @param rank a rank
     * @return whether it finished (its body returned or threw)
     */
    public boolean departed(int rank) {
        synchronized (lock) {
            return departed[rank];
        }
    }

    /** @return {@link System#nanoTime()} of the failure (meaningful once failed) */
    public long failedAtNanos() {
        synchronized (lock) {
            return failedAtNanos;
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
