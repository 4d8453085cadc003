package org.moe4j.dispatch;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.moe4j.core.DType;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.dispatch.internal.CpuDispatchKernels;

/**
 * Test scaffolding: a routed problem over G global tokens split unevenly across W ranks, toy
 * experts with a distinct function per expert, and a full forward + backward pass whose per-token
 * results are gathered back into global order for comparison.
 */
final class Harness {
    static final Duration TIMEOUT = Duration.ofSeconds(20);

    private Harness() {
    }

    /** A routed problem in global token order. */
    record Problem(int tokens, int hidden, int experts, int topK, DType dtype, float[] x, int[] topkIdx, float[] weights,
            float[] dOut) {
    }

    /** Per-token results in global order (dY gathered per slot: [tokens*topK, hidden]). */
    record Pass(float[] out, float[] dX, float[] dW, float[] dYSlots, int[] load) {
    }

    static Problem problem(long seed, int tokens, int hidden, int experts, int topK, DType dtype, double emptyFraction) {
        Random rnd = new Random(seed);
        float[] x = new float[tokens * hidden];
        float[] dOut = new float[tokens * hidden];
        for (int i = 0; i < x.length; i++) {
            x[i] = round(dtype, (float) rnd.nextGaussian());
            dOut[i] = round(dtype, (float) rnd.nextGaussian());
        }
        int[] idx = new int[tokens * topK];
        float[] w = new float[tokens * topK];
        for (int t = 0; t < tokens; t++) {
            List<Integer> all = new ArrayList<>();
            for (int e = 0; e < experts; e++) {
                all.add(e);
            }
            java.util.Collections.shuffle(all, rnd);
            for (int k = 0; k < topK; k++) {
                boolean empty = rnd.nextDouble() < emptyFraction;
                idx[t * topK + k] = empty ? -1 : all.get(k);
                w[t * topK + k] = empty ? 0f : 0.05f + rnd.nextFloat();
            }
        }
        return new Problem(tokens, hidden, experts, topK, dtype, x, idx, w, dOut);
    }

    static float round(DType dtype, float v) {
        return switch (dtype) {
            case BF16 -> DType.bf16ToF32(DType.f32ToBf16(v));
            case F16 -> DType.f16ToF32(DType.f32ToF16(v));
            default -> v;
        };
    }

    /** First global token of each rank (uneven split), length W+1. */
    static int[] split(int tokens, int world) {
        int[] off = new int[world + 1];
        for (int r = 1; r <= world; r++) {
            off[r] = (int) ((long) tokens * r * r / ((long) world * world)); // deliberately uneven
        }
        off[world] = tokens;
        return off;
    }

    /** Toy expert e: y = x * (e + 1) + (e + 1) / 4, applied to every row including padding. */
    static void experts(DispatchResult d, HostBuffer in, HostBuffer out) {
        int h = in.shape().dimInt(1);
        int[] off = d.groupOffsets();
        for (int l = 0; l < off.length - 1; l++) {
            float a = d.firstExpert() + l + 1;
            for (int row = off[l]; row < off[l + 1]; row++) {
                for (int i = 0; i < h; i++) {
                    out.setFloat((long) row * h + i, in.getFloat((long) row * h + i) * a + a / 4);
                }
            }
        }
    }

    /** Backward of the toy experts: dx = dy * (e + 1); padding rows get garbage that must not leak. */
    static void expertsBackward(DispatchResult d, HostBuffer dy, HostBuffer dx) {
        int h = dy.shape().dimInt(1);
        int[] off = d.groupOffsets();
        int[] real = d.tokensPerLocalExpert();
        for (int l = 0; l < off.length - 1; l++) {
            float a = d.firstExpert() + l + 1;
            for (int row = off[l]; row < off[l + 1]; row++) {
                boolean pad = row >= off[l] + real[l];
                for (int i = 0; i < h; i++) {
                    dx.setFloat((long) row * h + i, pad ? 1e6f : dy.getFloat((long) row * h + i) * a);
                }
            }
        }
    }

