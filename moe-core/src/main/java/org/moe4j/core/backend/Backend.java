package org.moe4j.core.backend;

import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

/**
 * One compute backend ("cpu", "cuda"). Implementations register through
 * {@code META-INF/services/org.moe4j.core.backend.Backend} and are chosen by {@link Backends}.
 *
 * <p>A backend owns device memory allocation; the kernels it runs are provided per kernel family
 * (a small interface that a module declares, e.g. {@code RoutingKernels}) by {@link KernelProvider}s.
 */
public interface Backend {
    /**
     * Returns short lower-case name, the value of {@code moe4j.backend} that selects it.
     * @return short lower-case name, the value of {@code moe4j.backend} that selects it
     */
    String name();

    /**
     * Returns preference in automatic selection; higher wins among available backends.
     * @return preference in automatic selection; higher wins among available backends
     */
    int priority();

    /**
     * Checks cheaply whether this backend can run here. Never throws.
     *
     * @return availability and, when unavailable, the reason
     */
    Availability probe();

    /**
     * Allocates a zeroed buffer in this backend's memory.
     *
     * @param dtype element type
     * @param shape shape
     * @return the owning buffer
     */
    Buffer allocate(DType dtype, Shape shape);

    /**
     * Copies host data into a new buffer in this backend's memory: the explicit staging step for
     * host-made values (initial parameters, checkpoint tensors, small tables such as the expert bias
     * or group offsets). On the CPU backend this is a plain copy, so values are bitwise the same on
     * every backend.
     *
     * @param src host data
     * @return a new owning buffer with {@code src}'s dtype, shape and contents (caller closes it)
     */
    default Buffer upload(HostBuffer src) {
        Buffer b = allocate(src.dtype(), src.shape());
        try {
            b.copyFrom(src);
        } catch (RuntimeException e) {
            b.close();
            throw e;
        }
        return b;
    }

    /**
     * A new pool of reusable scratch memory in this backend's memory (see {@link Scratch}); the
     * default allocates and frees per use.
     *
     * @return the scratch pool; close it when its owner is closed
     */
    default Scratch newScratch() {
        return Scratch.fresh(this);
    }

    /**
     * A backend like this one whose allocations come from a pool of their own, checked for leaks
     * when it closes (see {@link PooledBackend}). The default returns this backend unchanged with a
     * close that does nothing: host memory is accounted by the
     * {@link org.moe4j.core.buffer.BufferAllocator} tree instead.
     *
     * @param name names the pool in leak reports, e.g. {@code MoeLayer rank 0}
     * @return the pooled backend; close it when its owner closes
     * @throws NullPointerException if {@code name} is null
     */
    default PooledBackend newPool(String name) {
        java.util.Objects.requireNonNull(name, "name");
        return PooledBackend.unpooled(this);
    }

    /**
     * Returns how many times this backend's device memory has been read back to the host so far: every
     * device-to-host copy ({@link org.moe4j.core.buffer.Buffer#copyTo}, {@code toHost}, a
     * {@link org.moe4j.core.buffer.HostView} opened to read) counts once, whoever issued it (layer
     * code, kernels staging a value, a test). Such a read waits for the device, so a step that is
     * meant to run without host synchronisation (or to be captured as a CUDA graph) must leave this
     * count unchanged; tests prove it by comparing the count before and after the step.
     *
     * <p>The count is monotonic (never reset), starts at 0, and is shared by every instance and pool
     * of the backend on the same device (reads by all threads, e.g. all in-process ranks, add up).
     * Host backends read no device memory: the default returns 0 always.
     *
     * @return the number of device-to-host reads so far, {@code >= 0}
     */
    default long hostReadCount() {
        return 0L;
    }

    /**
     * Returns one line for logs: name, device, memory.
     *
     * @return one line for logs: name, device, memory
     */
    default String describe() {
        return name();
    }
}
