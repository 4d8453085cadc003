package org.moe4j.examples;

import java.util.List;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.buffer.HostView;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.init.ParamInit;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;

/**
 * The README's usage example as a program that compiles and runs: an MoE layer over 4 in-process
 * expert-parallel ranks learns to map random inputs to a fixed target with AdamW. The "model" around
 * the layer is a mean-squared-error loss, so {@code dY = 2 (y - target) / numel}. Each step runs in
 * the layer's {@link BufferScope}: the batch, the output, {@code dY} and {@code dX} are freed when it
 * closes, so the loop cannot leak.
 */
public final class MinimalTraining {
    private MinimalTraining() {
    }

    /**
     * Trains for {@code steps} steps and returns each rank's losses.
     *
     * @param steps  optimiser steps
     * @param tokens tokens per rank and step
     * @return per rank, the loss of every step
     */
    public static List<double[]> train(int steps, int tokens) {
        MoeConfig config = MoeConfig.builder()
                .hidden(32).experts(8).topK(2).ffn(16)
                .scoreFunction(ScoreFunction.SIGMOID)
                .groups(4, 2)                                      // node-limited: 2 of 4 expert groups per token
                .routeNorm(true).routeScale(2.5)
                .expertBiasCoeff(1e-3)                             // aux-loss-free balancing
                .sharedExperts(1, 16)
                .expertParallel(4)                                 // 4 ranks, 2 experts each
                .build();
        return LocalGroup.run(4, comm -> {
            double[] losses = new double[steps];
            try (MoeLayer layer = MoeLayer.builder(config, comm).seed(42).build();
                 AdamW optimiser = new AdamW(layer.parameters(), AdamW.Options.defaults(3e-3))) {
                for (int step = 0; step < steps; step++) {
                    try (BufferScope _ = layer.newScope()) {               // frees everything this step makes
                        Buffer x = batch(comm.rank(), tokens, config.hidden()); // this rank's fixed batch
                        MoeLayer.Forward f = layer.forward(x);             // route -> dispatch -> experts -> combine
                        HostBuffer dY = HostBuffer.allocate(DType.F32, tokens, config.hidden());
                        losses[step] = mseAndGradient(f.output(), target(comm.rank(), tokens, config.hidden()), dY);
                        layer.backward(f.context(), dY);                   // gate, expert, shared grads; returns dX
                        layer.reduceGradients();                           // replicated grads over ranks (no-op once backward did it)
                        // collective: if any rank's grads hold a NaN/Inf, every rank skips (replicas stay equal)
                        if (!optimiser.step(layer.communicator()).applied()) {
                            throw new IllegalStateException("step " + step + ": non-finite gradient");
                        }
                        optimiser.zeroGrad();
                        layer.updateExpertBias();                          // from the load summed over ranks
                    }
                }
            }
            return losses;
        });
    }

    /** This rank's fixed batch, drawn from the counter-based initialiser (owned by the active scope). */
    private static Buffer batch(int rank, int tokens, int hidden) {
        HostBuffer x = HostBuffer.allocate(DType.F32, tokens, hidden);
        ParamInit.fillUniform(x, 7, 1000 + rank, 0, 1f);
        return x;
    }

    /** This rank's fixed target (owned by the active scope). */
    private static HostBuffer target(int rank, int tokens, int hidden) {
        HostBuffer t = HostBuffer.allocate(DType.F32, tokens, hidden);
        ParamInit.fillUniform(t, 7, 2000 + rank, 0, 0.1f);
        return t;
    }

    private static double mseAndGradient(Buffer output, HostBuffer target, HostBuffer dY) {
        try (HostView v = output.hostView(HostView.Mode.READ)) { // in place on the CPU, a download on a GPU
            HostBuffer y = v.host();
            long n = y.numel();
            double loss = 0;
            for (long i = 0; i < n; i++) {
                float d = y.getFloat(i) - target.getFloat(i);
                loss += (double) d * d;
                dY.setFloat(i, 2f * d / n);
            }
            return loss / n;
        }
    }

    /**
     * Runs the program.
     * @param args ignored
     */
    public static void main(String[] args) {
        List<double[]> losses = train(100, 64);
        for (int r = 0; r < losses.size(); r++) {
            double[] l = losses.get(r);
            System.out.printf("rank %d: loss %.5f -> %.5f%n", r, l[0], l[l.length - 1]);
        }
    }
}
