package org.moe4j.core.backend;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

/**
 * The CPU backend's scratch: a buffer taken here is a non-owning {@link HostBuffer#wrap view} over
 * pooled memory, <b>not zeroed</b>; {@link #give} detaches the view and keeps the block for the next
 * take (best fit, at most {@link #MAX_FREE} blocks). Blocks come from automatic arenas, so a dropped
 * pool, and a block never given back, are reclaimed by the garbage collector.
 */
final class HostScratch implements Scratch {
    /** Free blocks kept at most; beyond that the smallest are dropped (and collected). */
    private static final int MAX_FREE = 48;
    /** Minimum block size, so that tiny index buffers share reusable blocks. */
    private static final long MIN_BLOCK = 4096;

    private final List<MemorySegment> free = new ArrayList<>();
    private final IdentityHashMap<Buffer, MemorySegment> lent = new IdentityHashMap<>();

    @Override
    public HostBuffer take(DType dtype, Shape shape) {
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(shape, "shape");
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

    @Override
    public void give(Buffer b) {
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

    @Override
    public void zeroRows(Buffer b, long from, long to) {
        Scratches.checkRows(b, from, to);
        if (to == from) {
            return;
        }
        if (b instanceof HostBuffer h) { // this backend's own memory kind
            long rowBytes = h.byteSize() / Math.max(1, h.shape().dim(0));
            h.segment().asSlice(from * rowBytes, (to - from) * rowBytes).fill((byte) 0);
        } else {
            throw new IllegalArgumentException("zeroRows: " + b + " is not a CPU scratch buffer");
        }
    }

    @Override
    public synchronized void close() {
        free.clear();
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
