package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.cuda.kernels.GpuParity.POISON;
import static org.moe4j.cuda.kernels.GpuParity.POISON16;
import static org.moe4j.cuda.kernels.GpuParity.down;
import static org.moe4j.cuda.kernels.GpuParity.poisonedDevice;
import static org.moe4j.cuda.kernels.GpuParity.up;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.BiasCentering;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.CudaFunction;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.Launch;
import org.moe4j.cuda.kernels.internal.TensorMaps;
import org.moe4j.experts.ExpertKernels.GemmSpec;
import org.moe4j.routing.ExpertBias;

/**
 * Direct launches of the kernels no launcher uses yet (a coverage check found them unlaunched):
 * {@code moe_gg_swiglu_mma}, {@code moe_gg_swiglu_wgmma} (grouped_gemm.cu: fused gate+up GEMM with
 * the SwiGLU epilogue and optional G/U saves), {@code moe_swiglu_bwd} (grouped_gemm.cu: element-wise
 * SwiGLU backward, bf16 outputs) and {@code moe_expert_bias_update} (routing.cu: the aux-loss-free
 * bias step), each against a Java reference on seeded random data, with poisoned outputs whose
 * untouched parts (rows outside the groups, columns past N, leading-dimension padding) must keep
 * the poison.
 */
@Tag("gpu")
class DirectKernelsGpuTest {
    /** Fused SwiGLU, fp32 output: fp32 accumulation of exact bf16 products vs an fp64 sum. */
    static final double FP32_TOLERANCE = 1e-5;
    /** Fused SwiGLU, bf16 output (G, U and H rounded to bf16): a G/U near a rounding boundary may round the other way. */
    static final double BF16_TOLERANCE = 1e-2;
    /** moe_swiglu_bwd outputs: bf16 units in the last place from the Java float formula (expf vs Math.exp). */
    static final int BWD_ULPS = 1;

    /** Dynamic shared memory of moe_gg_swiglu_mma (grouped_gemm.cu: swiglu 61440, as fwd). */
    static final int SMEM_SWIGLU_MMA = CudaExpertKernels.SMEM_FWD;
    /** CUtensorMap kernel parameters are 64-byte aligned. */
    static final long MAP_ALIGN = 64;

    long seed;
    Random rnd;
    CudaBackend backend;

    @BeforeEach
    void setUp() {
        GpuTestSupport.assumeGpu();
        seed = System.nanoTime();
        rnd = new Random(seed);
        System.out.println("DirectKernelsGpuTest seed=" + seed);
        backend = GpuParity.backend();
    }

    private CudaFunction fn(String module, String name) {
        return backend.module(module).function(name);
    }

    private static short bf16(float v) {
        return DType.f32ToBf16(v);
    }

    private static float bf16Round(float v) {
        return DType.bf16ToF32(DType.f32ToBf16(v));
    }

    private static float silu(float g) {
        return g / (1.0f + (float) Math.exp(-g));
    }

    // ------------------------------------------------------------------------------------------
    // moe_gg_swiglu_mma / moe_gg_swiglu_wgmma
    // ------------------------------------------------------------------------------------------

    /** Problem of the fused SwiGLU GEMM: padded operands on the device, bf16 values on the host. */
    private final class SwigluProblem implements AutoCloseable {
        final int groups = 5;
        final int[] off = new int[groups + 1];
        final int rows; // all rows of A / C, including rows outside every group at both ends
        final int k = GpuParity.SMALL ? 136 : 1032; // not a multiple of the 64-wide k tile
        final int n = GpuParity.SMALL ? 200 : 776; // not a multiple of the 64-wide n tile
        final int lda = k + 8;
        final int ldw = k + 16;
        final long strideW = (long) n * ldw;
        final float[] a; // [rows, k] bf16 values
        final float[] w1; // [groups, n, k]
        final float[] w3;
        final DeviceBuffer dA;
        final DeviceBuffer dW1;
        final DeviceBuffer dW3;
        final DeviceBuffer dOff;

