package org.moe4j.experts;

import java.util.List;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.optim.Parameter;

/**
 * Shared experts: one dense SwiGLU MLP applied to every token. As in Hugging Face DeepSeek-V3,
 * {@code n} shared experts of intermediate size {@code f} are one MLP of intermediate size
 * {@code n·f}. Parameters are named {@code shared_experts.gate_proj/up_proj/down_proj}
 * ({@code [n·f, hidden]}, {@code [n·f, hidden]}, {@code [hidden, n·f]}).
 */
public final class SharedExperts implements AutoCloseable {
    private final GroupedExperts mlp;
    private final Backend backend;

    /**
     * Creates a new {@code SharedExperts}.
     * @param hidden  hidden size
     * @param ffn     total intermediate size (shared experts × their intermediate size)
     * @param compute F32 or BF16
     * @param seed    init seed
     * @param backend allocates the buffers
     * @param kernels kernels to run
     */
    public SharedExperts(int hidden, int ffn, DType compute, long seed, Backend backend, ExpertKernels kernels) {
        this.backend = backend;
        this.mlp = new GroupedExperts("shared_experts", 1, 0, hidden, ffn, compute, seed,
                GroupedExperts.STREAM_SHARED, backend, kernels);
    }

    /**
     * Returns shared experts on the selected backend (the CPU backend when it has no {@link ExpertKernels}).
     * @param hidden  hidden size
     * @param ffn     total intermediate size
     * @param compute F32 or BF16
     * @param seed    init seed
     * @return shared experts on the selected backend (the CPU backend when it has no {@link ExpertKernels})
     */
    public static SharedExperts create(int hidden, int ffn, DType compute, long seed) {
        Backend b = Backends.backendFor(ExpertKernels.class);
        return new SharedExperts(hidden, ffn, compute, seed, b, Backends.kernels(ExpertKernels.class, b));
    }

    /**
     * Forward context: the dense MLP's context plus the offsets buffer it borrows.
     *
     * @param inner   the dense MLP's forward context
     * @param offsets the single-group offsets buffer made by {@link #forward(Buffer)}, closed with the
     *                context; null when the caller lent it ({@link #forward(Buffer, Buffer)})
     */
    public record Context(GroupedExperts.Context inner, Buffer offsets) implements AutoCloseable {
        @Override
        public void close() {
            inner.close();
            if (offsets != null) {
                offsets.close();
            }
        }
    }

    /**
     * What a shared-experts forward returns.
     *
     * @param output  {@code [tokens, hidden]}
     * @param context state for backward
     */
    public record Result(Buffer output, Context context) {
    }

    /**
     * Returns output and context.
     * @param x {@code [tokens, hidden]} (borrowed until backward)
     * @return output and context
     */
    public Result forward(Buffer x) {
        long tokens = x.shape().dim(0);
        Buffer off;
        try (HostBuffer h = HostBuffer.ofInts(new int[] {0, Math.toIntExact(tokens)}, 2)) {
            off = backend.upload(h); // staged: the offsets are made on the host
        }
        GroupedExperts.Result r;
        try {
            r = mlp.forward(x, off);
        } catch (RuntimeException e) {
            off.close();
            throw e;
        }
        return new Result(r.output(), new Context(r.context(), off));
    }

    /**
     * {@link #forward(Buffer)} with the single group's offsets lent by the caller (e.g. a table kept
     * per token count), so the call uploads nothing.
     *
     * @param x       {@code [tokens, hidden]} (borrowed until backward)
     * @param offsets I32 {@code [2]} = {@code {0, tokens}} in the backend's memory, borrowed until
     *                backward (not closed by it)
     * @return output and context
     * @throws IllegalArgumentException if {@code offsets} is not I32 {@code [2]}
     */
    public Result forward(Buffer x, Buffer offsets) {
        offsets.require("SharedExperts.forward: offsets", DType.I32, 2);
        GroupedExperts.Result r = mlp.forward(x, offsets);
        return new Result(r.output(), new Context(r.context(), null));
    }

    /**
     * Returns {@code dX}.
     * @param ctx forward context (closed here)
     * @param dY  {@code [tokens, hidden]}
     * @return {@code dX}
     */
    public Buffer backward(Context ctx, Buffer dY) {
        try {
            return mlp.backward(ctx.inner(), dY);
        } finally {
            if (ctx.offsets() != null) {
                ctx.offsets().close();
            }
        }
    }

    /**
     * Returns the dense MLP (as one expert).
     * @return the dense MLP (as one expert)
     */
    public GroupedExperts mlp() {
        return mlp;
    }

    /**
     * Returns gate_proj, up_proj, down_proj (each with a leading dimension of 1).
     * @return gate_proj, up_proj, down_proj (each with a leading dimension of 1)
     */
    public List<Parameter> parameters() {
        return mlp.parameters();
    }

    /** Sets gradients to zero. */
    public void zeroGrad() {
        mlp.zeroGrad();
    }

    @Override
    public void close() {
        mlp.close();
    }
}
