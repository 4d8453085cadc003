package org.moe4j.core;

/**
 * Thrown when an object that must be used by one thread at a time (a {@code MoeLayer},
 * {@code Router}, {@code Dispatcher} or {@code AdamW}) is called from a second thread while a call
 * is still running; the message names both calls and both threads. The refused call changed nothing.
 */
public final class ConcurrentUseException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     * @param message names the concurrent calls and threads
     */
    public ConcurrentUseException(String message) {
        super(message);
    }
}
