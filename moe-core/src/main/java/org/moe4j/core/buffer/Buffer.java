package org.moe4j.core.buffer;

import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;

/**
 * A typed, shaped block of memory on the host or on a device. Host buffers ({@link HostBuffer})
 * and device buffers (moe-cuda) implement it, so the layers above stay device-agnostic.
 *
 * <p>A buffer owns its memory unless it is a view; {@link #close()} frees it. Closing twice is
 * harmless; any other use after close throws {@link BufferClosedException}.
 */
public interface Buffer extends AutoCloseable {
    /**
     * Returns element type.
     * @return element type
     */
    DType dtype();

    /**
     * Returns shape, outermost first.
     * @return shape, outermost first
     */
    Shape shape();

    /**
     * Returns where the memory lives.
     * @return where the memory lives
     */
    Device device();

    /**
     * Returns number of elements.
     * @return number of elements
     */
    default long numel() {
        return shape().numel();
    }

    /**
     * Returns size in bytes.
     * @return size in bytes
     */
    default long byteSize() {
        return numel() * dtype().byteSize();
    }

    /**
     * Returns true once {@link #close()} has been called (on this buffer or its owner).
     * @return true once {@link #close()} has been called (on this buffer or its owner)
     */
    boolean isClosed();

    /** Frees the memory (a view only detaches). Idempotent. */
    @Override
    void close();

    /**
     * Overwrites this buffer with the contents of a host buffer (host memory: a memcpy; device
     * memory: an upload that has finished when this returns). This is the seam that stages host data
     * (initial parameter values, checkpoints, small tables) into any backend's memory.
     *
     * @param src host data of the same dtype and element count
     * @throws IllegalArgumentException       on a dtype or element-count mismatch
     * @throws UnsupportedOperationException  when this kind of buffer cannot be written from the host
     */
    default void copyFrom(HostBuffer src) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " on " + device()
                + " does not support copyFrom(HostBuffer)");
    }

    /**
     * Copies this buffer's contents into a host buffer (finished when this returns).
     *
     * @param dst host buffer of the same dtype and element count
     * @throws IllegalArgumentException       on a dtype or element-count mismatch
     * @throws UnsupportedOperationException  when this kind of buffer cannot be read from the host
     */
    default void copyTo(HostBuffer dst) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " on " + device()
                + " does not support copyTo(HostBuffer)");
    }

    /**
     * Returns a new host buffer with this buffer's dtype, shape and contents (caller closes it).
     * @return a new host buffer with this buffer's dtype, shape and contents (caller closes it)
     * @throws UnsupportedOperationException when this kind of buffer cannot be read from the host
     */
    default HostBuffer toHost() {
        HostBuffer h = HostBuffer.allocate(dtype(), shape());
        try {
            copyTo(h);
        } catch (RuntimeException e) {
            h.close();
            throw e;
        }
        return h;
    }

    /**
     * Host access to this buffer's values (see {@link HostView}): a staged host copy by default,
     * the memory itself for host buffers. Model code reads and writes buffers only this way, never
     * by asking which kind of memory it holds.
     *
     * @param mode read, write or both
     * @return the view; close it (a write is uploaded then)
     * @throws NullPointerException          if {@code mode} is null
     * @throws BufferClosedException         if this buffer is closed
     * @throws UnsupportedOperationException when this kind of buffer cannot be copied to or from the host
     */
    default HostView hostView(HostView.Mode mode) {
        return HostView.staged(this, mode);
    }

    /**
     * Sets every byte to zero (finished when this returns).
     *
     * @throws UnsupportedOperationException when this kind of buffer cannot be zeroed
     */
    default void zero() {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " on " + device()
                + " does not support zero()");
    }

    /**
     * Checks dtype and shape, naming the buffer in the error.
     *
     * @param name  name used in the message
     * @param dtype expected dtype
     * @param dims  expected dimensions
     * @throws IllegalArgumentException on mismatch
     */
    default void require(String name, DType dtype, long... dims) {
        if (dtype() != dtype) {
            throw new IllegalArgumentException(name + ": expected dtype " + dtype + " but got " + dtype());
        }
        shape().require(name, dims);
    }
}
