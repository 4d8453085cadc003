package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.cuda.internal.NativeLibraries;
import org.moe4j.cuda.internal.NativeLibraries.Environment;
import org.moe4j.cuda.internal.NativeLibraries.Search;

/** Library lookup against a fake file-system tree: no real libcuda or libnccl is needed. */
class NativeLibrariesTest {
    @TempDir
    Path root;

    private final Properties props = new Properties();
    private final Map<String, String> env = new HashMap<>();

    private Environment environment() {
        return new Environment(props, env, root, root.resolve("home/user"), false);
    }

    private Path touch(String relative) throws IOException {
        Path f = root.resolve(relative);
        Files.createDirectories(f.getParent());
        Files.writeString(f, "not really a library");
        return f;
    }

    @Test
    void explicitPropertyFileWinsOverEverythingElse() throws IOException {
        Path explicit = touch("custom/libnccl-custom.so");
        touch("usr/lib/x86_64-linux-gnu/libnccl.so.2");
        props.setProperty("moe4j.nccl.lib", explicit.toString());
        Search s = NativeLibraries.search(NativeLibraries.NCCL, environment());
        assertEquals(explicit, s.found().orElseThrow());
        assertEquals("moe4j.nccl.lib=" + explicit, s.explicit());
    }

    @Test
    void explicitEnvironmentDirectoryIsSearchedForTheUsualNames() throws IOException {
        Path lib = touch("drivers/libcuda.so.1");
        env.put("MOE4J_LIBCUDA", lib.getParent().toString());
        assertEquals(lib, NativeLibraries.search(NativeLibraries.CUDA, environment()).found().orElseThrow());
    }

    @Test
    void explicitSettingThatNamesNothingIsRefusedWithoutFallingBack() throws IOException {
        touch("usr/lib/x86_64-linux-gnu/libcuda.so.1");
        props.setProperty("moe4j.cuda.lib", root.resolve("nope/libcuda.so.1").toString());
        NativeLibraryException e = assertThrows(NativeLibraryException.class,
                () -> NativeLibraries.load(NativeLibraries.CUDA, environment()));
        assertTrue(e.getMessage().startsWith("libcuda (the CUDA driver library) not found: moe4j.cuda.lib="), e.getMessage());
        assertTrue(e.getMessage().contains("is neither the library file nor a directory holding libcuda.so.1 or libcuda.so"), e.getMessage());
    }

    @Test
    void ldLibraryPathComesBeforeSystemDirectoriesAndStubsAreSkipped() throws IOException {
        Path stub = touch("usr/local/cuda/lib64/stubs/libcuda.so");
        Path ld = touch("ld/libcuda.so.1");
        touch("usr/lib/x86_64-linux-gnu/libcuda.so.1");
        env.put("LD_LIBRARY_PATH", stub.getParent() + ":" + ld.getParent());
        Search s = NativeLibraries.search(NativeLibraries.CUDA, environment());
        assertEquals(ld, s.found().orElseThrow());
        assertTrue(s.looked().contains(stub.getParent() + " (skipped: stub libraries)"), s.looked().toString());
    }

    @Test
    void systemDirectoriesAreSearchedUnderTheRoot() throws IOException {
        Path lib = touch("usr/local/nvidia/lib64/libcuda.so.1");
        assertEquals(lib, NativeLibraries.search(NativeLibraries.CUDA, environment()).found().orElseThrow());
    }

    @Test
    void ncclIsFoundInAPythonWheelUnderDistPackages() throws IOException {
        Path lib = touch("usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libnccl.so.2");
        assertEquals(lib, NativeLibraries.search(NativeLibraries.NCCL, environment()).found().orElseThrow());
    }

    @Test
    void ncclIsFoundInAVirtualEnvUnderOptAndInCuda13WheelLayout() throws IOException {
        Path lib = touch("opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnccl.so.2");
        assertEquals(lib, NativeLibraries.search(NativeLibraries.NCCL, environment()).found().orElseThrow());
    }

    @Test
    void ncclIsFoundThroughVirtualEnvAndExplicitSitePackages() throws IOException {
        Path venvLib = touch("venv/lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2");
        env.put("VIRTUAL_ENV", root.resolve("venv").toString());
        assertEquals(venvLib, NativeLibraries.search(NativeLibraries.NCCL, environment()).found().orElseThrow());

        Path explicitLib = touch("elsewhere/site/nvidia/nccl/lib/libnccl.so.2");
        props.setProperty(NativeLibraries.SITE_PACKAGES_PROPERTY, root.resolve("elsewhere/site").toString());
        assertEquals(explicitLib, NativeLibraries.search(NativeLibraries.NCCL, environment()).found().orElseThrow());
    }

    @Test
    void ncclIsFoundInUserSitePackages() throws IOException {
        Path lib = touch("home/user/.local/lib/python3.10/site-packages/nvidia/nccl/lib/libnccl.so.2");
        assertEquals(lib, NativeLibraries.search(NativeLibraries.NCCL, environment()).found().orElseThrow());
    }

    @Test
    void libcudaIsNeverLookedForInPythonWheels() throws IOException {
        touch("usr/local/lib/python3.12/dist-packages/nvidia/nccl/lib/libcuda.so.1");
        assertFalse(NativeLibraries.search(NativeLibraries.CUDA, environment()).found().isPresent());
    }

    @Test
    void notFoundMessageListsEveryPlaceLookedAndTheSettings() throws IOException {
        Files.createDirectories(root.resolve("usr/lib/python3/dist-packages"));
        env.put("LD_LIBRARY_PATH", "/nonexistent/ld");
        NativeLibraryException e = assertThrows(NativeLibraryException.class,
                () -> NativeLibraries.load(NativeLibraries.NCCL, environment()));
        String m = e.getMessage();
        assertTrue(m.startsWith("libnccl (NCCL) not found (file libnccl.so.2 or libnccl.so). Set moe4j.nccl.lib"), m);
        assertTrue(m.contains("MOE4J_LIBNCCL"), m);
        assertTrue(m.contains("moe4j.python.sitePackages"), m);
        assertTrue(m.contains("/nonexistent/ld"), m);
        assertTrue(m.contains(root.resolve("usr/lib/x86_64-linux-gnu").toString()), m);
        assertTrue(m.contains(root.resolve("usr/local/cuda/lib64").toString()), m);
        assertTrue(m.contains(root.resolve("usr/lib/python3/dist-packages/nvidia/nccl/lib").toString()), m);
    }
}
