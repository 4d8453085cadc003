package org.moe4j.dispatch.dist;

/**
 * A rendezvous or bootstrap collective failed: a rank is missing, inconsistent, disconnected, or
 * timed out. The message names the ranks involved. After this exception the rendezvous is
 * unusable; every other rank that can still be reached gets the same message.
 */
public final class RendezvousException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     * @param message what failed and which ranks are involved
     */
    public RendezvousException(String message) {
        super(message);
    }

    /**
     * Creates the exception.
     * @param message what failed and which ranks are involved
     * @param cause   the underlying I/O error
     */
    public RendezvousException(String message, Throwable cause) {
        super(message, cause);
    }
}
