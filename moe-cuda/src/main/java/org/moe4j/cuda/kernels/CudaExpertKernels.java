package org.moe4j.cuda.kernels;

import static org.moe4j.cuda.kernels.Kernels.blocks;
import static org.moe4j.cuda.kernels.Kernels.dev;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.kernels.internal.TensorMaps;
import org.moe4j.experts.ExpertKernels;

/**
 * {@link ExpertKernels} on the GPU ({@code native/grouped_gemm.cu}).
 *
 * <p>Paths of {@link #groupedMatmul}, {@link #groupedMatmulTransposedB} and {@link #groupedWeightGrad}:
 * <ul>
 *   <li>bf16 tensor cores when both operands are BF16 or {@code bf16Operands} is set (F32 operands
 *       are rounded to bf16 first, as the CPU reference does on load), the inner dimensions are
 *       multiples of 8 and BF16 operands are 16-byte aligned:
 *       {@code mma} ({@code mma.sync}, the default) or {@code wgmma} (Hopper wgmma + TMA, compute
 *       capability 9.0 only), chosen by the system property {@value #PATH_PROPERTY}
 *       ({@code mma} | {@code wgmma}). Both paths run every GEMM of the expert forward and backward,
 *       overwrite or accumulate;</li>
 *   <li>otherwise exact fp32 (SIMT FMA, k ascending).</li>
 * </ul>
 * Every output element is reduced by one CTA in a fixed order: results are run-to-run reproducible.
 * {@code mma} stays the default until the Hopper path has been measured and checked on hardware
 * (docs/gpu-results.md).
 */
public final class CudaExpertKernels implements ExpertKernels {
    /** System property choosing the bf16 GEMM path: {@code mma} (default) or {@code wgmma}. */
    public static final String PATH_PROPERTY = "moe4j.cuda.gemm";

    /** Dynamic shared memory of the mma kernels (see grouped_gemm.cu). */
    static final int SMEM_FWD = 61440;
    static final int SMEM_DX = 56832;
    static final int SMEM_WGRAD = 52224;
    /** Dynamic shared memory of every wgmma kernel (grouped_gemm_wgmma.cuh: 4 stages of 32 KB + 1 KB slack). */
    static final int SMEM_WGMMA = 4 * 32768 + 1024;

    private final Kernels k;
    private final boolean wgmma;
    private final Backend backend;
    private final boolean clampOnDevice; // offsetsCheckedOnDevice(): device offsets clamped, never read back
    private volatile Kernels features; // native/layer_features.cu, loaded on first use
    /** Element-wise adds of the token-block tree (the optimiser module's accumulate kernel), made on first use. */
    private volatile CudaOptimizerKernels adder;

    /**
     * Creates a new {@code CudaExpertKernels}.
     * @param backend the cuda backend
     */
    public CudaExpertKernels(Backend backend) {
        this(backend, System.getProperty(PATH_PROPERTY, "mma"));
    }

    /**
     * Creates a new {@code CudaExpertKernels}.
     * @param backend the cuda backend
     * @param path    {@code mma} or {@code wgmma}
     * @throws IllegalArgumentException for another path name
     * @throws IllegalStateException    for {@code wgmma} on a device other than compute capability 9.0
     */
    public CudaExpertKernels(Backend backend, String path) {
        this.wgmma = switch (path) {
            case "mma" -> false;
            case "wgmma" -> true;
            default -> throw new IllegalArgumentException(PATH_PROPERTY + " must be mma or wgmma, got '" + path + "'");
        };
        this.k = new Kernels(backend, "grouped_gemm");
        this.backend = backend;
        this.clampOnDevice = false;
        if (wgmma) {
            var dev = k.backend().context().device();
            if (dev.major() != 9 || dev.minor() != 0) {
                throw new IllegalStateException(PATH_PROPERTY + "=wgmma needs a compute capability 9.0 GPU (its kernels are"
                        + " sm_90a machine code), but " + dev.name() + " is " + dev.major() + "." + dev.minor()
                        + "; use " + PATH_PROPERTY + "=mma");
            }
        }
    }

    private CudaExpertKernels(CudaExpertKernels checked) {
        this.k = checked.k;
        this.wgmma = checked.wgmma;
        this.backend = checked.backend;
        this.clampOnDevice = true;
    }

    /**
     * Kernels that clamp device-memory group offsets on the device ({@code moe_gg_clamp_offsets}, one
     * tiny launch per call) instead of reading them back to check them: no device→host read, so a
     * layer step stays free of host synchronisation. The grids are bounded by the operand's rows
     * (known on the host), and every kernel reads its group's range from the clamped offsets on the
     * device; results for valid offsets are bitwise those of the checking kernels.
     *
     * @return the sync-free variant (this, when already it)
     */
    @Override
    public CudaExpertKernels offsetsCheckedOnDevice() {
        return clampOnDevice ? this : new CudaExpertKernels(this);
    }

    /**
     * Returns the bf16 GEMM path in use.
     * @return the bf16 GEMM path in use
     */
    public String path() {
        return wgmma ? "wgmma" : "mma";
    }

    private static void floating(String what, Buffer b, int rank) {
        if (b.dtype() != DType.F32 && b.dtype() != DType.BF16) {
            throw new IllegalArgumentException(what + ": expected dtype F32 or BF16 but got " + b.dtype());
        }
        if (b.shape().rank() != rank) {
            throw new IllegalArgumentException(what + ": expected rank " + rank + " but got shape " + b.shape());
        }
    }

    private static void f32(String what, Buffer b, int rank) {
        if (b.dtype() != DType.F32) {
            throw new IllegalArgumentException(what + ": expected dtype F32 but got " + b.dtype());
        }
        if (rank >= 0 && b.shape().rank() != rank) {
            throw new IllegalArgumentException(what + ": expected rank " + rank + " but got shape " + b.shape());
        }
    }

