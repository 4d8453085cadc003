package org.moe4j.bench;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.Random;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import org.moe4j.bench.support.ShortCpuBenchmark;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;
import org.moe4j.dispatch.DispatchStrategy;
import org.moe4j.dispatch.Dispatcher;
import org.moe4j.dispatch.LocalGroup;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Dispatch + combine (identity experts) over W in-process ranks, next to a plain memory copy of the
 * same payload bytes in the same run. Payload per op = 2 x W x tokens x topK x hidden x 4 bytes
 * (each routed row travels out and back); the figure of merit is time(copy) / time(dispatchCombine).
 *
 * <p>Each rank runs on its own thread ({@link LocalGroup}), kept alive across invocations; one
 * benchmark op releases every rank for one dispatch + combine and waits for all of them.
 */
@State(Scope.Benchmark)
public class DispatchBenchmark extends ShortCpuBenchmark {
    /** 4096 x 1024, 64 experts, top-6 at W = 1 is the PyTorch peer's shape (scripts/bench/torch_peers.py). */
    @Param({"4096"})
    public int tokens;

    /** Hidden size (row width of the payload). */
    @Param({"1024"})
    public int hidden;

    /** Routed experts {@code E}. */
    @Param({"64"})
    public int experts;

    /** Experts chosen per token {@code K}. */
    @Param({"6"})
    public int topK;

    /** Expert-parallel ranks {@code W}. */
    @Param({"1", "4"})
    public int world;

    /** The {@code DispatchStrategy} name. */
    @Param({"ALL_TO_ALL"})
    public String strategy;

    private CyclicBarrier start;
    private CyclicBarrier done;
    private volatile boolean stop;
    private Thread group;
    private MemorySegment copySrc;
    private MemorySegment copyDst;

    /** Creates the benchmark state (JMH instantiates it). */
    public DispatchBenchmark() {
    }

    /** Starts the ranks and allocates the copy peer's buffers. */
    @Setup(Level.Trial)
    public void setup() {
        int perRank = tokens / world;
        start = new CyclicBarrier(world + 1);
        done = new CyclicBarrier(world + 1);
        DispatchConfig config = DispatchConfig.of(experts).withStrategy(DispatchStrategy.valueOf(strategy));
        DispatchKernels kernels = Backends.kernels(DispatchKernels.class, new CpuBackend());
        group = new Thread(() -> LocalGroup.run(world, Duration.ofMinutes(5), comm -> {
            Random rnd = new Random(42 + comm.rank());
            float[] xs = new float[perRank * hidden];
            int[] idx = new int[perRank * topK];
            float[] w = new float[perRank * topK];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = (float) rnd.nextGaussian();
            }
            for (int t = 0; t < perRank; t++) {
                for (int k = 0; k < topK; k++) {
                    // independent uniform experts, as the PyTorch peer (torch.randint) draws them
                    idx[t * topK + k] = rnd.nextInt(experts);
                    w[t * topK + k] = rnd.nextFloat();
                }
            }
            Dispatcher dispatcher = Dispatcher.create(config, comm, new CpuBackend(), kernels);
            try (HostBuffer x = HostBuffer.ofFloats(xs, perRank, hidden);
                    HostBuffer topkIdx = HostBuffer.ofInts(idx, perRank, topK);
                    HostBuffer topkWeights = HostBuffer.ofFloats(w, perRank, topK)) {
                while (true) {
                    start.await();
                    if (stop) {
                        return null;
                    }
                    try (DispatchResult d = dispatcher.dispatch(x, topkIdx, topkWeights);
                            Buffer out = dispatcher.combine(d, d.expertInput())) {
                        if (out.isClosed()) {
                            throw new IllegalStateException("unreachable");
                        }
                    }
                    done.await();
                }
            }
        }), "dispatch-benchmark-group");
        group.setDaemon(true);
        group.start();
        long bytes = 2L * tokens * topK * hidden * 4;
        copySrc = java.lang.foreign.Arena.ofAuto().allocate(bytes, 64);
        copyDst = java.lang.foreign.Arena.ofAuto().allocate(bytes, 64);
    }

    /**
     * Stops the ranks.
     *
     * @throws Exception if they do not stop within 10 seconds
     */
    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        stop = true;
        start.await(10, TimeUnit.SECONDS);
        group.join(10_000);
    }

    /**
     * One dispatch + combine on every rank.
     *
     * @throws Exception if a rank fails or the barrier breaks
     */
    @Benchmark
    public void dispatchCombine() throws Exception {
        start.await();
        done.await();
    }

    /**
     * A single-threaded copy of the same payload bytes: the peer.
     *
     * @return the destination, so the copy is not optimised away
     */
    @Benchmark
    public MemorySegment memoryCopy() {
        MemorySegment.copy(copySrc, 0, copyDst, 0, copySrc.byteSize());
        return copyDst;
    }
}
