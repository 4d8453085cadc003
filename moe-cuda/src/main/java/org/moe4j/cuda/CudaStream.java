package org.moe4j.cuda;

import java.lang.foreign.MemorySegment;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/** A CUDA stream: work submitted to one stream runs in order. Created by {@link CudaContext#createStream()}. */
public final class CudaStream implements AutoCloseable {
    private final CudaContext context;
    private final MemorySegment handle; // CUstream; NULL for the legacy default stream
    private final boolean owned;
    private volatile boolean closed;

    CudaStream(CudaContext context, MemorySegment handle, boolean owned) {
        this.context = context;
        this.handle = handle;
        this.owned = owned;
    }

    /**
     * Returns the context.
     * @return the context
     */
    public CudaContext context() {
        return context;
    }

    /**
     * Returns the {@code CUstream} handle (NULL for the legacy default stream), for kernel launchers and NCCL.
     * @return the {@code CUstream} handle (NULL for the legacy default stream), for kernel launchers and NCCL
     * @throws BufferClosedException after close
     */
    public MemorySegment handle() {
        if (closed) {
            throw new BufferClosedException(toString());
        }
        return handle;
    }

    /**
     * Blocks until all work submitted so far has finished.
     *
     * @throws CudaException when that work failed
     */
    public void synchronize() {
        MemorySegment h = handle();
        context.makeCurrent();
        CudaException.check(cuda_h.cuStreamSynchronize(h), "cuStreamSynchronize(" + this + ")");
    }

    /**
     * Makes later work on this stream wait until {@code event} has completed (no host blocking).
     *
     * @param event a recorded event
     */
    public void waitFor(CudaEvent event) {
        MemorySegment h = handle();
        context.makeCurrent();
        CudaException.check(cuda_h.cuStreamWaitEvent(h, event.handle(), 0), "cuStreamWaitEvent(" + this + ")");
    }

    /**
     * Returns true when this is the context's legacy default stream.
     * @return true when this is the context's legacy default stream
     */
    public boolean isDefault() {
        return !owned;
    }

    /** Destroys the stream (pending work still completes). Idempotent; a no-op for the default stream. */
    @Override
    public void close() {
        if (closed || !owned) {
            return;
        }
        closed = true;
        context.makeCurrent();
        CudaException.check(cuda_h.cuStreamDestroy_v2(handle), "cuStreamDestroy_v2");
    }

    @Override
    public String toString() {
        return owned ? "CudaStream[" + context.location() + " 0x" + Long.toHexString(handle.address()) + "]"
                : "CudaStream[" + context.location() + " default]";
    }
}