    /** Validates the offsets on the host (one small read-back) and returns a device copy owner. */
    private DeviceBuffer offsets(Buffer groupOffsets, int groups, int rows, int[] hostOut) {
        return offsets(groupOffsets, groups, rows, hostOut, true);
    }

    /**
     * Validates the offsets on the host (one small read-back when they are on the device) into
     * {@code hostOut}; with {@code deviceCopy} a host table is also copied to the device.
     *
     * @return the device copy of a host table (caller closes), else null
     */
    private DeviceBuffer offsets(Buffer groupOffsets, int groups, int rows, int[] hostOut, boolean deviceCopy) {
        groupOffsets.require("groupOffsets", DType.I32, groups + 1L);
        int[] off;
        DeviceBuffer devOff;
        if (groupOffsets instanceof HostBuffer h) {
            off = h.toIntArray();
            devOff = deviceCopy ? k.pool().copyOf(h) : null;
        } else {
            DeviceBuffer d = dev("groupOffsets", groupOffsets);
            try (HostBuffer h = HostBuffer.allocate(DType.I32, groups + 1L)) {
                d.copyToAsync(h, k.stream());
                k.stream().synchronize();
                off = h.toIntArray();
            }
            devOff = null;
        }
        try {
            if (off[0] < 0) {
                throw new IllegalArgumentException("groupOffsets[0]=" + off[0] + " is negative");
            }
            for (int g = 0; g < groups; g++) {
                if (off[g + 1] < off[g]) {
                    throw new IllegalArgumentException("groupOffsets must not decrease: groupOffsets[" + (g + 1) + "]="
                            + off[g + 1] + " < groupOffsets[" + g + "]=" + off[g]);
                }
            }
            if (off[groups] > rows) {
                throw new IllegalArgumentException("groupOffsets[" + groups + "]=" + off[groups] + " exceeds the " + rows
                        + " rows of the operand");
            }
        } catch (RuntimeException e) {
            if (devOff != null) {
                devOff.close();
            }
            throw e;
        }
        System.arraycopy(off, 0, hostOut, 0, groups + 1);
        return devOff;
    }

    /** @return b itself when BF16, else a bf16 copy (the caller closes copies: see {@link #owned}) */
    private DeviceBuffer asBf16(Buffer b) {
        DeviceBuffer d = dev("operand", b);
        if (d.dtype() == DType.BF16) {
            return d;
        }
        DeviceBuffer out = k.pool().allocateUninitialized(DType.BF16, d.shape());
        long n = d.numel();
        if (n > 0) {
            k.launch("moe_cast_bf16").grid(Math.min(blocks(n, 256), 65535 * 16)).block(256).arg(d).arg(n).arg(out).launch();
        }
        return out;
    }

    private static void owned(DeviceBuffer maybeCopy, Buffer original) {
        if (maybeCopy != original) {
            maybeCopy.close();
        }
    }

    /** F32 operands are cast into fresh (aligned) buffers; BF16 ones are used in place and must be aligned. */
    private static boolean aligned(Buffer b) {
        return b.dtype() != DType.BF16 || dev("operand", b).address() % 16 == 0;
    }

    private boolean tensorCores(Buffer a, Buffer b, GemmSpec spec, int kDim, int nDim) {
        boolean bf16 = spec.bf16Operands() || (a.dtype() == DType.BF16 && b.dtype() == DType.BF16);
        return bf16 && kDim % 8 == 0 && nDim % 8 == 0 && aligned(a) && aligned(b);
    }

    /** Validated offsets: the device copy to launch with, and the copy to free (null when the caller's). */
    private record Offsets(DeviceBuffer device, DeviceBuffer owned) implements AutoCloseable {
        @Override
        public void close() {
            if (owned != null) {
                owned.close();
            }
        }
    }

    private Offsets checkedOffsets(Buffer groupOffsets, int groups, int rows) {
        if (clampOnDevice && groupOffsets instanceof DeviceBuffer raw) {
            groupOffsets.require("groupOffsets", DType.I32, groups + 1L);
            return clamped(raw, groups, rows);
        }
        DeviceBuffer copy = offsets(groupOffsets, groups, rows, new int[groups + 1]);
        return new Offsets(copy != null ? copy : dev("groupOffsets", groupOffsets), copy);
    }

    /** A device copy of {@code raw} clamped into a valid layout (queued; nothing read back). */
    private Offsets clamped(DeviceBuffer raw, int groups, long rows) {
        DeviceBuffer clean = k.pool().allocateUninitialized(DType.I32, Shape.of(groups + 1L));
        k.launch("moe_gg_clamp_offsets").grid(1).block(1).arg(raw).arg(groups).arg(rows).arg(clean).launch();
        return new Offsets(clean, clean);
    }

    /** The offsets of the bias kernels: checked on the host, or clamped on the device (see {@link #offsetsCheckedOnDevice}). */
    private Offsets biasOffsets(Buffer groupOffsets, long rows) {
        if (clampOnDevice && groupOffsets instanceof DeviceBuffer raw) {
            groupShape(groupOffsets);
            return clamped(raw, Math.toIntExact(groupOffsets.numel()) - 1, rows);
        }
        groupsChecked(groupOffsets, rows);
        return new Offsets(dev("groupOffsets", groupOffsets), null);
    }

    @Override
    public void groupedMatmul(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        rowGroupedGemm("groupedMatmul", a, b, false, groupOffsets, out, spec);
    }

    @Override
    public boolean supportsTransposedB() {
        return true;
    }

    @Override
    public void groupedMatmulTransposedB(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        rowGroupedGemm("groupedMatmulTransposedB", a, b, true, groupOffsets, out, spec);
    }

