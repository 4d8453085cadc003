package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;
import org.moe4j.cuda.internal.ffi.nccl.nccl_h;

/**
 * The built-in error-name tables of {@link CudaException} and {@link NcclException} (used when the
 * library cannot be asked) against the headers: cuda.h's {@code enum cudaError_enum} (the CUDA
 * toolkit's where one is installed, and the CPU device's native/cpudevice/include/cuda.h) and nccl.h's
 * {@code ncclResult_t} (the CPU device's shim, and a system nccl.h where one is installed). Every name
 * the table and a header share must have the header's value; the binding constants too. No driver needed.
 */
class ErrorNamesMatchHeadersTest {
    private static final Pattern CU_ENTRY = Pattern.compile("\\b(CUDA_[A-Z0-9_]+)\\s*=\\s*(\\d+)");
    private static final Pattern NCCL_ENTRY = Pattern.compile("\\b(nccl[A-Za-z0-9]+)\\s*=\\s*(\\d+)");

    private static Path repoRoot() {
        return Path.of(System.getProperty("moe4j.repo.root", "..")).toAbsolutePath().normalize();
    }

    /** @return name to value of the enum between {@code start} and {@code end} in {@code header} */
    static Map<String, Integer> parseEnum(Path header, String start, String end, Pattern entry) throws IOException {
        String text = Files.readString(header);
        int from = text.indexOf(start);
        assertTrue(from >= 0, header + ": no '" + start + "'");
        int to = text.indexOf(end, from);
        assertTrue(to > from, header + ": no '" + end + "' after '" + start + "'");
        String body = text.substring(from, to).replaceAll("/\\*.*?\\*/", " ").replaceAll("//[^\n]*", " ");
        Map<String, Integer> out = new LinkedHashMap<>();
        Matcher m = entry.matcher(body);
        while (m.find()) {
            out.put(m.group(1), Integer.parseInt(m.group(2)));
        }
        assertFalse(out.isEmpty(), header + ": empty enum");
        return out;
    }

    static Map<String, Integer> cudaResults(Path header) throws IOException {
        return parseEnum(header, "enum cudaError_enum", "} CUresult", CU_ENTRY);
    }

    static Map<String, Integer> ncclResults(Path header) throws IOException {
        return parseEnum(header, "ncclSuccess", "} ncclResult_t", NCCL_ENTRY);
    }

    /** @return every table entry the header names with another value, or that the header lacks (when {@code complete}) */
    static List<String> cudaMismatches(Path header, boolean complete) throws IOException {
        Map<String, Integer> h = cudaResults(header);
        Map<Integer, String> byValue = new LinkedHashMap<>();
        h.forEach((n, v) -> byValue.putIfAbsent(v, n));
        List<String> bad = new ArrayList<>();
        CudaException.knownNames().forEach((code, name) -> {
            Integer v = h.get(name);
            if (v == null ? complete : v.intValue() != code) {
                bad.add(code + " -> " + name + " (header: " + (v == null ? "no such name" : name + " = " + v)
                        + (byValue.containsKey(code) ? ", " + code + " is " + byValue.get(code) : ", no CUresult " + code) + ")");
            }
        });
        return bad;
    }

    @Test
    void cudaTableMatchesTheCpuDeviceHeader() throws IOException {
        Path shim = repoRoot().resolve("native/cpudevice/include/cuda.h");
        assertTrue(Files.isRegularFile(shim), shim + " is missing");
        // the shim declares a subset: every name both know must agree, and every value it names
        assertEquals(List.of(), cudaMismatches(shim, false), shim.toString());
        Map<String, Integer> h = cudaResults(shim);
        h.forEach((name, v) -> {
            String ours = CudaException.knownNames().get(v);
            assertTrue(ours == null || ours.equals(name), shim + ": " + v + " is " + name + ", the table says " + ours);
        });
    }

    @Test
    void cudaTableMatchesTheToolkitHeader() throws IOException {
        Path header = toolkitCudaHeader();
        assumeTrue(header != null, "no CUDA toolkit cuda.h here (CUDA_HOME, /usr/local/cuda)");
        assertEquals(List.of(), cudaMismatches(header, true), "built-in names vs " + header);
    }

    @Test
    void cudaTableHoldsNoRuntimeOnlyCode() {
        // 35 is the runtime's cudaErrorInsufficientDriver; cuda.h has no CUresult 35
        assertFalse(CudaException.knownNames().containsKey(35), CudaException.knownNames().get(35));
        assertEquals("CUDA_ERROR_<unknown 35> (35)", CudaException.describe(35));
    }

