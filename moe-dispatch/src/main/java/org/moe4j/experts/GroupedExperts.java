package org.moe4j.experts;

import java.util.List;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.config.ExpertActivation;
import org.moe4j.core.config.LayerFeatures;
import org.moe4j.core.buffer.Handover;
import org.moe4j.core.init.ParamInit;
import org.moe4j.experts.ExpertKernels.GemmSpec;
import org.moe4j.optim.Parameter;

/**
 * The routed experts of one rank: {@code localExperts} SwiGLU MLPs applied to contiguous token
 * groups, {@code y = (silu(x·W1ₑᵀ) ⊙ (x·W3ₑᵀ))·W2ₑᵀ}, as three grouped GEMMs forward and six
 * backward.
 *
 * <p>Weights are fp32 masters; with compute dtype BF16 every GEMM operand is rounded to bf16 and
 * products accumulate in fp32. Expert {@code e} of this rank is global expert
 * {@code firstExpert + e}; its initial values come from {@link ParamInit} indexed by the global
 * expert, so a model is initialised identically for every expert-parallel world size.
 *
 * <p>Names follow Hugging Face: {@code gate_proj} = W1, {@code up_proj} = W3, {@code down_proj} = W2.
 *
 * <p>Family variants ({@link LayerFeatures}): with {@code expertLinearBias} every linear has a bias
 * ({@code b1}, {@code b3} {@code [localExperts, ffn]}, {@code b2} {@code [localExperts, hidden]}, zero-initialised;
 * gpt-oss), and with {@link ExpertActivation#CLAMPED_SWIGLU} the activation is gpt-oss's
 * {@code (clamp(up) + 1) · g · σ(alpha · g)}, {@code g = min(gate, limit)}. Both need kernels with
 * {@link ExpertKernels#supportsLayerFeatures()}.
 */
public final class GroupedExperts implements AutoCloseable {
    /** Init stream of W1 (gate_proj); W3 and W2 use the next two ids. */
    public static final long STREAM_ROUTED = 100;
    /** Init stream of the shared experts' W1; W3 and W2 use the next two ids. */
    public static final long STREAM_SHARED = 200;

    private final String name;
    private final int localExperts;
    private final int firstExpert;
    private final int hidden;
    private final int ffn;
    private final DType compute;
    private final Backend backend;
    private final ExpertKernels kernels;

    private final Buffer w1; // [localExperts, ffn, hidden]  gate_proj
    private final Buffer w3; // [localExperts, ffn, hidden]  up_proj
    private final Buffer w2; // [localExperts, hidden, ffn]  down_proj
    private final Buffer gw1; // [localExperts, ffn, hidden]
    private final Buffer gw3; // [localExperts, ffn, hidden]
    private final Buffer gw2; // [localExperts, hidden, ffn]
    private final LayerFeatures features;
    // expert linear biases and their gradients (null without expertLinearBias)
    private final Buffer b1; // [localExperts, ffn]     gate_proj bias
    private final Buffer b3; // [localExperts, ffn]     up_proj bias
    private final Buffer b2; // [localExperts, hidden]  down_proj bias
    private final Buffer gb1;
    private final Buffer gb3;
    private final Buffer gb2;

    /**
     * Saved forward state for {@link #backward}. Owns its intermediate buffers (close it, or let
     * backward close it); the input {@code x} is borrowed and must stay alive until backward.
     *
     * @param x            borrowed input {@code [rows, hidden]}
     * @param groupOffsets borrowed I32 {@code [localExperts + 1]}
     * @param h1           {@code x·W1ᵀ} {@code [rows, ffn]}
     * @param h3           {@code x·W3ᵀ} {@code [rows, ffn]}
     * @param act          {@code silu(h1) ⊙ h3} {@code [rows, ffn]}
     */
    public record Context(Buffer x, Buffer groupOffsets, Buffer h1, Buffer h3, Buffer act) implements AutoCloseable {
        @Override
        public void close() {
            h1.close();
            h3.close();
            act.close();
        }
    }

