package org.moe4j.bench.train;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.ReduceOp;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;

/**
 * The synthetic task of {@code moe train}: a student MoE layer learns to imitate a fixed random
 * teacher MoE layer of the same shape, on fresh Gaussian tokens each step. The teacher's routing is
 * skewed (a fixed bias favours high-numbered experts), so a student that imitates it drifts towards
 * an unbalanced load unless its expert bias pushes back. W in-process ranks train together with
 * expert parallelism.
 */
public final class Trainer {

    /**
     * Run settings.
     *
     * @param config       student layer config (expertParallel = ranks)
     * @param steps        optimiser steps
     * @param tokensPerRank tokens per rank per step
     * @param lr           AdamW learning rate
     * @param seed         seed of weights and data
     * @param teacherSkew  half-range of the teacher's fixed selection bias, in units of the mean score
     */
    public record Settings(MoeConfig config, int steps, int tokensPerRank, double lr, long seed, double teacherSkew) {
    }

    /**
     * One step's global metrics.
     *
     * @param step            step number (1-based)
     * @param loss            MSE / mean(teacher²): fraction of the teacher's signal not yet matched
     * @param tokensPerSecond tokens (all ranks) per wall-clock second of this step
     * @param imbalance       max / mean assignments per expert
     * @param dropped         assignments dropped by the capacity limit
     * @param biasMin         smallest expert-bias value after the step
     * @param biasMax         largest expert-bias value after the step
     * @param load            assignments per expert (all ranks)
     */
    public record Step(int step, double loss, double tokensPerSecond, double imbalance, long dropped, double biasMin,
                       double biasMax, int[] load) {
    }

    /** Receives each step on rank 0 (progress display). */
    public interface Listener {
        /**
         * Called after every step, on rank 0's thread.
         *
         * @param s the step just finished
         */
        void onStep(Step s);
    }

    private Trainer() {
    }

    /**
     * Trains and returns the per-step metrics.
     *
     * @param s        settings
     * @param listener per-step callback (rank 0's thread)
     * @return metrics of every step
     */
    public static List<Step> run(Settings s, Listener listener) {
        MoeConfig cfg = s.config();
        int world = cfg.expertParallel();
        MoeConfig teacherCfg = cfg.toBuilder().expertBiasCoeff(0).auxLoss(org.moe4j.core.config.AuxLoss.NONE).build();
        List<List<Step>> all = LocalGroup.run(world, java.time.Duration.ofMinutes(10), comm -> rank(s, teacherCfg, comm, listener));
        return all.get(0);
    }

