package org.moe4j.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * Builds one {@code cuLaunchKernel} call: grid, block, dynamic shared memory, stream and the kernel
 * arguments, packed in declaration order into the {@code void*[]} the driver expects (each argument
 * copied into its own naturally aligned slot; the driver copies the values at launch, so nothing
 * needs to outlive {@link #launch()}).
 *
 * <pre>{@code
 * Launch.of(module.function("saxpy")).grid(blocks).block(256).stream(stream)
 *       .arg(n).arg(alpha).arg(x).arg(y).launch();
 * }</pre>
 *
 * Argument types must match the kernel's C signature exactly: {@code int} for {@code int},
 * {@code long} for {@code int64_t}/{@code size_t}, {@code float}, {@code double}, and a
 * {@link DeviceBuffer} (or {@link #argPointer(long)}) for any device pointer.
 */
public final class Launch {
    /** Largest block the hardware allows. */
    public static final int MAX_THREADS_PER_BLOCK = 1024;

    /** One packed argument; {@code type} names its Java kind for error messages. */
    record Arg(MemoryLayout layout, Object value, String type) {
    }

    private final CudaFunction function;
    private final List<Arg> args = new ArrayList<>();
    private int gx = 1;
    private int gy = 1;
    private int gz = 1;
    private int bx = 1;
    private int by = 1;
    private int bz = 1;
    private int sharedBytes;
    private CudaStream stream;

    private Launch(CudaFunction function) {
        this.function = function;
    }

    /**
     * Returns a new launch with grid 1, block 1, no shared memory, the default stream.
     * @param function the kernel
     * @return a new launch with grid 1, block 1, no shared memory, the default stream
     */
    public static Launch of(CudaFunction function) {
        return new Launch(Objects.requireNonNull(function, "function"));
    }

    /** Packing without a kernel, for tests of the argument layout. */
    static Launch forPacking() {
        return new Launch(null);
    }

    /**
     * Sets {@code grid}: blocks.
     * @param x blocks
     * @return this
     */
    public Launch grid(int x) {
        return grid(x, 1, 1);
    }

    /**
     * Sets the grid shape.
     *
     * @param x blocks in x
     * @param y blocks in y
     * @param z blocks in z
     * @return this
     */
    public Launch grid(int x, int y, int z) {
        gx = x;
        gy = y;
        gz = z;
        return this;
    }

    /**
     * Sets {@code block}: threads.
     * @param x threads
     * @return this
     */
    public Launch block(int x) {
        return block(x, 1, 1);
    }

    /**
     * Sets the block shape.
     *
     * @param x threads in x
     * @param y threads in y
     * @param z threads in z
     * @return this
     */
    public Launch block(int x, int y, int z) {
        bx = x;
        by = y;
        bz = z;
        return this;
    }

    /**
     * Sets {@code sharedMemory}: dynamic shared memory per block.
     * @param bytes dynamic shared memory per block
     * @return this
     */
    public Launch sharedMemory(int bytes) {
        sharedBytes = bytes;
        return this;
    }

    /**
     * Sets {@code stream}: the stream to launch on.
     * @param s the stream to launch on
     * @return this
     */
    public Launch stream(CudaStream s) {
        stream = s;
        return this;
    }

    /**
     * Sets {@code arg}: an {@code int} argument.
     * @param v an {@code int} argument
     * @return this
     */
    public Launch arg(int v) {
        args.add(new Arg(ValueLayout.JAVA_INT, v, "int"));
        return this;
    }

    /**
     * Sets {@code arg}: a {@code long long} / {@code int64_t} / {@code size_t} argument.
     * @param v a {@code long long} / {@code int64_t} / {@code size_t} argument
     * @return this
     */
    public Launch arg(long v) {
        args.add(new Arg(ValueLayout.JAVA_LONG, v, "long"));
        return this;
    }

    /**
     * Sets {@code arg}: a {@code float} argument.
     * @param v a {@code float} argument
     * @return this
     */
    public Launch arg(float v) {
        args.add(new Arg(ValueLayout.JAVA_FLOAT, v, "float"));
        return this;
    }

    /**
     * Sets {@code arg}: a {@code double} argument.
     * @param v a {@code double} argument
     * @return this
     */
    public Launch arg(double v) {
        args.add(new Arg(ValueLayout.JAVA_DOUBLE, v, "double"));
        return this;
    }

    /**
     * Sets {@code arg}: a device buffer, passed as its device pointer.
     * @param b a device buffer, passed as its device pointer
     * @return this
     */
    public Launch arg(DeviceBuffer b) {
        return argPointer(b.address());
    }

    /**
     * Sets {@code argPointer}: a device pointer (0 for NULL).
     * @param address a device pointer (0 for NULL)
     * @return this
     */
    public Launch argPointer(long address) {
        args.add(new Arg(ValueLayout.JAVA_LONG, address, "pointer"));
        return this;
    }

    /**
     * A by-value struct argument (e.g. a {@code const __grid_constant__ CUtensorMap}): its bytes are
     * copied now, and the driver copies them into the kernel's parameter space at launch.
     *
     * @param bytes     the struct's bytes
     * @param alignment its alignment in bytes (a power of two; 64 for {@code CUtensorMap})
     * @return this
     */
    public Launch argStruct(MemorySegment bytes, long alignment) {
        byte[] copy = bytes.toArray(ValueLayout.JAVA_BYTE);
        if (copy.length == 0) {
            throw new IllegalArgumentException("a struct argument needs at least one byte");
        }
        args.add(new Arg(MemoryLayout.sequenceLayout(copy.length, ValueLayout.JAVA_BYTE).withByteAlignment(alignment), copy,
                "struct"));
        return this;
    }

    /**
     * Returns arguments added so far.
     * @return arguments added so far
     */
    public int argCount() {
        return args.size();
    }

    /**
     * Packs the arguments as {@code void* kernelParams[]}.
     *
     * @param arena where the array and the value slots live
     * @return the pointer array ({@code NULL} when there are no arguments)
     */
    MemorySegment pack(Arena arena) {
        if (args.isEmpty()) {
            return MemorySegment.NULL;
        }
        MemorySegment array = arena.allocate(ValueLayout.ADDRESS, args.size());
        for (int i = 0; i < args.size(); i++) {
            Arg a = args.get(i);
            MemorySegment slot = arena.allocate(a.layout());
            switch (a.value()) {
                case Integer v -> slot.set(ValueLayout.JAVA_INT, 0, v);
                case Long v -> slot.set(ValueLayout.JAVA_LONG, 0, v);
                case Float v -> slot.set(ValueLayout.JAVA_FLOAT, 0, v);
                case Double v -> slot.set(ValueLayout.JAVA_DOUBLE, 0, v);
                case byte[] v -> MemorySegment.copy(v, 0, slot, ValueLayout.JAVA_BYTE, 0, v.length);
                default -> throw new IllegalStateException("unsupported kernel argument " + a.value().getClass());
            }
            array.setAtIndex(ValueLayout.ADDRESS, i, slot);
        }
        return array;
    }

    /** Checks the launch shape; the message names the kernel and the bad value. */
    void validate() {
        String what = function == null ? "launch" : function.toString();
        if (gx < 1 || gy < 1 || gz < 1 || gy > 65535 || gz > 65535) {
            throw new IllegalArgumentException(what + ": grid [" + gx + ", " + gy + ", " + gz
                    + "] must be >= 1 in every dimension (y, z <= 65535)");
        }
        if (bx < 1 || by < 1 || bz < 1 || (long) bx * by * bz > MAX_THREADS_PER_BLOCK) {
            throw new IllegalArgumentException(what + ": block [" + bx + ", " + by + ", " + bz
                    + "] must be >= 1 in every dimension and at most " + MAX_THREADS_PER_BLOCK + " threads");
        }
        if (sharedBytes < 0) {
            throw new IllegalArgumentException(what + ": shared memory " + sharedBytes + " must be >= 0");
        }
    }

    /**
     * Checks the packed arguments against the kernel's parameter sizes (from
     * {@code cuFuncGetParamInfo}): the count, then each argument's byte size.
     *
     * @param kernel     the kernel's name, for the message
     * @param paramSizes the kernel's parameter sizes in bytes, or null when unknown (nothing checked)
     * @throws IllegalArgumentException naming the kernel, the argument index, the packed size and the kernel's
     */
    void checkArguments(String kernel, long[] paramSizes) {
        if (paramSizes == null) {
            return;
        }
        if (args.size() != paramSizes.length) {
            throw new IllegalArgumentException(kernel + ": " + args.size() + " argument" + (args.size() == 1 ? "" : "s")
                    + " passed, the kernel takes " + paramSizes.length + " parameter" + (paramSizes.length == 1 ? "" : "s")
                    + " " + java.util.Arrays.toString(paramSizes) + " bytes");
        }
        for (int i = 0; i < paramSizes.length; i++) {
            Arg a = args.get(i);
            long size = a.layout().byteSize();
            if (size != paramSizes[i]) {
                throw new IllegalArgumentException(kernel + ": argument " + i + " is " + size + " bytes (" + a.type()
                        + "), the kernel's parameter " + i + " is " + paramSizes[i] + " bytes" + hint(a.type(), paramSizes[i]));
            }
        }
    }

    private static String hint(String type, long kernelSize) {
        if (kernelSize == 8 && (type.equals("int") || type.equals("struct"))) {
            return ": pass a long (int64_t, size_t) or a pointer";
        }
        if (kernelSize == 8 && type.equals("float")) {
            return ": pass a double";
        }
        if (kernelSize == 4 && (type.equals("long") || type.equals("pointer") || type.equals("struct"))) {
            return ": pass an int";
        }
        if (kernelSize == 4 && type.equals("double")) {
            return ": pass a float";
        }
        return ": pass a struct of " + kernelSize + " bytes";
    }

    /**
     * Launches the kernel (asynchronously, on the chosen stream). Before the driver call the
     * arguments are checked against the kernel's parameter list where the driver can report it
     * ({@link CudaFunction#parameterSizes()}); on a mismatch nothing is launched.
     *
     * @throws IllegalArgumentException on a bad launch shape, or arguments that do not match the kernel's parameters
     * @throws CudaException            when the driver refuses the launch
     */
    public void launch() {
        validate();
        CudaStream s = stream != null ? stream : function.module().context().defaultStream();
        MemorySegment f = function.handle();
        checkArguments(function.name(), function.paramSizesCached());
        function.module().context().makeCurrent();
        try (Arena arena = Arena.ofConfined()) {
            int rc = cuda_h.cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sharedBytes, s.handle(), pack(arena), MemorySegment.NULL);
            if (rc != cuda_h.CUDA_SUCCESS) {
                throw CudaException.of(rc, "cuLaunchKernel(" + function.name() + ", grid [" + gx + ", " + gy + ", " + gz
                        + "], block [" + bx + ", " + by + ", " + bz + "], shared " + sharedBytes + " bytes, "
                        + args.size() + " args)");
            }
        }
    }
}
