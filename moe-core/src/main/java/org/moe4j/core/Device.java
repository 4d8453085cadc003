package org.moe4j.core;

/**
 * Where a buffer's memory lives.
 *
 * @param kind    host memory or a CUDA device
 * @param ordinal device index (0 for the host)
 */
public record Device(Kind kind, int ordinal) {
    /** Memory kinds. */
    public enum Kind {
        /** host memory */
        CPU,
        /** memory of a CUDA device */
        CUDA
    }

    /** The host. */
    public static final Device CPU = new Device(Kind.CPU, 0);

    /**
     * Validates the components.
     *
     * @param kind    host memory or a CUDA device
     * @param ordinal device index (0 for the host)
     * @throws IllegalArgumentException if {@code ordinal} is negative
     */
    public Device {
        if (ordinal < 0) {
            throw new IllegalArgumentException("device ordinal must be >= 0, got " + ordinal);
        }
    }

    /**
     * Returns the CUDA device.
     * @param ordinal CUDA device index
     * @return the CUDA device
     */
    public static Device cuda(int ordinal) {
        return new Device(Kind.CUDA, ordinal);
    }

    @Override
    public String toString() {
        return kind == Kind.CPU ? "cpu" : "cuda:" + ordinal;
    }
}
