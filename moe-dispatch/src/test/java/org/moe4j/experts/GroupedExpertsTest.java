package org.moe4j.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.moe4j.experts.TestInputs.rand;
import static org.moe4j.experts.TestInputs.seededRandom;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.experts.internal.CpuExpertKernels;

class GroupedExpertsTest {
    static final double FP32_TOL = 1e-5;
    static final double BF16_TOL = 2e-2;
    static final double FD_TOL = 2e-2;
    static final int H = 24, F = 20, E = 3;

    static GroupedExperts experts(int local, int first, DType dt) {
        return experts(local, first, dt, new CpuExpertKernels());
    }

    static GroupedExperts experts(int local, int first, DType dt, ExpertKernels kernels) {
        return new GroupedExperts("experts", local, first, H, F, dt, 7L, GroupedExperts.STREAM_ROUTED,
                new CpuBackend(), kernels);
    }

    static double silu(double h) {
        return h / (1 + Math.exp(-h));
    }

    /** Reference forward of one row through expert e, in double. */
    static double[] refRow(HostBuffer w1, HostBuffer w3, HostBuffer w2, int e, float[] x, int row) {
        double[] act = new double[F];
        for (int f = 0; f < F; f++) {
            double a = 0, b = 0;
            for (int h = 0; h < H; h++) {
                a += w1.getFloat((long) (e * F + f) * H + h) * x[row * H + h];
                b += w3.getFloat((long) (e * F + f) * H + h) * x[row * H + h];
            }
            act[f] = silu(a) * b;
        }
        double[] y = new double[H];
        for (int h = 0; h < H; h++) {
            for (int f = 0; f < F; f++) {
                y[h] += w2.getFloat((long) (e * H + h) * F + f) * act[f];
            }
        }
        return y;
    }

    /** Delegates to the CPU kernels but keeps the interface's default: no transposed-B GEMM. */
    record NoTransposedB(ExpertKernels k) implements ExpertKernels {
        public void groupedMatmul(Buffer a, Buffer b, Buffer o, Buffer out, GemmSpec s) {
            k.groupedMatmul(a, b, o, out, s);
        }

        public void groupedWeightGrad(Buffer a, Buffer b, Buffer o, Buffer out, GemmSpec s) {
            k.groupedWeightGrad(a, b, o, out, s);
        }

        public void transpose(Buffer src, Buffer dst) {
            k.transpose(src, dst);
        }

        public void swigluForward(Buffer g, Buffer u, Buffer out) {
            k.swigluForward(g, u, out);
        }

        public void swigluBackward(Buffer g, Buffer u, Buffer d, Buffer dg, Buffer du) {
            k.swigluBackward(g, u, d, dg, du);
        }
    }

    /** A test double that multiplies by transposed weights the long way: a transposed copy, then groupedMatmul. */
    record TransposingCopy(ExpertKernels k) implements ExpertKernels {
        public boolean supportsTransposedB() {
            return true;
        }

        public void groupedMatmulTransposedB(Buffer a, Buffer b, Buffer o, Buffer out, GemmSpec s) {
            long[] d = b.shape().dims();
            DType dt = s.bf16Operands() ? DType.BF16 : DType.F32;
            try (HostBuffer bt = HostBuffer.allocate(dt, d[0], d[2], d[1])) {
                k.transpose(b, bt);
                k.groupedMatmul(a, bt, o, out, s);
            }
        }

        public void groupedMatmul(Buffer a, Buffer b, Buffer o, Buffer out, GemmSpec s) {
            k.groupedMatmul(a, b, o, out, s);
        }

        public void groupedWeightGrad(Buffer a, Buffer b, Buffer o, Buffer out, GemmSpec s) {
            k.groupedWeightGrad(a, b, o, out, s);
        }

        public void transpose(Buffer src, Buffer dst) {
            k.transpose(src, dst);
        }

        public void swigluForward(Buffer g, Buffer u, Buffer out) {
            k.swigluForward(g, u, out);
        }

        public void swigluBackward(Buffer g, Buffer u, Buffer d, Buffer dg, Buffer du) {
            k.swigluBackward(g, u, d, dg, du);
        }
    }

