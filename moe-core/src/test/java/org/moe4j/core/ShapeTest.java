package org.moe4j.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class ShapeTest {
    @Test
    void numelIsTheProductAndNegativeDimsAreRefused() {
        assertEquals(24, Shape.of(2, 3, 4).numel());
        assertEquals(1, Shape.of().numel());
        assertEquals(4, Shape.of(2, 3, 4).dim(-1));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Shape.of(2, -1));
        assertEquals("shape [2, -1]: dimension 1 is negative (-1)", e.getMessage());
    }
}
