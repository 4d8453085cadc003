package org.moe4j.cuda;

/**
 * The fatbin of a kernel family is not on the class path: moe-cuda was built on a host without nvcc.
 * Rebuild it where {@code /usr/local/cuda/bin/nvcc} exists, or with {@code -Dnvcc=/path/to/nvcc}.
 */
public final class KernelsNotBuiltException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /** Start of every message, for callers that explain it further. */
    public static final String REASON = "kernels were not built: nvcc was not found at build time";

    /**
     * Creates the exception.
     * @param resource the missing class-path resource
     */
    public KernelsNotBuiltException(String resource) {
        super(REASON + " (missing class-path resource " + resource
                + "; rebuild moe-cuda on a host with /usr/local/cuda/bin/nvcc, or pass -Dnvcc=/path/to/nvcc)");
    }
}