    /**
     * What a grouped-experts forward returns.
     *
     * @param output  {@code [rows, hidden]} (rows outside every group are zero); caller closes it
     * @param context state for backward
     */
    public record Result(Buffer output, Context context) {
    }

    /**
     * Creates and initialises the experts with the selected backend's kernels (the CPU backend when
     * the selected one has no {@link ExpertKernels}).
     *
     * @param name         parameter name prefix, e.g. {@code experts}
     * @param localExperts experts held here
     * @param firstExpert  global index of the first one
     * @param hidden       hidden size
     * @param ffn          intermediate size per expert
     * @param compute      F32 or BF16
     * @param seed         init seed
     * @param stream       init stream of W1 ({@link #STREAM_ROUTED} or {@link #STREAM_SHARED})
     * @return the experts
     */
    public static GroupedExperts create(String name, int localExperts, int firstExpert, int hidden, int ffn,
                                        DType compute, long seed, long stream) {
        Backend b = Backends.backendFor(ExpertKernels.class);
        return new GroupedExperts(name, localExperts, firstExpert, hidden, ffn, compute, seed, stream, b,
                Backends.kernels(ExpertKernels.class, b));
    }

    /**
     * Creates a new {@code GroupedExperts}.
     * @param name         parameter name prefix, e.g. {@code experts}
     * @param localExperts experts held here, ≥ 1
     * @param firstExpert  global index of the first one, ≥ 0
     * @param hidden       hidden size
     * @param ffn          intermediate size per expert
     * @param compute      F32 or BF16
     * @param seed         init seed
     * @param stream       init stream of W1; W3 uses {@code stream+1}, W2 {@code stream+2}
     * @param backend      allocates the buffers (values are made on the host by {@link ParamInit} and
     *                     uploaded, so they are bitwise the same on every backend)
     * @param kernels      the kernels to run; they must multiply by transposed weights directly
     *                     ({@link ExpertKernels#supportsTransposedB()})
     * @throws IllegalArgumentException on bad sizes or dtype, or kernels without the transposed-B GEMM
     */
    public GroupedExperts(String name, int localExperts, int firstExpert, int hidden, int ffn, DType compute,
                          long seed, long stream, Backend backend, ExpertKernels kernels) {
        this(name, localExperts, firstExpert, hidden, ffn, compute, seed, stream, backend, kernels, LayerFeatures.NONE);
    }

