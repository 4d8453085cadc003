package org.moe4j.dispatch.spi;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;
import org.moe4j.core.buffer.Buffer;

/**
 * Argument checks and row arithmetic shared by every {@link org.moe4j.dispatch.DispatchKernels}
 * implementation (the CPU one here, the CUDA one in moe-cuda), so that both refuse the same inputs with
 * the same messages. Rows are dimension 0; a row's width is the product of the other dimensions.
 * Every method throws {@link NullPointerException} naming a null argument.
 */
public final class DispatchArgs {
    private DispatchArgs() {
    }

    /**
     * The scan behind {@link org.moe4j.dispatch.DispatchKernels#firstNonFiniteWeight}.
     *
     * @param topkIdx     host I32 slots
     * @param topkWeights host F32 weights, same order
     * @param slots       number of slots to scan
     * @return the first slot {@code j} with {@code topkIdx[j] != -1} and a NaN or infinite weight, or -1
     * @throws IllegalArgumentException if {@code slots} is negative or either segment holds fewer than
     *                                  {@code slots} 4-byte values
     */
    public static long firstNonFiniteWeight(MemorySegment topkIdx, MemorySegment topkWeights, long slots) {
        Objects.requireNonNull(topkIdx, "topkIdx");
        Objects.requireNonNull(topkWeights, "topkWeights");
        if (slots < 0 || slots > topkIdx.byteSize() / Integer.BYTES || slots > topkWeights.byteSize() / Float.BYTES) {
            throw new IllegalArgumentException("firstNonFiniteWeight: slots " + slots + " must be in [0, min("
                    + topkIdx.byteSize() / Integer.BYTES + ", " + topkWeights.byteSize() / Float.BYTES + ")]");
        }
        for (long j = 0; j < slots; j++) {
            float w = topkWeights.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, j);
            if (!Float.isFinite(w) && topkIdx.getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, j) != -1) {
                return j;
            }
        }
        return -1;
    }

    /**
     * Returns the row count of a buffer: dimension 0, or 1 for a scalar.
     * @param b a buffer
     * @return its row count: dimension 0, or 1 for a scalar
     */
    public static int rows(Buffer b) {
        Objects.requireNonNull(b, "b");
        return b.shape().rank() == 0 ? 1 : b.shape().dimInt(0);
    }

    /**
     * Returns the elements per row: the product of every dimension after the first.
     * @param b a buffer
     * @return the elements per row: the product of every dimension after the first
     * @throws ArithmeticException if that exceeds {@code int}
     */
    public static int width(Buffer b) {
        Objects.requireNonNull(b, "b");
        long[] dims = b.shape().dims();
        long n = 1;
        for (int i = 1; i < dims.length; i++) {
            n *= dims[i];
        }
        return Math.toIntExact(n);
    }

    /**
     * Returns the common row width.
     * @param op    the kernel's name, for the message
     * @param aName name of the first operand
     * @param a     the first operand
     * @param bName name of the second operand
     * @param b     the second operand
     * @return the common row width
     * @throws IllegalArgumentException if the row widths differ
     */
    public static int sameRowWidth(String op, String aName, Buffer a, String bName, Buffer b) {
        Objects.requireNonNull(op, "op");
        Objects.requireNonNull(aName, "aName");
        Objects.requireNonNull(bName, "bName");
        int h = width(a);
        if (width(b) != h) {
            throw new IllegalArgumentException(op + ": " + aName + " " + a.shape() + " and " + bName + " " + b.shape()
                    + " differ in row width");
        }
        return h;
    }

    /**
     * The number of rows an indexed row kernel visits: the length of the first non-null index, else
     * every row of {@code whole}.
     *
     * @param whole   the buffer whose rows are visited when no index is given
     * @param indexes optional row indexes, in order of precedence (null entries are skipped)
     * @return the row count
     */
    public static int visitedRows(Buffer whole, Buffer... indexes) {
        Objects.requireNonNull(whole, "whole");
        Objects.requireNonNull(indexes, "indexes");
        for (Buffer index : indexes) {
            if (index != null) {
                return index.shape().dimInt(0);
            }
        }
        return rows(whole);
    }

    /**
     * Returns the entry count of a composeIndex index, checking that its output has as many.
     * @param index the composeIndex index
     * @param out   its output
     * @return the entry count of {@code index}
     * @throws IllegalArgumentException if {@code out} has another entry count
     */
    public static long composeIndexEntries(Buffer index, Buffer out) {
        Objects.requireNonNull(index, "index");
        Objects.requireNonNull(out, "out");
        long m = index.numel();
        if (out.numel() != m) {
            throw new IllegalArgumentException("composeIndex: out " + out.shape() + " must have " + m + " entries");
        }
        return m;
    }

    /**
     * Checks that two buffers can be copied byte for byte.
     *
     * @param a one side of a plain copy
     * @param b the other side
     * @throws IllegalArgumentException unless dtype and element count match
     */
    public static void requireSameBytes(Buffer a, Buffer b) {
        Objects.requireNonNull(a, "a");
        Objects.requireNonNull(b, "b");
        if (a.dtype() != b.dtype() || a.numel() != b.numel()) {
            throw new IllegalArgumentException("copy between " + a.dtype() + " " + a.shape() + " and " + b.dtype() + " "
                    + b.shape() + ": dtype and element count must match");
        }
    }
}
