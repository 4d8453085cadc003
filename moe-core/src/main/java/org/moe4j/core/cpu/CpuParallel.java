package org.moe4j.core.cpu;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Deterministic data parallelism for CPU kernels.
 *
 * <p>Work is cut into chunks whose boundaries depend only on the problem size and the chunk size,
 * never on the thread count; kernels that reduce do so per chunk and combine the chunk results in
 * chunk order. So results are bitwise identical for any thread count.
 *
 * <p>The common instance uses {@code moe4j.threads} (system property) or the number of processors.
 * A call made from inside a worker runs inline, so nested use cannot deadlock, and the calling
 * thread always takes part, so concurrent callers (in-process ranks) always make progress.
 */
public final class CpuParallel implements AutoCloseable {
    /** System property with the thread count of {@link #common()}. */
    public static final String THREADS_PROPERTY = "moe4j.threads";

    private static final ThreadLocal<Boolean> INSIDE = ThreadLocal.withInitial(() -> false);
    private static volatile CpuParallel common;

    private final int threads;
    private final ExecutorService pool; // null when threads == 1

    /**
     * Creates a new {@code CpuParallel}.
     * @param threads worker count including the caller, ≥ 1
     */
    public CpuParallel(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        }
        this.threads = threads;
        AtomicInteger id = new AtomicInteger();
        this.pool = threads == 1 ? null : Executors.newFixedThreadPool(threads - 1, r -> {
            Thread t = new Thread(r, "moe4j-cpu-" + id.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
    }

    /** Largest thread count accepted from {@value #THREADS_PROPERTY}. */
    public static final int MAX_THREADS = 65536;

    /**
     * Returns the thread count {@link #common()} uses.
     *
     * @return the thread count {@link #common()} uses: {@value #THREADS_PROPERTY} when set, else the
     *         available processors
     * @throws IllegalArgumentException naming the property and its value if it is not an integer in
     *                                  {@code [1, MAX_THREADS]}
     */
    public static int configuredThreads() {
        return org.moe4j.core.Settings.intProperty(THREADS_PROPERTY, Runtime.getRuntime().availableProcessors(), 1,
                MAX_THREADS);
    }

    /**
     * Returns the process-wide instance.
     *
     * @return the process-wide instance
     * @throws IllegalArgumentException if {@value #THREADS_PROPERTY} is set to a bad value (see
     *                                  {@link #configuredThreads()})
     */
    public static CpuParallel common() {
        CpuParallel c = common;
        if (c == null) {
            synchronized (CpuParallel.class) {
                c = common;
                if (c == null) {
                    c = common = new CpuParallel(configuredThreads());
                }
            }
        }
        return c;
    }

    /**
     * Returns threads used, including the caller.
     * @return threads used, including the caller
     */
    public int threads() {
        return threads;
    }

    /** Body of one chunk. */
    @FunctionalInterface
    public interface ChunkBody {
        /**
         * Processes the items {@code [from, to)} of one chunk.
         *
         * @param chunk chunk index, {@code 0 .. chunks-1}
         * @param from  first item (inclusive)
         * @param to    last item (exclusive)
         */
        void run(int chunk, int from, int to);
    }

    /**
     * Returns number of chunks {@link #forEachChunk} will run.
     * @param n     item count
     * @param chunk items per chunk
     * @return number of chunks {@link #forEachChunk} will run
     */
    public static int chunks(int n, int chunk) {
        return n == 0 ? 0 : (int) (((long) n + chunk - 1) / chunk);
    }

    private static int end(int n, int chunk, int c) {
        return (int) Math.min(n, (c + 1L) * chunk);
    }

    /**
     * Runs {@code body} over {@code [0, n)} cut into chunks of {@code chunk} items (the last may be
     * shorter). Chunk boundaries do not depend on the thread count. The first exception thrown by
     * any chunk is rethrown here after all workers stop; chunks not yet started when it was thrown
     * are skipped.
     *
     * @param n     item count
     * @param chunk items per chunk, ≥ 1
     * @param body  the work
     */
    public void forEachChunk(int n, int chunk, ChunkBody body) {
        if (chunk < 1) {
            throw new IllegalArgumentException("chunk must be >= 1, got " + chunk);
        }
        if (n < 0) {
            throw new IllegalArgumentException("n must be >= 0, got " + n);
        }
        int chunks = chunks(n, chunk);
        if (pool == null || chunks <= 1 || INSIDE.get()) {
            for (int c = 0; c < chunks; c++) {
                body.run(c, c * chunk, end(n, chunk, c));
            }
            return;
        }
        AtomicInteger next = new AtomicInteger();
        AtomicReference<Throwable> firstError = new AtomicReference<>();
        Runnable worker = () -> {
            boolean was = INSIDE.get();
            INSIDE.set(true);
            try {
                int c;
                while (firstError.get() == null && (c = next.getAndIncrement()) < chunks) {
                    body.run(c, c * chunk, end(n, chunk, c));
                }
            } catch (RuntimeException | Error e) {
                firstError.compareAndSet(null, e);
            } finally {
                INSIDE.set(was);
            }
        };
        // Helpers enter through a gate. Once the caller's own loop ends every chunk has been claimed,
        // so the caller closes the gate: a helper that has not started yet (its pool thread busy with
        // another caller's chunks) finds it closed and returns at once, and the caller waits only for
        // helpers still running a chunk. Concurrent callers therefore never wait on each other's work.
        Gate gate = new Gate();
        Runnable helper = () -> {
            if (gate.enter()) {
                try {
                    worker.run();
                } finally {
                    gate.leave();
                }
            }
        };
        int helpers = Math.min(threads, chunks) - 1;
        for (int i = 0; i < helpers; i++) {
            pool.execute(helper);
        }
        worker.run();
        gate.closeAndAwait();
        Throwable first = firstError.get();
        if (first instanceof RuntimeException re) {
            throw re;
        }
        if (first instanceof Error er) {
            throw er;
        }
    }

    /** Admission of helper tasks for one {@link #forEachChunk} call. */
    private static final class Gate {
        private boolean open = true;
        private int active;

        synchronized boolean enter() {
            if (!open) {
                return false;
            }
            active++;
            return true;
        }

        synchronized void leave() {
            active--;
            notifyAll();
        }

        /** Closes the gate and waits, uninterruptibly, until no helper is inside. */
        synchronized void closeAndAwait() {
            open = false;
            boolean interrupted = false;
            while (active > 0) {
                try {
                    wait();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    @Override
    public void close() {
        if (pool != null && this != common) {
            pool.shutdownNow();
        }
    }
}
