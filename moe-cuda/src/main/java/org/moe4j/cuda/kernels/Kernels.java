package org.moe4j.cuda.kernels;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.CudaFunction;
import org.moe4j.cuda.CudaModule;
import org.moe4j.cuda.CudaStream;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.DevicePool;
import org.moe4j.cuda.Launch;
import org.moe4j.dispatch.spi.DispatchArgs;

/**
 * Shared plumbing of the kernel launchers: one fatbin module (a {@code native/<family>.cu}), its
 * functions looked up once, the backend's stream and pool, argument helpers.
 */
final class Kernels {
    private final CudaBackend backend;
    private final CudaModule module;
    private final Map<String, CudaFunction> functions = new ConcurrentHashMap<>();

    Kernels(Backend backend, String family) {
        if (!(backend instanceof CudaBackend cb)) {
            throw new IllegalArgumentException("the CUDA " + family + " kernels need the cuda backend, got " + backend.name());
        }
        this.backend = cb;
        this.module = cb.module(family);
    }

    CudaBackend backend() {
        return backend;
    }

    CudaStream stream() {
        return backend.stream();
    }

    DevicePool pool() {
        return backend.pool();
    }

    /** @return the named kernel of this module, looked up once */
    CudaFunction fn(String name) {
        return functions.computeIfAbsent(name, module::function);
    }

    /** @return a launch of the named kernel on the backend's stream */
    Launch launch(String name) {
        return Launch.of(fn(name)).stream(stream());
    }

    /**
     * @return a launch that raised the kernel's dynamic shared-memory limit when needed (once per
     *         function and size: {@link CudaFunction#ensureMaxDynamicSharedMemory} caches it)
     */
    Launch launchWithSmem(String name, int smemBytes) {
        CudaFunction f = fn(name);
        f.ensureMaxDynamicSharedMemory(smemBytes);
        return Launch.of(f).stream(stream()).sharedMemory(smemBytes);
    }

    /** Zeroed scratch on the device (free it with try-with-resources after the launches using it). */
    DeviceBuffer scratch(DType dtype, long... dims) {
        return pool().allocate(dtype, Shape.of(dims));
    }

    /**
     * @param what the parameter name for the error message
     * @param b    a buffer that must live on this backend's device
     * @return it as a device buffer
     */
    static DeviceBuffer dev(String what, Buffer b) {
        if (b instanceof DeviceBuffer d) {
            return d;
        }
        throw new IllegalArgumentException(what + ": the cuda kernels need a DeviceBuffer, got "
                + (b == null ? "null" : b.getClass().getSimpleName() + " on " + b.device()));
    }

    /** @return the device address of an optional buffer (0 for null) */
    static long ptr(String what, Buffer b) {
        return b == null ? 0L : dev(what, b).address();
    }

    /** @return the kernels' dtype code: 0 F32, 1 BF16, 2 F16 */
    static int dtypeCode(String what, DType t) {
        return switch (t) {
            case F32 -> 0;
            case BF16 -> 1;
            case F16 -> 2;
            default -> throw new IllegalArgumentException(what + ": rows must be F32, BF16 or F16, not " + t);
        };
    }

    static int blocks(long n, int per) {
        long b = (n + per - 1) / per;
        return (int) Math.max(1, Math.min(b, Integer.MAX_VALUE));
    }

    static int rows(Buffer b) {
        return DispatchArgs.rows(b);
    }

    static int width(Buffer b) {
        return DispatchArgs.width(b);
    }
}
