package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/** A CUDA event: a marker in a stream, for ordering between streams and for timing. */
public final class CudaEvent implements AutoCloseable {
    private final CudaContext context;
    private final MemorySegment handle; // CUevent
    private volatile boolean closed;

    CudaEvent(CudaContext context, MemorySegment handle) {
        this.context = context;
        this.handle = handle;
    }

    /**
     * Returns the {@code CUevent} handle.
     * @return the {@code CUevent} handle
     * @throws BufferClosedException after close
     */
    public MemorySegment handle() {
        if (closed) {
            throw new BufferClosedException("CudaEvent");
        }
        return handle;
    }

    /**
     * Records this event at the current end of {@code stream}.
     *
     * @param stream the stream
     * @return this
     */
    public CudaEvent record(CudaStream stream) {
        MemorySegment h = handle();
        context.makeCurrent();
        CudaException.check(cuda_h.cuEventRecord(h, stream.handle()), "cuEventRecord(" + stream + ")");
        return this;
    }

    /** Blocks until the recorded work has completed. */
    public void synchronize() {
        MemorySegment h = handle();
        context.makeCurrent();
        CudaException.check(cuda_h.cuEventSynchronize(h), "cuEventSynchronize");
    }

    /**
     * Returns milliseconds from {@code start} to this event.
     * @param start an earlier event, recorded and completed (both created with timing)
     * @return milliseconds from {@code start} to this event
     */
    public float elapsedMillis(CudaEvent start) {
        MemorySegment h = handle();
        context.makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment ms = a.allocate(ValueLayout.JAVA_FLOAT);
            CudaException.check(cuda_h.cuEventElapsedTime_v2(ms, start.handle(), h), "cuEventElapsedTime_v2");
            return ms.get(ValueLayout.JAVA_FLOAT, 0);
        }
    }

    /** Destroys the event. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        context.makeCurrent();
        CudaException.check(cuda_h.cuEventDestroy_v2(handle), "cuEventDestroy_v2");
    }
}