    /**
     * Experts with a family variant: linear biases and/or the clamped SwiGLU of {@code features} (the
     * other fields of {@code features} concern the layer, not the experts, and are ignored here).
     *
     * @param name         parameter name prefix, e.g. {@code experts}
     * @param localExperts experts held here, ≥ 1
     * @param firstExpert  global index of the first one, ≥ 0
     * @param hidden       hidden size
     * @param ffn          intermediate size per expert
     * @param compute      F32 or BF16
     * @param seed         init seed
     * @param stream       init stream of W1; W3 uses {@code stream+1}, W2 {@code stream+2}
     * @param backend      allocates the buffers
     * @param kernels      the kernels to run
     * @param features     activation and linear biases
     * @throws IllegalArgumentException on bad sizes or dtype, or a variant the kernels do not implement
     */
    public GroupedExperts(String name, int localExperts, int firstExpert, int hidden, int ffn, DType compute,
                          long seed, long stream, Backend backend, ExpertKernels kernels, LayerFeatures features) {
        java.util.Objects.requireNonNull(features, "features");
        boolean variant = features.expertLinearBias() || features.activation() != ExpertActivation.SWIGLU;
        if (variant && !kernels.supportsLayerFeatures()) {
            throw new IllegalArgumentException("GroupedExperts " + name + ": " + (features.expertLinearBias()
                    ? "expert linear biases" : features.activation()) + " need expert kernels with layer-feature support; "
                    + kernels.getClass().getSimpleName() + " has none (supportsLayerFeatures() is false)");
        }
        if (localExperts < 1 || firstExpert < 0 || hidden < 1 || ffn < 1) {
            throw new IllegalArgumentException("GroupedExperts " + name + ": bad sizes localExperts=" + localExperts
                    + " firstExpert=" + firstExpert + " hidden=" + hidden + " ffn=" + ffn);
        }
        if (compute != DType.F32 && compute != DType.BF16) {
            throw new IllegalArgumentException("GroupedExperts " + name + ": compute dtype must be F32 or BF16, got " + compute);
        }
        if (!kernels.supportsTransposedB()) {
            throw new IllegalArgumentException("GroupedExperts " + name + ": " + kernels.getClass().getSimpleName()
                    + " has no groupedMatmulTransposedB (supportsTransposedB() is false)");
        }
        this.name = name;
        this.localExperts = localExperts;
        this.firstExpert = firstExpert;
        this.hidden = hidden;
        this.ffn = ffn;
        this.compute = compute;
        this.backend = backend;
        this.kernels = kernels;
        this.features = features;
        Shape up = Shape.of(localExperts, ffn, hidden);
        Shape down = Shape.of(localExperts, hidden, ffn);
        w1 = backend.allocate(DType.F32, up);
        w3 = backend.allocate(DType.F32, up);
        w2 = backend.allocate(DType.F32, down);
        gw1 = backend.allocate(DType.F32, up);
        gw3 = backend.allocate(DType.F32, up);
        gw2 = backend.allocate(DType.F32, down);
        long perExpert = (long) ffn * hidden;
        ParamInit.fillUniform(w1, seed, stream, firstExpert * perExpert, ParamInit.linearBound(hidden));
        ParamInit.fillUniform(w3, seed, stream + 1, firstExpert * perExpert, ParamInit.linearBound(hidden));
        ParamInit.fillUniform(w2, seed, stream + 2, firstExpert * perExpert, ParamInit.linearBound(ffn));
        boolean bias = features.expertLinearBias();
        b1 = bias ? zeroed(backend, Shape.of(localExperts, ffn)) : null;
        b3 = bias ? zeroed(backend, Shape.of(localExperts, ffn)) : null;
        b2 = bias ? zeroed(backend, Shape.of(localExperts, hidden)) : null;
        gb1 = bias ? zeroed(backend, Shape.of(localExperts, ffn)) : null;
        gb3 = bias ? zeroed(backend, Shape.of(localExperts, ffn)) : null;
        gb2 = bias ? zeroed(backend, Shape.of(localExperts, hidden)) : null;
    }

    private static Buffer zeroed(Backend backend, Shape shape) {
        Buffer b = backend.allocate(DType.F32, shape);
        b.zero();
        return b;
    }

    /**
     * Returns the family variant these experts were built with.
     *
     * @return the activation and bias variant of these experts
     */
    public LayerFeatures features() {
        return features;
    }

    /**
     * Returns the gate projection bias.
     *
     * @return gate_proj bias {@code [localExperts, ffn]}, or null without expert linear biases
     */
    public Buffer b1() {
        return b1;
    }

    /**
     * Returns the up projection bias.
     *
     * @return up_proj bias {@code [localExperts, ffn]}, or null without expert linear biases
     */
    public Buffer b3() {
        return b3;
    }

    /**
     * Returns the down projection bias.
     *
     * @return down_proj bias {@code [localExperts, hidden]}, or null without expert linear biases
     */
    public Buffer b2() {
        return b2;
    }

    /**
     * Returns experts held here.
     * @return experts held here
     */
    public int localExperts() {
        return localExperts;
    }

    /**
     * Returns global index of local expert 0.
     * @return global index of local expert 0
     */
    public int firstExpert() {
        return firstExpert;
    }

    /**
     * Returns hidden size.
     * @return hidden size
     */
    public int hidden() {
        return hidden;
    }

    /**
     * Returns intermediate size per expert.
     * @return intermediate size per expert
     */
    public int ffn() {
        return ffn;
    }

    /**
     * Returns compute dtype of the GEMMs.
     * @return compute dtype of the GEMMs
     */
    public DType computeDtype() {
        return compute;
    }

