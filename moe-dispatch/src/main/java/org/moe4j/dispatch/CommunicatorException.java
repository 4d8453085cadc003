package org.moe4j.dispatch;

/** A collective failed: a timeout, a rank that failed or left, or arguments that disagree across ranks. */
public class CommunicatorException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     * @param message what failed, where and why
     */
    public CommunicatorException(String message) {
        super(message);
    }

    /**
     * Creates the exception.
     * @param message what failed, where and why
     * @param cause   the underlying failure (e.g. another rank's exception)
     */
    public CommunicatorException(String message, Throwable cause) {
        super(message, cause);
    }
}
