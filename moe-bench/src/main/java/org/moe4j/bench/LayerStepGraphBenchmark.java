package org.moe4j.bench;

import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import org.moe4j.bench.support.ShortCpuBenchmark;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Availability;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.LayerStepGraph;
import org.moe4j.cuda.comm.VirtualRankGroup;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * One whole training step of a sync-free MoE layer on the CUDA backend (forward, backward, gradient
 * reduction, expert-bias step, AdamW on the device; W = 1), run eagerly ({@code mode=eager}:
 * {@link LayerStepGraph#stepEagerly()}, every kernel launched from Java) or replayed from a CUDA graph
 * ({@code mode=graph}: {@link LayerStepGraph#replay()}, one {@code cuGraphLaunch}); both on the same
 * fixed buffers, each invocation waits for the compute stream. The difference is the host work of the
 * eager step (launch calls, argument checks, allocations), which dominates at small token counts.
 *
 * <p>Needs a CUDA device: without one ({@link CudaBackend#probe()}) the trial fails at set-up with a
 * message saying so, and the other benchmarks of the run go on. The layer lives on a one-rank virtual
 * group's thread; each invocation hands the step to it (the same small hand-off in both modes).
 */
@State(Scope.Benchmark)
public class LayerStepGraphBenchmark extends ShortCpuBenchmark {
    /** Tokens of the step. */
    @Param({"256", "2048"})
    int tokens;
    @Param({"512"})
    int hidden;
    @Param({"256"})
    int ffn;
    @Param({"16"})
    int experts;
    @Param({"4"})
    int topK;
    /** {@code eager}: the step's calls from Java; {@code graph}: one replay of the captured step. */
    @Param({"eager", "graph"})
    String mode;

    private final LinkedBlockingQueue<CompletableFuture<Void>> steps = new LinkedBlockingQueue<>();
    private final CompletableFuture<Void> ready = new CompletableFuture<>();
    private static final CompletableFuture<Void> STOP = CompletableFuture.completedFuture(null);
    private Thread rank;

    /** Creates the benchmark state (JMH instantiates it). */
    public LayerStepGraphBenchmark() {
    }

    /**
     * Builds the layer, its optimiser and the captured step on a one-rank virtual group.
     *
     * @throws Exception if there is no CUDA device (naming why) or the set-up fails
     */
    @Setup(Level.Trial)
    public void setup() throws Exception {
        if (!mode.equals("eager") && !mode.equals("graph")) {
            throw new IllegalArgumentException("mode must be eager or graph, got " + mode);
        }
        CudaBackend cuda = new CudaBackend();
        Availability a = cuda.probe();
        if (!a.available()) {
            throw new IllegalStateException("LayerStepGraphBenchmark skipped: no CUDA device (" + a.reason() + ")");
        }
        MoeConfig cfg = MoeConfig.builder().hidden(hidden).experts(experts).topK(topK).ffn(ffn)
                .scoreFunction(ScoreFunction.SIGMOID).routeNorm(true).expertBiasCoeff(1e-3)
                .dispatch(DispatchOptions.of(DispatchOptions.STATIC_ALL_TO_ALL)).build();
        boolean graph = mode.equals("graph");
        rank = new Thread(() -> {
            try {
                VirtualRankGroup.run(cuda.context(), 1, Duration.ofHours(12), comm -> {
                    try (HostBuffer xh = gaussian(tokens, hidden, 1); HostBuffer dyh = gaussian(tokens, hidden, 2);
                         Buffer x = cuda.upload(xh); Buffer dy = cuda.upload(dyh);
                         MoeLayer layer = MoeLayer.builder(cfg, comm).seed(1).backend(cuda).build();
                         AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-3), cuda);
                         LayerStepGraph step = LayerStepGraph.capture(layer, opt, x, dy)) {
                        ready.complete(null);
                        for (CompletableFuture<Void> next = steps.take(); next != STOP; next = steps.take()) {
                            try {
                                if (graph) {
                                    step.replay();
                                } else {
                                    step.stepEagerly();
                                }
                                cuda.stream().synchronize();
                                next.complete(null);
                            } catch (RuntimeException e) {
                                next.completeExceptionally(e);
                                throw e;
                            }
                        }
                    }
                    return null;
                });
            } catch (RuntimeException | Error e) {
                ready.completeExceptionally(e);
            }
        }, "LayerStepGraphBenchmark rank");
        rank.setDaemon(true);
        rank.start();
        ready.get();
    }

    private static HostBuffer gaussian(int rows, int cols, long seed) {
        HostBuffer h = HostBuffer.allocate(DType.F32, rows, cols);
        java.util.SplittableRandom rnd = new java.util.SplittableRandom(seed);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) rnd.nextGaussian());
        }
        return h;
    }

    /**
     * One training step, eager or replayed, waited for on the device.
     *
     * @throws Exception if the step failed
     */
    @Benchmark
    public void step() throws Exception {
        CompletableFuture<Void> done = new CompletableFuture<>();
        steps.put(done);
        done.get();
    }

    /**
     * Stops the rank (it closes the graph, optimiser and layer).
     *
     * @throws InterruptedException if interrupted while waiting for it
     */
    @TearDown(Level.Trial)
    public void tearDown() throws InterruptedException {
        if (rank != null) {
            steps.put(STOP);
            rank.join(Duration.ofMinutes(1));
        }
    }
}