        SwigluProblem() {
            // empty first group, a group smaller than the 128-row tile, a multi-tile group, an empty
            // middle group, a random one; 3 rows before and 5 rows after every group
            int[] sizes = {0, 1 + rnd.nextInt(60), 129 + rnd.nextInt(GpuParity.SMALL ? 60 : 300), 0, 1 + rnd.nextInt(127)};
            off[0] = 3;
            for (int g = 0; g < groups; g++) {
                off[g + 1] = off[g] + sizes[g];
            }
            rows = off[groups] + 5;
            a = values(rows * k, 1f);
            w1 = values(groups * n * k, 0.1f);
            w3 = values(groups * n * k, 0.1f);
            dA = upPadded(a, rows, k, lda);
            dW1 = upPadded(w1, groups * n, k, ldw);
            dW3 = upPadded(w3, groups * n, k, ldw);
            try (HostBuffer o = HostBuffer.ofInts(off, groups + 1)) {
                dOff = up(o);
            }
        }

        private float[] values(int count, float scale) {
            float[] v = new float[count];
            for (int i = 0; i < count; i++) {
                v[i] = bf16Round(scale * (float) rnd.nextGaussian());
            }
            return v;
        }

        /** [r, c] values at leading dimension ld; the padding columns hold a bf16 NaN (must never be read). */
        private DeviceBuffer upPadded(float[] v, int r, int c, int ld) {
            try (HostBuffer h = HostBuffer.allocate(DType.BF16, r, ld)) {
                for (long i = 0; i < (long) r * ld; i++) {
                    h.segment().setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, POISON16);
                }
                for (int i = 0; i < r; i++) {
                    for (int j = 0; j < c; j++) {
                        h.setFloat((long) i * ld + j, v[i * c + j]);
                    }
                }
                return up(h);
            }
        }

        /** Dense bf16 copy of values as [dims] (for the unfused launchers). */
        DeviceBuffer dense(float[] v, long... dims) {
            try (HostBuffer h = HostBuffer.allocate(DType.BF16, dims)) {
                for (int i = 0; i < v.length; i++) {
                    h.setFloat(i, v[i]);
                }
                return up(h);
            }
        }

        int groupOf(int r) {
            for (int g = 0; g < groups; g++) {
                if (r >= off[g] && r < off[g + 1]) {
                    return g;
                }
            }
            return -1;
        }

        /** @return {gate, up} [rows, n] in fp64-summed fp32 (rows outside the groups: 0) */
        float[][] reference() {
            float[] gate = new float[rows * n];
            float[] upv = new float[rows * n];
            for (int r = off[0]; r < off[groups]; r++) {
                int g = groupOf(r);
                for (int j = 0; j < n; j++) {
                    double s1 = 0;
                    double s3 = 0;
                    int wb = (g * n + j) * k;
                    for (int q = 0; q < k; q++) {
                        double x = a[r * k + q];
                        s1 += x * w1[wb + q];
                        s3 += x * w3[wb + q];
                    }
                    gate[r * n + j] = (float) s1;
                    upv[r * n + j] = (float) s3;
                }
            }
            return new float[][] {gate, upv};
        }

