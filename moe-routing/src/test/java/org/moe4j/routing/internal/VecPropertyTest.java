package org.moe4j.routing.internal;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** {@code moe4j.routing.vectorBits} is refused by name when it does not parse or is not a vector width. */
class VecPropertyTest {
    @Test
    void badVectorWidthsNameThePropertyAndTheValue() {
        String old = System.getProperty(Vec.VECTOR_BITS_PROPERTY);
        try {
            System.setProperty(Vec.VECTOR_BITS_PROPERTY, "wide");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, Vec::vectorBits);
            assertEquals("system property moe4j.routing.vectorBits='wide' is not an integer (allowed: 0 to 512)",
                    e.getMessage());
            System.setProperty(Vec.VECTOR_BITS_PROPERTY, "200");
            e = assertThrows(IllegalArgumentException.class, Vec::vectorBits);
            assertEquals("system property moe4j.routing.vectorBits='200' must be 64, 128, 256 or 512", e.getMessage());
            System.setProperty(Vec.VECTOR_BITS_PROPERTY, "256");
            assertEquals(256, Vec.vectorBits());
            System.clearProperty(Vec.VECTOR_BITS_PROPERTY);
            assertEquals(0, Vec.vectorBits());
        } finally {
            if (old == null) {
                System.clearProperty(Vec.VECTOR_BITS_PROPERTY);
            } else {
                System.setProperty(Vec.VECTOR_BITS_PROPERTY, old);
            }
        }
    }
}