    @Test
    void kernelsWithoutTheTransposedBGemmAreRefused() {
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> experts(E, 0, DType.F32, new NoTransposedB(new CpuExpertKernels())).close());
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("has no groupedMatmulTransposedB"),
                e.getMessage());
    }

    @Test
    void aTransposedCopyGivesBitwiseTheSameForwardAndBackwardAsTheDirectGemm() {
        Random r = seededRandom();
        int rows = 17;
        float[] x = rand(r, rows * H), dy = rand(r, rows * H);
        int[] off = {0, 6, 6, 15};
        for (DType dt : new DType[] {DType.F32, DType.BF16}) {
            float[][] results = new float[2][];
            for (int variant = 0; variant < 2; variant++) {
                ExpertKernels kern = variant == 0 ? new CpuExpertKernels() : new TransposingCopy(new CpuExpertKernels());
                try (GroupedExperts ex = experts(E, 0, dt, kern);
                     var hx = HostBuffer.ofFloats(x, rows, H); var hdy = HostBuffer.ofFloats(dy, rows, H);
                     var ho = HostBuffer.ofInts(off, E + 1)) {
                    GroupedExperts.Result res = ex.forward(hx, ho);
                    float[] y = ((HostBuffer) res.output()).toFloatArray();
                    res.output().close();
                    try (Buffer dx = ex.backward(res.context(), hdy)) {
                        float[] all = concat(y, ((HostBuffer) dx).toFloatArray());
                        for (var p : ex.parameters()) {
                            all = concat(all, ((HostBuffer) p.grad()).toFloatArray());
                        }
                        results[variant] = all;
                    }
                }
            }
            assertArrayEquals(results[1], results[0], "compute " + dt);
        }
    }

    static float[] concat(float[] a, float[] b) {
        float[] c = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }

    @Test
    void forwardMatchesPerRowReferenceAndLeavesUngroupedRowsZero() {
        Random r = seededRandom();
        int rows = 13;
        float[] x = rand(r, rows * H);
        int[] off = {0, 5, 5, 11}; // expert 1 gets no rows; rows 11, 12 are padding
        try (GroupedExperts ex = experts(E, 0, DType.F32); var hx = HostBuffer.ofFloats(x, rows, H);
             var ho = HostBuffer.ofInts(off, E + 1)) {
            GroupedExperts.Result res = ex.forward(hx, ho);
            HostBuffer y = (HostBuffer) res.output();
            double num = 0, den = 0;
            for (int e = 0; e < E; e++) {
                for (int t = off[e]; t < off[e + 1]; t++) {
                    double[] ref = refRow((HostBuffer) ex.w1(), (HostBuffer) ex.w3(), (HostBuffer) ex.w2(), e, x, t);
                    for (int h = 0; h < H; h++) {
                        double d = y.getFloat((long) t * H + h) - ref[h];
                        num += d * d;
                        den += ref[h] * ref[h];
                    }
                }
            }
            assertTrue(Math.sqrt(num / den) < FP32_TOL, "relative error " + Math.sqrt(num / den));
            for (int t = 11; t < rows; t++) {
                for (int h = 0; h < H; h++) {
                    assertEquals(0f, y.getFloat((long) t * H + h));
                }
            }
            res.context().close();
            y.close();
        }
    }

    @Test
    void backwardMatchesFiniteDifferences() {
        Random r = seededRandom();
        int rows = 9;
        float[] x = rand(r, rows * H);
        float[] dy = rand(r, rows * H);
        int[] off = {0, 4, 4, 9};
        try (GroupedExperts ex = experts(E, 0, DType.F32); var hx = HostBuffer.ofFloats(x, rows, H);
             var ho = HostBuffer.ofInts(off, E + 1); var hdy = HostBuffer.ofFloats(dy, rows, H)) {
            GroupedExperts.Result res = ex.forward(hx, ho);
            res.output().close();
            HostBuffer dx = (HostBuffer) ex.backward(res.context(), hdy);
            // loss = sum(dy * y); check dX entries and weight-gradient entries by central differences
            for (int probe = 0; probe < 6; probe++) {
                int i = r.nextInt(rows * H);
                double fd = fd(ex, hx, ho, dy, hx, i);
                assertTrue(Math.abs(dx.getFloat(i) - fd) < FD_TOL * (1 + Math.abs(fd)), "dX[" + i + "] " + dx.getFloat(i) + " vs " + fd);
            }
            for (var p : ex.parameters()) {
                HostBuffer v = (HostBuffer) p.value();
                HostBuffer g = (HostBuffer) p.grad();
                for (int probe = 0; probe < 4; probe++) {
                    int i = (F * H) * (probe % 2 == 0 ? 0 : 2) + r.nextInt(F * H);
                    double fd = fd(ex, hx, ho, dy, v, i);
                    assertTrue(Math.abs(g.getFloat(i) - fd) < FD_TOL * (1 + Math.abs(fd)),
                            p.name() + "[" + i + "] " + g.getFloat(i) + " vs " + fd);
                }
            }
            dx.close();
        }
    }

    static double loss(GroupedExperts ex, Buffer x, Buffer off, float[] dy) {
        GroupedExperts.Result res = ex.forward(x, off);
        float[] y = ((HostBuffer) res.output()).toFloatArray();
        res.context().close();
        res.output().close();
        double s = 0;
        for (int i = 0; i < y.length; i++) {
            s += (double) y[i] * dy[i];
        }
        return s;
    }

    static double fd(GroupedExperts ex, Buffer x, Buffer off, float[] dy, HostBuffer target, int i) {
        float orig = target.getFloat(i);
        float eps = 1e-2f;
        target.setFloat(i, orig + eps);
        double up = loss(ex, x, off, dy);
        target.setFloat(i, orig - eps);
        double down = loss(ex, x, off, dy);
        target.setFloat(i, orig);
        return (up - down) / (2.0 * eps);
    }

    @Test
    void initialValuesDependOnlyOnTheGlobalExpertIndex() {
        try (GroupedExperts all = experts(4, 0, DType.F32); GroupedExperts upper = experts(2, 2, DType.F32)) {
            float[] a = ((HostBuffer) all.w2()).toFloatArray();
            float[] b = ((HostBuffer) upper.w2()).toFloatArray();
            float[] tail = java.util.Arrays.copyOfRange(a, 2 * H * F, 4 * H * F);
            assertArrayEquals(tail, b, 0f);
            float[] a1 = ((HostBuffer) all.w1()).toFloatArray();
            float[] b1 = ((HostBuffer) upper.w1()).toFloatArray();
            assertArrayEquals(java.util.Arrays.copyOfRange(a1, 2 * H * F, 4 * H * F), b1, 0f);
        }
    }

    @Test
    void bf16ComputeStaysCloseToFp32() {
        Random r = seededRandom();
        int rows = 30;
        float[] x = rand(r, rows * H);
        int[] off = {0, 10, 22, 30};
        try (GroupedExperts f32 = experts(E, 0, DType.F32); GroupedExperts bf = experts(E, 0, DType.BF16);
             var hx = HostBuffer.ofFloats(x, rows, H); var ho = HostBuffer.ofInts(off, E + 1)) {
            var a = f32.forward(hx, ho);
            var b = bf.forward(hx, ho);
            float[] ya = ((HostBuffer) a.output()).toFloatArray();
            float[] yb = ((HostBuffer) b.output()).toFloatArray();
            double num = 0, den = 0;
            boolean differs = false;
            for (int i = 0; i < ya.length; i++) {
                num += (ya[i] - yb[i]) * (ya[i] - yb[i]);
                den += ya[i] * ya[i];
                differs |= ya[i] != yb[i];
            }
            assertTrue(differs, "bf16 compute should round something");
            assertTrue(Math.sqrt(num / den) < BF16_TOL, "relative error " + Math.sqrt(num / den));
            a.context().close();
            b.context().close();
            a.output().close();
            b.output().close();
        }
    }

    @Test
    void wrongInputWidthIsRefused() {
        try (GroupedExperts ex = experts(E, 0, DType.F32); var hx = HostBuffer.allocate(DType.F32, 4, H + 1);
             var ho = HostBuffer.ofInts(new int[] {0, 1, 2, 4}, E + 1)) {
            var e = assertThrows(IllegalArgumentException.class, () -> ex.forward(hx, ho));
            assertTrue(e.getMessage().contains("x must be [rows, 24]"), e.getMessage());
        }
    }
}