        @Override
        public void close() {
            dA.close();
            dW1.close();
            dW3.close();
            dOff.close();
        }
    }

    private void launchSwigluMma(SwigluProblem p, DeviceBuffer c, long ldc, int cBf16, DeviceBuffer gs, DeviceBuffer us,
            long ldgu) {
        CudaFunction f = fn("grouped_gemm", "moe_gg_swiglu_mma");
        f.ensureMaxDynamicSharedMemory(SMEM_SWIGLU_MMA);
        Launch.of(f).stream(backend.stream()).sharedMemory(SMEM_SWIGLU_MMA)
                .grid(Kernels.blocks(p.rows, 128) + p.groups, Kernels.blocks(p.n, 64), 1).block(256)
                .arg(p.dA).arg((long) p.lda).arg(p.dW1).arg(p.dW3).arg(p.strideW).arg((long) p.ldw).arg(p.dOff)
                .arg(p.groups).arg(p.n).arg(p.k).arg(c).arg(ldc).arg(cBf16)
                .argPointer(gs == null ? 0L : gs.address()).argPointer(us == null ? 0L : us.address()).arg(ldgu)
                .launch();
    }

    private void launchSwigluWgmma(SwigluProblem p, DeviceBuffer c, long ldc, int cBf16, DeviceBuffer gs, DeviceBuffer us,
            long ldgu) {
        CudaFunction f = fn("grouped_gemm", "moe_gg_swiglu_wgmma");
        f.ensureMaxDynamicSharedMemory(CudaExpertKernels.SMEM_WGMMA);
        try (Arena arena = Arena.ofConfined()) {
            // grouped_gemm_wgmma.cuh: A dims {K, rows} box {64, 128}; W1/W3 dims {K, groups*N} box {64, 64}
            MemorySegment mA = TensorMaps.bf16RowMajor(arena, p.dA.address(), p.rows, p.k, p.lda, 64, 128);
            MemorySegment mW1 = TensorMaps.bf16RowMajor(arena, p.dW1.address(), (long) p.groups * p.n, p.k, p.ldw, 64, 64);
            MemorySegment mW3 = TensorMaps.bf16RowMajor(arena, p.dW3.address(), (long) p.groups * p.n, p.k, p.ldw, 64, 64);
            Launch.of(f).stream(backend.stream()).sharedMemory(CudaExpertKernels.SMEM_WGMMA)
                    .grid(Kernels.blocks(p.rows, 128) + p.groups, Kernels.blocks(p.n, 64), 1).block(384)
                    .argStruct(mA, MAP_ALIGN).argStruct(mW1, MAP_ALIGN).argStruct(mW3, MAP_ALIGN).arg(p.dOff)
                    .arg(p.groups).arg(p.n).arg(p.k).arg(c).arg(ldc).arg(cBf16)
                    .argPointer(gs == null ? 0L : gs.address()).argPointer(us == null ? 0L : us.address()).arg(ldgu)
                    .launch();
        }
    }

    private void requirePath(String path) {
        if (path.equals("wgmma")) {
            var dev = backend.context().device();
            Assumptions.assumeTrue(dev.major() == 9 && dev.minor() == 0, "moe_gg_swiglu_wgmma needs compute capability 9.0");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"mma", "wgmma"})
    void fusedSwigluGemmMatchesTheJavaReference(String path) {
        requirePath(path);
        try (SwigluProblem p = new SwigluProblem()) {
            System.out.println(path + ": rows " + p.rows + " offsets " + Arrays.toString(p.off) + " K " + p.k + " N " + p.n);
            float[][] ref = p.reference();
            long ldc = p.n + 24;
            long ldgu = p.n + 8;
            for (int cBf16 = 0; cBf16 <= 1; cBf16++) {
                DType t = cBf16 == 1 ? DType.BF16 : DType.F32;
                for (boolean save : new boolean[] {false, true}) {
                    String what = path + " cBf16=" + cBf16 + " save=" + save;
                    try (DeviceBuffer c = poisonedDevice(t, p.rows, ldc); DeviceBuffer gs = poisonedDevice(t, p.rows, ldgu);
                            DeviceBuffer us = poisonedDevice(t, p.rows, ldgu)) {
                        if (path.equals("mma")) {
                            launchSwigluMma(p, c, ldc, cBf16, save ? gs : null, save ? us : null, ldgu);
                        } else {
                            launchSwigluWgmma(p, c, ldc, cBf16, save ? gs : null, save ? us : null, ldgu);
                        }
                        backend.stream().synchronize();
                        float[] hRef = new float[p.rows * p.n];
                        float[] gRef = new float[p.rows * p.n];
                        float[] uRef = new float[p.rows * p.n];
                        for (int i = 0; i < hRef.length; i++) {
                            float g = ref[0][i];
                            float u = ref[1][i];
                            if (cBf16 == 1) { // store_swiglu2: H from the bf16-rounded G and U
                                g = bf16Round(g);
                                u = bf16Round(u);
                            }
                            gRef[i] = g;
                            uRef[i] = u;
                            hRef[i] = cBf16 == 1 ? bf16Round(silu(g) * u) : silu(g) * u;
                        }
                        double tol = cBf16 == 1 ? BF16_TOLERANCE : FP32_TOLERANCE;
                        try (HostBuffer hc = down(c); HostBuffer hg = down(gs); HostBuffer hu = down(us)) {
                            checkGrouped(what + " H", hc, ldc, hRef, p, tol, true);
                            checkGrouped(what + " Gsave", hg, ldgu, gRef, p, tol, save);
                            checkGrouped(what + " Usave", hu, ldgu, uRef, p, tol, save);
                        }
                    }
                }
            }
        }
    }

    /**
     * Inside the groups (rows off[0]..off[groups], columns < n): written and within tol (relative
     * norm) of ref; everywhere else (other rows, columns n..ld): still the poison. written=false:
     * the whole buffer must still be poisoned (a null Gsave/Usave).
     */
    private static void checkGrouped(String what, HostBuffer got, long ld, float[] ref, SwigluProblem p, double tol,
            boolean written) {
        double num = 0;
        double den = 0;
        int inside = 0;
        for (int r = 0; r < p.rows; r++) {
            boolean rowIn = r >= p.off[0] && r < p.off[p.groups];
            for (long j = 0; j < ld; j++) {
                long i = r * ld + j;
                boolean poisoned = isPoison(got, i);
                if (written && rowIn && j < p.n) {
                    assertTrue(!poisoned, what + ": row " + r + " column " + j + " inside a group was never written");
                    double d = got.getFloat(i) - (double) ref[r * p.n + (int) j];
                    num += d * d;
                    den += (double) ref[r * p.n + (int) j] * ref[r * p.n + (int) j];
                    inside++;
                } else {
                    assertTrue(poisoned, what + ": row " + r + " column " + j + " (outside the groups or past N="
                            + p.n + ") was overwritten with " + got.getFloat(i));
                }
            }
        }
        if (written) {
            double err = den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
            System.out.println(what + ": relative error " + err + " over " + inside + " elements");
            assertTrue(err <= tol, what + ": relative error " + err + " > " + tol);
        }
    }

    private static boolean isPoison(HostBuffer h, long i) {
        return h.dtype().byteSize() == 2 ? h.segment().getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) == POISON16
                : h.segment().getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i) == POISON;
    }

    /** The fused kernel against the unfused path: two grouped GEMMs (gate, up) then moe_swiglu_fwd_f32. */
    @ParameterizedTest
    @ValueSource(strings = {"mma", "wgmma"})
    void fusedSwigluGemmMatchesTheUnfusedPath(String path) {
        requirePath(path);
        CudaExpertKernels unfused = new CudaExpertKernels(backend, path);
        try (SwigluProblem p = new SwigluProblem(); DeviceBuffer a = p.dense(p.a, p.rows, p.k);
                DeviceBuffer w1 = p.dense(p.w1, p.groups, p.n, p.k); DeviceBuffer w3 = p.dense(p.w3, p.groups, p.n, p.k);
                DeviceBuffer gate = backend.pool().allocate(DType.F32, p.rows, p.n);
                DeviceBuffer upv = backend.pool().allocate(DType.F32, p.rows, p.n);
                DeviceBuffer h = backend.pool().allocate(DType.F32, p.rows, p.n);
                DeviceBuffer c = poisonedDevice(DType.F32, p.rows, p.n)) {
            GemmSpec spec = new GemmSpec(false, true);
            unfused.groupedMatmulTransposedB(a, w1, p.dOff, gate, spec);
            unfused.groupedMatmulTransposedB(a, w3, p.dOff, upv, spec);
            unfused.swigluForward(gate, upv, h);
            if (path.equals("mma")) {
                launchSwigluMma(p, c, p.n, 0, null, null, p.n);
            } else {
                launchSwigluWgmma(p, c, p.n, 0, null, null, p.n);
            }
            backend.stream().synchronize();
            try (HostBuffer hh = down(h)) {
                float[] ref = new float[p.rows * p.n];
                for (int i = 0; i < ref.length; i++) {
                    ref[i] = hh.getFloat(i);
                }
                try (HostBuffer hc = down(c)) {
                    checkGrouped(path + " fused vs unfused", hc, p.n, ref, p, FP32_TOLERANCE, true);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // moe_swiglu_bwd
    // ------------------------------------------------------------------------------------------

    @Test
    void swigluBackwardMatchesTheFormulaWithinOneBf16Ulp() {
        int rows = GpuParity.SMALL ? 37 : 301;
        int n = GpuParity.SMALL ? 72 : 520;
        long ldh = n + 5;
        long ldgu = n + 3;
        long ldd = n + 7;
        CudaFunction f = fn("grouped_gemm", "moe_swiglu_bwd");
        for (int dhBf16 = 0; dhBf16 <= 1; dhBf16++) {
            for (int guBf16 = 0; guBf16 <= 1; guBf16++) {
                DType dhT = dhBf16 == 1 ? DType.BF16 : DType.F32;
                DType guT = guBf16 == 1 ? DType.BF16 : DType.F32;
                try (HostBuffer dh = filled(dhT, rows, ldh, 1f, false); HostBuffer g = filled(guT, rows, ldgu, 3f, true);
                        HostBuffer u = filled(guT, rows, ldgu, 1f, false);
                        DeviceBuffer dDh = up(dh); DeviceBuffer dG = up(g); DeviceBuffer dU = up(u);
                        DeviceBuffer outG = poisonedDevice(DType.BF16, rows, ldd);
                        DeviceBuffer outU = poisonedDevice(DType.BF16, rows, ldd)) {
                    // a short grid (grid-stride loop) and one thread per element
                    for (int grid : new int[] {3, Kernels.blocks((long) rows * n, 256)}) {
                        Launch.of(f).stream(backend.stream()).grid(grid).block(256)
                                .arg(dDh).arg(ldh).arg(dhBf16).arg(dG).arg(dU).arg(ldgu).arg(guBf16)
                                .arg((long) rows).arg(n).arg(outG).arg(outU).arg(ldd).launch();
                        backend.stream().synchronize();
                        String what = "moe_swiglu_bwd dhBf16=" + dhBf16 + " guBf16=" + guBf16 + " grid=" + grid;
                        try (HostBuffer gotG = down(outG); HostBuffer gotU = down(outU)) {
                            int maxUlp = 0;
                            for (int r = 0; r < rows; r++) {
                                for (long j = 0; j < ldd; j++) {
                                    long i = r * ldd + j;
                                    if (j >= n) {
                                        assertTrue(isPoison(gotG, i) && isPoison(gotU, i),
                                                what + ": padding row " + r + " column " + j + " was overwritten");
                                        continue;
                                    }
                                    float vdh = dh.getFloat(r * ldh + j);
                                    float vg = g.getFloat(r * ldgu + j);
                                    float vu = u.getFloat(r * ldgu + j);
                                    // kernel comment: s = sigmoid(G), dU = dH*G*s, dG = dH*U*s*(1 + G*(1 - s))
                                    float s = 1.0f / (1.0f + (float) Math.exp(-vg));
                                    float eU = vdh * vg * s;
                                    float eG = vdh * vu * s * (1.0f + vg * (1.0f - s));
                                    short bitsU = gotU.segment().getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i);
                                    short bitsG = gotG.segment().getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i);
                                    int du = ulpDistance(bf16(eU), bitsU);
                                    int dg = ulpDistance(bf16(eG), bitsG);
                                    String at = " at row " + r + " column " + j + " (dH=" + vdh + " G=" + vg + " U=" + vu + ")";
                                    assertTrue(du <= BWD_ULPS, what + ": dU " + DType.bf16ToF32(bitsU) + " vs "
                                            + bf16Round(eU) + " (" + du + " ulp)" + at);
                                    assertTrue(dg <= BWD_ULPS, what + ": dG " + DType.bf16ToF32(bitsG) + " vs "
                                            + bf16Round(eG) + " (" + dg + " ulp)" + at);
                                    maxUlp = Math.max(maxUlp, Math.max(du, dg));
                                }
                            }
                            System.out.println(what + ": max " + maxUlp + " bf16 ulp");
                        }
                    }
                }
            }
        }
    }

    /**
     * [rows, ld] of gaussian values times scale (padding columns too: the kernel must not write there); withExtremes:
     * some zeros and large magnitudes (sigmoid saturating to 0 or 1, expf overflowing to inf).
     */
    private HostBuffer filled(DType t, int rows, long ld, float scale, boolean withExtremes) {
        HostBuffer h = HostBuffer.allocate(t, rows, ld);
        float[] extremes = {0f, -0f, 20f, -20f, 90f, -90f, 100f, -100f, 1e-3f, -1e-3f};
        for (long i = 0; i < h.numel(); i++) {
            float v = scale * (float) rnd.nextGaussian();
            if (withExtremes && rnd.nextInt(16) == 0) {
                v = extremes[rnd.nextInt(extremes.length)];
            }
            h.setFloat(i, v);
        }
        return h;
    }

    /** Distance in bf16 units in the last place (+0 and -0 are the same point). */
    private static int ulpDistance(short a, short b) {
        return Math.abs(ordered(a) - ordered(b));
    }

    private static int ordered(short bits) {
        int v = bits & 0xFFFF;
        return (v & 0x8000) != 0 ? -(v & 0x7FFF) : v;
    }

    // ------------------------------------------------------------------------------------------
    // moe_expert_bias_update
    // ------------------------------------------------------------------------------------------

    @Test
    void expertBiasUpdateIsBitIdenticalToExpertBias() {
        CudaFunction f = fn("routing", "moe_expert_bias_update");
        for (int experts : new int[] {1, 7, 64, 257}) {
            for (int kind = 0; kind < 4; kind++) {
                long[] load = new long[experts];
                for (int e = 0; e < experts; e++) {
                    load[e] = switch (kind) {
                        case 0 -> rnd.nextInt(1000); // mean generally not an integer
                        case 1 -> 42; // every load equals the mean: sign 0
                        case 2 -> (1L << 40) + rnd.nextInt(1 << 20); // above 2^24: (float) load rounds
                        default -> rnd.nextBoolean() ? 0 : 2L * rnd.nextInt(50); // many ties around the mean
                    };
                }
                for (BiasCentering centering : BiasCentering.values()) {
                    float coeff = kind == 3 ? 1e-3f : (float) rnd.nextDouble() * 0.01f;
                    float[] initial = new float[experts];
                    for (int e = 0; e < experts; e++) {
                        initial[e] = 0.1f * (float) rnd.nextGaussian();
                    }
                    float[] expected;
                    try (ExpertBias cpu = new ExpertBias(experts, coeff, centering)) {
                        cpu.setValues(initial);
                        cpu.update(load.clone());
                        expected = cpu.values();
                    }
                    int centre = centering == BiasCentering.ZERO_MEAN ? 1 : 0;
                    try (HostBuffer hl = HostBuffer.allocate(DType.I64, experts); HostBuffer hb = HostBuffer.ofFloats(initial, experts)) {
                        for (int e = 0; e < experts; e++) {
                            hl.segment().setAtIndex(ValueLayout.JAVA_LONG, e, load[e]);
                        }
                        try (DeviceBuffer dl = up(hl); DeviceBuffer db = up(hb)) {
                            Launch.of(f).stream(backend.stream()).grid(1).block(1)
                                    .arg(dl).arg(experts).arg(coeff).arg(centre).arg(db).launch();
                            backend.stream().synchronize();
                            try (HostBuffer got = down(db)) {
                                for (int e = 0; e < experts; e++) {
                                    assertEquals(Float.floatToRawIntBits(expected[e]), Float.floatToRawIntBits(got.getFloat(e)),
                                            "moe_expert_bias_update experts=" + experts + " load kind " + kind + " " + centering
                                                    + " coeff=" + coeff + ": expert " + e + " expected " + expected[e] + " got "
                                                    + got.getFloat(e));
                                }
                            }
                        }
                    }
                }
            }
        }
        System.out.println("moe_expert_bias_update: bit-identical to ExpertBias.update");
    }
}
