package org.moe4j.cuda.internal;

import java.io.File;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.SymbolLookup;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.stream.Stream;
import org.moe4j.cuda.NativeLibraryException;

/**
 * Finds and loads libcuda and libnccl, the one place that knows where they may live.
 *
 * <p>Search order, first hit wins:
 * <ol>
 *   <li>the system property / environment variable of the library ({@code moe4j.cuda.lib} /
 *       {@code MOE4J_LIBCUDA}, {@code moe4j.nccl.lib} / {@code MOE4J_LIBNCCL}): a file, or a directory
 *       holding one of the usual file names. When set, nothing else is tried;</li>
 *   <li>each directory of {@code LD_LIBRARY_PATH} (a {@code stubs} directory is skipped: the CUDA
 *       toolkit's stub libcuda only answers {@code CUDA_ERROR_STUB_LIBRARY});</li>
 *   <li>the usual system directories ({@code /usr/lib/x86_64-linux-gnu}, {@code /usr/local/nvidia/lib64},
 *       {@code /usr/local/cuda/lib64}, ...);</li>
 *   <li>for NCCL, Python wheel layouts ({@code <site-packages>/nvidia/nccl/lib}, {@code nvidia/cu13/lib},
 *       any {@code nvidia/<name>/lib}) under the site-packages directories named by
 *       {@code moe4j.python.sitePackages} / {@code MOE4J_PYTHON_SITE_PACKAGES} (path-separated),
 *       {@code $VIRTUAL_ENV}, {@code $CONDA_PREFIX}, {@code ~/.local}, {@code /usr/lib/python3*},
 *       {@code /usr/local/lib/python3*} and {@code /opt/<name>/(.venv/)lib/python3*}. Python itself is
 *       never run;</li>
 *   <li>the dynamic linker's own search ({@code dlopen} of the plain file name, i.e. {@code ld.so.cache}).</li>
 * </ol>
 * When all fail, the {@link NativeLibraryException} lists every place looked at.
 */
@SuppressWarnings("restricted") // FFM native access is this class's purpose
public final class NativeLibraries {
    /** System property naming additional Python site-packages directories (path-separated). */
    public static final String SITE_PACKAGES_PROPERTY = "moe4j.python.sitePackages";
    /** Environment variable used when {@link #SITE_PACKAGES_PROPERTY} is absent. */
    public static final String SITE_PACKAGES_ENV = "MOE4J_PYTHON_SITE_PACKAGES";

    /**
     * What to look for.
     *
     * @param display   name used in messages
     * @param property  system property with an explicit file or directory
     * @param env       environment variable used when the property is absent
     * @param fileNames file names, preferred first
     * @param wheelDirs sub-directories of a site-packages directory to try first (empty: no wheel search)
     */
    public record Spec(String display, String property, String env, List<String> fileNames, List<String> wheelDirs) {
        public Spec {
            fileNames = List.copyOf(fileNames);
            wheelDirs = List.copyOf(wheelDirs);
        }
    }

    /** The CUDA driver library. */
    public static final Spec CUDA = new Spec("libcuda (the CUDA driver library)", "moe4j.cuda.lib", "MOE4J_LIBCUDA",
            List.of("libcuda.so.1", "libcuda.so"), List.of());
    /** NCCL. */
    public static final Spec NCCL = new Spec("libnccl (NCCL)", "moe4j.nccl.lib", "MOE4J_LIBNCCL",
            List.of("libnccl.so.2", "libnccl.so"), List.of("nvidia/nccl/lib", "nvidia/cu13/lib", "nvidia/cu12/lib"));

    /** System library directories, relative to the file-system root. */
    static final List<String> SYSTEM_DIRS = List.of(
            "usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib", "lib/x86_64-linux-gnu", "lib64",
            "usr/local/nvidia/lib64", "usr/local/nvidia/lib", "usr/local/cuda/lib64",
            "usr/local/cuda/targets/x86_64-linux/lib", "usr/lib/wsl/lib", "usr/local/lib");

    /**
     * A snapshot of what the search depends on, so tests can point it at a temporary tree.
     *
     * @param properties system properties
     * @param env        environment variables
     * @param root       file-system root for the fixed system and Python paths ({@code /} normally)
     * @param home       the user's home directory
     * @param useDynamicLinker whether to fall back to the dynamic linker's own search when loading
     */
    public record Environment(Properties properties, Map<String, String> env, Path root, Path home,
                              boolean useDynamicLinker) {
        /** @return the running process's environment */
        public static Environment current() {
            return new Environment(System.getProperties(), System.getenv(), Path.of("/"),
                    Path.of(System.getProperty("user.home", "/root")), true);
        }

        String setting(String property, String env) {
            String v = properties.getProperty(property);
            if (v == null || v.isBlank()) {
                v = this.env.get(env);
            }
            return v == null || v.isBlank() ? null : v.trim();
        }
    }