    /** {@code out[r] (+)= a[r] . b[g]} with b {@code [groups, K, N]}, or {@code . b[g]^T} with b {@code [groups, N, K]}. */
    private void rowGroupedGemm(String what, Buffer a, Buffer b, boolean bTransposed, Buffer groupOffsets, Buffer out,
            GemmSpec spec) {
        floating("a", a, 2);
        floating("b", b, 3);
        f32("out", out, 2);
        int rows = a.shape().dimInt(0);
        int kDim = a.shape().dimInt(1);
        int groups = b.shape().dimInt(0);
        int bK = b.shape().dimInt(bTransposed ? 2 : 1);
        int n = b.shape().dimInt(bTransposed ? 1 : 2);
        if (bK != kDim) {
            throw new IllegalArgumentException(what + ": a is " + a.shape() + " but b is " + b.shape()
                    + " (inner dimensions " + kDim + " != " + bK + ")");
        }
        out.shape().require(what + " out", rows, n);
        try (Offsets off = checkedOffsets(groupOffsets, groups, rows)) {
            if (rows == 0 || n == 0 || groups == 0) {
                return;
            }
            if (tensorCores(a, b, spec, kDim, n)) {
                DeviceBuffer ab = asBf16(a);
                DeviceBuffer bb = asBf16(b);
                try {
                    if (bTransposed) {
                        launchFwd(ab, bb, off.device(), rows, kDim, n, groups, dev("out", out), spec.accumulate());
                    } else {
                        launchDx(ab, bb, off.device(), rows, kDim, n, groups, dev("out", out), spec.accumulate());
                    }
                } finally {
                    owned(ab, a);
                    owned(bb, b);
                }
            } else if (bTransposed) {
                // exact fp32: the same kernel as groupedMatmul on a transposed copy (bit-identical by construction)
                try (DeviceBuffer bt = k.pool().allocateUninitialized(b.dtype(), Shape.of(groups, kDim, n))) {
                    transpose(b, bt);
                    launchMatmulF32(a, bt, off.device(), rows, kDim, n, groups, out, spec.accumulate());
                }
            } else {
                launchMatmulF32(a, b, off.device(), rows, kDim, n, groups, out, spec.accumulate());
            }
        }
    }

    private void launchMatmulF32(Buffer a, Buffer b, DeviceBuffer offsets, int rows, int kDim, int n, int groups, Buffer out,
            boolean accumulate) {
        k.launch("moe_gg_matmul_f32").grid(blocks(n, 64), blocks(rows, 64) + groups, 1).block(16, 16, 1)
                .arg(dev("a", a)).arg(a.dtype() == DType.BF16 ? 1 : 0).arg(dev("b", b)).arg(b.dtype() == DType.BF16 ? 1 : 0)
                .arg(offsets).arg(groups).arg(n).arg(kDim).arg(dev("out", out)).arg(accumulate ? 1 : 0).launch();
    }

    // ---------------------------------------------------------------------------------------------
    // Kernel launches on bf16 operands (no validation, no host synchronisation; the wgmma path encodes
    // its tensor maps on the host and passes them by value); package-private for GroupedGemmGpuBench.
    // ---------------------------------------------------------------------------------------------

    /**
     * Host-encoded tensor maps of one wgmma launch, passed by value as the kernel's
     * {@code const __grid_constant__ CUtensorMap} parameters (no device copy, no synchronisation).
     * Close after the launch (the launch copies the bytes).
     */
    record WgmmaMaps(Arena arena, MemorySegment... maps) implements AutoCloseable {
        @Override
        public void close() {
            arena.close();
        }
    }

    /** {@code out[r] (+)= a[r] . b[g]^T}: a {@code [rows, K]}, b {@code [groups, N, K]}, out F32. */
    void launchFwd(DeviceBuffer a, DeviceBuffer b, DeviceBuffer offsets, int rows, int kDim, int n, int groups,
            DeviceBuffer out, boolean accumulate) {
        if (wgmma && kDim > 0) { // a tensor map needs non-empty dimensions; with K = 0 the mma kernel writes the zeros
            try (WgmmaMaps maps = fwdMaps(a, b, rows, kDim, n, groups)) {
                launchFwdWgmma(maps, offsets, rows, kDim, n, groups, out, accumulate);
            }
        } else {
            k.launchWithSmem("moe_gg_fwd_mma", SMEM_FWD).grid(blocks(rows, 128) + groups, blocks(n, 128), 1).block(256)
                    .arg(a).arg((long) kDim).arg(b).arg((long) n * kDim).arg((long) kDim).arg(offsets).arg(groups).arg(n)
                    .arg(kDim).arg(out).arg((long) n).arg(0).arg(accumulate ? 1 : 0).launch();
        }
    }

    /** {@code out[r] (+)= a[r] . b[g]}: a {@code [rows, K]}, b {@code [groups, K, N]}, out F32. */
    void launchDx(DeviceBuffer a, DeviceBuffer b, DeviceBuffer offsets, int rows, int kDim, int n, int groups,
            DeviceBuffer out, boolean accumulate) {
        if (wgmma && kDim > 0) {
            try (WgmmaMaps maps = dxMaps(a, b, null, null, rows, kDim, n, groups)) {
                launchDxWgmma(maps, offsets, rows, n, kDim, groups, out, accumulate);
            }
        } else {
            k.launchWithSmem("moe_gg_dx_mma", SMEM_DX).grid(blocks(rows, 128) + groups, blocks(n, 128), 1).block(256)
                    .arg(a).arg((long) kDim).arg(b).argPointer(0L).arg(0L).argPointer(0L)
                    .arg((long) kDim * n).arg((long) n).arg(offsets).arg(groups).arg(n).arg(kDim)
                    .arg(out).arg((long) n).arg(0).arg(accumulate ? 1 : 0).launch();
        }
    }

