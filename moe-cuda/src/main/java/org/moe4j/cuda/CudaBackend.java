package org.moe4j.cuda;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Availability;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.PooledBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

/**
 * The CUDA backend ({@code moe4j.backend=cuda}): device memory from a {@link DevicePool}, kernels from
 * the fatbins built out of {@code native/*.cu}. Registered through {@code ServiceLoader}; priority 100,
 * so automatic selection prefers it wherever {@link #probe()} says it can run.
 *
 * <p>Every pool of the backend (the shared one and those of {@link #newPool}) allocates, zeroes and
 * frees on the compute {@linkplain #stream() stream} the kernels run on, so no step of a layer needs
 * the context's legacy default stream and a step can be captured as one CUDA graph
 * ({@link LayerStepGraph}). Work queued on another stream with a buffer of the backend must have
 * completed before the buffer is closed (the communicators of this package wait for each collective
 * on the host; the synchronous copies of {@link DeviceBuffer} run on the legacy stream, which waits for
 * the compute stream, and return when done).
 *
 * <p>The device is {@code moe4j.cuda.device} (system property), else {@code LOCAL_RANK} (torchrun),
 * else 0. Context, pool, compute stream and loaded modules are shared by every instance in the process
 * (ServiceLoader makes a new instance per lookup) and live as long as the process.
 */
public final class CudaBackend implements PooledBackend {
    /** Name used by {@code moe4j.backend=cuda}. */
    public static final String NAME = "cuda";
    /** Selection priority: above the CPU backend's 0. */
    public static final int PRIORITY = 100;
    /** System property with the device index. */
    public static final String DEVICE_PROPERTY = "moe4j.cuda.device";
    /** Kernel family whose presence shows that the build compiled the kernels. */
    public static final String MARKER_FAMILY = "smoke";

    private static final Map<Integer, Shared> SHARED = new ConcurrentHashMap<>();
    private static volatile Availability probed;

    private final DevicePool ownPool; // null: the process-wide pool of the device
    private final String poolName;

    /**
     * Creates the backend over the process-wide pool of its device (what {@code ServiceLoader} makes;
     * the shared device state is created on first use).
     */
    public CudaBackend() {
        this(null, null);
    }

    private CudaBackend(DevicePool ownPool, String poolName) {
        this.ownPool = ownPool;
        this.poolName = poolName;
    }

    /**
     * A backend on the same device, context, stream and kernels whose buffers come from a new
     * {@link DevicePool} on the backend's compute {@linkplain #stream() stream}, like the shared pool:
     * closing it reports the buffers still live ({@code memory leaked}).
     *
     * @param name names the pool in messages
     * @return the pooled backend
     * @throws NullPointerException  if {@code name} is null
     * @throws IllegalStateException naming the reason when the backend is unavailable
     */
    @Override
    public CudaBackend newPool(String name) {
        java.util.Objects.requireNonNull(name, "name");
        Shared s = shared();
        return new CudaBackend(s.context.createPool(s.stream), name);
    }

    /**
     * Closes this backend's own pool (see {@link #newPool}); a no-op for the process-wide one.
     *
     * @throws IllegalStateException {@code memory leaked ...} if buffers of the own pool were still live
     */
    @Override
    public void close() {
        if (ownPool == null) {
            return;
        }
        try {
            ownPool.close();
        } catch (IllegalStateException e) {
            throw new IllegalStateException(poolName + ": " + e.getMessage(), e);
        }
    }

    /** Per-device state shared by all instances. */
    private static final class Shared {
        final CudaContext context;
        final DevicePool pool;
        final CudaStream stream;
        final Map<String, CudaModule> modules = new ConcurrentHashMap<>();

        Shared(int ordinal) {
            context = CudaContext.open(ordinal);
            stream = context.createStream();
            pool = context.createPool(stream); // ordered with the kernels: a step can be captured as a graph
        }
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public int priority() {
        return PRIORITY;
    }

    /**
     * Returns the device index this backend uses.
     * @return the device index this backend uses: {@value #DEVICE_PROPERTY}, else the environment
     *         variable {@code LOCAL_RANK}, else 0
     * @throws IllegalArgumentException naming the property or variable and its value if it is not a
     *                                  non-negative integer
     */
    public static int deviceOrdinal() {
        return org.moe4j.core.Settings.intSetting(DEVICE_PROPERTY, "LOCAL_RANK", 0, 0, Integer.MAX_VALUE);
    }

