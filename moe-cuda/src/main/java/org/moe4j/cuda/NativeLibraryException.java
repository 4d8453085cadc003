package org.moe4j.cuda;

/**
 * Thrown when a native library (libcuda, libnccl) cannot be found or loaded. The message names the
 * library, the settings that choose it, and every place that was looked at.
 */
public final class NativeLibraryException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /**
     * Creates the exception.
     * @param message what was missing and where it was looked for
     */
    public NativeLibraryException(String message) {
        super(message);
    }

    /**
     * Creates the exception.
     * @param message what failed
     * @param cause   the loader's error
     */
    public NativeLibraryException(String message, Throwable cause) {
        super(message, cause);
    }
}
