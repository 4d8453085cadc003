package org.moe4j.core.buffer;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.Device;
import org.moe4j.core.Shape;

/**
 * A host buffer over a {@link MemorySegment}, 64-byte aligned, zero-filled on allocation.
 *
 * <p>An owning buffer holds its own shared {@link Arena}: {@link #close()} frees the memory and any
 * access through {@link #segment()} afterwards throws {@link BufferClosedException}. A buffer made
 * with {@link #wrap} does not own its segment: closing it only detaches it.
 *
 * <p>Element accessors take and return fp32 for floating dtypes (converting BF16/F16) so reference
 * code can be written once for every storage type; hot kernels read {@link #segment()} directly.
 */
public final class HostBuffer implements Buffer {
    /** Alignment of owned allocations: one AVX-512 vector / cache line. */
    public static final long ALIGNMENT = 64;

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED;

    private final DType dtype;
    private final Shape shape;
    private final Arena arena; // null for a non-owning wrap
    private final MemorySegment segment;
    private volatile BufferAllocator.Allocation allocation; // null for a non-owning wrap
    private volatile boolean closed;

    private HostBuffer(DType dtype, Shape shape, Arena arena, MemorySegment segment) {
        this.dtype = dtype;
        this.shape = shape;
        this.arena = arena;
        this.segment = segment;
    }

    /**
     * Allocates a zeroed buffer counted in {@link BufferAllocator#current()} and owned by the
     * active {@link BufferScope} of this thread, if any.
     *
     * @param dtype element type
     * @param shape shape
     * @return the owning buffer
     */
    public static HostBuffer allocate(DType dtype, Shape shape) {
        return allocate(BufferAllocator.current(), dtype, shape);
    }

    /**
     * Allocates a zeroed buffer counted in {@code allocator} (and owned by the active
     * {@link BufferScope} of this thread, if any).
     *
     * @param allocator the allocator that accounts for the buffer
     * @param dtype     element type
     * @param shape     shape
     * @return the owning buffer
     * @throws NullPointerException  if an argument is null
     * @throws BufferClosedException if {@code allocator} is closed
     */
    public static HostBuffer allocate(BufferAllocator allocator, DType dtype, Shape shape) {
        Objects.requireNonNull(allocator, "allocator");
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(shape, "shape");
        long bytes = Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
        if (allocator.isClosed()) {
            throw new BufferClosedException(allocator.toString());
        }
        Arena arena = Arena.ofShared();
        try {
            MemorySegment seg = arena.allocate(Math.max(bytes, 1), ALIGNMENT).asSlice(0, bytes);
            HostBuffer b = new HostBuffer(dtype, shape, arena, seg);
            b.allocation = allocator.register(b);
            return b;
        } catch (RuntimeException | OutOfMemoryError e) {
            arena.close(); // nothing half-made outlives a failed allocation
            throw e;
        }
    }

    /**
     * Returns a zeroed owning buffer.
     * @param dtype element type
     * @param dims  dimensions
     * @return a zeroed owning buffer
     */
    public static HostBuffer allocate(DType dtype, long... dims) {
        return allocate(dtype, Shape.of(dims));
    }

    /**
     * Copies fp32 values into a new buffer of the given dtype (rounding to BF16/F16 if asked).
     *
     * @param dtype a floating dtype
     * @param data  values, row-major
     * @param dims  dimensions; their product must equal {@code data.length}
     * @return the owning buffer
     */
    public static HostBuffer of(DType dtype, float[] data, long... dims) {
        HostBuffer b = allocate(dtype, dims);
        requireLength(b, data.length);
        b.copyFrom(data);
        return b;
    }

    /**
     * Returns a new F32 buffer holding a copy of {@code data}.
     * @param data values, row-major
     * @param dims dimensions
     * @return a new F32 buffer holding a copy of {@code data}
     */
    public static HostBuffer ofFloats(float[] data, long... dims) {
        return of(DType.F32, data, dims);
    }

    /**
     * Returns a new I32 buffer holding a copy of {@code data}.
     * @param data values, row-major
     * @param dims dimensions
     * @return a new I32 buffer holding a copy of {@code data}
     */
    public static HostBuffer ofInts(int[] data, long... dims) {
        HostBuffer b = allocate(DType.I32, dims);
        requireLength(b, data.length);
        MemorySegment.copy(data, 0, b.segment, ValueLayout.JAVA_INT, 0, data.length);
        return b;
    }