    private static List<Step> rank(Settings s, MoeConfig teacherCfg, Communicator comm, Listener listener) {
        MoeConfig cfg = s.config();
        int h = cfg.hidden();
        int e = cfg.experts();
        int t = s.tokensPerRank();
        long globalTokens = (long) t * comm.size();
        List<Step> steps = new ArrayList<>();
        // The demo's ranks are in-process LocalGroup ranks over host memory, so the layers run on the
        // CPU backend whatever backend the process would pick (the GPU layer path has its own tests).
        org.moe4j.core.backend.Backend cpu = new org.moe4j.core.backend.CpuBackend();
        try (MoeLayer student = MoeLayer.builder(cfg, comm).seed(s.seed()).backend(cpu).build();
             MoeLayer teacher = MoeLayer.builder(teacherCfg, comm).seed(s.seed() + 7919).backend(cpu).build();
             AdamW opt = new AdamW(student.parameters(), new AdamW.Options(s.lr(), 0.9, 0.99, 1e-8, 0.0));
             HostBuffer x = HostBuffer.allocate(DType.F32, t, h);
             HostBuffer dy = HostBuffer.allocate(DType.F32, t, h);
             HostBuffer stats = HostBuffer.allocate(DType.F32, 2);
             HostBuffer load = HostBuffer.allocate(DType.I32, e)) {
            float[] skew = new float[e];
            float meanScore = cfg.scoreFunction() == org.moe4j.core.config.ScoreFunction.SIGMOID ? 0.5f : 1f / e;
            for (int i = 0; i < e; i++) {
                skew[i] = (float) (s.teacherSkew() * meanScore * (2.0 * i / (e - 1) - 1));
            }
            teacher.expertBias().setValues(skew);
            for (int step = 1; step <= s.steps(); step++) {
                long t0 = System.nanoTime();
                SplittableRandom rnd = new SplittableRandom(s.seed() * 1_000_003L + step * 8191L + comm.rank());
                for (int i = 0; i < t * h; i++) {
                    x.setFloat(i, (float) rnd.nextGaussian());
                }
                MoeLayer.Forward tf = teacher.forward(x);
                tf.context().close();
                MoeLayer.Forward f = student.forward(x);
                HostBuffer y = (HostBuffer) f.output();
                HostBuffer target = (HostBuffer) tf.output();
                double se = 0;
                double tt = 0;
                float scale = (float) (2.0 / (globalTokens * h));
                for (int i = 0; i < t * h; i++) {
                    float d = y.getFloat(i) - target.getFloat(i);
                    se += (double) d * d;
                    tt += (double) target.getFloat(i) * target.getFloat(i);
                    dy.setFloat(i, d * scale);
                }
                y.close();
                target.close();
                Buffer dx = student.backward(f.context(), dy);
                dx.close();
                student.reduceGradients();
                AdamW.StepReport applied = opt.step(comm); // collective: every rank skips or every rank applies
                if (!applied.applied()) { // AdamW skips a step with a non-finite gradient; the demo stops
                    throw new IllegalStateException("rank " + comm.rank() + ", step " + step + ": "
                            + (applied.nonFiniteParameter() != null ? "the gradient of " + applied.nonFiniteParameter()
                                    + " is not finite at element " + applied.nonFiniteIndex()
                                    : applied.nonFiniteRanks() + " other rank(s) found a non-finite gradient")
                            + "; every rank skipped the step and training stops");
                }
                opt.zeroGrad();
                student.updateExpertBias();
                // global metrics
                stats.setFloat(0, (float) se);
                stats.setFloat(1, (float) tt);
                comm.allReduce(stats, ReduceOp.SUM);
                for (int i = 0; i < e; i++) {
                    load.setInt(i, f.tokensPerExpert()[i]);
                }
                comm.allReduce(load, ReduceOp.SUM);
                try (HostBuffer dropped = HostBuffer.allocate(DType.I64, 1)) {
                    dropped.segment().set(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0, f.dropped());
                    comm.allReduce(dropped, ReduceOp.SUM);
                    if (comm.rank() == 0) {
                        int[] l = load.toIntArray();
                        long sum = 0;
                        int max = 0;
                        for (int v : l) {
                            sum += v;
                            max = Math.max(max, v);
                        }
                        float[] b = student.expertBias().values();
                        float bmin = Float.MAX_VALUE;
                        float bmax = -Float.MAX_VALUE;
                        for (float v : b) {
                            bmin = Math.min(bmin, v);
                            bmax = Math.max(bmax, v);
                        }
                        double secs = (System.nanoTime() - t0) / 1e9;
                        Step st = new Step(step, stats.getFloat(0) / Math.max(stats.getFloat(1), 1e-30f),
                                globalTokens / secs, sum == 0 ? 0 : max / ((double) sum / e), dropped.getLong(0),
                                bmin, bmax, l);
                        steps.add(st);
                        listener.onStep(st);
                    }
                }
            }
        }
        return steps;
    }

    /**
     * Prints a one-line progress bar with the latest metrics (carriage return, no newline).
     *
     * @param out   stream
     * @param s     latest step
     * @param total steps in the run
     */
    public static void progress(PrintStream out, Step s, int total) {
        int width = 30;
        int done = (int) ((long) s.step() * width / total);
        out.printf("\r[%s%s] %4d/%d  loss %.4f  %7.0f tok/s  imbalance %.2f  dropped %d  bias [%+.3f, %+.3f]",
                "#".repeat(done), ".".repeat(width - done), s.step(), total, s.loss(), s.tokensPerSecond(),
                s.imbalance(), s.dropped(), s.biasMin(), s.biasMax());
        out.flush();
    }
}
