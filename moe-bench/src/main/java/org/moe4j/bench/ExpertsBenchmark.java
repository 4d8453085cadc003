package org.moe4j.bench;

import org.moe4j.bench.support.ShortCpuBenchmark;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.experts.ExpertKernels.GemmSpec;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * The CPU grouped GEMM of the experts: {@code rows} token rows split evenly over {@code experts}
 * groups, forward ({@code [rows, hidden] · [hidden, ffn]} per group) and weight gradient
 * ({@code [rows, ffn]ᵀ · [rows, hidden]} per group); {@code forwardTransposedB} is the forward with the
 * weight stored {@code [ffn, hidden]} (as {@code GroupedExperts} keeps it). All do {@code 2·rows·hidden·ffn} flops:
 * GFLOP/s = {@code 2·rows·hidden·ffn / (ms · 1e6)}.
 */
@State(Scope.Benchmark)
public class ExpertsBenchmark extends ShortCpuBenchmark {
    @Param({"2048"})
    int rows;
    @Param({"512"})
    int hidden;
    @Param({"1024"})
    int ffn;
    @Param({"8"})
    int experts;
    @Param({"F32", "BF16"})
    String compute;

    HostBuffer x;
    HostBuffer w;
    HostBuffer wT;
    HostBuffer offsets;
    HostBuffer out;
    HostBuffer dOut;
    HostBuffer dw;
    ExpertKernels kernels;
    GemmSpec spec;

    /** Creates the benchmark state (JMH instantiates it). */
    public ExpertsBenchmark() {
    }

    /** Allocates and fills the operands for the current parameters. */
    @Setup(Level.Trial)
    public void setup() {
        x = HostBuffer.allocate(DType.F32, rows, hidden);
        w = HostBuffer.allocate(DType.F32, experts, hidden, ffn);
        wT = HostBuffer.allocate(DType.F32, experts, ffn, hidden);
        out = HostBuffer.allocate(DType.F32, rows, ffn);
        dOut = HostBuffer.allocate(DType.F32, rows, ffn);
        dw = HostBuffer.allocate(DType.F32, experts, ffn, hidden);
        for (long i = 0; i < x.numel(); i++) {
            x.setFloat(i, (i % 13) * 0.01f);
        }
        for (long i = 0; i < w.numel(); i++) {
            w.setFloat(i, (i % 7) * 0.01f);
        }
        for (long i = 0; i < wT.numel(); i++) {
            wT.setFloat(i, (i % 7) * 0.01f);
        }
        int[] off = new int[experts + 1];
        for (int g = 0; g <= experts; g++) {
            off[g] = (int) ((long) rows * g / experts);
        }
        offsets = HostBuffer.ofInts(off, experts + 1);
        kernels = Backends.kernels(ExpertKernels.class, new CpuBackend());
        spec = new GemmSpec(false, compute.equals("BF16"));
    }

    /**
     * The grouped forward GEMM, weights stored {@code [hidden, ffn]}.
     *
     * @return the output, so the work is not optimised away
     */
    @Benchmark
    public HostBuffer forward() {
        kernels.groupedMatmul(x, w, offsets, out, spec);
        return out;
    }

    /**
     * The forward as the experts run it: weights stored {@code [ffn, hidden]}, no transposed copy.
     *
     * @return the output, so the work is not optimised away
     */
    @Benchmark
    public HostBuffer forwardTransposedB() {
        kernels.groupedMatmulTransposedB(x, wT, offsets, out, spec);
        return out;
    }

    /**
     * The grouped weight-gradient GEMM.
     *
     * @return the gradient, so the work is not optimised away
     */
    @Benchmark
    public HostBuffer weightGrad() {
        kernels.groupedWeightGrad(dOut, x, offsets, dw, spec);
        return dw;
    }

    /** Frees the operands. */
    @TearDown(Level.Trial)
    public void tearDown() {
        for (HostBuffer b : new HostBuffer[] {x, w, wT, offsets, out, dOut, dw}) {
            b.close();
        }
    }
}
