package org.moe4j.core.buffer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;

class BufferScopeTest {
    @Test
    void closingAScopeFreesEverythingMadeInsideItUnlessKeptOrDetached() {
        HostBuffer freed;
        HostBuffer detached;
        HostBuffer outsideAny;
        try (BufferScope s = BufferScope.open("step")) {
            assertSame(s, BufferScope.current());
            freed = HostBuffer.allocate(DType.F32, 4);
            detached = s.detach(HostBuffer.allocate(DType.F32, 2));
            assertTrue(s.owns(freed));
            assertFalse(s.owns(detached));
            assertEquals(1, s.liveCount());
        }
        assertTrue(freed.isClosed(), "made inside the scope: freed on close");
        assertFalse(detached.isClosed(), "detached: the caller owns it");
        assertNull(BufferScope.current(), "the scope is no longer active");
        detached.close();
        outsideAny = HostBuffer.allocate(DType.F32, 1);
        try (outsideAny) {
            assertFalse(outsideAny.isClosed());
        }
    }

    @Test
    void keepMovesABufferToTheEnclosingScopeAndScopesNest() {
        HostBuffer kept;
        HostBuffer inner;
        try (BufferScope outer = BufferScope.open("outer")) {
            try (BufferScope step = BufferScope.open("inner")) {
                assertSame(step, BufferScope.current());
                inner = HostBuffer.allocate(DType.F32, 3);
                kept = step.keep(HostBuffer.allocate(DType.F32, 3));
            }
            assertTrue(inner.isClosed());
            assertFalse(kept.isClosed(), "kept: now owned by the outer scope");
            assertTrue(outer.owns(kept));
            assertSame(outer, BufferScope.current());
        }
        assertTrue(kept.isClosed(), "freed with the outer scope");
    }

    @Test
    void closingAnOuterScopeClosesTheOpenInnerOnesAndExplicitClosesStillWork() {
        BufferScope outer = BufferScope.open("outer");
        BufferScope inner = BufferScope.open("inner");
        HostBuffer a = HostBuffer.allocate(DType.I32, 2);
        HostBuffer b = HostBuffer.allocate(DType.I32, 2);
        b.close(); // explicit close inside a scope is harmless
        outer.close();
        assertTrue(inner.isClosed());
        assertTrue(a.isClosed());
        assertNull(BufferScope.current());
        try (HostBuffer c = HostBuffer.allocate(DType.I32, 1)) {
            assertThrows(BufferClosedException.class, () -> inner.own(c));
        }
    }

    @Test
    void aDetachedScopeOwnsWhatIsMadeWhileEnteredAndNothingElse() {
        BufferScope state = BufferScope.detached("layer", null);
        HostBuffer weight;
        try (BufferScope.Activation a = state.enter()) {
            weight = HostBuffer.allocate(DType.F32, 8);
        }
        assertNull(BufferScope.current());
        try (HostBuffer notOwned = HostBuffer.allocate(DType.F32, 1)) {
            assertFalse(state.owns(notOwned));
        }
        assertTrue(state.owns(weight));
        state.close();
        assertTrue(weight.isClosed());
    }

    @Test
    void anActiveScopeMustBeClosedOnItsOwnThreadAndForeignBuffersAreRefused() throws Exception {
        BufferScope s = BufferScope.open("step");
        AtomicReference<Throwable> error = new AtomicReference<>();
        Thread t = new Thread(() -> {
            try {
                s.close();
            } catch (Throwable e) {
                error.set(e);
            }
        }, "other");
        t.start();
        t.join();
        assertTrue(error.get() instanceof IllegalStateException, "closing on another thread: " + error.get());
        assertTrue(error.get().getMessage().contains("must be closed there"), error.get().getMessage());
        try (HostBuffer stranger = BufferScope.detached("x", null).detach(s.own(HostBuffer.allocate(DType.F32, 1)))) {
            assertFalse(stranger.isClosed());
        } catch (IllegalArgumentException expected) {
            assertTrue(expected.getMessage().contains("does not own"), expected.getMessage());
        }
        s.close();
        assertTrue(s.isClosed());
        assertThrows(NullPointerException.class, () -> BufferScope.open(null));
    }

    @Test
    void aScopeWithAnAllocatorCountsItsBuffersThereAndTheAllocatorReportsLeaks() {
        BufferAllocator layer = BufferAllocator.root().newChild("test-layer");
        HostBuffer leaked;
        try (BufferScope s = BufferScope.open("step", layer)) {
            try (HostBuffer b = HostBuffer.allocate(DType.F32, 4)) {
                assertSame(layer, b.allocator());
                assertEquals(16, layer.liveBytes());
                assertEquals(1, layer.liveCount());
            }
            assertEquals(0, layer.liveBytes());
            leaked = s.detach(HostBuffer.allocate(DType.F32, 2, 2));
        }
        assertEquals(16, layer.liveBytes());
        assertEquals(32, layer.peakBytes() + 16, "peak: 16 bytes live at once (each buffer alone)");
        MemoryLeakException e = assertThrows(MemoryLeakException.class, layer::close);
        assertTrue(e.getMessage().contains("memory leaked: 1 live buffer(s), 16 bytes"), e.getMessage());
        assertTrue(e.getMessage().contains("HostBuffer[F32 [2, 2] on cpu, 16 bytes] in root/test-layer"), e.getMessage());
        assertTrue(leaked.isClosed(), "the allocator frees what leaked");
        assertEquals(0, layer.liveBytes());
        assertThrows(BufferClosedException.class, () -> HostBuffer.allocate(layer, DType.F32, org.moe4j.core.Shape.of(1)));
        assertThrows(UnsupportedOperationException.class, BufferAllocator.root()::close);
    }

    @Test
    void theDebugPropertyRecordsAllocationSites() {
        String before = System.getProperty(BufferAllocator.DEBUG_PROPERTY);
        System.setProperty(BufferAllocator.DEBUG_PROPERTY, "true");
        BufferAllocator a = BufferAllocator.root().newChild("debug");
        try {
            HostBuffer.allocate(a, DType.I32, org.moe4j.core.Shape.of(3));
        } finally {
            if (before == null) {
                System.clearProperty(BufferAllocator.DEBUG_PROPERTY);
            } else {
                System.setProperty(BufferAllocator.DEBUG_PROPERTY, before);
            }
        }
        MemoryLeakException e = assertThrows(MemoryLeakException.class, a::close);
        assertTrue(e.getMessage().contains("allocated at org.moe4j.core.buffer.BufferScopeTest.theDebugPropertyRecordsAllocationSites:"),
                e.getMessage());
        assertEquals(1, e.leakedBuffers().size());
        assertEquals(12, e.leakedBytes());
    }
}
