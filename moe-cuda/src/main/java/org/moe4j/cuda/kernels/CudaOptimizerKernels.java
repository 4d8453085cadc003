package org.moe4j.cuda.kernels;

import static org.moe4j.cuda.kernels.Kernels.blocks;
import static org.moe4j.cuda.kernels.Kernels.dev;

import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.optim.OptimizerKernels;

/**
 * {@link OptimizerKernels} on the GPU ({@code native/optim.cu}): element-wise, every operation a
 * separately rounded fp32 operation in the CPU reference's order, so results are bitwise the same as
 * {@code CpuOptimizerKernels}. Asynchronous on the backend's stream (no host synchronisation).
 */
public final class CudaOptimizerKernels implements OptimizerKernels {
    private static final int BLOCK = 256;
    private static final int MAX_GRID = 1 << 20;

    private final Kernels k;

    /**
     * Creates a new {@code CudaOptimizerKernels}.
     * @param backend the cuda backend
     */
    public CudaOptimizerKernels(Backend backend) {
        this.k = new Kernels(backend, "optim");
    }

    private static void f32(String what, Buffer b, long n) {
        if (b.dtype() != DType.F32) {
            throw new IllegalArgumentException(what + ": expected dtype F32 but got " + b.dtype());
        }
        if (b.numel() != n) {
            throw new IllegalArgumentException(what + ": expected " + n + " elements but got " + b.numel()
                    + " (shape " + b.shape() + ")");
        }
    }

    @Override
    public void accumulate(Buffer acc, Buffer x) {
        long n = acc.numel();
        f32("acc", acc, n);
        f32("x", x, n);
        if (n == 0) {
            return;
        }
        k.launch("moe_accumulate_f32").grid(Math.min(blocks(n, BLOCK), MAX_GRID)).block(BLOCK)
                .arg(dev("acc", acc)).arg(dev("x", x)).arg(n).launch();
    }

    /**
     * Device scan ({@code moe_first_nonfinite_f32}): one launch and an 8-byte read-back, instead of the
     * interface default's copy of the whole buffer to the host. Synchronises the stream.
     */
    @Override
    public long firstNonFinite(Buffer x) {
        long n = x.numel();
        f32("x", x, n);
        if (n == 0) {
            return -1;
        }
        try (DeviceBuffer first = k.scratch(DType.I64, 1); HostBuffer host = HostBuffer.allocate(DType.I64, 1)) {
            host.segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0, Long.MAX_VALUE);
            first.copyFromAsync(host, k.stream());
            k.launch("moe_first_nonfinite_f32").grid(Math.min(blocks(n, BLOCK), MAX_GRID)).block(BLOCK)
                    .arg(dev("x", x)).arg(n).arg(first).launch();
            first.copyToAsync(host, k.stream());
            k.stream().synchronize();
            long i = host.getLong(0);
            return i == Long.MAX_VALUE ? -1 : i;
        }
    }

    @Override
    public void adamW(Buffer param, Buffer grad, Buffer m, Buffer v, AdamWStep s) {
        long n = param.numel();
        f32("param", param, n);
        f32("grad", grad, n);
        f32("m", m, n);
        f32("v", v, n);
        if (n == 0) {
            return;
        }
        k.launch("moe_adamw_f32").grid(Math.min(blocks(n, BLOCK), MAX_GRID)).block(BLOCK)
                .arg(dev("param", param)).arg(dev("grad", grad)).arg(dev("m", m)).arg(dev("v", v)).arg(n)
                .arg(s.lr()).arg(s.beta1()).arg(s.beta2()).arg(s.bias1()).arg(s.bias2()).arg(s.eps()).arg(s.decay())
                .launch();
    }

    /** True: {@code moe_flag_nonfinite_f32}, {@code moe_adamw_guarded_f32}, {@code moe_adamw_finish}. */
    @Override
    public boolean skipsOnDevice() {
        return true;
    }

    private static void guardState(Buffer state) {
        state.require("state", DType.I64, 4);
    }

    @Override
    public void flagNonFinite(Buffer x, Buffer state) {
        long n = x.numel();
        f32("x", x, n);
        guardState(state);
        if (n == 0) {
            return;
        }
        k.launch("moe_flag_nonfinite_f32").grid(Math.min(blocks(n, BLOCK), MAX_GRID)).block(BLOCK).arg(dev("x", x)).arg(n)
                .arg(dev("state", state)).launch();
    }

    @Override
    public void adamWGuarded(Buffer param, Buffer grad, Buffer m, Buffer v, AdamWStep s, Buffer biasTable, Buffer state) {
        long n = param.numel();
        f32("param", param, n);
        f32("grad", grad, n);
        f32("m", m, n);
        f32("v", v, n);
        guardState(state);
        if (biasTable.dtype() != DType.F32 || biasTable.numel() % 2 != 0) {
            throw new IllegalArgumentException("biasTable: expected F32 [rows, 2] but got " + biasTable.dtype() + " "
                    + biasTable.shape());
        }
        if (n == 0) {
            return;
        }
        k.launch("moe_adamw_guarded_f32").grid(Math.min(blocks(n, BLOCK), MAX_GRID)).block(BLOCK)
                .arg(dev("param", param)).arg(dev("grad", grad)).arg(dev("m", m)).arg(dev("v", v)).arg(n)
                .arg(s.lr()).arg(s.beta1()).arg(s.beta2()).arg(dev("biasTable", biasTable))
                .arg(biasTable.numel() / 2).arg(s.eps()).arg(s.decay()).arg(dev("state", state)).launch();
    }

    @Override
    public void finishGuardedStep(Buffer state) {
        guardState(state);
        k.launch("moe_adamw_finish").grid(1).block(1).arg(dev("state", state)).launch();
    }
}
