package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * Page-locked host memory ({@code cuMemAllocHost}), seen as a {@link HostBuffer}. Copies between it
 * and a {@link DeviceBuffer} on a stream are truly asynchronous and run at full PCIe/NVLink speed.
 * Closing frees the memory; the {@link #host()} view is invalid afterwards.
 */
@SuppressWarnings("restricted") // FFM native access is this class's purpose
public final class PinnedHostBuffer implements AutoCloseable {
    private final Arena arena;
    private final HostBuffer host;

    private PinnedHostBuffer(Arena arena, HostBuffer host) {
        this.arena = arena;
        this.host = host;
    }

    /**
     * Returns zeroed pinned memory.
     * @param context the device context (pinned memory is registered with it)
     * @param dtype   element type
     * @param shape   shape
     * @return zeroed pinned memory
     * @throws CudaException when the driver cannot pin that much memory
     */
    public static PinnedHostBuffer allocate(CudaContext context, DType dtype, Shape shape) {
        Objects.requireNonNull(dtype, "dtype");
        long bytes = Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
        context.makeCurrent();
        long address;
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            CudaException.check(cuda_h.cuMemAllocHost_v2(out, Math.max(bytes, 1)), "cuMemAllocHost_v2(" + bytes + " bytes)");
            address = out.get(ValueLayout.ADDRESS, 0).address();
        }
        Arena arena = Arena.ofShared();
        MemorySegment seg = MemorySegment.ofAddress(address).reinterpret(bytes, arena, s -> {
            context.makeCurrent();
            CudaException.check(cuda_h.cuMemFreeHost(MemorySegment.ofAddress(address)), "cuMemFreeHost");
        });
        seg.fill((byte) 0);
        return new PinnedHostBuffer(arena, HostBuffer.wrap(dtype, shape, seg));
    }

    /**
     * Returns the memory as a host buffer (closing that view does not free it).
     * @return the memory as a host buffer (closing that view does not free it)
     */
    public HostBuffer host() {
        return host;
    }

    /** Frees the pinned memory. Idempotent. */
    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            host.close();
            arena.close();
        }
    }
}