    /**
     * Returns W1 (gate_proj) {@code [localExperts, ffn, hidden]}.
     * @return W1 (gate_proj) {@code [localExperts, ffn, hidden]}
     */
    public Buffer w1() {
        return w1;
    }

    /**
     * Returns W3 (up_proj) {@code [localExperts, ffn, hidden]}.
     * @return W3 (up_proj) {@code [localExperts, ffn, hidden]}
     */
    public Buffer w3() {
        return w3;
    }

    /**
     * Returns W2 (down_proj) {@code [localExperts, hidden, ffn]}.
     * @return W2 (down_proj) {@code [localExperts, hidden, ffn]}
     */
    public Buffer w2() {
        return w2;
    }

    /**
     * Returns the parameters with their gradients.
     *
     * @return gate_proj, up_proj, down_proj with their gradients, then their biases when the experts have them
     */
    public List<Parameter> parameters() {
        if (b1 == null) {
            return List.of(new Parameter(name + ".gate_proj", w1, gw1), new Parameter(name + ".up_proj", w3, gw3),
                    new Parameter(name + ".down_proj", w2, gw2));
        }
        return List.of(new Parameter(name + ".gate_proj", w1, gw1), new Parameter(name + ".up_proj", w3, gw3),
                new Parameter(name + ".down_proj", w2, gw2), new Parameter(name + ".gate_proj_bias", b1, gb1),
                new Parameter(name + ".up_proj_bias", b3, gb3), new Parameter(name + ".down_proj_bias", b2, gb2));
    }

    /** Sets the gradients to zero. */
    public void zeroGrad() {
        gw1.zero();
        gw3.zero();
        gw2.zero();
        if (gb1 != null) {
            gb1.zero();
            gb3.zero();
            gb2.zero();
        }
    }

    /**
     * Forward over grouped rows: rows {@code [off[e], off[e+1])} go through local expert {@code e}.
     *
     * @param x            {@code [rows, hidden]}, F32 or BF16
     * @param groupOffsets I32 {@code [localExperts + 1]}
     * @return output and context
     * @throws IllegalArgumentException on shape/dtype/offset errors
     */
    public Result forward(Buffer x, Buffer groupOffsets) {
        if (x.shape().rank() != 2 || x.shape().dim(1) != hidden) {
            throw new IllegalArgumentException("GroupedExperts " + name + ": x must be [rows, " + hidden + "], got "
                    + x.shape());
        }
        groupOffsets.require(name + " groupOffsets", DType.I32, localExperts + 1L);
        long rows = x.shape().dim(0);
        GemmSpec spec = new GemmSpec(false, compute == DType.BF16);
        try (Handover h = new Handover()) {
            Buffer h1 = h.own(backend.allocate(DType.F32, Shape.of(rows, ffn)));
            Buffer h3 = h.own(backend.allocate(DType.F32, Shape.of(rows, ffn)));
            Buffer act = h.own(backend.allocate(DType.F32, Shape.of(rows, ffn)));
            Buffer out = h.own(backend.allocate(DType.F32, Shape.of(rows, hidden)));
            kernels.groupedMatmulTransposedB(x, w1, groupOffsets, h1, spec);
            kernels.groupedMatmulTransposedB(x, w3, groupOffsets, h3, spec);
            if (b1 != null) {
                kernels.addGroupBias(h1, b1, groupOffsets);
                kernels.addGroupBias(h3, b3, groupOffsets);
            }
            if (features.activation() == ExpertActivation.CLAMPED_SWIGLU) {
                kernels.clampedSwigluForward(h1, h3, act, (float) features.swigluLimit(), (float) features.swigluAlpha());
            } else {
                kernels.swigluForward(h1, h3, act);
            }
            kernels.groupedMatmulTransposedB(act, w2, groupOffsets, out, spec);
            if (b2 != null) {
                kernels.addGroupBias(out, b2, groupOffsets);
            }
            h.releaseAll();
            return new Result(out, new Context(x, groupOffsets, h1, h3, act));
        }
    }

