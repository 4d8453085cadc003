package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Owner of device allocations: every {@link DeviceBuffer} comes from a pool, and the pool knows which
 * are still alive. Closing a pool that still has live buffers frees them and then fails loudly with
 * {@code memory leaked}, listing each buffer and where it was allocated, so tests catch leaks.
 *
 * <p>A buffer allocated while a {@link BufferScope} is active on the allocating thread is also owned
 * by that scope (freed when it closes), as host buffers are.
 *
 * <p>Allocation is stream-ordered: every buffer of a pool belongs to the pool's {@linkplain #stream()
 * stream} (the context's legacy default stream unless the pool was made by
 * {@link CudaContext#createPool(CudaStream)}), where it is allocated ({@code cuMemAllocAsync}), zeroed
 * ({@code cuMemsetD8Async}) and, by {@link DeviceBuffer#close()}, freed ({@code cuMemFreeAsync}).
 * Closing a buffer therefore neither blocks the host nor synchronises the device, and the memory is
 * reused only after the work queued before the close, on that stream, has finished. On the legacy
 * default stream that is all work queued on every blocking stream of the context (all streams made by
 * {@link CudaContext#createStream()}), so a buffer may be closed right after queuing kernels that read
 * it on any of them. The price: on the legacy default stream each allocation, zeroing and free is a
 * device-wide ordering point (it waits for, and holds back, work on every blocking stream), so it
 * removes overlap between streams, though never the host's. A pool on another stream leaves
 * cross-stream ordering to its caller (record an event and make the pool's stream wait for it
 * before closing a buffer used elsewhere). Freed memory stays in the driver's memory pool for reuse
 * ({@link CudaContext} sets its release threshold); {@link CudaContext#releaseCachedMemory()} gives it back.
 *
 * <p>Drivers without the stream-ordered allocator (symbol missing, older than CUDA 11.2, or
 * {@code CUDA_ERROR_NOT_SUPPORTED} on this device) get {@code cuMemAlloc}/{@code cuMemFree} instead,
 * with a warning logged once per process; there each free synchronises the device, as before.
 */
public final class DevicePool implements AutoCloseable {
    /** The three memory operations a pool needs: {@link DriverMemory} in production, a fake in CPU tests. */
    interface Memory {
        long allocate(long bytes);

        void free(long address);

        void zeroAsync(long address, long bytes);
    }

    /**
     * The raw driver calls behind {@link DriverMemory}, each returning its {@code CUresult}:
     * {@link #CUDA} in production, a recording double in tests.
     */
    interface Driver {
        /** @return whether the library exports {@code cuMemAllocAsync} and {@code cuMemFreeAsync} */
        boolean hasStreamOrderedAllocator();

        int memAllocAsync(MemorySegment out, long bytes, MemorySegment stream);

        int memFreeAsync(long address, MemorySegment stream);

        int memAlloc(MemorySegment out, long bytes);

        int memFree(long address);

        int memsetD8Async(long address, byte value, long bytes, MemorySegment stream);
    }

    /** The driver's calls through {@link cuda_h}. */
    static final Driver CUDA = new Driver() {
        @Override
        public boolean hasStreamOrderedAllocator() {
            SymbolLookup lib = cuda_h.symbolLookup();
            return lib.find("cuMemAllocAsync").isPresent() && lib.find("cuMemFreeAsync").isPresent();
        }

        @Override
        public int memAllocAsync(MemorySegment out, long bytes, MemorySegment stream) {
            return cuda_h.cuMemAllocAsync(out, bytes, stream);
        }

        @Override
        public int memFreeAsync(long address, MemorySegment stream) {
            return cuda_h.cuMemFreeAsync(address, stream);
        }

        @Override
        public int memAlloc(MemorySegment out, long bytes) {
            return cuda_h.cuMemAlloc_v2(out, bytes);
        }

        @Override
        public int memFree(long address) {
            return cuda_h.cuMemFree_v2(address);
        }

        @Override
        public int memsetD8Async(long address, byte value, long bytes, MemorySegment stream) {
            return cuda_h.cuMemsetD8Async(address, value, bytes, stream);
        }
    };

    private static final Logger LOG = LoggerFactory.getLogger(DevicePool.class);
    private static final AtomicBoolean FALLBACK_LOGGED = new AtomicBoolean();

    /**
     * Device memory ordered on one stream: {@code cuMemAllocAsync} / {@code cuMemFreeAsync} /
     * {@code cuMemsetD8Async} there. The first allocation decides, once per pool, whether the driver
     * has the stream-ordered allocator; without it every call falls back to {@code cuMemAlloc_v2} /
     * {@code cuMemFree_v2}, so each free is of the kind its allocation was.
     */
    static final class DriverMemory implements Memory {
        private final Runnable bind;
        private final Driver driver;
        private final Supplier<MemorySegment> stream;
        private final String streamName;
        private final String where;
        /** null until the first allocation succeeds (or falls back); then TRUE for stream-ordered. */
        private volatile Boolean streamOrdered;

        /**
         * @param bind       makes the pool's context current on the calling thread
         * @param driver     the driver calls
         * @param stream     the {@code CUstream} every allocation, zeroing and free is ordered on
         * @param streamName that stream, for messages
         * @param where      the device, for messages
         */
        DriverMemory(Runnable bind, Driver driver, Supplier<MemorySegment> stream, String streamName, String where) {
            this.bind = Objects.requireNonNull(bind, "bind");
            this.driver = Objects.requireNonNull(driver, "driver");
            this.stream = Objects.requireNonNull(stream, "stream");
            this.streamName = streamName;
            this.where = where;
        }

        /** @return TRUE stream-ordered, FALSE the synchronous fallback, null before the first allocation */
        Boolean streamOrdered() {
            return streamOrdered;
        }

        @Override
        public long allocate(long bytes) {
            bind.run();
            MemorySegment s = stream.get();
            try (Arena a = Arena.ofConfined()) {
                MemorySegment out = a.allocate(ValueLayout.JAVA_LONG);
                Boolean ordered = streamOrdered;
                if (ordered == null) {
                    synchronized (this) {
                        ordered = streamOrdered;
                        if (ordered == null) {
                            return firstAllocation(out, bytes, s);
                        }
                    }
                }
                if (ordered) {
                    check(driver.memAllocAsync(out, bytes, s), "cuMemAllocAsync", bytes);
                } else {
                    check(driver.memAlloc(out, bytes), "cuMemAlloc_v2", bytes);
                }
                return out.get(ValueLayout.JAVA_LONG, 0);
            }
        }

        private long firstAllocation(MemorySegment out, long bytes, MemorySegment s) {
            String reason;
            if (!driver.hasStreamOrderedAllocator()) {
                reason = "this libcuda does not export cuMemAllocAsync/cuMemFreeAsync (driver older than CUDA 11.2)";
            } else {
                int rc = driver.memAllocAsync(out, bytes, s);
                if (rc != cuda_h.CUDA_ERROR_NOT_SUPPORTED) {
                    check(rc, "cuMemAllocAsync", bytes); // a failure leaves the mode undecided: the next allocation tries again
                    streamOrdered = Boolean.TRUE;
                    return out.get(ValueLayout.JAVA_LONG, 0);
                }
                reason = "cuMemAllocAsync returned " + CudaException.describe(rc) + " on " + where;
            }
            if (FALLBACK_LOGGED.compareAndSet(false, true)) {
                LOG.warn("no stream-ordered allocator: {}; device buffers use cuMemAlloc/cuMemFree, and every free "
                        + "synchronises the device", reason);
            }
            check(driver.memAlloc(out, bytes), "cuMemAlloc_v2", bytes);
            streamOrdered = Boolean.FALSE;
            return out.get(ValueLayout.JAVA_LONG, 0);
        }

        private void check(int rc, String fn, long bytes) {
            if (rc != cuda_h.CUDA_SUCCESS) {
                throw CudaException.of(rc, fn + "(" + bytes + " bytes on " + where + (fn.endsWith("Async") ? ", " + streamName : "") + ")");
            }
        }

        @Override
        public void free(long address) {
            bind.run();
            if (Boolean.TRUE.equals(streamOrdered)) {
                int rc = driver.memFreeAsync(address, stream.get());
                if (rc != cuda_h.CUDA_SUCCESS) {
                    throw CudaException.of(rc, "cuMemFreeAsync(0x" + Long.toHexString(address) + ", " + streamName + ")");
                }
            } else {
                int rc = driver.memFree(address);
                if (rc != cuda_h.CUDA_SUCCESS) {
                    throw CudaException.of(rc, "cuMemFree_v2(0x" + Long.toHexString(address) + ")");
                }
            }
        }

        @Override
        public void zeroAsync(long address, long bytes) {
            bind.run();
            int rc = driver.memsetD8Async(address, (byte) 0, bytes, stream.get());
            if (rc != cuda_h.CUDA_SUCCESS) {
                throw CudaException.of(rc, "cuMemsetD8Async(" + bytes + " bytes, " + streamName + ")");
            }
        }
    }

    private static final StackWalker WALKER = StackWalker.getInstance();

    private final CudaContext context; // null only in CPU tests with a fake Memory
    private final Device device;
    private final Memory memory;
    private final CudaStream stream; // null only in CPU tests with a fake Memory
    private final Map<Long, DeviceBuffer> live = new ConcurrentHashMap<>();
    private final AtomicLong ids = new AtomicLong();
    private final AtomicLong liveBytes = new AtomicLong();
    private final AtomicLong peakBytes = new AtomicLong();
    private volatile boolean closed;

    DevicePool(CudaContext context, Device device, Memory memory) {
        this(context, device, memory, null);
    }

    DevicePool(CudaContext context, Device device, Memory memory, CudaStream stream) {
        this.context = context;
        this.device = Objects.requireNonNull(device, "device");
        this.memory = Objects.requireNonNull(memory, "memory");
        this.stream = stream;
    }

    static DevicePool create(CudaContext ctx, CudaStream stream) {
        return create(ctx, stream, CUDA);
    }

    static DevicePool create(CudaContext ctx, CudaStream stream, Driver driver) {
        Objects.requireNonNull(stream, "stream");
        if (stream.context() != ctx) {
            throw new IllegalArgumentException(stream + " belongs to another context than " + ctx);
        }
        return new DevicePool(ctx, ctx.location(),
                new DriverMemory(ctx::makeCurrent, driver, stream::handle, stream.toString(), ctx.location().toString()), stream);
    }

    /** @return the memory operations (for tests) */
    Memory memory() {
        return memory;
    }

    /**
     * Returns the context (for copies and launches).
     * @return the context (for copies and launches)
     */
    public CudaContext context() {
        if (context == null) {
            throw new IllegalStateException("DevicePool on " + device + " has no CUDA context (test pool)");
        }
        return context;
    }

    /**
     * Returns the device, {@code cuda:N}.
     * @return the device, {@code cuda:N}
     */
    public Device device() {
        return device;
    }

    /**
     * Returns the stream this pool's buffers belong to: they are allocated, zeroed and freed in its order (the context's legacy default stream for {@link CudaContext#createPool()}).
     * @return the stream this pool's buffers belong to: they are allocated, zeroed and freed in its
     *         order (the context's legacy default stream for {@link CudaContext#createPool()})
     */
    public CudaStream stream() {
        if (stream == null) {
            throw new IllegalStateException("DevicePool on " + device + " has no CUDA stream (test pool)");
        }
        return stream;
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
     * Returns a zeroed owning buffer.
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
        BufferScope.track(b); // owned by the active step scope, like a host buffer
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
            try {
                b.close();
            } catch (RuntimeException suppressed) { // e.g. a capture the failed copy invalidated: report the copy
                e.addSuppressed(suppressed);
            }
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

    /**
     * Returns buffers allocated and not yet closed.
     * @return buffers allocated and not yet closed
     */
    public int liveCount() {
        return live.size();
    }

    /**
     * Returns bytes held by live buffers.
     * @return bytes held by live buffers
     */
    public long liveBytes() {
        return liveBytes.get();
    }

    /**
     * Returns the most bytes live at once.
     * @return the most bytes live at once
     */
    public long peakBytes() {
        return peakBytes.get();
    }

    /**
     * Returns one line per live buffer, oldest first, with its allocation site.
     * @return one line per live buffer, oldest first, with its allocation site
     */
    public List<String> liveBuffers() {
        List<DeviceBuffer> bs = new ArrayList<>(live.values());
        bs.sort(Comparator.comparingLong(DeviceBuffer::id));
        return bs.stream().map(DeviceBuffer::describeWithSite).toList();
    }

    /**
     * Returns true after {@link #close()}.
     * @return true after {@link #close()}
     */
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
