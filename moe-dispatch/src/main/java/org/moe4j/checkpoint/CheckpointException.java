package org.moe4j.checkpoint;

/** A checkpoint file that cannot be read or does not fit: names the file and what is wrong. */
public final class CheckpointException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     * @param message what is wrong, naming the file and the tensor
     */
    public CheckpointException(String message) {
        super(message);
    }

    /**
     * Creates the exception.
     * @param message what is wrong
     * @param cause   underlying error
     */
    public CheckpointException(String message, Throwable cause) {
        super(message, cause);
    }
}