    /**
     * Result of a search.
     *
     * @param found  the library file, if found
     * @param looked every place looked at, in order (for messages)
     * @param explicit the explicit setting that was used ({@code "moe4j.cuda.lib=/x"}), or null
     */
    public record Search(Optional<Path> found, List<String> looked, String explicit) {
    }

    /**
     * A loaded library.
     *
     * @param path   the file loaded (or the bare name when the dynamic linker found it)
     * @param lookup its symbols
     */
    public record Loaded(Path path, SymbolLookup lookup) {
    }

    private static final Object LOCK = new Object();
    private static volatile Loaded cuda;
    private static volatile Loaded nccl;
    private static volatile String cudaFailure;
    private static volatile String ncclFailure;

    private NativeLibraries() {
    }

    /**
     * Searches the file system for a library without loading it.
     *
     * @param spec what to look for
     * @param env  where
     * @return the file found (if any) and every place looked at
     */
    public static Search search(Spec spec, Environment env) {
        List<String> looked = new ArrayList<>();
        String explicit = env.setting(spec.property(), spec.env());
        if (explicit != null) {
            String how = (env.properties().getProperty(spec.property()) != null ? spec.property() : spec.env()) + "=" + explicit;
            Path p = Path.of(explicit);
            looked.add(p.toString());
            if (Files.isRegularFile(p)) {
                return new Search(Optional.of(p), looked, how);
            }
            Optional<Path> inDir = Files.isDirectory(p) ? inDirectory(spec, p) : Optional.empty();
            return new Search(inDir, looked, how);
        }
        Set<Path> dirs = new LinkedHashSet<>();
        String ld = env.env().get("LD_LIBRARY_PATH");
        if (ld != null) {
            for (String d : ld.split(File.pathSeparator)) {
                if (!d.isBlank()) {
                    dirs.add(Path.of(d.trim()));
                }
            }
        }
        for (String d : SYSTEM_DIRS) {
            dirs.add(env.root().resolve(d));
        }
        if (!spec.wheelDirs().isEmpty()) {
            for (Path site : sitePackages(env)) {
                for (String w : spec.wheelDirs()) {
                    dirs.add(site.resolve(w));
                }
                for (Path lib : children(site.resolve("nvidia"), "")) {
                    dirs.add(lib.resolve("lib"));
                }
            }
        }
        for (Path d : dirs) {
            if (d.getFileName() != null && d.getFileName().toString().equals("stubs")) {
                looked.add(d + " (skipped: stub libraries)");
                continue;
            }
            looked.add(d.toString());
            Optional<Path> hit = inDirectory(spec, d);
            if (hit.isPresent()) {
                return new Search(hit, looked, null);
            }
        }
        return new Search(Optional.empty(), looked, null);
    }

    /**
     * @param env where
     * @return candidate Python site-packages directories that exist, in search order
     */
    public static List<Path> sitePackages(Environment env) {
        Set<Path> out = new LinkedHashSet<>();
        String explicit = env.setting(SITE_PACKAGES_PROPERTY, SITE_PACKAGES_ENV);
        if (explicit != null) {
            for (String s : explicit.split(File.pathSeparator)) {
                if (!s.isBlank()) {
                    out.add(Path.of(s.trim()));
                }
            }
        }
        for (String prefixVar : List.of("VIRTUAL_ENV", "CONDA_PREFIX")) {
            String prefix = env.env().get(prefixVar);
            if (prefix != null && !prefix.isBlank()) {
                pythonDirs(Path.of(prefix.trim()).resolve("lib"), out);
            }
        }
        pythonDirs(env.home().resolve(".local/lib"), out);
        pythonDirs(env.root().resolve("usr/local/lib"), out);
        pythonDirs(env.root().resolve("usr/lib"), out);
        for (Path opt : children(env.root().resolve("opt"), "")) {
            pythonDirs(opt.resolve("lib"), out);
            pythonDirs(opt.resolve(".venv/lib"), out);
        }
        out.removeIf(p -> !Files.isDirectory(p));
        return List.copyOf(out);
    }

    private static void pythonDirs(Path lib, Set<Path> out) {
        for (Path py : children(lib, "python3")) {
            out.add(py.resolve("site-packages"));
            out.add(py.resolve("dist-packages"));
        }
    }

