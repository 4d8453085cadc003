package org.moe4j.dispatch;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.dispatch.internal.ExclusiveDispatcher;

/**
 * Moves routed tokens to the ranks that own their experts and back, forward and backward.
 *
 * <p>Semantics (every strategy, bitwise identical for any world size and thread count):
 * {@code combine(d, y)[t] = sum_k w[t,k] * y[t,k]}, k ascending, fp32 accumulation from +0, where
 * {@code y[t,k]} is the expert-output row of slot (t, k); empty slots ({@code topkIdx == -1}) add
 * nothing. Backward: {@code dY[t,k] = w[t,k] * dOut[t]}, {@code dTopkWeights[t,k] = <dOut[t], y[t,k]>},
 * {@code dX[t] = sum_k dExpertInput[t,k]}.
 *
 * <p>All methods are collectives over the dispatcher's {@link Communicator}: every rank calls them
 * in the same order. Inputs are validated before anything is sent: shapes, dtypes, closed buffers,
 * expert ids outside {@code [0, E)} other than -1, and non-finite routing weights of non-empty slots
 * are refused with an {@link IllegalArgumentException} before any collective starts. One exception:
 * the static-shape strategy with plans built on the device (CUDA) checks expert ids and weights on the
 * device without a host read; a refused step sends nothing from that rank and the exception is raised
 * by the step's first host read ({@link DispatchResult#overflow()} and the other host-side getters).
 *
 * <p>Threading: a dispatcher serves one thread at a time. A call from a second thread while another
 * call is running throws {@link org.moe4j.core.ConcurrentUseException} naming both calls.
 */
public interface Dispatcher {
    /**
     * Sends each token's row to the ranks owning its top-k experts.
     *
     * @param x           {@code [tokens, hidden]}, F32/BF16/F16
     * @param topkIdx     I32 {@code [tokens, topK]}, global expert ids or -1
     * @param topkWeights F32 {@code [tokens, topK]}
     * @return the grouped expert input and the context for combine and backward
     * @throws IllegalArgumentException on a bad shape, dtype or expert id (before anything is sent)
     * @throws CommunicatorException    if a collective fails
     */
    DispatchResult dispatch(Buffer x, Buffer topkIdx, Buffer topkWeights);

    /**
     * Returns expert outputs to their tokens and sums them with the routing weights. Keeps the
     * returned rows in {@code d} for {@link #combineBackward}.
     *
     * @param d            the dispatch context
     * @param expertOutput {@code [rows, hidden]} aligned with {@link DispatchResult#expertInput()}
     * @return {@code [tokens, hidden]} in the dtype of {@code x}, owned by the caller
     */
    Buffer combine(DispatchResult d, Buffer expertOutput);

    /**
     * Backward of {@link #combine}.
     *
     * @param d    the context, after {@link #combine}
     * @param dOut {@code [tokens, hidden]}
     * @return {@code dExpertOutput} (dtype of the expert output) and {@code dTopkWeights}, owned by the caller
     */
    CombineGrads combineBackward(DispatchResult d, Buffer dOut);

    /**
     * Backward of {@link #dispatch}: the sum over k of the gradient rows of each token.
     *
     * @param d            the context
     * @param dExpertInput {@code [rows, hidden]}
     * @return {@code dX [tokens, hidden]} in the dtype of {@code x}, owned by the caller
     */
    Buffer dispatchBackward(DispatchResult d, Buffer dExpertInput);

    /**
     * Returns how many device→host reads (count read-backs that synchronise with the device) this dispatcher has issued so far, or -1 when the implementation does not count them; a host-sync-free strategy ({@link DispatcherProvider#hostSyncFree()}) adds none per step.
     * @return how many device→host reads (count read-backs that synchronise with the device) this
     *         dispatcher has issued so far, or -1 when the implementation does not count them; a
     *         host-sync-free strategy ({@link DispatcherProvider#hostSyncFree()}) adds none per step
     */
    default long hostReads() {
        return -1;
    }

    /**
     * A dispatcher on the selected backend and its kernels (the CPU backend when the selected one
     * has no {@link DispatchKernels}).
     *
     * @param config settings
     * @param comm   the expert-parallel group
     * @return the dispatcher
     * @throws IllegalArgumentException if no strategy of that name is registered
     */
    static Dispatcher create(DispatchConfig config, Communicator comm) {
        Backend backend = Backends.backendFor(DispatchKernels.class);
        return create(config, comm, backend, Backends.kernels(DispatchKernels.class, backend));
    }

    /**
     * A dispatcher with explicit backend and kernels (tests, benchmarks).
     *
     * @param config  settings
     * @param comm    the expert-parallel group
     * @param backend allocates outputs
     * @param kernels the kernels
     * @return the dispatcher
     * @throws IllegalArgumentException if no strategy of that name is registered ({@link Dispatchers}), or
     *                                  the experts do not divide evenly over the ranks
     */
    static Dispatcher create(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
        java.util.Objects.requireNonNull(config, "config");
        return new ExclusiveDispatcher(Dispatchers.provider(config.strategy()).create(config, comm, backend, kernels));
    }
}
