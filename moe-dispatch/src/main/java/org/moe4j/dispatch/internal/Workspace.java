package org.moe4j.dispatch.internal;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

/**
 * Recycles a dispatcher's intermediate buffers across calls. On the CPU backend a buffer taken
 * here is a non-owning {@link HostBuffer#wrap view} over pooled memory: it is <b>not zeroed</b>
 * (every kernel that fills it writes every element; callers zero padding explicitly with
 * {@link #zeroRows}), and {@link #give} detaches the view and keeps the memory for the next call.
 * The memory comes from automatic arenas, so a dropped dispatcher (and a context never closed)
 * is reclaimed by the garbage collector; nothing needs an explicit close.
 *
 * <p>On any other backend, {@link #take} allocates through the backend (zeroed) and {@link #give}
 * closes the buffer: device backends have their own allocator pools.
 *
 * <p>Thread-safe: a context may be closed on another thread than the one dispatching.
 */
final class Workspace {
    /** Free blocks kept at most; beyond that the smallest are dropped (and collected). */
    private static final int MAX_FREE = 48;
    /** Minimum block size, so that tiny index buffers share reusable blocks. */
    private static final long MIN_BLOCK = 4096;

    private final Backend backend;
    private final boolean host;
    private final List<MemorySegment> free = new ArrayList<>();
    private final IdentityHashMap<Buffer, MemorySegment> lent = new IdentityHashMap<>();

    Workspace(Backend backend) {
        this.backend = backend;
        this.host = backend instanceof CpuBackend;
    }

    /**
     * A buffer of the given type and shape; on the CPU its contents are undefined.
     *
     * @param dtype element type
     * @param dims  dimensions
     * @return the buffer; hand it back with {@link #give}
     */
    Buffer take(DType dtype, long... dims) {
        Shape shape = Shape.of(dims);
        if (!host) {
            return backend.allocate(dtype, shape);
        }
        long bytes = Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
        MemorySegment block;
        synchronized (this) {
            block = bestFit(bytes);
        }
        if (block == null) {
            // 1/8 headroom: routed row counts vary a little from call to call
            block = Arena.ofAuto().allocate(Math.max(bytes + bytes / 8, MIN_BLOCK), HostBuffer.ALIGNMENT);
        }
        HostBuffer view = HostBuffer.wrap(dtype, shape, block.asSlice(0, bytes));
        synchronized (this) {
            lent.put(view, block);
        }
        return view;
    }

    /**
     * Returns a buffer from {@link #take} (its memory is kept for reuse) or closes any other buffer.
     * Null is ignored; giving twice is harmless.
     *
     * @param b the buffer
     */
    void give(Buffer b) {
        if (b == null) {
            return;
        }
        MemorySegment block;
        synchronized (this) {
            block = lent.remove(b);
        }
        b.close();
        if (block != null) {
            synchronized (this) {
                free.add(block);
                if (free.size() > MAX_FREE) {
                    int smallest = 0;
                    for (int i = 1; i < free.size(); i++) {
                        if (free.get(i).byteSize() < free.get(smallest).byteSize()) {
                            smallest = i;
                        }
                    }
                    free.remove(smallest);
                }
            }
        }
    }

    /**
     * Zeroes rows {@code [from, to)} of a pooled buffer (fresh backend buffers are already zero).
     *
     * @param b    a buffer from {@link #take}, {@code [rows, ...]}
     * @param from first row
     * @param to   end row (exclusive)
     */
    void zeroRows(Buffer b, long from, long to) {
        if (to <= from) {
            return;
        }
        boolean pooled;
        synchronized (this) {
            pooled = lent.containsKey(b);
        }
        if (pooled) {
            HostBuffer h = (HostBuffer) b;
            long rowBytes = h.byteSize() / Math.max(1, h.shape().dim(0));
            h.segment().asSlice(from * rowBytes, (to - from) * rowBytes).fill((byte) 0);
        }
    }

    /** @return the smallest free block of at least {@code bytes} (removed from the free list), or null */
    private MemorySegment bestFit(long bytes) {
        int best = -1;
        for (int i = 0; i < free.size(); i++) {
            long size = free.get(i).byteSize();
            boolean fits = size >= bytes && size <= Math.max(2 * bytes, bytes + MIN_BLOCK * 16);
            if (fits && (best < 0 || size < free.get(best).byteSize())) {
                best = i;
            }
        }
        return best < 0 ? null : free.remove(best);
    }
}
