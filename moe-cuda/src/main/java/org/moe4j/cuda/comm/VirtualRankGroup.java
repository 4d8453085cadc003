package org.moe4j.cuda.comm;

import java.time.Duration;
import java.util.List;
import java.util.Objects;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.comm.internal.VirtualRankCommunicator;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.LocalGroupException;
import org.moe4j.dispatch.spi.RankThreads;

/**
 * {@code W} in-process ranks sharing one GPU, one thread each: the expert-parallel group for
 * single-GPU hosts (NCCL refuses two ranks on one device). Collectives are device-to-device copies
 * between the ranks' {@link org.moe4j.cuda.DeviceBuffer}s behind the same
 * {@link org.moe4j.dispatch.Communicator} interface, with {@link LocalGroup}'s semantics: the same
 * results bit for bit (reductions in rank order, fp32 accumulation, done on the host), and the same
 * failure behaviour — a collective a rank never joins times out on every rank naming the missing
 * ranks, a rank that throws fails the others' current or next collective with its cause, and
 * {@link #run} then throws a {@link LocalGroupException} carrying every rank's error.
 *
 * <pre>{@code
 * try (CudaContext gpu = CudaContext.open(0)) {
 *     List<Float> losses = VirtualRankGroup.run(gpu, 4, comm -> trainStep(comm));
 * }
 * }</pre>
 *
 * <p>Every collective synchronizes the context before it reads the ranks' inputs and its own copy
 * stream before it returns, so its output is ready for any stream; this is a correctness tool and
 * a single-GPU fallback, not a fast path.
 */
public final class VirtualRankGroup {
    /** Default collective timeout. */
    public static final Duration DEFAULT_TIMEOUT = LocalGroup.DEFAULT_TIMEOUT;

    private VirtualRankGroup() {
    }

    /**
     * Runs {@code body} on {@code world} virtual ranks with the default timeout.
     *
     * @param context the shared GPU
     * @param world   number of ranks, ≥ 1
     * @param body    the per-rank code
     * @param <R>     result type
     * @return results indexed by rank
     * @throws LocalGroupException if any rank failed
     */
    public static <R> List<R> run(CudaContext context, int world, LocalGroup.RankBody<R> body) {
        return run(context, world, DEFAULT_TIMEOUT, body);
    }

    /**
     * Runs {@code body} on {@code world} virtual ranks.
     *
     * @param context the shared GPU
     * @param world   number of ranks, ≥ 1
     * @param timeout longest wait of a rank inside one collective
     * @param body    the per-rank code
     * @param <R>     result type
     * @return results indexed by rank
     * @throws IllegalArgumentException if {@code world < 1} or the timeout is not positive
     * @throws LocalGroupException      if any rank failed
     */
    public static <R> List<R> run(CudaContext context, int world, Duration timeout, LocalGroup.RankBody<R> body) {
        Objects.requireNonNull(context, "context");
        RankThreads.validate(world, timeout, body);
        return RankThreads.run(world, timeout,
                new RankThreads.Names("VirtualRankGroup of " + world + " ranks on " + context.location(),
                        "VirtualRankGroup.run", "virtual rank", "moe4j-virtual-rank-"),
                (rv, rank) -> {
                    context.makeCurrent();
                    return new VirtualRankCommunicator(rv, rank, context);
                }, body);
    }
}
