package org.moe4j.core.backend;

import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;

/**
 * Reusable scratch memory of one backend ({@link Backend#newScratch()}): intermediates of a
 * dispatcher or router that live for one call or one forward/backward pair. Model code takes and
 * gives buffers without knowing what memory they are in; each backend decides how to recycle it
 * (the CPU backend keeps freed blocks for the next call, a device backend relies on its allocator's
 * own pool).
 *
 * <p>A taken buffer's contents are <b>undefined</b>: every element must be written before it is
 * read, or zeroed with {@link #zeroRows}. Scratch memory is not a live buffer of any
 * {@link org.moe4j.core.buffer.BufferAllocator} or {@link org.moe4j.core.buffer.BufferScope}: it is
 * given back explicitly, and whatever a dropped scratch pool still holds is reclaimed with it.
 * Thread-safe: a buffer may be given back on another thread than the one that took it.
 */
public interface Scratch extends AutoCloseable {
    /**
     * Returns a buffer with undefined contents; hand it back with {@link #give}.
     * @param dtype element type
     * @param shape shape
     * @return a buffer with undefined contents; hand it back with {@link #give}
     * @throws NullPointerException if an argument is null
     */
    Buffer take(DType dtype, Shape shape);

    /**
     * Returns a buffer with undefined contents; hand it back with {@link #give}.
     * @param dtype element type
     * @param dims  dimensions
     * @return a buffer with undefined contents; hand it back with {@link #give}
     */
    default Buffer take(DType dtype, long... dims) {
        return take(dtype, Shape.of(dims));
    }

    /**
     * Returns a buffer from {@link #take} for reuse (closing it: the caller's reference throws on use
     * afterwards); any other buffer is closed. Null is ignored; giving twice is harmless.
     *
     * @param buffer the buffer
     */
    void give(Buffer buffer);

    /**
     * Zeroes rows {@code [from, to)} of a buffer from {@link #take}, {@code [rows, ...]} (a no-op where
     * taken buffers are zeroed already).
     *
     * @param buffer the buffer
     * @param from   first row
     * @param to     end row (exclusive)
     * @throws IllegalArgumentException if the range is outside the buffer's rows
     */
    void zeroRows(Buffer buffer, long from, long to);

    /** Drops the memory kept for reuse (buffers still taken stay valid until given back). */
    @Override
    void close();

    /**
     * The scratch of a backend without its own: every take is a fresh zeroed allocation, every give
     * closes it.
     *
     * @param backend allocates the buffers
     * @return the scratch
     */
    static Scratch fresh(Backend backend) {
        return new Scratch() {
            @Override
            public Buffer take(DType dtype, Shape shape) {
                return backend.allocate(dtype, shape);
            }

            @Override
            public void give(Buffer buffer) {
                if (buffer != null) {
                    buffer.close();
                }
            }

            @Override
            public void zeroRows(Buffer buffer, long from, long to) {
                Scratches.checkRows(buffer, from, to); // fresh allocations are zero already
            }

            @Override
            public void close() {
            }
        };
    }
}