    /** Sub-directories of {@code dir} whose name starts with {@code prefix}, highest name first. */
    private static List<Path> children(Path dir, String prefix) {
        if (!Files.isDirectory(dir)) {
            return List.of();
        }
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(Files::isDirectory)
                    .filter(p -> p.getFileName().toString().startsWith(prefix))
                    .sorted(Comparator.comparing((Path p) -> p.getFileName().toString()).reversed())
                    .toList();
        } catch (IOException e) {
            return List.of();
        }
    }

    private static Optional<Path> inDirectory(Spec spec, Path dir) {
        for (String name : spec.fileNames()) {
            Path f = dir.resolve(name);
            if (Files.isRegularFile(f)) {
                return Optional.of(f);
            }
        }
        return Optional.empty();
    }

    /**
     * Finds and loads a library.
     *
     * @param spec what
     * @param env  where
     * @return the loaded library (its lookup lives as long as the process)
     * @throws NativeLibraryException naming every place looked at
     */
    public static Loaded load(Spec spec, Environment env) {
        try {
            org.moe4j.core.JvmRequirements.requireNativeAccess(NativeLibraries.class.getModule(),
                    "moe4j's CUDA backend (loading " + spec.display() + ")");
        } catch (IllegalStateException e) {
            throw new NativeLibraryException(e.getMessage(), e);
        }
        Search s = search(spec, env);
        if (s.found().isPresent()) {
            Path p = s.found().get();
            try {
                return new Loaded(p, SymbolLookup.libraryLookup(p, Arena.global()));
            } catch (IllegalArgumentException | UnsatisfiedLinkError e) {
                throw new NativeLibraryException(spec.display() + ": found " + p + " but could not load it: "
                        + e.getMessage(), e);
            }
        }
        if (s.explicit() != null) {
            throw new NativeLibraryException(spec.display() + " not found: " + s.explicit()
                    + " is neither the library file nor a directory holding " + String.join(" or ", spec.fileNames()));
        }
        List<String> looked = new ArrayList<>(s.looked());
        if (env.useDynamicLinker()) {
            for (String name : spec.fileNames()) {
                looked.add("dlopen(" + name + ") through the dynamic linker's cache");
                try {
                    return new Loaded(Path.of(name), SymbolLookup.libraryLookup(name, Arena.global()));
                } catch (IllegalArgumentException | UnsatisfiedLinkError e) {
                    // not known to the dynamic linker either; keep looking
                }
            }
        }
        throw new NativeLibraryException(notFoundMessage(spec, looked));
    }

    static String notFoundMessage(Spec spec, List<String> looked) {
        return spec.display() + " not found (file " + String.join(" or ", spec.fileNames()) + "). Set "
                + spec.property() + " (system property) or " + spec.env() + " to the file or its directory"
                + (spec.wheelDirs().isEmpty() ? "" : ", or " + SITE_PACKAGES_PROPERTY + " to a Python site-packages"
                + " directory holding the nvidia-nccl wheel")
                + ". Looked at: " + String.join(", ", looked);
    }

    /**
     * @return libcuda, loaded on first call (a failure is remembered and rethrown)
     * @throws NativeLibraryException when it cannot be found or loaded
     */
    public static Loaded cuda() {
        Loaded l = cuda;
        if (l != null) {
            return l;
        }
        synchronized (LOCK) {
            if (cuda == null) {
                if (cudaFailure != null) {
                    throw new NativeLibraryException(cudaFailure);
                }
                try {
                    cuda = load(CUDA, Environment.current());
                } catch (NativeLibraryException e) {
                    cudaFailure = e.getMessage();
                    throw e;
                }
            }
            return cuda;
        }
    }

    /**
     * @return libnccl, loaded on first call (a failure is remembered and rethrown)
     * @throws NativeLibraryException when it cannot be found or loaded
     */
    public static Loaded nccl() {
        Loaded l = nccl;
        if (l != null) {
            return l;
        }
        synchronized (LOCK) {
            if (nccl == null) {
                if (ncclFailure != null) {
                    throw new NativeLibraryException(ncclFailure);
                }
                try {
                    nccl = load(NCCL, Environment.current());
                } catch (NativeLibraryException e) {
                    ncclFailure = e.getMessage();
                    throw e;
                }
            }
            return nccl;
        }
    }

    /** @return true once libcuda has been loaded successfully */
    public static boolean cudaLoaded() {
        return cuda != null;
    }

    /** @return true once libnccl has been loaded successfully */
    public static boolean ncclLoaded() {
        return nccl != null;
    }
}