    /**
     * Checks for libcuda, a device, and built kernels. Never throws; the result is computed once.
     *
     * @return available with the device description, or not with the reason
     */
    @Override
    public Availability probe() {
        Availability a = probed;
        if (a == null) {
            a = probed = probeNow();
        }
        return a;
    }

    static Availability probeNow() {
        try {
            Cuda.init();
            int count = Cuda.deviceCount();
            if (count == 0) {
                return Availability.no("no CUDA device visible (libcuda loaded, cuDeviceGetCount = 0; check CUDA_VISIBLE_DEVICES)");
            }
            int ordinal = deviceOrdinal();
            CudaDevice dev = CudaDevice.query(ordinal);
            String found = dev.describe() + ", driver CUDA " + Cuda.driverVersion();
            if (!CudaModule.isBuilt(MARKER_FAMILY)) {
                return Availability.no(KernelsNotBuiltException.REASON + " (found " + found + ")");
            }
            if (dev.major() < 9) {
                return Availability.no("cuda:" + ordinal + " has compute capability " + dev.computeCapability()
                        + "; the kernels are built for sm_90a with compute_90 PTX, so they need 9.0 or newer (found " + found + ")");
            }
            return Availability.yes(found);
        } catch (NativeLibraryException e) {
            return Availability.no("no CUDA driver: " + e.getMessage());
        } catch (CudaException e) {
            return Availability.no("the CUDA driver failed: " + e.getMessage());
        } catch (RuntimeException | LinkageError e) {
            return Availability.no("CUDA probe failed: " + e);
        }
    }

    private Shared shared() {
        Availability a = probe();
        if (!a.available()) {
            throw new IllegalStateException("CUDA backend unavailable: " + a.reason());
        }
        return SHARED.computeIfAbsent(deviceOrdinal(), Shared::new);
    }

    /**
     * Returns the context of this backend's device.
     * @return the context of this backend's device
     */
    public CudaContext context() {
        return shared().context;
    }

    /**
     * Returns the pool that {@link #allocate} draws from.
     * @return the pool that {@link #allocate} draws from
     */
    public DevicePool pool() {
        return ownPool != null ? ownPool : shared().pool;
    }

    /**
     * Returns the stream kernels of this backend are launched on.
     * @return the stream kernels of this backend are launched on
     */
    public CudaStream stream() {
        return shared().stream;
    }

    /**
     * Returns its module, loaded once per process.
     * @param family kernel family, e.g. {@code "routing"}
     * @return its module, loaded once per process
     * @throws KernelsNotBuiltException when the family's fatbin is missing
     */
    public CudaModule module(String family) {
        Shared s = shared();
        return s.modules.computeIfAbsent(family, s.context::loadModule);
    }

    /**
     * Allocates a zeroed device buffer on this backend's device.
     *
     * @throws IllegalStateException naming the reason when the backend is unavailable
     */
    @Override
    public Buffer allocate(DType dtype, Shape shape) {
        return pool().allocate(dtype, shape);
    }

    /**
     * Copies host data into a new device buffer on this backend's device (synchronous; the buffer is
     * not zeroed first).
     *
     * @throws IllegalStateException naming the reason when the backend is unavailable
     */
    @Override
    public Buffer upload(HostBuffer src) {
        return pool().copyOf(src);
    }

    /**
     * Returns the number of device-to-host copies queued so far on this backend's device (the shared
     * context's count, see {@link CudaContext#hostReadCount()}), summed over every instance, pool and
     * thread; 0 when the device was never used in this process. Reading the count never touches the
     * device.
     *
     * @return the number of device-to-host reads so far
     */
    @Override
    public long hostReadCount() {
        Shared s = probe().available() ? SHARED.get(deviceOrdinal()) : null;
        return s == null ? 0L : s.context.hostReadCount();
    }

    @Override
    public String describe() {
        Availability a = probe();
        return a.available() ? "cuda (" + a.reason() + ")" : "cuda (unavailable: " + a.reason() + ")";
    }
}