    /**
     * Wraps memory owned elsewhere (a memory-mapped file, a slice of a bigger buffer). Closing the
     * wrapper does not free the memory.
     *
     * @param dtype   element type
     * @param shape   shape
     * @param segment memory of exactly {@code numel * byteSize} bytes
     * @return the non-owning buffer
     */
    public static HostBuffer wrap(DType dtype, Shape shape, MemorySegment segment) {
        long bytes = Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
        if (segment.byteSize() != bytes) {
            throw new IllegalArgumentException("segment of " + segment.byteSize() + " bytes cannot hold " + dtype
                    + " " + shape + " (" + bytes + " bytes)");
        }
        return new HostBuffer(dtype, shape, null, segment);
    }

    private static void requireLength(HostBuffer b, int length) {
        if (length != b.numel()) {
            b.close();
            throw new IllegalArgumentException("data has " + length + " elements but shape " + b.shape
                    + " needs " + b.numel());
        }
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
        return Device.CPU;
    }

    @Override
    public boolean isClosed() {
        return closed || !segment.scope().isAlive();
    }

    /**
     * Returns the memory; valid until {@link #close()}.
     * @return the memory; valid until {@link #close()}
     * @throws BufferClosedException after close
     */
    public MemorySegment segment() {
        if (isClosed()) {
            throw new BufferClosedException(describe());
        }
        return segment;
    }

    /**
     * Returns the allocator this buffer is counted in, or null for a non-owning wrap.
     *
     * @return the allocator this buffer is counted in, or null for a non-owning wrap
     */
    public BufferAllocator allocator() {
        return allocation == null ? null : allocation.allocator();
    }

    /**
     * Returns true if this buffer frees its memory on close.
     * @return true if this buffer frees its memory on close
     */
    public boolean ownsMemory() {
        return arena != null;
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (arena != null) {
            arena.close();
            if (allocation != null) {
                allocation.release();
            }
        }
    }

    /**
     * A non-owning view with another shape over the same bytes (same dtype and element count).
     *
     * @param dims new dimensions
     * @return the view
     */
    public HostBuffer reshape(long... dims) {
        Shape s = Shape.of(dims);
        if (s.numel() != numel()) {
            throw new IllegalArgumentException("cannot reshape " + shape + " (" + numel() + " elements) to " + s);
        }
        return new HostBuffer(dtype, s, null, segment());
    }

    /**
     * Reads element {@code i} (flat, row-major) as fp32.
     *
     * @param i flat index
     * @return the value (integers are converted)
     */
    public float getFloat(long i) {
        MemorySegment s = segment();
        return switch (dtype) {
            case F32 -> s.getAtIndex(F32, i);
            case BF16 -> DType.bf16ToF32(s.getAtIndex(I16, i));
            case F16 -> DType.f16ToF32(s.getAtIndex(I16, i));
            case I32 -> s.getAtIndex(I32, i);
            case I64 -> s.getAtIndex(I64, i);
        };
    }

    /**
     * Writes element {@code i} from fp32, rounding to nearest even for BF16/F16.
     *
     * @param i     flat index
     * @param value the value
     */
    public void setFloat(long i, float value) {
        MemorySegment s = segment();
        switch (dtype) {
            case F32 -> s.setAtIndex(F32, i, value);
            case BF16 -> s.setAtIndex(I16, i, DType.f32ToBf16(value));
            case F16 -> s.setAtIndex(I16, i, DType.f32ToF16(value));
            case I32, I64 -> throw new IllegalStateException(describe() + ": setFloat on an integer buffer");
        }
    }

    /**
     * Returns element {@code i} of an I32 or I64 buffer.
     * @param i flat index
     * @return element {@code i} of an I32 or I64 buffer
     */
    public long getLong(long i) {
        MemorySegment s = segment();
        return switch (dtype) {
            case I32 -> s.getAtIndex(I32, i);
            case I64 -> s.getAtIndex(I64, i);
            default -> throw new IllegalStateException(describe() + ": getLong on a floating-point buffer");
        };
    }

    /**
     * Returns element {@code i} of an I32 buffer.
     * @param i flat index
     * @return element {@code i} of an I32 buffer
     */
    public int getInt(long i) {
        if (dtype != DType.I32) {
            throw new IllegalStateException(describe() + ": getInt needs I32");
        }
        return segment().getAtIndex(I32, i);
    }

