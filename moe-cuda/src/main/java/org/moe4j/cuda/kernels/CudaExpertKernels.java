package org.moe4j.cuda.kernels;

import static org.moe4j.cuda.kernels.Kernels.blocks;
import static org.moe4j.cuda.kernels.Kernels.dev;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.kernels.internal.TensorMaps;
import org.moe4j.experts.ExpertKernels;

/**
 * {@link ExpertKernels} on the GPU ({@code native/grouped_gemm.cu}).
 *
 * <p>Paths of {@link #groupedMatmul} / {@link #groupedWeightGrad}:
 * <ul>
 *   <li>bf16 tensor cores when both operands are BF16 or {@code bf16Operands} is set (F32 operands
 *       are rounded to bf16 first, as the CPU reference does on load), K and N multiples of 8:
 *       {@code mma} ({@code mma.sync}, any sm_80+ GPU, the default) or {@code wgmma} (Hopper
 *       wgmma + TMA, forward overwrite only, compute capability 9.0), chosen by the system property
 *       {@value #PATH_PROPERTY} ({@code mma} | {@code wgmma});</li>
 *   <li>otherwise exact fp32 (SIMT FMA, k ascending).</li>
 * </ul>
 * Every output element is reduced by one CTA in a fixed order: results are run-to-run reproducible.
 */
public final class CudaExpertKernels implements ExpertKernels {
    /** System property choosing the bf16 GEMM path: {@code mma} (default) or {@code wgmma}. */
    public static final String PATH_PROPERTY = "moe4j.cuda.gemm";

    /** Dynamic shared memory of the mma kernels (see grouped_gemm.cu). */
    static final int SMEM_FWD = 61440;
    static final int SMEM_DX = 56832;
    static final int SMEM_WGRAD = 52224;
    static final int SMEM_WGMMA = 4 * 32768 + 1024;

    private final Kernels k;
    private final String path;

    /** @param backend the cuda backend */
    public CudaExpertKernels(Backend backend) {
        this(backend, System.getProperty(PATH_PROPERTY, "mma"));
    }

    /**
     * @param backend the cuda backend
     * @param path    {@code mma} or {@code wgmma}
     */
    public CudaExpertKernels(Backend backend, String path) {
        this.k = new Kernels(backend, "grouped_gemm");
        this.path = switch (path) {
            case "mma", "wgmma" -> path;
            default -> throw new IllegalArgumentException(PATH_PROPERTY + " must be mma or wgmma, got '" + path + "'");
        };
    }

