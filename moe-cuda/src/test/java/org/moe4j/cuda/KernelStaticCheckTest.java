package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Static checks of the CUDA kernel sources that need no GPU, only the CUDA compiler: every
 * kernel of {@code native/routing.cu}, {@code native/permute.cu} and {@code native/grouped_gemm.cu}
 * assembles for sm_90a with its stable {@code extern "C"} name and without register spills, and
 * the Hopper grouped GEMM really uses {@code wgmma.mma_async}, neither serialised (ptxas C7515) nor
 * with an ignored {@code setmaxnreg} (C7508). Skipped (by assumption) where
 * {@code nvcc} is not installed.
 */
class KernelStaticCheckTest {

    private static final long COMPILE_TIMEOUT_SECONDS = 120;

    private static final Map<String, List<String>> KERNELS = new LinkedHashMap<>();

    static {
        KERNELS.put("routing", List.of("moe_router_fwd", "moe_router_bwd", "moe_fp32_gemm",
                "moe_seq_histogram", "moe_segment_partials", "moe_segment_finish", "moe_capacity_drop",
                "moe_expert_bias_update", "moe_load_accumulate"));
        KERNELS.put("permute", List.of("moe_fill_i32", "moe_count_routes", "moe_send_keys",
                "moe_key_chunk_counts", "moe_key_layout", "moe_key_positions", "moe_send_meta",
                "moe_exclusive_scan", "moe_send_return", "moe_pack_units", "moe_count_local", "moe_recv_keys",
                "moe_recv_write", "moe_valid_slots", "moe_compose_index", "moe_copy_rows", "moe_weighted_sum", "moe_row_dots",
                "moe_scatter_values"));
        KERNELS.put("grouped_gemm", List.of("moe_gg_fwd_mma", "moe_gg_swiglu_mma", "moe_gg_dx_mma",
                "moe_gg_wgrad_mma", "moe_swiglu_bwd", "moe_gg_fwd_wgmma", "moe_gg_swiglu_wgmma",
                "moe_gg_dx_wgmma", "moe_gg_wgrad_wgmma",
                "moe_gg_matmul_f32", "moe_gg_wgrad_f32", "moe_cast_bf16", "moe_transpose_batched",
                "moe_swiglu_fwd_f32", "moe_swiglu_bwd_f32"));
        KERNELS.put("optim", List.of("moe_accumulate_f32", "moe_adamw_f32", "moe_first_nonfinite_f32"));
    }

    private static Path nvcc;
    private static Path ptxas;
    private static Path nativeDir;

    @TempDir
    static Path work;

    @BeforeAll
    static void findTools() {
        nvcc = findTool("nvcc");
        ptxas = nvcc == null ? null : nvcc.resolveSibling("ptxas");
        nativeDir = findNativeDir();
    }

    @Test
    void hopperGroupedGemmPtxContainsWgmma() throws Exception {
        assumeTools();
        Path ptx = compileToPtx("grouped_gemm");
        String text = Files.readString(ptx, StandardCharsets.UTF_8);
        assertTrue(text.contains("wgmma.mma_async"), "grouped_gemm.cu PTX for sm_90a has no wgmma.mma_async");
        assertTrue(text.contains("cp.async.bulk.tensor"), "grouped_gemm.cu PTX for sm_90a has no TMA bulk tensor copy");
        assertTrue(text.contains("mma.sync.aligned.m16n8k16"), "grouped_gemm.cu PTX has no portable mma.sync path");
        assertTrue(text.contains("cp.async.bulk.tensor.3d"), "grouped_gemm.cu PTX has no 3-D bulk tensor copy (dX weights)");
        // imm-trans-a, imm-trans-b: forward K-major/K-major, dX K-major/MN-major, weight gradient MN-major/MN-major
        for (String trans : List.of("0, 0", "0, 1", "1, 1")) {
            assertTrue(Pattern.compile("wgmma\\.mma_async\\.sync\\.aligned\\.m64n128k16\\.f32\\.bf16\\.bf16 \\{[^}]*\\}, %rd\\d+, %rd\\d+, p, 1, 1, "
                    + trans + ";").matcher(text).find(), "grouped_gemm.cu PTX has no m64n128k16 wgmma with transposes " + trans);
        }
    }

