package org.moe4j.bench;

import java.util.SplittableRandom;
import org.moe4j.bench.support.ShortCpuBenchmark;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.routing.Router;
import org.moe4j.routing.RouterOutput;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.infra.Blackhole;

/**
 * Router forward on the CPU backend: from logits (scores, grouped top-k, weights, counts) and from
 * hidden states (plus the gate GEMM). Sigmoid scores with route norm, DeepSeek-V3 style.
 * Thread count: {@code threads} param (the peer comparison uses 2).
 *
 * <p>Run: {@code ./moe jmh RouterBenchmark} or
 * {@code java -jar moe-bench/target/moe.jar ...}; restrict with {@code -p tokens=16384 -p experts=256}.
 */
@State(Scope.Benchmark)
public class RouterBenchmark extends ShortCpuBenchmark {
    /** Tokens routed per forward. */
    @Param({"4096", "16384"})
    public int tokens;

    /** Routed experts {@code E}. */
    @Param({"64", "256"})
    public int experts;

    /** Experts chosen per token {@code K}. */
    @Param({"6", "8"})
    public int topK;

    /** "none" or "8of4" (8 groups, 4 kept). */
    @Param({"none", "8of4"})
    public String groups;

    /** "logits" or "hidden". */
    @Param({"logits", "hidden"})
    public String source;

    /** Hidden size (used when the source is "hidden"). */
    @Param({"1024"})
    public int hidden;

    /** CPU threads of the router's pool. */
    @Param({"2"})
    public int threads;

    private CpuParallel pool;
    private Router router;
    private HostBuffer logits; // [tokens, experts]
    private HostBuffer x; // [tokens, hidden]
    private HostBuffer gate; // [experts, hidden]

    /** Creates the benchmark state (JMH instantiates it). */
    public RouterBenchmark() {
    }

    /** Builds the router and its inputs for the current parameters. */
    @Setup(Level.Trial)
    public void setUp() {
        MoeConfig.Builder b = MoeConfig.builder().hidden(hidden).experts(experts).topK(topK).ffn(1)
                .scoreFunction(ScoreFunction.SIGMOID).routeNorm(true).routeScale(2.5);
        switch (groups) {
            case "none" -> { }
            case "8of4" -> b.groups(8, 4);
            default -> throw new IllegalArgumentException("groups must be none or 8of4, got " + groups);
        }
        pool = new CpuParallel(threads);
        router = Router.builder(b.build()).parallel(pool).accumulateLoad(false).build();
        SplittableRandom rnd = new SplittableRandom(42);
        float[] l = new float[tokens * experts];
        for (int i = 0; i < l.length; i++) {
            l[i] = (float) (rnd.nextDouble() * 4 - 2);
        }
        logits = HostBuffer.ofFloats(l, tokens, experts);
        switch (source) {
            case "logits" -> { }
            case "hidden" -> {
                float[] xv = new float[tokens * hidden];
                for (int i = 0; i < xv.length; i++) {
                    xv[i] = (float) (rnd.nextDouble() * 2 - 1);
                }
                float[] gv = new float[experts * hidden];
                for (int i = 0; i < gv.length; i++) {
                    gv[i] = (float) ((rnd.nextDouble() * 2 - 1) / Math.sqrt(hidden));
                }
                x = HostBuffer.ofFloats(xv, tokens, hidden);
                gate = HostBuffer.ofFloats(gv, experts, hidden);
            }
            default -> throw new IllegalArgumentException("source must be logits or hidden, got " + source);
        }
    }

    /** Frees the inputs, the bias and the pool. */
    @TearDown(Level.Trial)
    public void tearDown() {
        logits.close();
        if (x != null) {
            x.close();
            gate.close();
        }
        router.expertBias().close();
        pool.close();
    }

    /**
     * One router forward; outputs are consumed and freed.
     *
     * @param bh JMH's sink for the result
     */
    @Benchmark
    public void forward(Blackhole bh) {
        try (RouterOutput out = x == null ? router.forwardLogits(logits) : router.forward(x, gate)) {
            bh.consume(out.tokensPerExpert().getInt(0));
        }
    }
}
