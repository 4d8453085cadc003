package org.moe4j.bench;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.function.Consumer;
import org.moe4j.bench.support.ShortCpuBenchmark;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.layer.MoeLayer;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * A full MoE layer on the CPU (router, dispatch, grouped SwiGLU experts, combine), forward and
 * forward+backward, with {@code ranks} in-process expert-parallel ranks kept alive across
 * invocations. Tokens/s = {@code ranks · tokens / (ms / 1000)}.
 */
@State(Scope.Benchmark)
public class MoeLayerBenchmark extends ShortCpuBenchmark {
    /** Tokens per rank. */
    @Param({"2048"})
    int tokens;
    @Param({"512"})
    int hidden;
    @Param({"256"})
    int ffn;
    @Param({"16"})
    int experts;
    @Param({"4"})
    int topK;
    @Param({"1"})
    int ranks;
    /** Replicated-gradient reduction: the token-block tree (default) or per-rank sums + rank-order all-reduce. */
    @Param({"true"})
    boolean tokenBlockTree;

    private final List<LinkedBlockingQueue<Consumer<MoeLayer>>> queues = new ArrayList<>();
    private Thread group;
    private HostBuffer[] xs;
    private HostBuffer[] dys;

    /** Creates the benchmark state (JMH instantiates it). */
    public MoeLayerBenchmark() {
    }

    /**
     * Starts the ranks with their layers and fills the inputs.
     *
     * @throws Exception if a rank fails to start
     */
    @Setup(Level.Trial)
    public void setup() throws Exception {
        MoeConfig cfg = MoeConfig.builder().hidden(hidden).experts(experts).topK(topK).ffn(ffn)
                .scoreFunction(ScoreFunction.SIGMOID).routeNorm(true).expertParallel(ranks).build();
        xs = new HostBuffer[ranks];
        dys = new HostBuffer[ranks];
        for (int r = 0; r < ranks; r++) {
            xs[r] = HostBuffer.allocate(DType.F32, tokens, hidden);
            dys[r] = HostBuffer.allocate(DType.F32, tokens, hidden);
            java.util.SplittableRandom rnd = new java.util.SplittableRandom(r);
            for (long i = 0; i < xs[r].numel(); i++) {
                xs[r].setFloat(i, (float) rnd.nextGaussian());
                dys[r].setFloat(i, (float) rnd.nextGaussian() * 1e-3f);
            }
            queues.add(new LinkedBlockingQueue<>());
        }
        CompletableFuture<Void> ready = new CompletableFuture<>();
        java.util.concurrent.atomic.AtomicInteger built = new java.util.concurrent.atomic.AtomicInteger();
        group = new Thread(() -> LocalGroup.run(ranks, java.time.Duration.ofHours(1), comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(1).tokenBlockTree(tokenBlockTree).build()) {
                if (built.incrementAndGet() == ranks) {
                    ready.complete(null);
                }
                while (true) {
                    Consumer<MoeLayer> task = queues.get(comm.rank()).take();
                    if (task == STOP) {
                        return null;
                    }
                    task.accept(layer);
                }
            }
        }), "moe-layer-bench");
        group.setDaemon(true);
        group.start();
        ready.get();
    }

    private static final Consumer<MoeLayer> STOP = l -> { };

    private void onAllRanks(java.util.function.BiConsumer<Integer, MoeLayer> body) throws Exception {
        List<CompletableFuture<Void>> done = new ArrayList<>();
        for (int r = 0; r < ranks; r++) {
            int rank = r;
            CompletableFuture<Void> f = new CompletableFuture<>();
            done.add(f);
            queues.get(r).put(layer -> {
                try {
                    body.accept(rank, layer);
                    f.complete(null);
                } catch (RuntimeException e) {
                    f.completeExceptionally(e);
                }
            });
        }
        for (CompletableFuture<Void> f : done) {
            f.get();
        }
    }

    /**
     * One layer forward on every rank.
     *
     * @throws Exception if a rank fails
     */
    @Benchmark
    public void forward() throws Exception {
        onAllRanks((r, layer) -> {
            MoeLayer.Forward f = layer.forward(xs[r]);
            f.output().close();
            f.context().close();
        });
    }

    /**
     * One layer forward and backward on every rank.
     *
     * @throws Exception if a rank fails
     */
    @Benchmark
    public void forwardBackward() throws Exception {
        onAllRanks((r, layer) -> {
            MoeLayer.Forward f = layer.forward(xs[r]);
            f.output().close();
            layer.backward(f.context(), dys[r]).close();
            layer.zeroGrad();
        });
    }

    /**
     * Stops the ranks and frees the inputs.
     *
     * @throws Exception if interrupted while stopping them
     */
    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        for (var q : queues) {
            q.put(STOP);
        }
        group.join(10_000);
        for (int r = 0; r < ranks; r++) {
            xs[r].close();
            dys[r].close();
        }
    }
}