    /**
     * Backward: returns {@code dX} and adds this batch's contribution to the weight gradients. Closes
     * the context. The same as {@link #backwardInput} followed by {@link WeightGrads#apply()}.
     *
     * @param ctx the forward context
     * @param dY  gradient of the output {@code [rows, hidden]}, F32
     * @return {@code dX [rows, hidden]} (caller closes)
     */
    public Buffer backward(Context ctx, Buffer dY) {
        InputGrad g = backwardInput(ctx, dY);
        try (WeightGrads w = g.weightGrads()) {
            w.apply();
        } catch (RuntimeException e) {
            g.dX().close();
            throw e;
        }
        return g.dX();
    }

    /**
     * The input half of a backward and the weight half, not yet added to the gradients.
     *
     * @param dX          {@code [rows, hidden]} F32 (caller closes)
     * @param weightGrads adds the weight gradients on {@link WeightGrads#apply()}; the caller closes it
     */
    public record InputGrad(Buffer dX, WeightGrads weightGrads) {
    }

    /**
     * The first half of a backward: computes {@code dX} and everything the weight gradients need, but
     * changes no gradient yet, so a caller can finish every collective of its step before any state
     * changes (all or nothing). Owns the context from here on: closing the returned
     * {@link WeightGrads} closes it (also when {@link WeightGrads#apply()} is never called).
     *
     * @param ctx the forward context
     * @param dY  gradient of the output {@code [rows, hidden]}, F32; borrowed until the weight
     *            gradients are applied or closed
     * @return {@code dX} and the pending weight gradients
     * @throws IllegalArgumentException if {@code dY} is not F32 {@code [rows, hidden]} (the context stays open)
     */
    public InputGrad backwardInput(Context ctx, Buffer dY) {
        long rows = ctx.x().shape().dim(0);
        dY.require(name + " dY", DType.F32, rows, hidden);
        Buffer dH1 = null;
        Buffer dH3 = null;
        Buffer dX = null;
        try {
            GemmSpec overwrite = new GemmSpec(false, compute == DType.BF16);
            GemmSpec accumulate = new GemmSpec(true, compute == DType.BF16);
            Buffer off = ctx.groupOffsets();
            dH1 = backend.allocate(DType.F32, Shape.of(rows, ffn));
            dH3 = backend.allocate(DType.F32, Shape.of(rows, ffn));
            try (Buffer dAct = backend.allocate(DType.F32, Shape.of(rows, ffn))) {
                kernels.groupedMatmul(dY, w2, off, dAct, overwrite);               // dAct = dY · W2
                if (features.activation() == ExpertActivation.CLAMPED_SWIGLU) {
                    kernels.clampedSwigluBackward(ctx.h1(), ctx.h3(), dAct, dH1, dH3, (float) features.swigluLimit(),
                            (float) features.swigluAlpha());
                } else {
                    kernels.swigluBackward(ctx.h1(), ctx.h3(), dAct, dH1, dH3);
                }
            }
            dX = backend.allocate(DType.F32, Shape.of(rows, hidden));
            kernels.groupedMatmul(dH1, w1, off, dX, overwrite);                    // dX = dH1 · W1
            kernels.groupedMatmul(dH3, w3, off, dX, accumulate);                   //    + dH3 · W3
            return new InputGrad(dX, new WeightGrads(ctx, dY, dH1, dH3));
        } catch (RuntimeException e) {
            for (Buffer b : new Buffer[] {dH1, dH3, dX}) {
                if (b != null) {
                    b.close();
                }
            }
            ctx.close();
            throw e;
        }
    }

    /**
     * How a backward's weight gradients are reduced over its rows when not by the grouped kernel (see
     * {@link WeightGrads#reduce}), e.g. over the token-block tree of a replicated MLP
     * ({@link TokenBlockTree}).
     */
    @FunctionalInterface
    public interface WeightGradReduction {
        /**
         * Adds {@code Σ_rows a[row]ᵀ · b[row]} (over this backward's rows) to {@code grad}, now or
         * later, as the reduction decides.
         *
         * @param a    row operand {@code [rows, M]}
         * @param b    row operand {@code [rows, N]}
         * @param grad F32 {@code [groups, M, N]}, the gradient to add into
         * @param spec bf16 option of the experts ({@code accumulate} is set)
         */
        void accumulate(Buffer a, Buffer b, Buffer grad, GemmSpec spec);
    }

