package org.moe4j.bench;

import java.time.Duration;
import java.util.Random;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.moe4j.bench.support.ShortCpuBenchmark;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.dispatch.CombineGrads;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;
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
 * Static-shape (equal-split) all-to-all against the count exchange: one dispatch → combine →
 * combine backward → dispatch backward step (identity experts) over W in-process ranks, with balanced
 * or skewed routing. Besides the time, the trial prints the payload rows one step moves (sum over
 * ranks, four trips: dispatch, combine, and both backward trips), how many of them are padding, and the
 * slots dropped by chunk overflow.
 *
 * <p>{@code dispatch}: {@code count} = count-exchange all-to-all; {@code static-worst} = static chunks of
 * the exact worst case {@code tokens·topK} rows (never drops); {@code static-fN} = chunks of
 * {@code ceil(N·tokens·topK/W)} rows (drops by score when a chunk overflows, counted in
 * {@code droppedSlots}).
 */
@State(Scope.Benchmark)
public class StaticDispatchBenchmark extends ShortCpuBenchmark {
    /** Tokens per rank. */
    @Param({"512"})
    public int tokens;

    /** Hidden size (row width of the payload). */
    @Param({"512"})
    public int hidden;

    /** Routed experts {@code E}. */
    @Param({"32"})
    public int experts;

    /** Experts chosen per token {@code K}. */
    @Param({"4"})
    public int topK;

    /** Expert-parallel ranks {@code W}. */
    @Param({"4"})
    public int world;

    /**
     * {@code balanced}: uniform experts; {@code skewed}: half of all slots go to rank 0's experts;
     * {@code forced}: the router's force-balanced round robin, slot {@code t*K+k} to expert {@code (t*K+k) mod E}.
     */
    @Param({"balanced", "skewed", "forced"})
    public String routing;

    /**
     * {@code count}: the count-exchange all-to-all; {@code static-worst}, {@code static-f<factor>},
     * {@code static-fb}: the static-shape all-to-all with worst-case, factor-sized or force-balanced chunks.
     */
    @Param({"count", "static-worst", "static-f1.5", "static-fb"})
    public String dispatch;

    private CyclicBarrier start;
    private CyclicBarrier done;
    private volatile boolean stop;
    private Thread group;
    private final AtomicLong routedRows = new AtomicLong();
    private final AtomicLong movedRows = new AtomicLong();
    private final AtomicLong dropped = new AtomicLong();

    private DispatchConfig config() {
        DispatchConfig base = DispatchConfig.of(experts);
        if (dispatch.equals("count")) {
            return base;
        }
        if (dispatch.equals("static-worst")) {
            return base.withStrategy(DispatchOptions.STATIC_ALL_TO_ALL);
        }
        if (dispatch.equals("static-fb")) {
            return base.withStrategy(DispatchOptions.STATIC_ALL_TO_ALL).withForceBalanced(true);
        }
        if (dispatch.startsWith("static-f")) {
            double f = Double.parseDouble(dispatch.substring("static-f".length()));
            return base.withOptions(new DispatchOptions(DispatchOptions.STATIC_ALL_TO_ALL, false, false, f, 0));
        }
        throw new IllegalArgumentException("dispatch must be count, static-worst or static-f<factor>, got " + dispatch);
    }

    /** Creates the benchmark state (JMH instantiates it). */
    public StaticDispatchBenchmark() {
    }

    /** Starts the ranks with their dispatchers for the current parameters. */
    @Setup(Level.Trial)
    public void setup() {
        start = new CyclicBarrier(world + 1);
        done = new CyclicBarrier(world + 1);
        DispatchConfig config = config();
        boolean skewed = switch (routing) {
            case "balanced", "forced" -> false;
            case "skewed" -> true;
            default -> throw new IllegalArgumentException("routing must be balanced, skewed or forced, got " + routing);
        };
        boolean forced = routing.equals("forced");
        DispatchKernels kernels = Backends.kernels(DispatchKernels.class, new CpuBackend());
        int local = experts / world;
        group = new Thread(() -> LocalGroup.run(world, Duration.ofMinutes(5), comm -> {
            Random rnd = new Random(42 + comm.rank());
            float[] xs = new float[tokens * hidden];
            int[] idx = new int[tokens * topK];
            float[] w = new float[tokens * topK];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = (float) rnd.nextGaussian();
            }
            for (int t = 0; t < tokens; t++) {
                for (int k = 0; k < topK; k++) {
                    if (forced) {
                        idx[t * topK + k] = (t * topK + k) % experts;
                        w[t * topK + k] = rnd.nextFloat();
                        continue;
                    }
                    int e;
                    do {
                        e = skewed && rnd.nextBoolean() ? rnd.nextInt(local) : rnd.nextInt(experts);
                    } while (contains(idx, t * topK, t * topK + k, e));
                    idx[t * topK + k] = e;
                    w[t * topK + k] = rnd.nextFloat();
                }
            }
            Dispatcher dispatcher = Dispatcher.create(config, comm, new CpuBackend(), kernels);
            try (HostBuffer x = HostBuffer.ofFloats(xs, tokens, hidden);
                    HostBuffer topkIdx = HostBuffer.ofInts(idx, tokens, topK);
                    HostBuffer topkWeights = HostBuffer.ofFloats(w, tokens, topK)) {
                boolean first = true;
                while (true) {
                    start.await();
                    if (stop) {
                        return null;
                    }
                    try (DispatchResult d = dispatcher.dispatch(x, topkIdx, topkWeights);
                            Buffer out = dispatcher.combine(d, d.expertInput());
                            CombineGrads g = dispatcher.combineBackward(d, out);
                            Buffer dX = dispatcher.dispatchBackward(d, g.dExpertOutput())) {
                        if (first) {
                            long routed = (long) tokens * topK - d.overflow();
                            routedRows.addAndGet(4 * routed);
                            boolean isStatic = d.groupOffsetsBuffer() != null;
                            long sent = isStatic ? (long) world * config.chunkCapacity(tokens, topK, world)
                                    : (long) tokens * topK;
                            movedRows.addAndGet(4 * sent);
                            dropped.addAndGet(d.overflow());
                            first = false;
                        }
                        if (dX.isClosed()) {
                            throw new IllegalStateException("unreachable");
                        }
                    }
                    done.await();
                }
            }
        }), "static-dispatch-benchmark-group");
        group.setDaemon(true);
        group.start();
    }

    private static boolean contains(int[] a, int from, int to, int v) {
        for (int i = from; i < to; i++) {
            if (a[i] == v) {
                return true;
            }
        }
        return false;
    }

    /**
     * Prints the rows moved per step and stops the ranks.
     *
     * @throws Exception if they do not stop within 10 seconds
     */
    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        System.out.printf("%nrows moved per step (all ranks, 4 trips): %d payload, %d padding (%.2fx the routed rows),"
                + " %d slots dropped%n", movedRows.get(), movedRows.get() - routedRows.get(),
                movedRows.get() / (double) Math.max(1, routedRows.get()), dropped.get());
        stop = true;
        start.await(10, TimeUnit.SECONDS);
        group.join(10_000);
    }

    /**
     * One training step of dispatch and combine on every rank.
     *
     * @throws Exception if a rank fails
     */
    @Benchmark
    public void step() throws Exception {
        start.await();
        done.await();
    }
}
