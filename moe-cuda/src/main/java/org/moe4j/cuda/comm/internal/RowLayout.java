package org.moe4j.cuda.comm.internal;

import org.moe4j.core.buffer.Buffer;

/**
 * Row arithmetic and argument checks shared by the device communicators: dimension 0 of a buffer
 * is its rows (a 0-D buffer is one row); one row is {@code byteSize / rows} bytes.
 */
public final class RowLayout {
    private RowLayout() {
    }

    /**
     * @param b a buffer
     * @return its number of rows (dimension 0; 1 for a scalar)
     */
    public static long rows(Buffer b) {
        return b.shape().rank() == 0 ? 1 : b.shape().dim(0);
    }

    /**
     * @param b a buffer
     * @return elements in one row
     */
    public static long rowElements(Buffer b) {
        long[] dims = b.shape().dims();
        long n = 1;
        for (int i = 1; i < dims.length; i++) {
            n = Math.multiplyExact(n, dims[i]);
        }
        return n;
    }

    /**
     * @param b a buffer
     * @return bytes in one row
     */
    public static long rowBytes(Buffer b) {
        return Math.multiplyExact(rowElements(b), b.dtype().byteSize());
    }

    /**
     * Checks per-rank row counts against a buffer.
     *
     * @param what  names the argument in the message, e.g. {@code "allToAllV sendRows"}
     * @param counts one count per rank
     * @param world number of ranks
     * @param b     the buffer the counts describe
     * @throws IllegalArgumentException if the length is not {@code world}, a count is negative, or they do not sum to the rows of {@code b}
     */
    public static void checkCounts(String what, long[] counts, int world, Buffer b) {
        if (counts == null) {
            throw new IllegalArgumentException(what + " must not be null");
        }
        if (counts.length != world) {
            throw new IllegalArgumentException(what + ": expected " + world + " counts but got " + counts.length);
        }
        long sum = 0;
        for (int i = 0; i < counts.length; i++) {
            if (counts[i] < 0) {
                throw new IllegalArgumentException(what + "[" + i + "] is negative (" + counts[i] + ")");
            }
            sum = Math.addExact(sum, counts[i]);
        }
        if (sum != rows(b)) {
            throw new IllegalArgumentException(what + " sum to " + sum + " rows but the buffer " + b.dtype() + " "
                    + b.shape() + " has " + rows(b));
        }
    }

    /**
     * @param counts row counts
     * @param upTo   exclusive end index
     * @return {@code counts[0] + ... + counts[upTo - 1]}
     */
    public static long prefix(long[] counts, int upTo) {
        long s = 0;
        for (int i = 0; i < upTo; i++) {
            s += counts[i];
        }
        return s;
    }
}