    static DispatchKernels kernels(int threads) {
        // small chunks so that every kernel really runs as many chunks over the threads
        return new CpuDispatchKernels(new CpuParallel(threads), 64);
    }

    /** One full forward + backward pass on W ranks. */
    static Pass run(Problem p, int world, DispatchConfig config, int threads) {
        int[] split = split(p.tokens, world);
        DispatchKernels kernels = kernels(threads);
        int h = p.hidden;
        int k = p.topK;
        record RankPass(float[] out, float[] dX, float[] dW, int[] srcRank, int[] srcIndex, int[] slot, float[] dY,
                int[] load, int first) {
        }
        List<RankPass> parts = LocalGroup.run(world, TIMEOUT, comm -> {
            int r = comm.rank();
            int t0 = split[r];
            int t = split[r + 1] - t0;
            Dispatcher dispatcher = Dispatcher.create(config, comm, new CpuBackend(), kernels);
            try (HostBuffer x = HostBuffer.of(p.dtype, Arrays.copyOfRange(p.x, t0 * h, (t0 + t) * h), t, h);
                    HostBuffer idx = HostBuffer.ofInts(Arrays.copyOfRange(p.topkIdx, t0 * k, (t0 + t) * k), t, k);
                    HostBuffer w = HostBuffer.ofFloats(Arrays.copyOfRange(p.weights, t0 * k, (t0 + t) * k), t, k);
                    HostBuffer dOut = HostBuffer.of(p.dtype, Arrays.copyOfRange(p.dOut, t0 * h, (t0 + t) * h), t, h);
                    DispatchResult d = dispatcher.dispatch(x, idx, w)) {
                int rows = d.rows();
                try (HostBuffer y = HostBuffer.allocate(p.dtype, rows, h);
                        HostBuffer dXin = HostBuffer.allocate(p.dtype, rows, h)) {
                    experts(d, (HostBuffer) d.expertInput(), y);
                    Buffer out = dispatcher.combine(d, y);
                    CombineGrads g = dispatcher.combineBackward(d, dOut);
                    expertsBackward(d, (HostBuffer) g.dExpertOutput(), dXin);
                    Buffer dX = dispatcher.dispatchBackward(d, dXin);
                    RankPass rp = new RankPass(((HostBuffer) out).toFloatArray(), ((HostBuffer) dX).toFloatArray(),
                            ((HostBuffer) g.dTopkWeights()).toFloatArray(), ((HostBuffer) d.srcRank()).toIntArray(),
                            ((HostBuffer) d.srcIndex()).toIntArray(), ((HostBuffer) d.topkSlot()).toIntArray(),
                            ((HostBuffer) g.dExpertOutput()).toFloatArray(), d.tokensPerLocalExpert(), d.firstExpert());
                    out.close();
                    g.close();
                    dX.close();
                    return rp;
                }
            }
        });
        float[] out = new float[p.tokens * h];
        float[] dX = new float[p.tokens * h];
        float[] dW = new float[p.tokens * k];
        float[] dY = new float[p.tokens * k * h];
        int[] load = new int[p.experts];
        for (int r = 0; r < world; r++) {
            RankPass rp = parts.get(r);
            System.arraycopy(rp.out, 0, out, split[r] * h, rp.out.length);
            System.arraycopy(rp.dX, 0, dX, split[r] * h, rp.dX.length);
            System.arraycopy(rp.dW, 0, dW, split[r] * k, rp.dW.length);
            System.arraycopy(rp.load, 0, load, rp.first, rp.load.length);
            for (int row = 0; row < rp.srcRank.length; row++) {
                if (rp.srcRank[row] < 0) {
                    continue;
                }
                int gt = split[rp.srcRank[row]] + rp.srcIndex[row];
                System.arraycopy(rp.dY, row * h, dY, (gt * k + rp.slot[row]) * h, h);
            }
        }
        return new Pass(out, dX, dW, dY, load);
    }

    static double relErr(float[] a, float[] b) {
        double num = 0;
        double den = 0;
        for (int i = 0; i < a.length; i++) {
            double d = (double) a[i] - b[i];
            num += d * d;
            den += (double) b[i] * b[i];
        }
        return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
    }
}
