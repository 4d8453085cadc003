package org.moe4j.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * The kernels of one family, loaded from the fatbin that the build compiled from
 * {@code native/<family>.cu} and placed at {@code org/moe4j/cuda/kernels/<family>.fatbin}.
 */
public final class CudaModule implements AutoCloseable {
    /** Class-path folder of the fatbins. */
    public static final String RESOURCE_DIR = "org/moe4j/cuda/kernels/";

    private final CudaContext context;
    private final String family;
    private final MemorySegment handle; // CUmodule
    private final Map<String, CudaFunction> functions = new ConcurrentHashMap<>();
    private volatile boolean closed;

    private CudaModule(CudaContext context, String family, MemorySegment handle) {
        this.context = context;
        this.family = family;
        this.handle = handle;
    }

    /**
     * Returns its class-path resource name.
     * @param family kernel family, e.g. {@code "routing"}
     * @return its class-path resource name
     */
    public static String resourceName(String family) {
        return RESOURCE_DIR + family + ".fatbin";
    }

    /**
     * Returns true when the build compiled this family's fatbin.
     * @param family kernel family
     * @return true when the build compiled this family's fatbin
     */
    public static boolean isBuilt(String family) {
        return CudaModule.class.getClassLoader().getResource(resourceName(family)) != null;
    }

    /**
     * Returns the fatbin image.
     * @param family kernel family
     * @return the fatbin image
     * @throws KernelsNotBuiltException when it is not on the class path
     */
    public static byte[] image(String family) {
        String name = resourceName(family);
        try (InputStream in = CudaModule.class.getClassLoader().getResourceAsStream(name)) {
            if (in == null) {
                throw new KernelsNotBuiltException(name);
            }
            return in.readAllBytes();
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + name, e);
        }
    }

    static CudaModule load(CudaContext context, String family) {
        return load(context, family, image(family));
    }

    /**
     * Loads a kernel image (a fatbin, cubin or PTX text) that is not one of moe4j's kernel families,
     * e.g. a user's own kernels.
     *
     * @param context the context to load into
     * @param family  a name for the module (messages, {@link #family()})
     * @param image   the image's bytes (copied; the driver keeps its own copy)
     * @return the module; close it before the context
     * @throws CudaException when the driver refuses the image
     */
    public static CudaModule load(CudaContext context, String family, byte[] image) {
        Objects.requireNonNull(context, "context");
        Objects.requireNonNull(family, "family");
        if (image == null || image.length == 0) {
            throw new IllegalArgumentException("module " + family + ": empty kernel image");
        }
        context.makeCurrent();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment img = a.allocate(image.length + 1L, 16);
            MemorySegment.copy(image, 0, img, ValueLayout.JAVA_BYTE, 0, image.length);
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            CudaException.check(cuda_h.cuModuleLoadData(out, img), "cuModuleLoadData(" + resourceName(family) + ", "
                    + image.length + " bytes, on " + context.device().name() + " sm_" + context.device().major()
                    + context.device().minor() + ")");
            return new CudaModule(context, family, out.get(ValueLayout.ADDRESS, 0));
        }
    }

    /**
     * Returns the kernel family.
     * @return the kernel family
     */
    public String family() {
        return family;
    }

    /**
     * Returns the context it is loaded in.
     * @return the context it is loaded in
     */
    public CudaContext context() {
        return context;
    }

    /**
     * Looks up a kernel (cached).
     *
     * @param name the kernel's symbol ({@code extern "C"} name)
     * @return the function
     * @throws CudaException naming the kernel and family when it does not exist
     */
    public CudaFunction function(String name) {
        if (closed) {
            throw new BufferClosedException("CudaModule " + family);
        }
        return functions.computeIfAbsent(name, n -> {
            context.makeCurrent();
            try (Arena a = Arena.ofConfined()) {
                MemorySegment out = a.allocate(ValueLayout.ADDRESS);
                CudaException.check(cuda_h.cuModuleGetFunction(out, handle, a.allocateFrom(n)),
                        "cuModuleGetFunction(" + n + " in " + resourceName(family) + ")");
                return new CudaFunction(this, n, out.get(ValueLayout.ADDRESS, 0));
            }
        });
    }

    /** Unloads the module; its functions become unusable. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        context.makeCurrent();
        CudaException.check(cuda_h.cuModuleUnload(handle), "cuModuleUnload(" + family + ")");
    }

    boolean isClosed() {
        return closed;
    }
}