    /**
     * The weight half of one backward: {@link #apply()} adds {@code dW2 += dYᵀ·act},
     * {@code dW1 += dH1ᵀ·x}, {@code dW3 += dH3ᵀ·x}; {@link #close()} frees the intermediates and the
     * forward context.
     */
    public final class WeightGrads implements AutoCloseable {
        private final Context ctx;
        private final Buffer dY;
        private final Buffer dH1;
        private final Buffer dH3;
        private boolean applied;
        private boolean closed;

        private WeightGrads(Context ctx, Buffer dY, Buffer dH1, Buffer dH3) {
            this.ctx = ctx;
            this.dY = dY;
            this.dH1 = dH1;
            this.dH3 = dH3;
        }

        /**
         * Adds this batch's contribution to the weight gradients (once).
         *
         * @throws IllegalStateException if already applied or closed
         */
        public void apply() {
            if (closed || applied) {
                throw new IllegalStateException("GroupedExperts " + name + ": weight gradients already "
                        + (closed ? "closed" : "applied"));
            }
            applied = true;
            GemmSpec accumulate = new GemmSpec(true, compute == DType.BF16);
            Buffer off = ctx.groupOffsets();
            kernels.groupedWeightGrad(dY, ctx.act(), off, gw2, accumulate);    // dW2 += dYᵀ · act
            kernels.groupedWeightGrad(dH1, ctx.x(), off, gw1, accumulate);     // dW1 += dH1ᵀ · x
            kernels.groupedWeightGrad(dH3, ctx.x(), off, gw3, accumulate);     // dW3 += dH3ᵀ · x
            if (gb1 != null) {
                kernels.groupBiasGrad(dY, off, gb2);                            // db2 += Σ dY
                kernels.groupBiasGrad(dH1, off, gb1);                           // db1 += Σ dH1
                kernels.groupBiasGrad(dH3, off, gb3);                           // db3 += Σ dH3
            }
        }

        /**
         * Hands this batch's three weight-gradient operand pairs to {@code reduction} instead of adding
         * them with the grouped kernel (once; counts as applied): {@code (dY, act) → dW2},
         * {@code (dH1, x) → dW1}, {@code (dH3, x) → dW3}, in this order. Meant for one group (a dense
         * MLP such as the shared experts), whose rows are all of this backward's rows.
         *
         * @param reduction receives the operand pairs and the gradients to add them to
         * @throws IllegalStateException if already applied or closed
         * @throws NullPointerException  if {@code reduction} is null
         */
        public void reduce(WeightGradReduction reduction) {
            java.util.Objects.requireNonNull(reduction, "reduction");
            if (closed || applied) {
                throw new IllegalStateException("GroupedExperts " + name + ": weight gradients already "
                        + (closed ? "closed" : "applied"));
            }
            applied = true;
            GemmSpec accumulate = new GemmSpec(true, compute == DType.BF16);
            reduction.accumulate(dY, ctx.act(), gw2, accumulate);              // dW2 += dYᵀ · act
            reduction.accumulate(dH1, ctx.x(), gw1, accumulate);               // dW1 += dH1ᵀ · x
            reduction.accumulate(dH3, ctx.x(), gw3, accumulate);               // dW3 += dH3ᵀ · x
        }

        /** Frees the intermediates and the forward context; idempotent. */
        @Override
        public void close() {
            if (closed) {
                return;
            }
            closed = true;
            dH1.close();
            dH3.close();
            ctx.close();
        }
    }

    @Override
    public void close() {
        Handover.closeAll(w1, w3, w2, gw1, gw3, gw2, b1, b3, b2, gb1, gb3, gb2);
    }
}
