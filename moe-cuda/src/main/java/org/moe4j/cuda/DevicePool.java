package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * Owner of device allocations: every {@link DeviceBuffer} comes from a pool, and the pool knows which
 * are still alive. Closing a pool that still has live buffers frees them and then fails loudly with
 * {@code memory leaked}, listing each buffer and where it was allocated, so tests catch leaks.
 *
 * <p>Allocation is a plain {@code cuMemAlloc}; buffers are zeroed on the legacy default stream, which
 * every blocking stream (all streams made by {@link CudaContext#createStream()}) waits for.
 */
public final class DevicePool implements AutoCloseable {
    /** The three memory operations a pool needs: the driver's in production, a fake in CPU tests. */
    interface Memory {
        long allocate(long bytes);

        void free(long address);

        void zeroAsync(long address, long bytes);
    }

    private static final StackWalker WALKER = StackWalker.getInstance();

    private final CudaContext context; // null only in CPU tests with a fake Memory
    private final Device device;
    private final Memory memory;
    private final Map<Long, DeviceBuffer> live = new ConcurrentHashMap<>();
    private final AtomicLong ids = new AtomicLong();
    private final AtomicLong liveBytes = new AtomicLong();
    private final AtomicLong peakBytes = new AtomicLong();
    private volatile boolean closed;

    DevicePool(CudaContext context, Device device, Memory memory) {
        this.context = context;
        this.device = Objects.requireNonNull(device, "device");
        this.memory = Objects.requireNonNull(memory, "memory");
    }

    static DevicePool create(CudaContext ctx) {
        return new DevicePool(ctx, ctx.location(), new Memory() {
            @Override
            public long allocate(long bytes) {
                ctx.makeCurrent();
                try (Arena a = Arena.ofConfined()) {
                    MemorySegment out = a.allocate(ValueLayout.JAVA_LONG);
                    CudaException.check(cuda_h.cuMemAlloc_v2(out, bytes), "cuMemAlloc_v2(" + bytes + " bytes on " + ctx.location() + ")");
                    return out.get(ValueLayout.JAVA_LONG, 0);
                }
            }

            @Override
            public void free(long address) {
                ctx.makeCurrent();
                CudaException.check(cuda_h.cuMemFree_v2(address), "cuMemFree_v2(0x" + Long.toHexString(address) + ")");
            }

            @Override
            public void zeroAsync(long address, long bytes) {
                ctx.makeCurrent();
                CudaException.check(cuda_h.cuMemsetD8Async(address, (byte) 0, bytes, MemorySegment.NULL), "cuMemsetD8Async");
            }
        });
    }

    /** @return the context (for copies and launches) */
    public CudaContext context() {
        if (context == null) {
            throw new IllegalStateException("DevicePool on " + device + " has no CUDA context (test pool)");
        }
        return context;
    }

    /** @return the device, {@code cuda:N} */
    public Device device() {
        return device;
    }

    /**
     * Allocates a zeroed buffer.
     *
     * @param dtype element type
     * @param shape shape
     * @return the owning buffer; close it to free the memory
     * @throws BufferClosedException after {@link #close()}
     * @throws CudaException         when the device is out of memory
     */
    public DeviceBuffer allocate(DType dtype, Shape shape) {
        DeviceBuffer b = allocateUninitialized(dtype, shape);
        if (b.byteSize() > 0) {
            memory.zeroAsync(b.address(), b.byteSize());
        }
        return b;
    }

    /**
     * @param dtype element type
     * @param dims  dimensions
     * @return a zeroed owning buffer
     */
    public DeviceBuffer allocate(DType dtype, long... dims) {
        return allocate(dtype, Shape.of(dims));
    }

    /**
     * Allocates without zeroing (for outputs a kernel overwrites completely).
     *
     * @param dtype element type
     * @param shape shape
     * @return the owning buffer, contents undefined
     */
    public DeviceBuffer allocateUninitialized(DType dtype, Shape shape) {
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(shape, "shape");
        if (closed) {
            throw new BufferClosedException("DevicePool on " + device);
        }
        long bytes = Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
        long address = bytes == 0 ? 0 : memory.allocate(bytes);
        long id = ids.incrementAndGet();
        DeviceBuffer b = new DeviceBuffer(this, null, id, dtype, shape, address, callSite());
        live.put(id, b);
        long now = liveBytes.addAndGet(bytes);
        peakBytes.accumulateAndGet(now, Math::max);
        return b;
    }

    /**
     * Copies a host buffer to a new device buffer (synchronously).
     *
     * @param host the data
     * @return a new owning device buffer with the same dtype, shape and contents
     */
    public DeviceBuffer copyOf(HostBuffer host) {
        DeviceBuffer b = allocateUninitialized(host.dtype(), host.shape());
        try {
            b.copyFrom(host);
        } catch (RuntimeException e) {
            b.close();
            throw e;
        }
        return b;
    }

    void release(DeviceBuffer b) {
        if (live.remove(b.id()) != null) {
            liveBytes.addAndGet(-b.byteSize());
            if (b.rawAddress() != 0) {
                memory.free(b.rawAddress());
            }
        }
    }

    /** @return buffers allocated and not yet closed */
    public int liveCount() {
        return live.size();
    }

    /** @return bytes held by live buffers */
    public long liveBytes() {
        return liveBytes.get();
    }

    /** @return the most bytes live at once */
    public long peakBytes() {
        return peakBytes.get();
    }

    /** @return one line per live buffer, oldest first, with its allocation site */
    public List<String> liveBuffers() {
        List<DeviceBuffer> bs = new ArrayList<>(live.values());
        bs.sort(Comparator.comparingLong(DeviceBuffer::id));
        return bs.stream().map(DeviceBuffer::describeWithSite).toList();
    }

    /** @return true after {@link #close()} */
    public boolean isClosed() {
        return closed;
    }

    /**
     * Closes the pool. Live buffers are freed and reported.
     *
     * @throws IllegalStateException {@code "... memory leaked: N live buffer(s), B bytes: ..."} if any buffer was still live
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (live.isEmpty()) {
            return;
        }
        List<String> leaked = liveBuffers();
        long bytes = liveBytes();
        for (DeviceBuffer b : new ArrayList<>(live.values())) {
            b.close();
        }
        throw new IllegalStateException("DevicePool on " + device + ": memory leaked: " + leaked.size()
                + " live buffer(s), " + bytes + " bytes: " + String.join("; ", leaked));
    }

    private static boolean internalFrame(String cls) {
        for (Class<?> c : new Class<?>[] {DevicePool.class, DeviceBuffer.class, CudaBackend.class}) {
            if (cls.equals(c.getName()) || cls.startsWith(c.getName() + "$")) {
                return true;
            }
        }
        return cls.startsWith("org.moe4j.core.backend.");
    }

    private static String callSite() {
        return WALKER.walk(frames -> frames
                .filter(f -> !internalFrame(f.getClassName()))
                .findFirst()
                .map(f -> f.getClassName() + "." + f.getMethodName() + ":" + f.getLineNumber())
                .orElse("?"));
    }

    @Override
    public String toString() {
        return "DevicePool[" + device + ", " + live.size() + " live, " + liveBytes() + " bytes" + (closed ? ", closed" : "") + "]";
    }
}
