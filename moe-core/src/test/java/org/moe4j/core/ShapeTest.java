package org.moe4j.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class ShapeTest {
    @Test
    void numelIsTheProductAndNegativeDimsAreRefused() {
        assertEquals(24, Shape.of(2, 3, 4).numel());
        assertEquals(1, Shape.of().numel());
        assertEquals(0, Shape.of(5, 0).numel());
        assertEquals(4, Shape.of(2, 3, 4).dim(-1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Shape.of(2, -1));
        assertEquals("shape [2, -1]: dimension 1 is negative (-1)", e.getMessage());
    }

    @Test
    void shapeIsImmutableAgainstCallerArrays() {
        long[] dims = {2, 3};
        Shape s = Shape.of(dims);
        dims[0] = 99;
        assertEquals(2, s.dim(0));
        s.dims()[1] = 99;
        assertArrayEquals(new long[] {2, 3}, s.dims());
    }

    @Test
    void equalityHashAndTextFollowTheDimensions() {
        assertEquals(Shape.of(4, 8), Shape.of(4, 8));
        assertEquals(Shape.of(4, 8).hashCode(), Shape.of(4, 8).hashCode());
        assertNotEquals(Shape.of(4, 8), Shape.of(8, 4));
        assertEquals("[4, 8]", Shape.of(4, 8).toString());
        assertEquals(2, Shape.of(4, 8).rank());
        assertEquals(8, Shape.of(4, 8).dimInt(1));
    }

    @Test
    void numelOverflowAndIntDimOverflowAreErrors() {
        assertThrows(ArithmeticException.class, () -> Shape.of(1L << 40, 1L << 40).numel());
        assertThrows(ArithmeticException.class, () -> Shape.of(1L << 40).dimInt(0));
    }

    @Test
    void requireNamesTheTensorAndBothShapes() {
        Shape.of(3, 4).require("x", 3, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Shape.of(3, 4).require("topkIdx", 3, 2));
        assertEquals("topkIdx: expected shape [3, 2] but got [3, 4]", e.getMessage());
    }
}
