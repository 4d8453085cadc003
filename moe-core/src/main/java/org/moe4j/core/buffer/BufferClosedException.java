package org.moe4j.core.buffer;

/** Thrown when a buffer, pool or other native resource is used after {@code close()}. */
public final class BufferClosedException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     * @param what description of the closed resource
     */
    public BufferClosedException(String what) {
        super(what + " used after close");
    }
}