    @Test
    void everyKernelAssemblesForSm90aWithoutSpillsOrSerialisedWgmma() throws Exception {
        assumeTools();
        List<String> problems = new ArrayList<>();
        for (Map.Entry<String, List<String>> file : KERNELS.entrySet()) {
            Path ptx = compileToPtx(file.getKey());
            String report = run(List.of(ptxas.toString(), "-arch=sm_90a", "-v",
                    "-o", work.resolve(file.getKey() + ".cubin").toString(), ptx.toString()));
            Map<String, long[]> props = parsePtxasReport(report);
            // C7515: wgmma serialised (accumulators touched inside the pipeline); C7508: setmaxnreg ignored
            for (String code : List.of("C7515", "C7508")) {
                if (report.contains(code)) {
                    problems.add(file.getKey() + ".cu: ptxas reports " + code + ": "
                            + report.lines().filter(l -> l.contains(code)).findFirst().orElse(""));
                }
            }
            for (String kernel : file.getValue()) {
                long[] p = props.get(kernel);
                if (p == null) {
                    problems.add(file.getKey() + ".cu: kernel " + kernel + " missing from the ptxas report");
                } else if (p[0] != 0 || p[1] != 0) {
                    problems.add(file.getKey() + ".cu: kernel " + kernel + " spills (" + p[0]
                            + " bytes spill stores, " + p[1] + " bytes spill loads)");
                }
            }
        }
        assertEquals(List.of(), problems);
    }

    /** Kernel name to {spill stores, spill loads} from a {@code ptxas -v} report. */
    static Map<String, long[]> parsePtxasReport(String report) {
        Pattern fn = Pattern.compile("Function properties for (\\S+)");
        Pattern spill = Pattern.compile("(\\d+) bytes spill stores, (\\d+) bytes spill loads");
        Map<String, long[]> out = new LinkedHashMap<>();
        String current = null;
        for (String line : report.split("\\R")) {
            Matcher m = fn.matcher(line);
            if (m.find()) {
                current = m.group(1);
                continue;
            }
            Matcher s = spill.matcher(line);
            if (current != null && s.find()) {
                out.put(current, new long[] {Long.parseLong(s.group(1)), Long.parseLong(s.group(2))});
                current = null;
            }
        }
        return out;
    }

    @Test
    void ptxasReportParserReadsSpillFigures() {
        String sample = """
                ptxas info    : Function properties for moe_a
                    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
                ptxas info    : Function properties for moe_b
                    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
                """;
        Map<String, long[]> p = parsePtxasReport(sample);
        assertEquals(0, p.get("moe_a")[0]);
        assertEquals(8, p.get("moe_b")[0]);
        assertEquals(4, p.get("moe_b")[1]);
    }

    private static Path compileToPtx(String name) throws IOException, InterruptedException {
        Path ptx = work.resolve(name + ".ptx");
        if (!Files.exists(ptx)) {
            run(List.of(nvcc.toString(), "-gencode=arch=compute_90a,code=compute_90a", "-ptx",
                    "-I", nativeDir.toString(), "-o", ptx.toString(),
                    nativeDir.resolve(name + ".cu").toString()));
        }
        return ptx;
    }

    static String run(List<String> command) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        if (!p.waitFor(COMPILE_TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError("timed out: " + String.join(" ", command));
        }
        String text = new String(out, StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), () -> "command failed: " + String.join(" ", command) + "\n" + text);
        return text;
    }

    private static void assumeTools() {
        assumeTrue(nvcc != null && Files.isExecutable(ptxas), "nvcc/ptxas not installed: static kernel checks skipped");
        assumeTrue(nativeDir != null, "native/ sources not found next to the module");
    }

    static Path findTool(String name) {
        List<Path> candidates = new ArrayList<>();
        for (String env : List.of("CUDA_HOME", "CUDA_PATH")) {
            String v = System.getenv(env);
            if (v != null && !v.isBlank()) candidates.add(Path.of(v, "bin", name));
        }
        candidates.add(Path.of("/usr/local/cuda/bin", name));
        String path = System.getenv("PATH");
        if (path != null) {
            for (String dir : path.split(java.io.File.pathSeparator)) {
                if (!dir.isBlank()) candidates.add(Path.of(dir, name));
            }
        }
        return candidates.stream().filter(Files::isExecutable).findFirst().orElse(null);
    }

    static Path findNativeDir() {
        Path dir = Path.of("").toAbsolutePath();
        for (int i = 0; i < 3 && dir != null; i++, dir = dir.getParent()) {
            Path n = dir.resolve("native");
            if (Files.isRegularFile(n.resolve("grouped_gemm.cu"))) return n;
        }
        return null;
    }
}