    /**
     * Sets element {@code i} of an I32 buffer.
     *
     * @param i     flat index
     * @param value value for element {@code i} of an I32 buffer
     */
    public void setInt(long i, int value) {
        if (dtype != DType.I32) {
            throw new IllegalStateException(describe() + ": setInt needs I32");
        }
        segment().setAtIndex(I32, i, value);
    }

    /**
     * Returns all elements as fp32 (a copy).
     * @return all elements as fp32 (a copy)
     */
    public float[] toFloatArray() {
        int n = Math.toIntExact(numel());
        float[] out = new float[n];
        if (dtype == DType.F32) {
            MemorySegment.copy(segment(), ValueLayout.JAVA_FLOAT, 0, out, 0, n);
        } else {
            for (int i = 0; i < n; i++) {
                out[i] = getFloat(i);
            }
        }
        return out;
    }

    /**
     * Returns all elements of an I32 buffer (a copy).
     * @return all elements of an I32 buffer (a copy)
     */
    public int[] toIntArray() {
        if (dtype != DType.I32) {
            throw new IllegalStateException(describe() + ": toIntArray needs I32");
        }
        int n = Math.toIntExact(numel());
        int[] out = new int[n];
        MemorySegment.copy(segment(), ValueLayout.JAVA_INT, 0, out, 0, n);
        return out;
    }

    /**
     * Overwrites every element from fp32 values (rounding for BF16/F16).
     *
     * @param data exactly {@link #numel()} values
     */
    public void copyFrom(float[] data) {
        if (data.length != numel()) {
            throw new IllegalArgumentException(describe() + ": copyFrom got " + data.length + " values");
        }
        if (dtype == DType.F32) {
            MemorySegment.copy(data, 0, segment(), ValueLayout.JAVA_FLOAT, 0, data.length);
        } else {
            for (int i = 0; i < data.length; i++) {
                setFloat(i, data[i]);
            }
        }
    }

    /** Sets every byte to zero. */
    @Override
    public void zero() {
        segment().fill((byte) 0);
    }

    /**
     * Copies all of {@code src} into this buffer (a memcpy).
     *
     * @param src same dtype and element count
     * @throws IllegalArgumentException on a dtype or element-count mismatch
     */
    @Override
    public void copyFrom(HostBuffer src) {
        requireSameSize("copyFrom", src);
        MemorySegment.copy(src.segment(), 0, segment(), 0, byteSize());
    }

    /**
     * Copies all of this buffer into {@code dst} (a memcpy).
     *
     * @param dst same dtype and element count
     * @throws IllegalArgumentException on a dtype or element-count mismatch
     */
    @Override
    public void copyTo(HostBuffer dst) {
        dst.copyFrom(this);
    }

    /**
     * @param mode read, write or both
     * @return a view straight over this buffer's memory (no copy)
     * @throws BufferClosedException if this buffer is closed
     */
    @Override
    public HostView hostView(HostView.Mode mode) {
        return HostView.direct(this, mode);
    }

    /** @return a new owning copy (as {@link #copy()}) */
    @Override
    public HostBuffer toHost() {
        return copy();
    }

    private void requireSameSize(String op, HostBuffer other) {
        if (other.dtype() != dtype || other.numel() != numel()) {
            throw new IllegalArgumentException(describe() + ": " + op + " " + other.describe()
                    + ": dtype and element count must match (" + dtype + " x " + numel() + " vs "
                    + other.dtype() + " x " + other.numel() + ")");
        }
        if (other.isClosed()) {
            throw new BufferClosedException(other.describe());
        }
    }

    /**
     * Returns a new owning buffer with the same dtype, shape and contents.
     * @return a new owning buffer with the same dtype, shape and contents
     */
    public HostBuffer copy() {
        MemorySegment src = segment(); // checked before allocating: a closed buffer leaves nothing behind
        HostBuffer b = allocate(dtype, shape);
        MemorySegment.copy(src, 0, b.segment, 0, byteSize());
        return b;
    }

    /**
     * Returns a description such as {@code HostBuffer[F32 [4, 8]]}.
     * @return e.g. {@code HostBuffer[F32 [4, 8]]}
     */
    public String describe() {
        return "HostBuffer[" + dtype + " " + shape + "]";
    }

    @Override
    public String toString() {
        return describe() + (closed ? " (closed)" : "");
    }
}
