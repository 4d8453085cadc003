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
    /** @return element type */
    DType dtype();

    /** @return shape, outermost first */
    Shape shape();

    /** @return where the memory lives */
    Device device();

    /** @return number of elements */
    default long numel() {
        return shape().numel();
    }

    /** @return size in bytes */
    default long byteSize() {
        return numel() * dtype().byteSize();
    }

    /** @return true once {@link #close()} has been called (on this buffer or its owner) */
    boolean isClosed();

    /** Frees the memory (a view only detaches). Idempotent. */
    @Override
    void close();

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
