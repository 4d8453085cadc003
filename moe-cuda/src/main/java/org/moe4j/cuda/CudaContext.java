package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.core.Device;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * One device's primary context, retained for the lifetime of this object.
 *
 * <p>The driver binds a context per thread; every wrapper in this package calls {@link #makeCurrent()}
 * before touching the driver, so any Java thread may use any object of this package. The primary
 * context is the one the CUDA runtime (and so NCCL, cuBLAS, PyTorch) uses too.
 */
public final class CudaContext implements AutoCloseable {
    private static final ThreadLocal<MemorySegment> CURRENT = new ThreadLocal<>();

    private final CudaDevice device;
    private final MemorySegment handle; // CUcontext
    private final CudaStream defaultStream;
    private final java.util.concurrent.atomic.AtomicLong hostReads = new java.util.concurrent.atomic.AtomicLong();
    private volatile boolean closed;

    private CudaContext(CudaDevice device, MemorySegment handle) {
        this.device = device;
        this.handle = handle;
        this.defaultStream = new CudaStream(this, MemorySegment.NULL, false);
    }

    /**
     * Retains the primary context of a device.
     *
     * @param ordinal device index
     * @return the context; close it to release the retain
     * @throws NativeLibraryException when libcuda is missing
     * @throws CudaException          when the driver fails
     */
    public static CudaContext open(int ordinal) {
        CudaDevice dev = CudaDevice.query(ordinal);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            CudaException.check(cuda_h.cuDevicePrimaryCtxRetain(out, dev.handle()), "cuDevicePrimaryCtxRetain(cuda:" + ordinal + ")");
            CudaContext ctx = new CudaContext(dev, out.get(ValueLayout.ADDRESS, 0));
            ctx.makeCurrent();
            keepFreedMemory(dev);
            return ctx;
        }
    }

    /** Devices whose default memory pool already keeps freed memory (once per device and process). */
    private static final java.util.Set<Integer> POOLS_KEPT = java.util.concurrent.ConcurrentHashMap.newKeySet();

    /**
     * Lets the device's default memory pool (the one {@code cuMemAllocAsync} draws from) keep memory
     * freed by {@code cuMemFreeAsync} instead of returning it to the device at every synchronisation
     * (its release threshold is 0 by default), as PyTorch's caching allocator does: a training step
     * then reuses its scratch memory instead of mapping it again. Drivers without memory pools are
     * left as they are (DevicePool falls back to cuMemAlloc there).
     */
    private static void keepFreedMemory(CudaDevice dev) {
        if (!POOLS_KEPT.add(dev.handle())) {
            return;
        }
        try (Arena a = Arena.ofConfined()) {
            MemorySegment pool = defaultMemPool(a, dev, "cuMemPoolSetAttribute");
            if (pool != null) {
                MemorySegment all = a.allocateFrom(ValueLayout.JAVA_LONG, -1L); // UINT64_MAX: keep everything
                CudaException.check(cuda_h.cuMemPoolSetAttribute(pool, cuda_h.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, all),
                        "cuMemPoolSetAttribute(RELEASE_THRESHOLD, cuda:" + dev.ordinal() + ")");
            }
        }
    }

    /**
     * @param use the pool function the caller needs besides cuDeviceGetDefaultMemPool
     * @return the device's default memory pool, or null where the driver or the device has none
     */
    private static MemorySegment defaultMemPool(Arena a, CudaDevice dev, String use) {
        var lib = cuda_h.symbolLookup();
        if (lib.find("cuDeviceGetDefaultMemPool").isEmpty() || lib.find(use).isEmpty()) {
            return null;
        }
        MemorySegment out = a.allocate(ValueLayout.ADDRESS);
        return cuda_h.cuDeviceGetDefaultMemPool(out, dev.handle()) == cuda_h.CUDA_SUCCESS ? out.get(ValueLayout.ADDRESS, 0) : null;
    }

    /**
     * Waits for the device, then gives the memory that the default memory pool keeps for reuse (freed
     * device buffers) back to the device, so that {@link #memoryInfo()} counts it as free again; the
     * counterpart of {@code torch.cuda.empty_cache()}. Nothing to do on drivers without memory pools.
     *
     * @throws CudaException when the driver fails
     */
    public void releaseCachedMemory() {
        synchronize();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment pool = defaultMemPool(a, device, "cuMemPoolTrimTo");
            if (pool != null) {
                CudaException.check(cuda_h.cuMemPoolTrimTo(pool, 0), "cuMemPoolTrimTo(" + location() + ")");
            }
        }
    }

    /**
     * Returns the device this context belongs to.
     * @return the device this context belongs to
     */
    public CudaDevice device() {
        return device;
    }

    /**
     * Returns {@code cuda:N}.
     * @return {@code cuda:N}
     */
    public Device location() {
        return device.device();
    }

    /**
     * Returns how many device-to-host copies have been queued in this context so far (every
     * {@link DeviceBuffer#copyTo}, {@link DeviceBuffer#copyToAsync}, {@code toHost} and
     * {@code hostView} that reads); what {@link CudaBackend#hostReadCount()} reports. Monotonic.
     *
     * @return the number of device-to-host reads so far
     */
    public long hostReadCount() {
        return hostReads.get();
    }

    /** Counts one device-to-host copy (called by {@link DeviceBuffer} for each one it queues). */
    void countHostRead() {
        hostReads.incrementAndGet();
    }

    /**
     * Binds this context to the calling thread if it is not bound already.
     *
     * @throws BufferClosedException after {@link #close()}
     */
    public void makeCurrent() {
        if (closed) {
            throw new BufferClosedException("CudaContext " + location());
        }
        if (CURRENT.get() != handle) {
            CudaException.check(cuda_h.cuCtxSetCurrent(handle), "cuCtxSetCurrent(" + location() + ")");
            CURRENT.set(handle);
        }
    }

    /**
     * Returns the legacy default stream (not owned: closing it does nothing); it orders with every blocking stream.
     * @return the legacy default stream (not owned: closing it does nothing); it orders with every blocking stream
     */
    public CudaStream defaultStream() {
        return defaultStream;
    }

    /**
     * Returns a new blocking stream (ordered with the legacy default stream, where buffers are zeroed).
     * @return a new blocking stream (ordered with the legacy default stream, where buffers are zeroed)
     * @throws CudaException when the driver fails
     */
    public CudaStream createStream() {
        makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            CudaException.check(cuda_h.cuStreamCreate(out, cuda_h.CU_STREAM_DEFAULT), "cuStreamCreate");
            return new CudaStream(this, out.get(ValueLayout.ADDRESS, 0), true);
        }
    }

    /**
     * Returns a new event.
     * @param timing whether the event records time (needed for {@link CudaEvent#elapsedMillis(CudaEvent)})
     * @return a new event
     * @throws CudaException when the driver fails
     */
    public CudaEvent createEvent(boolean timing) {
        makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            CudaException.check(cuda_h.cuEventCreate(out, timing ? cuda_h.CU_EVENT_DEFAULT : cuda_h.CU_EVENT_DISABLE_TIMING),
                    "cuEventCreate");
            return new CudaEvent(this, out.get(ValueLayout.ADDRESS, 0));
        }
    }

    /**
     * Loads a kernel family's fatbin ({@code org/moe4j/cuda/kernels/<family>.fatbin}).
     *
     * @param family kernel family, e.g. {@code "smoke"}
     * @return the module
     * @throws KernelsNotBuiltException when the fatbin is not on the class path
     * @throws CudaException            when the driver refuses the image
     */
    public CudaModule loadModule(String family) {
        return CudaModule.load(this, family);
    }

    /**
     * Returns a new pool for device memory whose buffers belong to the {@linkplain #defaultStream() legacy default stream} (so their frees are ordered after the work of every blocking stream); close it when done (it fails on leaks).
     * @return a new pool for device memory whose buffers belong to the {@linkplain #defaultStream()
     *         legacy default stream} (so their frees are ordered after the work of every blocking
     *         stream); close it when done (it fails on leaks)
     */
    public DevicePool createPool() {
        return DevicePool.create(this, defaultStream());
    }

    /**
     * Returns a new pool for device memory; close it when done (it fails on leaks).
     * @param stream the stream the pool's buffers are allocated, zeroed and freed on (stream-ordered);
     *               it must outlive the pool. Work on other streams that uses a buffer must be ordered
     *               before the buffer's close by the caller (an event the stream waits for).
     * @return a new pool for device memory; close it when done (it fails on leaks)
     */
    public DevicePool createPool(CudaStream stream) {
        return DevicePool.create(this, stream);
    }

    /**
     * Waits for all work on this device.
     *
     * @throws CudaException when the driver fails (also for asynchronous errors of earlier kernels)
     */
    public void synchronize() {
        makeCurrent();
        CudaException.check(cuda_h.cuCtxSynchronize(), "cuCtxSynchronize(" + location() + ")");
    }

    /**
     * Free and total device memory.
     *
     * @param free  bytes free
     * @param total bytes in total
     */
    public record MemoryInfo(long free, long total) {
    }

    /**
     * Returns free and total device memory.
     * @return free and total device memory
     */
    public MemoryInfo memoryInfo() {
        makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment f = a.allocate(ValueLayout.JAVA_LONG);
            MemorySegment t = a.allocate(ValueLayout.JAVA_LONG);
            CudaException.check(cuda_h.cuMemGetInfo_v2(f, t), "cuMemGetInfo_v2");
            return new MemoryInfo(f.get(ValueLayout.JAVA_LONG, 0), t.get(ValueLayout.JAVA_LONG, 0));
        }
    }

    /**
     * Returns true after {@link #close()}.
     * @return true after {@link #close()}
     */
    public boolean isClosed() {
        return closed;
    }

    /** Releases the primary-context retain. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (CURRENT.get() == handle) {
            CURRENT.remove();
        }
        CudaException.check(cuda_h.cuDevicePrimaryCtxRelease_v2(device.handle()), "cuDevicePrimaryCtxRelease_v2(" + location() + ")");
    }

    @Override
    public String toString() {
        return "CudaContext[" + device.describe() + (closed ? ", closed" : "") + "]";
    }
}