    @Test
    void cudaBindingConstantsMatchTheHeaders() throws Exception {
        List<Path> headers = new ArrayList<>(List.of(repoRoot().resolve("native/cpudevice/include/cuda.h")));
        Path toolkit = toolkitCudaHeader();
        if (toolkit != null) {
            headers.add(toolkit);
        }
        for (Path header : headers) {
            Map<String, Integer> h = cudaResults(header);
            for (Field f : cuda_h.class.getFields()) {
                if (Modifier.isStatic(f.getModifiers()) && f.getType() == int.class && h.containsKey(f.getName())) {
                    assertEquals(h.get(f.getName()).intValue(), f.getInt(null), "cuda_h." + f.getName() + " vs " + header);
                }
            }
        }
    }

    /** The upstream numbering (NVIDIA/nccl src/nccl.h.in): releases with ncclTimeout end at ncclNumResults = 9. */
    private static final Map<String, Integer> NCCL_UPSTREAM = Map.of("ncclSuccess", 0, "ncclUnhandledCudaError", 1,
            "ncclSystemError", 2, "ncclInternalError", 3, "ncclInvalidArgument", 4, "ncclInvalidUsage", 5,
            "ncclRemoteError", 6, "ncclInProgress", 7, "ncclTimeout", 8);

    static List<String> ncclMismatches(Map<String, Integer> header, String where) {
        String[] names = NcclException.knownNames();
        List<String> bad = new ArrayList<>();
        header.forEach((name, v) -> {
            if (name.equals("ncclNumResults")) {
                if (v > names.length) {
                    bad.add(where + ": ncclNumResults = " + v + " but the table names only " + names.length);
                }
            } else if (v >= names.length || !names[v].equals(name)) {
                bad.add(where + ": " + name + " = " + v + ", the table says " + (v < names.length ? names[v] : "nothing"));
            }
        });
        for (int v = 0; v < names.length; v++) {
            Integer hv = header.get(names[v]);
            if (hv != null && hv != v) {
                bad.add(where + ": table " + v + " -> " + names[v] + ", header " + names[v] + " = " + hv);
            }
        }
        return bad;
    }

    @Test
    void ncclTableMatchesEveryResultOfTheHeaders() throws IOException {
        Path shim = repoRoot().resolve("native/cpudevice/include/nccl.h");
        assertTrue(Files.isRegularFile(shim), shim + " is missing");
        List<String> bad = new ArrayList<>(ncclMismatches(ncclResults(shim), shim.toString()));
        bad.addAll(ncclMismatches(NCCL_UPSTREAM, "NVIDIA/nccl src/nccl.h.in"));
        for (Path system : systemNcclHeaders()) {
            bad.addAll(ncclMismatches(ncclResults(system), system.toString()));
        }
        assertEquals(List.of(), bad);
        assertEquals(NCCL_UPSTREAM.size(), NcclException.knownNames().length, "every upstream result is named");
    }

    @Test
    void ncclTimeoutHasItsNameAndBindingConstant() throws Exception {
        assertEquals(8, nccl_h.ncclTimeout);
        NcclException e = NcclException.of(8, "ncclCommGetAsyncError");
        assertEquals("ncclTimeout", e.resultName());
        assertTrue(e.getMessage().startsWith("ncclCommGetAsyncError failed: ncclTimeout (8)"), e.getMessage());
        for (Field f : nccl_h.class.getFields()) {
            Integer upstream = NCCL_UPSTREAM.get(f.getName());
            if (upstream != null) {
                assertEquals(upstream.intValue(), f.getInt(null), "nccl_h." + f.getName());
            }
        }
    }

    private static Path toolkitCudaHeader() {
        List<Path> candidates = new ArrayList<>();
        for (String v : new String[] {System.getenv("CUDA_HOME"), System.getenv("CUDA_PATH")}) {
            if (v != null && !v.isBlank()) {
                candidates.add(Path.of(v, "include", "cuda.h"));
            }
        }
        candidates.add(Path.of("/usr/local/cuda/include/cuda.h"));
        return candidates.stream().filter(Files::isRegularFile).findFirst().orElse(null);
    }

    private static List<Path> systemNcclHeaders() {
        List<Path> candidates = new ArrayList<>();
        String home = System.getenv("NCCL_HOME");
        if (home != null && !home.isBlank()) {
            candidates.add(Path.of(home, "include", "nccl.h"));
        }
        candidates.addAll(List.of(Path.of("/usr/include/nccl.h"), Path.of("/usr/local/include/nccl.h"),
                Path.of("/usr/local/cuda/include/nccl.h")));
        return Stream.of(candidates.toArray(Path[]::new)).filter(Files::isRegularFile).distinct().toList();
    }
}
