package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * A CUDA graph captured from a stream and instantiated: the kernel launches, copies, memsets and NCCL
 * calls a piece of code enqueues on one stream, recorded once ({@link #capture}) and replayed with one
 * {@code cuGraphLaunch} per step ({@link #launch}). Inputs change between replays through the same
 * fixed buffers (a captured host→device copy reads its host buffer at replay time); parameters
 * change by capturing again and {@link #update updating} the executable graph in place.
 *
 * <p>Capture refuses work that needs the host: a {@code cuStreamSynchronize} (for example the wait of
 * a device→host read whose value host code needs) fails with {@code CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED},
 * and {@link #capture} then throws a {@link CudaException} saying the captured code synchronised with the
 * host. Work must go to the capturing stream: an operation on the context's legacy default stream
 * while a blocking stream captures fails with {@code CUDA_ERROR_STREAM_CAPTURE_IMPLICIT} and invalidates
 * the capture, and {@link #capture} then throws a {@link CudaException} saying so.
 */
public final class CudaGraph implements AutoCloseable {
    /** The stream this thread captures and the host copies queued on it so far; null when it captures none. */
    private static final ThreadLocal<HostCopies> HOST_COPIES = new ThreadLocal<>();
    private final CudaStream stream;
    private final MemorySegment exec; // CUgraphExec
    private volatile boolean closed;

    private CudaGraph(CudaStream stream, MemorySegment exec) {
        this.stream = stream;
        this.exec = exec;
    }

    /**
     * Captures what {@code body} enqueues on {@code stream} and instantiates it.
     *
     * @param stream a stream created by {@link CudaContext#createStream()} (not the default stream)
     * @param body   enqueues the work on {@code stream}; runs once, now, without executing the work
     * @return the executable graph; launches go to {@code stream} unless given another
     * @throws IllegalArgumentException if {@code stream} is the legacy default stream
     * @throws CudaException            if the body synchronised with the host or a driver call failed
     *                                  (the capture is then ended and nothing is kept)
     * @throws RuntimeException         whatever else the body throws, an {@link Error} too, rethrown
     *                                  after the capture is ended (the stream is usable again); a
     *                                  failure to destroy the partial graph is added as suppressed
     */
    public static CudaGraph capture(CudaStream stream, Runnable body) {
        return capture(stream, body, new java.util.ArrayList<>());
    }

    /** The host copies queued on a capturing stream ({@link #noteHostCopy}). */
    private record HostCopies(CudaStream stream, java.util.List<String> copies) {
    }

    /**
     * Notes a copy between host memory and {@code stream}: while this thread captures that stream, the
     * copy becomes a node that touches its host memory at every replay, so {@link LayerStepGraph}
     * refuses a capture that made one. Cheap when nothing captures (a thread-local read).
     */
    static void noteHostCopy(CudaStream stream, String direction, DeviceBuffer device) {
        HostCopies c = HOST_COPIES.get();
        if (c != null && c.stream.handle().address() == stream.handle().address()) {
            c.copies.add(direction + " " + device.describe());
        }
    }

    /**
     * {@link #capture(CudaStream, Runnable)} that also lists the copies between host memory and the
     * stream that the body queued (each one reads or writes its host memory at every replay).
     */
    static CudaGraph capture(CudaStream stream, Runnable body, java.util.List<String> hostCopies) {
        Objects.requireNonNull(stream, "stream");
        Objects.requireNonNull(body, "body");
        if (stream.isDefault()) {
            throw new IllegalArgumentException("CudaGraph.capture: the legacy default stream cannot be captured; "
                    + "use a stream from CudaContext.createStream()");
        }
        HostCopies outer = HOST_COPIES.get();
        HOST_COPIES.set(new HostCopies(stream, hostCopies));
        MemorySegment graph;
        try {
            graph = record(stream, body);
        } finally {
            HOST_COPIES.set(outer);
        }
        CudaGraph made;
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            CudaException.check(cuda_h.cuGraphInstantiateWithFlags(out, graph, 0L), "cuGraphInstantiateWithFlags");
            made = new CudaGraph(stream, out.get(ValueLayout.ADDRESS, 0));
        } catch (Throwable t) {
            destroyQuietly(graph, t);
            throw t;
        }
        CudaException destroyFailed = destroyQuietly(graph, null);
        if (destroyFailed != null) { // do not hand out a graph whose context just failed; nothing leaks
            made.close();
            throw destroyFailed;
        }
        return made;
    }

    /**
     * Destroys a CUgraph without masking an earlier failure: a failed destroy is added to
     * {@code primary} as suppressed, or returned when there is none.
     */
    private static CudaException destroyQuietly(MemorySegment graph, Throwable primary) {
        int rc = cuda_h.cuGraphDestroy(graph);
        if (rc == cuda_h.CUDA_SUCCESS) {
            return null;
        }
        CudaException e = CudaException.of(rc, "cuGraphDestroy");
        if (primary != null) {
            primary.addSuppressed(e);
            return null;
        }
        return e;
    }

    /** Begins capture, runs the body, ends capture; returns the CUgraph (caller destroys). */
    private static MemorySegment record(CudaStream stream, Runnable body) {
        MemorySegment h = stream.handle();
        stream.context().makeCurrent();
        CudaException.check(cuda_h.cuStreamBeginCapture_v2(h, cuda_h.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                "cuStreamBeginCapture_v2(" + stream + ")");
        Throwable failure = null;
        try {
            body.run();
        } catch (Throwable e) { // an Error too: the capture must end, or the stream stays capturing
            failure = e;
        }
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            int rc = cuda_h.cuStreamEndCapture(h, out);
            MemorySegment graph = out.get(ValueLayout.ADDRESS, 0);
            if (failure != null) {
                if (rc == cuda_h.CUDA_SUCCESS && graph.address() != 0) {
                    destroyQuietly(graph, failure);
                }
                if (failure instanceof CudaException ce && ce.code() == cuda_h.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED) {
                    throw refusal(stream, ce, "the captured code synchronised with the host (a device→host read whose "
                            + "value the host waits for, in " + ce.getMessage() + "); only host-sync-free work can be captured");
                }
                if (failure instanceof CudaException ce && ce.code() == cuda_h.CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) {
                    throw refusal(stream, ce, "the captured code queued work on the context's legacy default stream (in "
                            + ce.getMessage() + "), which would wait for the capturing stream; queue every operation of "
                            + "the captured work on the capturing stream (a DevicePool made by CudaContext.createPool(stream) "
                            + "allocates, zeroes and frees there)");
                }
                if (failure instanceof RuntimeException re) {
                    throw re;
                }
                if (failure instanceof Error err) {
                    throw err;
                }
                throw new IllegalStateException("CudaGraph: the captured body threw " + failure, failure); // a sneaky checked exception
            }
            if (rc == cuda_h.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) {
                throw new CudaException("cuStreamEndCapture(" + stream + ")", rc, CudaException.of(rc, "").errorName(),
                        "CUDA graph capture refused: the capture was invalidated (the captured code synchronised with "
                        + "the host)");
            }
            CudaException.check(rc, "cuStreamEndCapture(" + stream + ")");
            return graph;
        }
    }

    /** {@code CUDA graph capture refused: why}, with the driver's code and the cause's suppressed exceptions. */
    private static CudaException refusal(CudaStream stream, CudaException cause, String why) {
        CudaException refused = new CudaException("CudaGraph.capture(" + stream + ")", cause.code(), cause.errorName(),
                "CUDA graph capture refused: " + why);
        refused.initCause(cause); // where in the captured code it happened
        for (Throwable suppressed : cause.getSuppressed()) {
            refused.addSuppressed(suppressed);
        }
        return refused;
    }

    /**
     * Replays the graph on the stream it was captured from.
     *
     * @throws CudaException         if a replayed operation failed
     * @throws BufferClosedException after close
     */
    public void launch() {
        launch(stream);
    }

    /**
     * Replays the graph on a stream.
     *
     * @param on the stream (of the same context)
     * @throws CudaException         if a replayed operation failed
     * @throws BufferClosedException after close
     */
    public void launch(CudaStream on) {
        Objects.requireNonNull(on, "stream");
        requireOpen();
        on.context().makeCurrent();
        CudaException.check(cuda_h.cuGraphLaunch(exec, on.handle()), "cuGraphLaunch(" + on + ")");
    }

    /**
     * Captures {@code body} again and, when its topology (the same operations in the same order, the
     * same kernels) matches, takes its parameters into this executable graph in place.
     *
     * @param body enqueues the work on the capture stream
     * @throws CudaException         if the capture fails or the topology changed
     *                               ({@code CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE}, naming why); the
     *                               executable graph is then unchanged. Whatever else the body throws
     *                               (an {@link Error} too) is rethrown after the capture is ended.
     * @throws BufferClosedException after close
     */
    public void update(Runnable body) {
        requireOpen();
        MemorySegment graph = record(stream, body);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment info = a.allocate(24, 8); // CUgraphExecUpdateResultInfo: int result, two node pointers
            int rc = cuda_h.cuGraphExecUpdate_v2(exec, graph, info);
            if (rc != cuda_h.CUDA_SUCCESS) {
                throw new CudaException("cuGraphExecUpdate_v2", rc, CudaException.of(rc, "").errorName(),
                        "CudaGraph.update: the new capture does not match the graph (update result "
                        + updateResult(info.get(ValueLayout.JAVA_INT, 0)) + "); the graph is unchanged");
            }
        } catch (Throwable t) {
            destroyQuietly(graph, t);
            throw t;
        }
        CudaException destroyFailed = destroyQuietly(graph, null);
        if (destroyFailed != null) {
            throw destroyFailed;
        }
    }

    private static String updateResult(int r) {
        return switch (r) {
            case 0 -> "SUCCESS";
            case 2 -> "TOPOLOGY_CHANGED";
            case 3 -> "NODE_TYPE_CHANGED";
            case 4 -> "FUNCTION_CHANGED";
            case 5 -> "PARAMETERS_CHANGED";
            case 6 -> "NOT_SUPPORTED";
            case 7 -> "UNSUPPORTED_FUNCTION_CHANGE";
            case 8 -> "ATTRIBUTES_CHANGED";
            default -> "ERROR " + r;
        };
    }

    /**
     * Refuses, before any capture starts, a dispatch configuration whose steps read device memory back
     * to the host (which a graph cannot capture): a strategy that exchanges counts through the host
     * (every strategy but {@code static-all-to-all}), or dispatch kernels that build the static plans
     * through host staging ({@link org.moe4j.dispatch.DispatchKernels#staticPlansOnDevice()} false).
     *
     * @param dispatch the layer's dispatch options ({@link org.moe4j.core.config.MoeConfig#dispatch()})
     * @param kernels  the dispatch kernels the layer uses
     * @throws IllegalStateException naming the host synchronisation and the way out
     * @throws IllegalArgumentException if no strategy of that name is registered
     */
    public static void requireCapturable(org.moe4j.core.config.DispatchOptions dispatch,
            org.moe4j.dispatch.DispatchKernels kernels) {
        Objects.requireNonNull(dispatch, "dispatch");
        Objects.requireNonNull(kernels, "kernels");
        if (!org.moe4j.dispatch.Dispatchers.provider(dispatch.strategy()).hostSyncFree()) {
            throw new IllegalStateException("CUDA graph capture refused: dispatch strategy '" + dispatch.strategy()
                    + "' reads its per-rank counts back to the host every step (a device→host sync); configure "
                    + org.moe4j.core.config.DispatchOptions.STATIC_ALL_TO_ALL + " (MoeConfig.dispatch) to capture a step");
        }
        if (!kernels.staticPlansOnDevice()) {
            throw new IllegalStateException("CUDA graph capture refused: " + kernels.getClass().getSimpleName()
                    + " builds the static-shape dispatch plans through host staging (a device→host read per step)");
        }
    }

    /**
     * Returns whether the stream is capturing now.
     * @param stream a stream
     * @return whether the stream is capturing now
     */
    public static boolean isCapturing(CudaStream stream) {
        if (stream.isDefault()) {
            return false;
        }
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.JAVA_INT);
            stream.context().makeCurrent();
            CudaException.check(cuda_h.cuStreamIsCapturing(stream.handle(), out), "cuStreamIsCapturing(" + stream + ")");
            return out.get(ValueLayout.JAVA_INT, 0) != cuda_h.CU_STREAM_CAPTURE_STATUS_NONE;
        }
    }

    private void requireOpen() {
        if (closed) {
            throw new BufferClosedException(toString());
        }
    }

    /** Destroys the executable graph. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        stream.context().makeCurrent();
        CudaException.check(cuda_h.cuGraphExecDestroy(exec), "cuGraphExecDestroy");
    }

    @Override
    public String toString() {
        return "CudaGraph[" + stream + "]";
    }
}
