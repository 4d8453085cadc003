package org.moe4j.core.backend;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.ServiceLoader;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The one place that picks a backend and its kernels.
 *
 * <p>Selection: the system property {@value #PROPERTY}, else the environment variable
 * {@value #ENV}, else {@code auto}. A named backend that is missing or unavailable is an error
 * (never a silent fallback). In {@code auto} mode the available backend with the highest priority
 * wins and each skipped backend is logged once with its reason.
 *
 * <p>Kernels: {@link #kernels(Class)} returns the selected backend's provider of a family; when
 * that backend has none, the CPU provider is used and this is logged once per family.
 */
public final class Backends {
    /** System property naming the backend ({@code cpu}, {@code cuda}, {@code auto}). */
    public static final String PROPERTY = "moe4j.backend";
    /** Environment variable used when the property is absent. */
    public static final String ENV = "MOE4J_BACKEND";

    private static final Logger LOG = LoggerFactory.getLogger(Backends.class);
    private static final Map<String, Backend> SELECTED = new ConcurrentHashMap<>();
    private static final Map<String, Object> KERNELS = new ConcurrentHashMap<>();
    private static final Map<String, Boolean> FALLBACKS = new ConcurrentHashMap<>();

    private Backends() {
    }

    /**
     * Returns the requested backend name: property, environment, or "auto".
     * @return the requested backend name: property, environment, or "auto"
     */
    public static String requested() {
        String v = System.getProperty(PROPERTY);
        if (v == null || v.isBlank()) {
            v = System.getenv(ENV);
        }
        return v == null || v.isBlank() ? "auto" : v.trim().toLowerCase(Locale.ROOT);
    }

    /**
     * Returns every registered backend, highest priority first.
     * @return every registered backend, highest priority first
     */
    public static List<Backend> all() {
        List<Backend> list = new ArrayList<>();
        ServiceLoader.load(Backend.class).forEach(list::add);
        if (list.stream().noneMatch(b -> b.name().equals(CpuBackend.NAME))) {
            list.add(new CpuBackend());
        }
        list.sort(Comparator.comparingInt(Backend::priority).reversed());
        return list;
    }

    /**
     * Returns the backend chosen by {@link #requested()} (cached per requested name).
     * @return the backend chosen by {@link #requested()} (cached per requested name)
     * @throws IllegalStateException if a named backend is unknown or unavailable
     */
    public static Backend selected() {
        String name = requested();
        Backend cached = SELECTED.get(name);
        if (cached != null) {
            return cached;
        }
        synchronized (Backends.class) { // one selection (and one log line per skipped backend) per process
            return selectOnce(name);
        }
    }

    private static Backend selectOnce(String name) {
        Backend b = SELECTED.get(name);
        if (b == null) {
            // not computeIfAbsent: a backend's probe may itself use Backends without a recursive-update error
            b = choose(name);
            Backend raced = SELECTED.putIfAbsent(name, b);
            b = raced != null ? raced : b;
        }
        return b;
    }

    /**
     * Chooses a backend by name without caching.
     *
     * @param name a backend name or "auto"
     * @return the backend
     * @throws IllegalStateException if a named backend is unknown or unavailable
     */
    public static Backend choose(String name) {
        List<Backend> all = all();
        if (!name.equals("auto")) {
            Backend b = all.stream().filter(x -> x.name().equals(name)).findFirst().orElseThrow(() ->
                    new IllegalStateException(PROPERTY + "=" + name + ": no such backend; registered: "
                            + all.stream().map(Backend::name).collect(Collectors.joining(", "))));
            Availability a = b.probe();
            if (!a.available()) {
                throw new IllegalStateException(PROPERTY + "=" + name + " requested but unavailable: " + a.reason());
            }
            LOG.info("backend {} selected by request: {}", b.name(), a.reason());
            return b;
        }
        for (Backend b : all) {
            Availability a = b.probe();
            if (a.available()) {
                LOG.info("backend {} selected automatically: {}", b.name(), a.reason());
                return b;
            }
            LOG.info("backend {} not used: {}", b.name(), a.reason());
        }
        throw new IllegalStateException("no backend available"); // unreachable: cpu is always available
    }

    /**
     * The backend an orchestrator (router, dispatcher, experts, layer) should allocate on when it
     * runs the given kernel families: the selected backend when it provides all of them, else the
     * CPU backend (logged once per backend and family set), so CPU kernels never receive device
     * buffers.
     *
     * @param families the kernel family interfaces the caller will use
     * @return the selected backend or the CPU backend
     */
    public static Backend backendFor(Class<?>... families) {
        return backendFor(selected(), families);
    }

    /**
     * As {@link #backendFor(Class[])} for a given backend.
     *
     * @param backend  the preferred backend
     * @param families the kernel family interfaces the caller will use
     * @return {@code backend} when it has a provider of every family (or is the CPU backend), else
     *         the CPU backend
     */
    public static Backend backendFor(Backend backend, Class<?>... families) {
        if (backend.name().equals(CpuBackend.NAME)) {
            return backend;
        }
        List<String> missing = new ArrayList<>();
        for (Class<?> f : families) {
            if (provider(f, backend.name()) == null) {
                missing.add(f.getSimpleName());
            }
        }
        if (missing.isEmpty()) {
            return backend;
        }
        String key = backend.name() + " lacks " + String.join(", ", missing);
        if (FALLBACKS.putIfAbsent(key, Boolean.TRUE) == null) {
            LOG.info("backend {} has no {}; allocating on the cpu backend and running the cpu kernels instead",
                    backend.name(), String.join(", ", missing));
        }
        return new CpuBackend();
    }

    /**
     * The backend that owns memory on a device: the CPU backend for host memory, else the selected
     * backend (the device backend in use). Model code asks this instead of testing buffer or
     * backend types.
     *
     * @param device where some buffers live
     * @return the backend to run kernels on them with
     * @throws NullPointerException  if {@code device} is null
     * @throws IllegalStateException if host memory is not the CPU's and the selected backend is the CPU
     */
    public static Backend forDevice(org.moe4j.core.Device device) {
        Objects.requireNonNull(device, "device");
        if (device.kind() == org.moe4j.core.Device.Kind.CPU) {
            return new CpuBackend();
        }
        Backend b = selected();
        if (b.name().equals(CpuBackend.NAME)) {
            throw new IllegalStateException("buffers on " + device + " but the selected backend is " + b.name());
        }
        return b;
    }

    /**
     * Returns the selected backend's kernels of that family.
     * @param family the kernel family interface
     * @param <K>    its type
     * @return the selected backend's kernels of that family
     */
    public static <K> K kernels(Class<K> family) {
        return kernels(family, selected());
    }

    /**
     * Returns that backend's kernels, or the CPU ones (logged once) when it has none.
     * @param family  the kernel family interface
     * @param backend the backend whose kernels are wanted
     * @param <K>     its type
     * @return that backend's kernels, or the CPU ones (logged once) when it has none
     * @throws IllegalStateException if not even a CPU provider is registered
     */
    public static <K> K kernels(Class<K> family, Backend backend) {
        String key = backend.name() + "/" + family.getName();
        Object k = KERNELS.get(key);
        if (k == null) {
            // not computeIfAbsent: a provider's create() may look up other families through Backends
            k = createKernels(family, backend);
            Object raced = KERNELS.putIfAbsent(key, k);
            k = raced != null ? raced : k;
        }
        return family.cast(k);
    }

    private static Object createKernels(Class<?> family, Backend backend) {
        KernelProvider<?> p = provider(family, backend.name());
        if (p == null || p.backend().equals(CpuBackend.NAME)) {
            // before any class of the CPU kernels loads: one message naming the flag, not a NoClassDefFoundError
            org.moe4j.core.JvmRequirements.requireVectorApi("moe4j's CPU kernels (" + family.getSimpleName() + ")");
        }
        if (p != null) {
            return p.create(backend);
        }
        KernelProvider<?> cpu = provider(family, CpuBackend.NAME);
        if (cpu == null) {
            throw new IllegalStateException("no kernel provider for " + family.getName()
                    + " (is the module's META-INF/services/" + KernelProvider.class.getName() + " on the class path?)");
        }
        LOG.info("backend {} has no {}; using the cpu kernels for this family", backend.name(),
                family.getSimpleName());
        return cpu.create(backend.name().equals(CpuBackend.NAME) ? backend : new CpuBackend());
    }

    @SuppressWarnings("rawtypes")
    private static KernelProvider<?> provider(Class<?> family, String backendName) {
        for (KernelProvider p : ServiceLoader.load(KernelProvider.class)) {
            if (p.family().equals(family) && p.backend().equals(backendName)) {
                return p;
            }
        }
        return null;
    }
}
