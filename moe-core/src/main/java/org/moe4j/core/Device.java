package org.moe4j.core;

/**
 * Where a buffer's memory lives.
 *
 * @param kind    host memory or a CUDA device
 * @param ordinal device index (0 for the host)
 */
public record Device(Kind kind, int ordinal) {
    /** Memory kinds. */
    public enum Kind { CPU, CUDA }

    /** The host. */
    public static final Device CPU = new Device(Kind.CPU, 0);

    public Device {
        if (ordinal < 0) {
            throw new IllegalArgumentException("device ordinal must be >= 0, got " + ordinal);
        }
    }

    /**
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
