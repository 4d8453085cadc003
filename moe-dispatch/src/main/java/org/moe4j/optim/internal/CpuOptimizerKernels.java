package org.moe4j.optim.internal;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.optim.OptimizerKernels;

/**
 * The reference {@link OptimizerKernels} on host buffers: element-wise loops in fixed chunks over
 * {@link CpuParallel}, so results are bitwise the same for any thread count.
 */
public final class CpuOptimizerKernels implements OptimizerKernels {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final int CHUNK = 16384;

    private final CpuParallel parallel;

    /** Kernels on the common pool. */
    public CpuOptimizerKernels() {
        this(CpuParallel.common());
    }

    /** @param parallel the pool to run on */
    public CpuOptimizerKernels(CpuParallel parallel) {
        this.parallel = parallel;
    }

    private static MemorySegment seg(String what, Buffer b) {
        if (b instanceof HostBuffer h) {
            return h.segment();
        }
        throw new IllegalArgumentException(what + ": the cpu optimizer kernels need a HostBuffer, got "
                + (b == null ? "null" : b.getClass().getSimpleName() + " on " + b.device()));
    }

    @Override
    public void accumulate(Buffer acc, Buffer x) {
        MemorySegment sa = seg("acc", acc);
        MemorySegment sb = seg("x", x);
        int n = Math.toIntExact(acc.numel());
        parallel.forEachChunk(n, CHUNK, (chunk, from, to) -> {
            for (int i = from; i < to; i++) {
                sa.setAtIndex(F32, i, sa.getAtIndex(F32, i) + sb.getAtIndex(F32, i));
            }
        });
    }

    @Override
    public long firstNonFinite(Buffer x) {
        MemorySegment sx = seg("x", x);
        int n = Math.toIntExact(x.numel());
        long[] first = new long[Math.max(CpuParallel.chunks(n, CHUNK), 1)];
        java.util.Arrays.fill(first, -1);
        parallel.forEachChunk(n, CHUNK, (chunk, from, to) -> {
            long found = -1;
            for (int i = from; i < to; i++) {
                // x - x is 0 for finite x and NaN for NaN and +-Inf: one compare per element
                float v = sx.getAtIndex(F32, i);
                if (v - v != 0f) {
                    found = i;
                    break;
                }
            }
            first[chunk] = found;
        });
        for (long f : first) {
            if (f >= 0) {
                return f;
            }
        }
        return -1;
    }

    @Override
    public void adamW(Buffer param, Buffer grad, Buffer m, Buffer v, AdamWStep s) {
        MemorySegment ps = seg("param", param);
        MemorySegment gs = seg("grad", grad);
        MemorySegment ms = seg("m", m);
        MemorySegment vs = seg("v", v);
        float b1 = s.beta1();
        float b2 = s.beta2();
        float c1 = s.bias1();
        float c2 = s.bias2();
        float lr = s.lr();
        float eps = s.eps();
        float decay = s.decay();
        int n = Math.toIntExact(param.numel());
        parallel.forEachChunk(n, CHUNK, (chunk, from, to) -> {
            for (int j = from; j < to; j++) {
                float g = gs.getAtIndex(F32, j);
                float mj = b1 * ms.getAtIndex(F32, j) + (1 - b1) * g;
                float vj = b2 * vs.getAtIndex(F32, j) + (1 - b2) * g * g;
                ms.setAtIndex(F32, j, mj);
                vs.setAtIndex(F32, j, vj);
                float pj = ps.getAtIndex(F32, j) * decay;
                pj -= lr * (mj / c1) / ((float) Math.sqrt(vj / c2) + eps);
                ps.setAtIndex(F32, j, pj);
            }
        });
    }
}
