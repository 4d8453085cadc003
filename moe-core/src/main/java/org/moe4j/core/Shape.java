package org.moe4j.core;

import java.util.Arrays;

/**
 * An immutable tensor shape, outermost dimension first (row-major), e.g. {@code [tokens, hidden]}.
 */
public final class Shape {
    private final long[] dims;

    private Shape(long[] dims) {
        for (int i = 0; i < dims.length; i++) {
            if (dims[i] < 0) {
                throw new IllegalArgumentException("shape " + Arrays.toString(dims) + ": dimension " + i
                        + " is negative (" + dims[i] + ")");
            }
        }
        this.dims = dims;
    }

    /**
     * Returns the shape.
     * @param dims the dimensions, each ≥ 0
     * @return the shape
     * @throws IllegalArgumentException if a dimension is negative
     */
    public static Shape of(long... dims) {
        return new Shape(dims.clone());
    }

    /**
     * Returns number of dimensions.
     * @return number of dimensions
     */
    public int rank() {
        return dims.length;
    }

    /**
     * Returns the size of dimension {@code i}.
     * @param i dimension index; negative counts from the end
     * @return the size of dimension {@code i}
     */
    public long dim(int i) {
        return dims[i < 0 ? dims.length + i : i];
    }

    /**
     * Returns the size of dimension {@code i} as an int.
     * @param i dimension index; negative counts from the end
     * @return the size of dimension {@code i} as an int
     * @throws ArithmeticException if it does not fit an int
     */
    public int dimInt(int i) {
        return Math.toIntExact(dim(i));
    }

    /**
     * Returns a copy of the dimensions.
     * @return a copy of the dimensions
     */
    public long[] dims() {
        return dims.clone();
    }

    /**
     * Returns the product of the dimensions (1 for a scalar).
     * @return the product of the dimensions (1 for a scalar)
     */
    public long numel() {
        long n = 1;
        for (long d : dims) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /**
     * Checks this shape against an expected one and names the tensor in the error.
     *
     * @param name     tensor name for the message, e.g. "x"
     * @param expected the expected dimensions
     * @throws IllegalArgumentException naming both shapes when they differ
     */
    public void require(String name, long... expected) {
        if (!Arrays.equals(dims, expected)) {
            throw new IllegalArgumentException(name + ": expected shape " + Arrays.toString(expected)
                    + " but got " + this);
        }
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Shape s && Arrays.equals(dims, s.dims);
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(dims);
    }

    @Override
    public String toString() {
        return Arrays.toString(dims);
    }
}
