package org.moe4j.routing.internal;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicReferenceArray;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;

/**
 * Reusable host memory for router outputs whose lifetime ends with {@code RouterOutput.close()}.
 *
 * <p>Allocating a fresh zeroed buffer per forward costs a memset and, for the multi-megabyte
 * {@code [tokens, experts]} scores, page faults and an {@code munmap} per call. Instead each role
 * (scores, selected, weights, ...) keeps one backing segment; {@link #take} hands out a new
 * non-owning {@link HostBuffer} view of it, and {@link Lease#release()} closes that view (so the
 * caller's reference throws {@code BufferClosedException} afterwards) and puts the memory back.
 * When the slot is empty because an earlier output is still open, {@link #take} allocates new
 * memory, so outputs that are alive at the same time never share memory. Memory handed out is
 * <b>not</b> zeroed: callers use it only for outputs that the kernels overwrite completely.
 * The backing memory comes from automatic arenas and is freed by the GC once the pool and its
 * leases are unreachable. Thread-safe.
 */
public final class HostWorkspace {
    private static final long ALIGNMENT = 64;

    private final AtomicReferenceArray<MemorySegment> slots;

    /** @param roles number of roles (slot indices {@code [0, roles)}) */
    public HostWorkspace(int roles) {
        this.slots = new AtomicReferenceArray<>(roles);
    }

    /**
     * A buffer view over reusable memory (contents undefined).
     *
     * @param role  slot index
     * @param dtype element type
     * @param shape shape
     * @return the lease; release it exactly when the view is no longer used
     */
    public Lease take(int role, DType dtype, Shape shape) {
        long bytes = Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
        MemorySegment backing = slots.getAndSet(role, null);
        if (backing == null || backing.byteSize() < bytes) {
            backing = Arena.ofAuto().allocate(Math.max(bytes, 1), ALIGNMENT);
        }
        return new Lease(this, role, backing, HostBuffer.wrap(dtype, shape, backing.asSlice(0, bytes)));
    }

    private void giveBack(int role, MemorySegment backing) {
        MemorySegment cur = slots.get(role);
        // keep the larger segment; an unkept one is freed by the GC
        if (cur == null || cur.byteSize() < backing.byteSize()) {
            slots.compareAndSet(role, cur, backing);
        }
    }

    /** One handed-out view and the memory behind it. */
    public static final class Lease {
        private final HostWorkspace pool;
        private final int role;
        private final MemorySegment backing;
        private final HostBuffer view;
        private boolean released;

        private Lease(HostWorkspace pool, int role, MemorySegment backing, HostBuffer view) {
            this.pool = pool;
            this.role = role;
            this.backing = backing;
            this.view = view;
        }

        /** @return the non-owning view (closed by {@link #release()}) */
        public HostBuffer buffer() {
            return view;
        }

        /** Closes the view and returns the memory to the pool. Idempotent. */
        public synchronized void release() {
            if (released) {
                return;
            }
            released = true;
            view.close();
            pool.giveBack(role, backing);
        }
    }
}
