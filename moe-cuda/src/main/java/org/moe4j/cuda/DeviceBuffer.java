package org.moe4j.cuda;

import java.lang.foreign.MemorySegment;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * A typed, shaped block of device memory; moe-core's {@link Buffer} on a CUDA device.
 *
 * <p>Owning buffers come from a {@link DevicePool}; {@link #close()} tells the pool and queues the free
 * on the pool's stream ({@code cuMemFreeAsync}: it neither blocks the host nor synchronises the device,
 * and the memory is reused only after the work queued before it). Views ({@link #reshape},
 * {@link #view}) share their owner's memory and are invalid once it is closed. Any use after close
 * throws {@link BufferClosedException}.
 *
 * <p>Copies: the plain methods are synchronous and run on the legacy default stream, so they are
 * ordered after work already queued on blocking streams. The {@code Async} variants queue on the
 * given stream and return at once; the host buffer must then stay open and unchanged until that
 * stream is synchronized (with pageable host memory the driver may stage the copy and return early
 * or late; either way the data is taken at copy time in stream order).
 */
public final class DeviceBuffer implements Buffer {
    private final DevicePool pool;
    private final DeviceBuffer owner; // null for an owning buffer
    private final long id;
    private final DType dtype;
    private final Shape shape;
    private final long address;
    private final String site;
    private volatile boolean closed;

    DeviceBuffer(DevicePool pool, DeviceBuffer owner, long id, DType dtype, Shape shape, long address, String site) {
        this.pool = pool;
        this.owner = owner;
        this.id = id;
        this.dtype = dtype;
        this.shape = shape;
        this.address = address;
        this.site = site;
    }

    @Override
    public DType dtype() {
        return dtype;
    }

    @Override
    public Shape shape() {
        return shape;
    }

    @Override
    public Device device() {
        return pool.device();
    }

    /**
     * Returns the pool this buffer (or its owner) came from.
     * @return the pool this buffer (or its owner) came from
     */
    public DevicePool pool() {
        return pool;
    }

    /**
     * Returns the CUDA context.
     * @return the CUDA context
     */
    public CudaContext context() {
        return pool.context();
    }

    long id() {
        return id;
    }

    long rawAddress() {
        return address;
    }

    /**
     * Returns the device pointer ({@code CUdeviceptr}), for kernel arguments.
     * @return the device pointer ({@code CUdeviceptr}), for kernel arguments
     * @throws BufferClosedException after close (of this buffer or its owner)
     */
    public long address() {
        if (isClosed()) {
            throw new BufferClosedException(describe());
        }
        return address;
    }

    /**
     * Returns true for a view that does not own its memory.
     * @return true for a view that does not own its memory
     */
    public boolean isView() {
        return owner != null;
    }

    @Override
    public boolean isClosed() {
        return closed || (owner != null && owner.isClosed());
    }

    /**
     * Frees the memory, stream-ordered on the pool's {@linkplain DevicePool#stream() stream}, so
     * kernels already queued that read it may still be running (a view only detaches). Idempotent.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (owner == null) {
            pool.release(this);
        }
    }

    /**
     * A view of the same memory with another shape of the same element count.
     *
     * @param dims new dimensions
     * @return the view (closing it does not free memory)
     */
    public DeviceBuffer reshape(long... dims) {
        Shape s = Shape.of(dims);
        if (s.numel() != shape.numel()) {
            throw new IllegalArgumentException(describe() + ": cannot reshape to " + s + " (" + s.numel()
                    + " elements, have " + shape.numel() + ")");
        }
        return view(dtype, s, 0);
    }

    /**
     * A view of part of this buffer's memory.
     *
     * @param dtype      element type of the view
     * @param shape      shape of the view
     * @param byteOffset offset from the start of this buffer, a multiple of the view's element size
     * @return the view (closing it does not free memory)
     * @throws IllegalArgumentException when the view does not fit
     */
    public DeviceBuffer view(DType dtype, Shape shape, long byteOffset) {
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(shape, "shape");
        long base = address();
        long bytes = shape.numel() * dtype.byteSize();
        if (byteOffset < 0 || byteOffset % dtype.byteSize() != 0 || byteOffset + bytes > byteSize()) {
            throw new IllegalArgumentException(describe() + ": view " + dtype + " " + shape + " at byte offset "
                    + byteOffset + " does not fit (" + bytes + " bytes, have " + byteSize() + ")");
        }
        DeviceBuffer root = owner == null ? this : owner;
        return new DeviceBuffer(pool, root, id, dtype, shape, base + byteOffset, site);
    }

    private void requireSameSize(String op, Buffer other) {
        if (other.dtype() != dtype || other.numel() != numel()) {
            throw new IllegalArgumentException(describe() + ": " + op + " " + other
                    + ": dtype and element count must match (" + dtype + " x " + numel() + " vs "
                    + other.dtype() + " x " + other.numel() + ")");
        }
        if (other.isClosed()) {
            throw new BufferClosedException(other.toString());
        }
    }

    /**
     * Queues a host-to-device copy of all of {@code src} into this buffer.
     *
     * @param src    host data, same dtype and element count
     * @param stream the stream
     */
    public void copyFromAsync(HostBuffer src, CudaStream stream) {
        requireSameSize("copyFrom", src);
        long dst = address();
        if (byteSize() == 0) {
            return;
        }
        context().makeCurrent();
        CudaGraph.noteHostCopy(stream, "host->device copy into", this);
        CudaException.check(cuda_h.cuMemcpyHtoDAsync_v2(dst, src.segment(), byteSize(), stream.handle()),
                "cuMemcpyHtoDAsync_v2(" + byteSize() + " bytes to " + describe() + ")");
    }

    /**
     * Copies all of {@code src} into this buffer and waits for it.
     *
     * @param src host data, same dtype and element count
     */
    @Override
    public void copyFrom(HostBuffer src) {
        CudaStream s = context().defaultStream();
        copyFromAsync(src, s);
        s.synchronize();
    }

    /**
     * Queues a device-to-host copy of this buffer into {@code dst}; counted by
     * {@link CudaContext#hostReadCount()}.
     *
     * @param dst    host buffer, same dtype and element count
     * @param stream the stream
     */
    public void copyToAsync(HostBuffer dst, CudaStream stream) {
        requireSameSize("copyTo", dst);
        long src = address();
        context().countHostRead(); // every requested read counts, an empty one too (copyTo still waits)
        if (byteSize() == 0) {
            return;
        }
        context().makeCurrent();
        CudaGraph.noteHostCopy(stream, "device->host copy from", this);
        CudaException.check(cuda_h.cuMemcpyDtoHAsync_v2(dst.segment(), src, byteSize(), stream.handle()),
                "cuMemcpyDtoHAsync_v2(" + byteSize() + " bytes from " + describe() + ")");
    }

    /**
     * Copies this buffer into {@code dst} and waits for it.
     *
     * @param dst host buffer, same dtype and element count
     */
    @Override
    public void copyTo(HostBuffer dst) {
        CudaStream s = context().defaultStream();
        copyToAsync(dst, s);
        s.synchronize();
    }

    /**
     * Queues a device-to-device copy of all of {@code src} into this buffer.
     *
     * @param src    device data, same dtype and element count
     * @param stream the stream
     */
    public void copyFromAsync(DeviceBuffer src, CudaStream stream) {
        requireSameSize("copyFrom", src);
        long dst = address();
        if (byteSize() == 0) {
            return;
        }
        context().makeCurrent();
        CudaException.check(cuda_h.cuMemcpyDtoDAsync_v2(dst, src.address(), byteSize(), stream.handle()),
                "cuMemcpyDtoDAsync_v2(" + byteSize() + " bytes, " + src.describe() + " to " + describe() + ")");
    }

    /**
     * Copies all of {@code src} into this buffer and waits for it.
     *
     * @param src device data, same dtype and element count
     */
    public void copyFrom(DeviceBuffer src) {
        CudaStream s = context().defaultStream();
        copyFromAsync(src, s);
        s.synchronize();
    }

    /**
     * Queues setting every byte to zero.
     *
     * @param stream the stream
     */
    public void zeroAsync(CudaStream stream) {
        long dst = address();
        if (byteSize() == 0) {
            return;
        }
        context().makeCurrent();
        CudaException.check(cuda_h.cuMemsetD8Async(dst, (byte) 0, byteSize(), stream.handle()), "cuMemsetD8Async(" + describe() + ")");
    }

    /**
     * Sets every byte to zero on the pool's {@linkplain DevicePool#stream() stream} and waits for it;
     * while that stream captures a CUDA graph, the zeroing is recorded in the graph (it runs at each
     * replay, in stream order) and nothing is waited for.
     */
    @Override
    public void zero() {
        CudaStream s = pool.stream();
        zeroAsync(s);
        if (!CudaGraph.isCapturing(s)) {
            s.synchronize();
        }
    }

    /**
     * Returns a description such as {@code DeviceBuffer#3[F32 [4, 8] cuda:0]}.
     * @return e.g. {@code DeviceBuffer#3[F32 [4, 8] cuda:0]}
     */
    public String describe() {
        return "DeviceBuffer#" + id + (owner != null ? " view" : "") + "[" + dtype + " " + shape + " " + pool.device() + "]";
    }

    String describeWithSite() {
        return describe() + " allocated at " + site;
    }

    @Override
    public String toString() {
        return describe() + (isClosed() ? " (closed)" : "");
    }

    /**
     * Returns {@code MemorySegment} of the device pointer (for bindings taking {@code void*} device pointers, e.g. NCCL).
     * @return {@code MemorySegment} of the device pointer (for bindings taking {@code void*} device pointers, e.g. NCCL)
     */
    public MemorySegment pointer() {
        return MemorySegment.ofAddress(address());
    }
}