    /** @return the bf16 GEMM path in use */
    public String path() {
        return path;
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
        groupOffsets.require("groupOffsets", DType.I32, groups + 1L);
        int[] off;
        DeviceBuffer devOff;
        if (groupOffsets instanceof HostBuffer h) {
            off = h.toIntArray();
            devOff = k.pool().copyOf(h);
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

    private boolean tensorCores(Buffer a, Buffer b, GemmSpec spec, int kDim, int nDim) {
        boolean bf16 = spec.bf16Operands() || (a.dtype() == DType.BF16 && b.dtype() == DType.BF16);
        return bf16 && kDim % 8 == 0 && nDim % 8 == 0;
    }

    @Override
    public void groupedMatmul(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        floating("a", a, 2);
        floating("b", b, 3);
        f32("out", out, 2);
        int rows = a.shape().dimInt(0);
        int kDim = a.shape().dimInt(1);
        int groups = b.shape().dimInt(0);
        int n = b.shape().dimInt(2);
        if (b.shape().dimInt(1) != kDim) {
            throw new IllegalArgumentException("groupedMatmul: a is " + a.shape() + " but b is " + b.shape()
                    + " (inner dimensions " + kDim + " != " + b.shape().dimInt(1) + ")");
        }
        out.shape().require("groupedMatmul out", rows, n);
        int[] off = new int[groups + 1];
        DeviceBuffer offCopy = offsets(groupOffsets, groups, rows, off);
        DeviceBuffer offDev = offCopy != null ? offCopy : dev("groupOffsets", groupOffsets);
        try {
            if (rows == 0 || n == 0 || groups == 0) {
                return;
            }
            if (tensorCores(a, b, spec, kDim, n)) {
                DeviceBuffer ab = asBf16(a);
                DeviceBuffer bb = asBf16(b);
                try {
                    if (path.equals("wgmma") && !spec.accumulate()) {
                        try (DeviceBuffer bt = transposedBf16(bb, groups, kDim, n);
                                DeviceBuffer maps = tensorMaps(ab, bt, rows, kDim, n, groups)) {
                            launchWgmma(maps, offDev, rows, kDim, n, groups, dev("out", out));
                        }
                    } else {
                        launchMma(ab, bb, offDev, rows, kDim, n, groups, dev("out", out), spec.accumulate());
                    }
                } finally {
                    owned(ab, a);
                    owned(bb, b);
                }
            } else {
                k.launch("moe_gg_matmul_f32").grid(blocks(n, 64), blocks(rows, 64) + groups, 1).block(16, 16, 1)
                        .arg(dev("a", a)).arg(a.dtype() == DType.BF16 ? 1 : 0).arg(dev("b", b)).arg(b.dtype() == DType.BF16 ? 1 : 0)
                        .arg(offDev).arg(groups).arg(n).arg(kDim).arg(dev("out", out)).arg(spec.accumulate() ? 1 : 0).launch();
            }
        } finally {
            if (offCopy != null) {
                offCopy.close();
            }
        }
    }

    /**
     * The portable bf16 kernel alone (no validation, no host synchronisation):
     * {@code out[r] (+)= a[r] . b[g]}, a bf16 {@code [rows, K]}, b bf16 {@code [groups, K, N]}, out F32.
     */
    void launchMma(DeviceBuffer a, DeviceBuffer b, DeviceBuffer offsets, int rows, int kDim, int n, int groups,
            DeviceBuffer out, boolean accumulate) {
        k.launchWithSmem("moe_gg_dx_mma", SMEM_DX).grid(blocks(rows, 128) + groups, blocks(n, 128), 1).block(256)
                .arg(a).arg((long) kDim).arg(b).argPointer(0L).arg(0L).argPointer(0L)
                .arg((long) kDim * n).arg((long) n).arg(offsets).arg(groups).arg(n).arg(kDim)
                .arg(out).arg((long) n).arg(0).arg(accumulate ? 1 : 0).launch();
    }

    /** @return b {@code [groups, K, N]} bf16 transposed to K-major {@code [groups, N, K]} (new buffer) */
    DeviceBuffer transposedBf16(DeviceBuffer b, int groups, int kDim, int n) {
        DeviceBuffer bt = k.pool().allocateUninitialized(DType.BF16, org.moe4j.core.Shape.of(groups, n, kDim));
        k.launch("moe_transpose_batched").grid(blocks(n, 32), blocks(kDim, 32), groups).block(32, 8, 1)
                .arg(b).arg(1).arg(kDim).arg(n).arg(bt).arg(1).launch();
        return bt;
    }

    /** @return the two tensor maps (A, then K-major B) of the Hopper kernel, in device memory */
    DeviceBuffer tensorMaps(DeviceBuffer a, DeviceBuffer bt, int rows, int kDim, int n, int groups) {
        DeviceBuffer maps = k.scratch(DType.I64, 2L * TensorMaps.BYTES / 8);
        try (Arena arena = Arena.ofConfined();
                HostBuffer h = HostBuffer.allocate(DType.I64, 2L * TensorMaps.BYTES / 8)) {
            MemorySegment mapA = TensorMaps.bf16RowMajor(arena, a.address(), rows, kDim, kDim, 64, 128);
            MemorySegment mapB = TensorMaps.bf16RowMajor(arena, bt.address(), (long) groups * n, kDim, kDim, 64, 128);
            MemorySegment.copy(mapA, 0, h.segment(), 0, TensorMaps.BYTES);
            MemorySegment.copy(mapB, 0, h.segment(), TensorMaps.BYTES, TensorMaps.BYTES);
            maps.copyFromAsync(h, k.stream());
            k.stream().synchronize(); // the host staging buffer dies here
        } catch (RuntimeException e) {
            maps.close();
            throw e;
        }
        return maps;
    }

    /** The Hopper kernel alone (maps from {@link #tensorMaps}; overwrite, F32 out). */
    void launchWgmma(DeviceBuffer maps, DeviceBuffer offsets, int rows, int kDim, int n, int groups, DeviceBuffer out) {
        k.launchWithSmem("moe_gg_fwd_wgmma", SMEM_WGMMA).grid(blocks(rows, 128) + groups, blocks(n, 128), 1).block(384)
                .arg(maps.address()).arg(maps.address() + TensorMaps.BYTES).arg(offsets).arg(groups).arg(n).arg(kDim)
                .arg(out).arg((long) n).arg(0).launch();
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
        int[] off = new int[groups + 1];
        DeviceBuffer offCopy = offsets(groupOffsets, groups, rows, off);
        DeviceBuffer offDev = offCopy != null ? offCopy : dev("groupOffsets", groupOffsets);
        try {
            if (groups == 0 || m == 0 || n == 0) {
                return;
            }
            if (tensorCores(a, b, spec, m, n)) {
                DeviceBuffer ab = asBf16(a);
                DeviceBuffer bb = asBf16(b);
                try {
                    k.launchWithSmem("moe_gg_wgrad_mma", SMEM_WGRAD).grid(blocks(n, 128), blocks(m, 128), groups).block(256)
                            .arg(ab).arg((long) m).arg(bb).arg((long) n).arg(offDev).arg(groups).arg(m).arg(n)
                            .arg(dev("out", out)).arg((long) m * n).arg((long) n).arg(0).arg(spec.accumulate() ? 1 : 0).launch();
                } finally {
                    owned(ab, a);
                    owned(bb, b);
                }
            } else {
                k.launch("moe_gg_wgrad_f32").grid(blocks(n, 64), blocks(m, 64), groups).block(16, 16, 1)
                        .arg(dev("a", a)).arg(a.dtype() == DType.BF16 ? 1 : 0).arg(dev("b", b)).arg(b.dtype() == DType.BF16 ? 1 : 0)
                        .arg(offDev).arg(m).arg(n).arg(dev("out", out)).arg(spec.accumulate() ? 1 : 0).launch();
            }
        } finally {
            if (offCopy != null) {
                offCopy.close();
            }
        }
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

    @Override
    public void swigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp) {
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
        if (n == 0) {
            return;
        }
        k.launch("moe_swiglu_bwd_f32").grid(Math.min(blocks(n, 256), 1 << 20)).block(256).arg(dev("gate", gate))
                .arg(dev("up", up)).arg(dev("dOut", dOut)).arg(n).arg(dev("dGate", dGate)).arg(dev("dUp", dUp)).launch();
    }
}
