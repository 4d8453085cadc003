package org.moe4j.core.buffer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;

class HandoverTest {
    @Test
    void releasedResourcesGoToTheCallerAndTheRestAreClosed() {
        HostBuffer tmp;
        HostBuffer result;
        try (Handover h = new Handover()) {
            tmp = h.own(HostBuffer.allocate(DType.F32, 2));
            result = h.release(h.own(HostBuffer.allocate(DType.F32, 2)));
        }
        assertTrue(tmp.isClosed());
        assertFalse(result.isClosed());
        result.close();
        try (Handover h = new Handover()) {
            assertThrows(IllegalArgumentException.class, () -> h.release(tmp));
        }
    }

    @Test
    void aFailureHalfWayClosesEverythingAndCloseFailuresAreSuppressed() {
        List<String> closed = new ArrayList<>();
        IllegalStateException work = new IllegalStateException("kernel failed");
        IllegalStateException thrown = assertThrows(IllegalStateException.class, () -> {
            try (Handover h = new Handover()) {
                h.own(() -> closed.add("a"));
                h.own(() -> {
                    closed.add("b");
                    throw new IllegalArgumentException("close of b failed");
                });
                h.own(() -> closed.add("c"));
                throw work;
            }
        });
        assertSame(work, thrown);
        assertEquals(List.of("c", "b", "a"), closed, "newest first, every one tried");
        assertEquals(1, thrown.getSuppressed().length);
        assertEquals("close of b failed", thrown.getSuppressed()[0].getMessage());
    }

    @Test
    void closeAllTriesEveryResourceAndThrowsTheFirstFailure() {
        List<String> closed = new ArrayList<>();
        Exception e = assertThrows(IllegalStateException.class, () -> Handover.closeAll(() -> closed.add("a"), null,
                () -> {
                    throw new Exception("checked");
                }, () -> {
                    closed.add("c");
                    throw new IllegalStateException("c failed");
                }));
        assertEquals("c failed", e.getMessage());
        assertEquals(List.of("c", "a"), closed);
        assertEquals(1, e.getSuppressed().length);
        assertTrue(e.getSuppressed()[0].getMessage().contains("failed"), e.getSuppressed()[0].getMessage());
    }
}