    /** {@code out[g] (+)= a[rows of g]^T . b[rows of g]}: a {@code [rows, M]}, b {@code [rows, N]}, out F32 {@code [groups, M, N]}. */
    void launchWgrad(DeviceBuffer a, DeviceBuffer b, DeviceBuffer offsets, int rows, int m, int n, int groups,
            DeviceBuffer out, boolean accumulate) {
        if (wgmma && rows > 0) { // with no rows at all the mma kernel writes the zeros
            try (WgmmaMaps maps = wgradMaps(a, b, rows, m, n)) {
                launchWgradWgmma(maps, offsets, groups, m, n, out, accumulate);
            }
        } else {
            k.launchWithSmem("moe_gg_wgrad_mma", SMEM_WGRAD).grid(blocks(n, 128), blocks(m, 128), groups).block(256)
                    .arg(a).arg((long) m).arg(b).arg((long) n).arg(offsets).arg(groups).arg(m).arg(n)
                    .arg(out).arg((long) m * n).arg((long) n).arg(0).arg(accumulate ? 1 : 0).launch();
        }
    }

    /** @return the tensor maps (A, B) of {@code moe_gg_fwd_wgmma}: a {@code [rows, K]}, b {@code [groups, N, K]}; K &gt; 0 */
    WgmmaMaps fwdMaps(DeviceBuffer a, DeviceBuffer b, int rows, int kDim, int n, int groups) {
        Arena arena = Arena.ofConfined();
        try {
            return new WgmmaMaps(arena, TensorMaps.bf16RowMajor(arena, a.address(), rows, kDim, kDim, 64, 128),
                    TensorMaps.bf16RowMajor(arena, b.address(), (long) groups * n, kDim, kDim, 64, 128));
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /**
     * @return the tensor maps (A1, B1[, A2, B2]) of {@code moe_gg_dx_wgmma}: a {@code [rows, K]}, b
     *         {@code [groups, K, N]}; K &gt; 0
     */
    WgmmaMaps dxMaps(DeviceBuffer a, DeviceBuffer b, DeviceBuffer a2, DeviceBuffer b2, int rows, int kDim, int n,
            int groups) {
        Arena arena = Arena.ofConfined();
        try {
            long[] dimsB = {n, kDim, groups};
            long[] stridesB = {2L * n, 2L * n * kDim};
            int[] boxB = {64, 64, 1};
            MemorySegment mA = TensorMaps.bf16RowMajor(arena, a.address(), rows, kDim, kDim, 64, 128);
            MemorySegment mB = TensorMaps.bf16(arena, b.address(), dimsB, stridesB, boxB);
            if (a2 == null) {
                return new WgmmaMaps(arena, mA, mB);
            }
            return new WgmmaMaps(arena, mA, mB, TensorMaps.bf16RowMajor(arena, a2.address(), rows, kDim, kDim, 64, 128),
                    TensorMaps.bf16(arena, b2.address(), dimsB, stridesB, boxB));
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** @return the tensor maps (A, B) of {@code moe_gg_wgrad_wgmma}: a {@code [rows, M]}, b {@code [rows, N]}, rows &gt; 0 */
    WgmmaMaps wgradMaps(DeviceBuffer a, DeviceBuffer b, int rows, int m, int n) {
        Arena arena = Arena.ofConfined();
        try {
            return new WgmmaMaps(arena, TensorMaps.bf16RowMajor(arena, a.address(), rows, m, m, 64, 64),
                    TensorMaps.bf16RowMajor(arena, b.address(), rows, n, n, 64, 64));
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static final long MAP_ALIGN = 64; // alignas(64) CUtensorMap

    /** {@code moe_gg_fwd_wgmma} with maps from {@link #fwdMaps}; F32 out. */
    void launchFwdWgmma(WgmmaMaps maps, DeviceBuffer offsets, int rows, int kDim, int n, int groups, DeviceBuffer out,
            boolean accumulate) {
        k.launchWithSmem("moe_gg_fwd_wgmma", SMEM_WGMMA).grid(blocks(rows, 128) + groups, blocks(n, 128), 1).block(384)
                .argStruct(maps.maps()[0], MAP_ALIGN).argStruct(maps.maps()[1], MAP_ALIGN).arg(offsets).arg(groups).arg(n)
                .arg(kDim).arg(out).arg((long) n).arg(0).arg(accumulate ? 1 : 0).launch();
    }

    /** {@code moe_gg_dx_wgmma} with maps from {@link #dxMaps} (two maps: one pair, four: two pairs); F32 out. */
    void launchDxWgmma(WgmmaMaps maps, DeviceBuffer offsets, int rows, int n, int kDim, int groups, DeviceBuffer out,
            boolean accumulate) {
        MemorySegment[] m = maps.maps();
        int pairs = m.length / 2;
        k.launchWithSmem("moe_gg_dx_wgmma", SMEM_WGMMA).grid(blocks(rows, 128) + groups, blocks(n, 128), 1).block(384)
                .argStruct(m[0], MAP_ALIGN).argStruct(m[1], MAP_ALIGN)
                .argStruct(m[pairs == 2 ? 2 : 0], MAP_ALIGN).argStruct(m[pairs == 2 ? 3 : 1], MAP_ALIGN).arg(pairs)
                .arg(offsets).arg(groups).arg(n).arg(kDim).arg(out).arg((long) n).arg(0).arg(accumulate ? 1 : 0).launch();
    }

    /** {@code moe_gg_wgrad_wgmma} with maps from {@link #wgradMaps}; F32 out {@code [groups, M, N]}. */
    void launchWgradWgmma(WgmmaMaps maps, DeviceBuffer offsets, int groups, int m, int n, DeviceBuffer out,
            boolean accumulate) {
        k.launchWithSmem("moe_gg_wgrad_wgmma", SMEM_WGMMA).grid(blocks(n, 128), blocks(m, 128), groups).block(384)
                .argStruct(maps.maps()[0], MAP_ALIGN).argStruct(maps.maps()[1], MAP_ALIGN).arg(offsets).arg(groups).arg(m)
                .arg(n).arg(out).arg((long) m * n).arg((long) n).arg(0).arg(accumulate ? 1 : 0).launch();
    }

    @Override
    public void groupedWeightGrad(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        floating("a", a, 2);
        floating("b", b, 2);
        f32("out", out, 3);
        int rows = a.shape().dimInt(0);
        int m = a.shape().dimInt(1);
        int n = b.shape().dimInt(1);
        if (b.shape().dimInt(0) != rows) {
            throw new IllegalArgumentException("groupedWeightGrad: a has " + rows + " rows but b has " + b.shape().dimInt(0));
        }
        int groups = out.shape().dimInt(0);
        out.shape().require("groupedWeightGrad out", groups, m, n);
        try (Offsets off = checkedOffsets(groupOffsets, groups, rows)) {
            if (groups == 0 || m == 0 || n == 0) {
                return;
            }
            weightGrad(a, b, off.device(), rows, m, n, groups, dev("out", out), spec);
        }
    }

    /** The launch of {@link #groupedWeightGrad} after validation (offsets already on the device and checked). */
    private void weightGrad(Buffer a, Buffer b, DeviceBuffer offsets, int rows, int m, int n, int groups,
            DeviceBuffer out, GemmSpec spec) {
        if (tensorCores(a, b, spec, m, n)) {
            DeviceBuffer ab = asBf16(a);
            DeviceBuffer bb = asBf16(b);
            try {
                launchWgrad(ab, bb, offsets, rows, m, n, groups, out, spec.accumulate());
            } finally {
                owned(ab, a);
                owned(bb, b);
            }
        } else {
            k.launch("moe_gg_wgrad_f32").grid(blocks(n, 64), blocks(m, 64), groups).block(16, 16, 1)
                    .arg(dev("a", a)).arg(a.dtype() == DType.BF16 ? 1 : 0).arg(dev("b", b)).arg(b.dtype() == DType.BF16 ? 1 : 0)
                    .arg(offsets).arg(m).arg(n).arg(out).arg(spec.accumulate() ? 1 : 0).launch();
        }
    }

    @Override
    public boolean supportsTokenBlockTree() {
        return true;
    }

    /**
     * {@inheritDoc}
     *
     * <p>On the GPU every block is one {@link #groupedWeightGrad} launch, without its offset read-back (one
     * group whose offsets are a view into a device table of block boundaries, so each element of a block's partial is reduced by
     * one CTA in a fixed order), and the tree is combined with {@code moe_accumulate_f32} on a stack of
     * {@code [levels, M, N]} partials ({@code levels = 1 + log2(blocks per segment)}): memory stays
     * logarithmic in the token count, at the price of one small GEMM launch per block.
     */
    @Override
    public void groupedWeightGradTree(Buffer a, Buffer b, Buffer segmentOffsets, int blockRows, Buffer out,
            GemmSpec spec) {
        weightGradTree(a, b, segmentOffsets, blockRows, null, out, spec);
    }

    /** {@inheritDoc} */
    @Override
    public boolean usesLeafBounds() {
        return true;
    }

    /**
     * {@inheritDoc}
     *
     * <p>On the GPU the table is read where it is: no upload, no read-back, nothing from host memory,
     * so the call can be captured in a CUDA graph.
     */
    @Override
    public void groupedWeightGradTree(Buffer a, Buffer b, Buffer segmentOffsets, int blockRows, Buffer leafBounds,
            Buffer out, GemmSpec spec) {
        java.util.Objects.requireNonNull(leafBounds, "leafBounds");
        weightGradTree(a, b, segmentOffsets, blockRows, leafBounds, out, spec);
    }

    /** A device copy of {@code values} (caller closes). */
    private DeviceBuffer uploadInts(int[] values) {
        try (HostBuffer h = HostBuffer.ofInts(values, values.length)) {
            return k.pool().copyOf(h);
        }
    }

    /** The tree weight gradient; {@code kept} is the caller's leaf-bounds table, or null to upload one. */
    private void weightGradTree(Buffer a, Buffer b, Buffer segmentOffsets, int blockRows, Buffer kept, Buffer out,
            GemmSpec spec) {
        floating("a", a, 2);
        floating("b", b, 2);
        f32("out", out, 3);
        if (blockRows < 1) {
            throw new IllegalArgumentException("groupedWeightGradTree: blockRows=" + blockRows + " must be >= 1");
        }
        int rows = a.shape().dimInt(0);
        int m = a.shape().dimInt(1);
        int n = b.shape().dimInt(1);
        if (b.shape().dimInt(0) != rows) {
            throw new IllegalArgumentException("groupedWeightGradTree: a has " + rows + " rows but b has "
                    + b.shape().dimInt(0));
        }
        int segments = out.shape().dimInt(0);
        out.shape().require("groupedWeightGradTree out", segments, m, n);
        int[] off = new int[segments + 1];
        offsets(segmentOffsets, segments, rows, off, false); // only the host values are needed: no upload
        DeviceBuffer o = dev("out", out);
        int[] bounds = org.moe4j.experts.TokenBlockTree.leafBounds(off, blockRows);
        int leaves = bounds.length - 1;
        DeviceBuffer keptBounds = null;
        if (kept != null) {
            kept.require("leafBounds", DType.I32, bounds.length);
            keptBounds = dev("leafBounds", kept);
        }
        if (segments == 0 || m == 0 || n == 0) {
            return;
        }
        int maxLeaves = 0;
        for (int s = 0; s < segments; s++) {
            maxLeaves = Math.max(maxLeaves, (off[s + 1] - off[s] + blockRows - 1) / blockRows);
        }
        long plane = (long) m * n * 4;
        GemmSpec overwrite = new GemmSpec(false, spec.bf16Operands());
        boolean cast = tensorCores(a, b, spec, m, n);
        DeviceBuffer ab = cast ? asBf16(a) : dev("a", a); // cast once, not once per block
        DeviceBuffer bb = cast ? asBf16(b) : dev("b", b);
        int levels = 1 + (maxLeaves <= 1 ? 0 : 32 - Integer.numberOfLeadingZeros(maxLeaves - 1));
        try (DeviceBuffer uploaded = keptBounds != null ? null : uploadInts(bounds);
             DeviceBuffer stack = k.pool().allocateUninitialized(DType.F32, Shape.of(levels, m, n))) {
            DeviceBuffer bd = keptBounds != null ? keptBounds : uploaded;
            CudaOptimizerKernels add = adder();
            int leaf = 0;
            for (int s = 0; s < segments; s++) {
                int depth = 0;
                for (int i = 0; off[s] + (long) i * blockRows < off[s + 1]; i++, leaf++) {
                    try (DeviceBuffer slot = stack.view(DType.F32, Shape.of(1, m, n), depth * plane);
                         DeviceBuffer group = bd.view(DType.I32, Shape.of(2), leaf * 4L)) {
                        weightGrad(ab, bb, group, rows, m, n, 1, slot, overwrite); // bounds checked above: no read-back
                    }
                    depth++;
                    for (int c = i + 1; (c & 1) == 0; c >>>= 1) {
                        accumulate(add, stack, depth - 2, stack, depth - 1, m, n);
                        depth--;
                    }
                }
                while (depth > 1) {
                    accumulate(add, stack, depth - 2, stack, depth - 1, m, n);
                    depth--;
                }
                try (DeviceBuffer dst = o.view(DType.F32, Shape.of(m, n), s * plane)) {
                    if (depth == 0) {
                        if (!spec.accumulate()) {
                            dst.zeroAsync(k.stream());
                        }
                    } else {
                        try (DeviceBuffer root = stack.view(DType.F32, Shape.of(m, n), 0)) {
                            if (spec.accumulate()) {
                                add.accumulate(dst, root);
                            } else {
                                dst.copyFromAsync(root, k.stream());
                            }
                        }
                    }
                }
            }
        } finally {
            if (cast) {
                owned(ab, a);
                owned(bb, b);
            }
        }
    }

    @Override
    public void combineTreeNodes(Buffer nodes, int[] plan, Buffer out, boolean accumulate) {
        f32("nodes", nodes, -1);
        f32("out", out, -1);
        java.util.Objects.requireNonNull(plan, "plan");
        if (nodes.shape().rank() < 1 || nodes.shape().dim(0) == 0
                || nodes.numel() / nodes.shape().dim(0) != out.numel()) {
            throw new IllegalArgumentException("combineTreeNodes: nodes " + nodes.shape() + " do not hold rows of "
                    + out.numel() + " elements (out " + out.shape() + ")");
        }
        int count = nodes.shape().dimInt(0);
        if (plan.length % 2 != 1) {
            throw new IllegalArgumentException("combineTreeNodes: plan length " + plan.length
                    + " must be odd (pairs, then the root)");
        }
        for (int i = 0; i < plan.length; i++) {
            if (plan[i] < 0 || plan[i] >= count) {
                throw new IllegalArgumentException("combineTreeNodes: plan[" + i + "]=" + plan[i] + " is not a row of "
                        + count + " nodes");
            }
        }
        DeviceBuffer nd = dev("nodes", nodes);
        DeviceBuffer o = dev("out", out);
        long row = out.numel();
        CudaOptimizerKernels add = adder();
        for (int p = 0; p + 1 < plan.length; p += 2) {
            try (DeviceBuffer dst = nd.view(DType.F32, Shape.of(row), plan[p] * row * 4);
                 DeviceBuffer src = nd.view(DType.F32, Shape.of(row), plan[p + 1] * row * 4)) {
                add.accumulate(dst, src);
            }
        }
        try (DeviceBuffer root = nd.view(DType.F32, Shape.of(row), plan[plan.length - 1] * row * 4)) {
            if (accumulate) {
                add.accumulate(o, root);
            } else {
                o.copyFromAsync(root, k.stream());
            }
        }
    }

    /** {@code a[i] += b[j]} for planes of {@code m × n} floats of two {@code [planes, m, n]} buffers. */
    private static void accumulate(CudaOptimizerKernels add, DeviceBuffer a, int i, DeviceBuffer b, int j, int m, int n) {
        long plane = (long) m * n * 4;
        try (DeviceBuffer dst = a.view(DType.F32, Shape.of(m, n), i * plane);
             DeviceBuffer src = b.view(DType.F32, Shape.of(m, n), j * plane)) {
            add.accumulate(dst, src);
        }
    }

    private CudaOptimizerKernels adder() {
        CudaOptimizerKernels a = adder;
        if (a == null) {
            a = new CudaOptimizerKernels(k.backend());
            adder = a;
        }
        return a;
    }

    @Override
    public void transpose(Buffer src, Buffer dst) {
        floating("src", src, 3);
        floating("dst", dst, 3);
        int g = src.shape().dimInt(0);
        int r = src.shape().dimInt(1);
        int c = src.shape().dimInt(2);
        dst.shape().require("transpose dst", g, c, r);
        if (g == 0 || r == 0 || c == 0) {
            return;
        }
        k.launch("moe_transpose_batched").grid(blocks(c, 32), blocks(r, 32), g).block(32, 8, 1)
                .arg(dev("src", src)).arg(src.dtype() == DType.BF16 ? 1 : 0).arg(r).arg(c)
                .arg(dev("dst", dst)).arg(dst.dtype() == DType.BF16 ? 1 : 0).launch();
    }

    private static void sameShape(String what, Buffer b, Buffer ref) {
        if (!b.shape().equals(ref.shape())) {
            throw new IllegalArgumentException(what + ": shape " + b.shape() + " differs from " + ref.shape());
        }
    }

    @Override
    public void swigluForward(Buffer gate, Buffer up, Buffer out) {
        f32("gate", gate, -1);
        f32("up", up, -1);
        f32("out", out, -1);
        sameShape("up", up, gate);
        sameShape("out", out, gate);
        long n = gate.numel();
        if (n == 0) {
            return;
        }
        k.launch("moe_swiglu_fwd_f32").grid(Math.min(blocks(n, 256), 1 << 20)).block(256).arg(dev("gate", gate))
                .arg(dev("up", up)).arg(n).arg(dev("out", out)).launch();
    }

    /** Checks the five F32 operands of a SwiGLU backward (one shape) and returns their element count. */
    private static long swigluBackwardElements(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp) {
        f32("gate", gate, -1);
        f32("up", up, -1);
        f32("dOut", dOut, -1);
        f32("dGate", dGate, -1);
        f32("dUp", dUp, -1);
        sameShape("up", up, gate);
        sameShape("dOut", dOut, gate);
        sameShape("dGate", dGate, gate);
        sameShape("dUp", dUp, gate);
        long n = gate.numel();
        return n;
    }

    @Override
    public void swigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp) {
        long n = swigluBackwardElements(gate, up, dOut, dGate, dUp);
        if (n == 0) {
            return;
        }
        k.launch("moe_swiglu_bwd_f32").grid(Math.min(blocks(n, 256), 1 << 20)).block(256).arg(dev("gate", gate))
                .arg(dev("up", up)).arg(dev("dOut", dOut)).arg(n).arg(dev("dGate", dGate)).arg(dev("dUp", dUp)).launch();
    }

    // ------------------------------------------------------------ model-family variants (layer_features.cu)

    private Kernels lf() {
        Kernels f = features;
        if (f == null) {
            synchronized (this) {
                f = features;
                if (f == null) {
                    f = new Kernels(backend, "layer_features");
                    features = f;
                }
            }
        }
        return f;
    }

    private static int grid(long n) {
        return Math.min(blocks(n, 256), 1 << 20);
    }

    @Override
    public boolean supportsLayerFeatures() {
        return true;
    }

    private static void clampParams(float limit, float alpha) {
        if (!(limit > 0) || Float.isInfinite(limit) || !(alpha > 0) || Float.isInfinite(alpha)) {
            throw new IllegalArgumentException("clamped SwiGLU: limit=" + limit + " and alpha=" + alpha
                    + " must be finite and > 0");
        }
    }

    @Override
    public void clampedSwigluForward(Buffer gate, Buffer up, Buffer out, float limit, float alpha) {
        clampParams(limit, alpha);
        f32("gate", gate, -1);
        f32("up", up, -1);
        f32("out", out, -1);
        sameShape("up", up, gate);
        sameShape("out", out, gate);
        long n = gate.numel();
        if (n == 0) {
            return;
        }
        lf().launch("moe_clamped_swiglu_fwd_f32").grid(grid(n)).block(256).arg(dev("gate", gate)).arg(dev("up", up))
                .arg(n).arg(limit).arg(alpha).arg(dev("out", out)).launch();
    }

    @Override
    public void clampedSwigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp, float limit,
                                      float alpha) {
        clampParams(limit, alpha);
        long n = swigluBackwardElements(gate, up, dOut, dGate, dUp);
        if (n == 0) {
            return;
        }
        lf().launch("moe_clamped_swiglu_bwd_f32").grid(grid(n)).block(256).arg(dev("gate", gate)).arg(dev("up", up))
                .arg(dev("dOut", dOut)).arg(n).arg(limit).arg(alpha).arg(dev("dGate", dGate)).arg(dev("dUp", dUp))
                .launch();
    }

    /** Group offsets read back (small) and checked like the CPU reference: non-decreasing, within rows. */
    private static void groupShape(Buffer groupOffsets) {
        if (groupOffsets.dtype() != DType.I32 || groupOffsets.shape().rank() != 1 || groupOffsets.numel() < 1) {
            throw new IllegalArgumentException("groupOffsets: expected I32 [groups + 1] but got " + groupOffsets.dtype()
                    + " " + groupOffsets.shape());
        }
    }

    private static int groupsChecked(Buffer groupOffsets, long rows) {
        groupShape(groupOffsets);
        int groups = Math.toIntExact(groupOffsets.numel()) - 1;
        try (HostBuffer h = groupOffsets.toHost()) {
            int[] off = h.toIntArray();
            if (off[0] < 0) {
                throw new IllegalArgumentException("groupOffsets[0]=" + off[0] + " is negative");
            }
            for (int g = 0; g < groups; g++) {
                if (off[g + 1] < off[g]) {
                    throw new IllegalArgumentException("groupOffsets must not decrease: groupOffsets[" + (g + 1) + "]="
                            + off[g + 1] + " < groupOffsets[" + g + "]=" + off[g]);
                }
            }
            if (off[groups] > rows) {
                throw new IllegalArgumentException("groupOffsets[" + groups + "]=" + off[groups] + " exceeds the " + rows
                        + " rows of the operand");
            }
        }
        return groups;
    }

    private static void biasShape(String what, Buffer bias, int groups, long n) {
        f32(what, bias, -1);
        if (bias.shape().rank() > 2 || bias.numel() != groups * n) {
            throw new IllegalArgumentException(what + ": expected " + groups + " x " + n + " elements ([groups, N]) but got "
                    + bias.shape());
        }
    }

    @Override
    public void addGroupBias(Buffer out, Buffer bias, Buffer groupOffsets) {
        f32("out", out, 2);
        long rows = out.shape().dim(0);
        int n = out.shape().dimInt(1);
        groupShape(groupOffsets);
        int groups = Math.toIntExact(groupOffsets.numel()) - 1;
        biasShape("bias", bias, groups, n);
        try (Offsets off = biasOffsets(groupOffsets, rows)) {
            if (rows * n == 0 || groups == 0) {
                return;
            }
            lf().launch("moe_group_bias_add_f32").grid(grid(rows * n)).block(256).arg(dev("out", out)).arg(rows).arg(n)
                    .arg(dev("bias", bias)).arg(off.device()).arg(groups).launch();
        }
    }

    @Override
    public void groupBiasGrad(Buffer dOut, Buffer groupOffsets, Buffer dBias) {
        f32("dOut", dOut, 2);
        long rows = dOut.shape().dim(0);
        int n = dOut.shape().dimInt(1);
        groupShape(groupOffsets);
        int groups = Math.toIntExact(groupOffsets.numel()) - 1;
        biasShape("dBias", dBias, groups, n);
        try (Offsets off = biasOffsets(groupOffsets, rows)) {
            if ((long) groups * n == 0) {
                return;
            }
            lf().launch("moe_group_bias_grad_f32").grid(grid((long) groups * n)).block(256).arg(dev("dOut", dOut)).arg(n)
                    .arg(off.device()).arg(groups).arg(dev("dBias", dBias)).launch();
        }
    }

    private static void rowVector(String what, Buffer b, long rows) {
        f32(what, b, -1);
        if (b.shape().rank() > 2 || b.numel() != rows) {
            throw new IllegalArgumentException(what + ": expected " + rows + " elements ([rows] or [rows, 1]) but got "
                    + b.shape());
        }
    }

    @Override
    public void rowScaleForward(Buffer scale, boolean sigmoid, Buffer x, Buffer out, boolean accumulate) {
        f32("x", x, 2);
        f32("out", out, 2);
        sameShape("out", out, x);
        long rows = x.shape().dim(0);
        int n = x.shape().dimInt(1);
        rowVector("scale", scale, rows);
        if (rows * n == 0) {
            return;
        }
        lf().launch("moe_row_scale_fwd_f32").grid(grid(rows * n)).block(256).arg(dev("scale", scale)).arg(sigmoid ? 1 : 0)
                .arg(dev("x", x)).arg(rows).arg(n).arg(dev("out", out)).arg(accumulate ? 1 : 0).launch();
    }

    @Override
    public void rowScaleBackward(Buffer scale, boolean sigmoid, Buffer x, Buffer dOut, Buffer dX, Buffer dScale) {
        f32("x", x, 2);
        f32("dOut", dOut, 2);
        f32("dX", dX, 2);
        sameShape("dOut", dOut, x);
        sameShape("dX", dX, x);
        long rows = x.shape().dim(0);
        int n = x.shape().dimInt(1);
        rowVector("scale", scale, rows);
        rowVector("dScale", dScale, rows);
        if (rows == 0) {
            return;
        }
        lf().launch("moe_row_scale_bwd_f32").grid(grid(rows)).block(256).arg(dev("scale", scale)).arg(sigmoid ? 1 : 0)
                .arg(dev("x", x)).arg(dev("dOut", dOut)).arg(rows).arg(n).arg(dev("dX", dX)).arg(dev("dScale", dScale))
                .launch();
    }

    private static int slots(Buffer x, Buffer expanded) {
        long tokens = x.shape().dim(0);
        long rows = expanded.shape().dim(0);
        if (expanded.shape().dim(1) != x.shape().dim(1) || tokens == 0 && rows != 0
                || tokens > 0 && (rows % tokens != 0 || rows == 0)) {
            throw new IllegalArgumentException("slot rows: " + expanded.shape() + " is not [tokens·K, " + x.shape().dim(1)
                    + "] for " + x.shape());
        }
        return tokens == 0 ? 1 : Math.toIntExact(rows / tokens);
    }

    @Override
    public void scaleExpand(Buffer x, Buffer w, Buffer out) {
        f32("x", x, 2);
        f32("out", out, 2);
        int kk = slots(x, out);
        long tokens = x.shape().dim(0);
        int n = x.shape().dimInt(1);
        rowVector("w", w, tokens * kk);
        if (tokens * kk * n == 0) {
            return;
        }
        lf().launch("moe_scale_expand_f32").grid(grid(tokens * kk * n)).block(256).arg(dev("x", x)).arg(dev("w", w))
                .arg(tokens).arg(kk).arg(n).arg(dev("out", out)).launch();
    }

    @Override
    public void scaleExpandBackward(Buffer x, Buffer w, Buffer dOut, Buffer dX, Buffer dW) {
        f32("x", x, 2);
        f32("dOut", dOut, 2);
        f32("dX", dX, 2);
        sameShape("dX", dX, x);
        int kk = slots(x, dOut);
        long tokens = x.shape().dim(0);
        int n = x.shape().dimInt(1);
        rowVector("w", w, tokens * kk);
        rowVector("dW", dW, tokens * kk);
        if (tokens == 0) {
            return;
        }
        if (n > 0) {
            lf().launch("moe_scale_expand_bwd_dx_f32").grid(grid(tokens * n)).block(256).arg(dev("w", w))
                    .arg(dev("dOut", dOut)).arg(tokens).arg(kk).arg(n).arg(dev("dX", dX)).launch();
        }
        lf().launch("moe_scale_expand_bwd_dw_f32").grid(grid(tokens * kk)).block(256).arg(dev("x", x))
                .arg(dev("dOut", dOut)).arg(tokens).arg(kk).arg(n).arg(dev("dW", dW)).launch();
    }

    @Override
    public void sumSlots(Buffer y, int topK, Buffer out) {
        f32("y", y, 2);
        f32("out", out, 2);
        if (topK < 1 || out.shape().dim(1) != y.shape().dim(1) || out.shape().dim(0) * topK != y.shape().dim(0)) {
            throw new IllegalArgumentException("sumSlots: y " + y.shape() + " is not [tokens·" + topK + ", N] for out "
                    + out.shape());
        }
        long tokens = out.shape().dim(0);
        int n = out.shape().dimInt(1);
        if (tokens * n == 0) {
            return;
        }
        lf().launch("moe_sum_slots_f32").grid(grid(tokens * n)).block(256).arg(dev("y", y)).arg(tokens).arg(topK).arg(n)
                .arg(dev("out", out)).launch();
    }
}
