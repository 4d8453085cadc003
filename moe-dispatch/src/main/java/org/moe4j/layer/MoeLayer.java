package org.moe4j.layer;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Function;
import org.moe4j.checkpoint.Checkpoints;
import org.moe4j.checkpoint.LayerCheckpoint;
import org.moe4j.checkpoint.MoeNameMap;
import org.moe4j.core.DType;
import org.moe4j.core.ExclusiveUse;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.PooledBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferAllocator;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.core.buffer.Handover;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.LayerFeatures;
import org.moe4j.core.buffer.HostView;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.init.ParamInit;
import org.moe4j.dispatch.CombineGrads;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;
import org.moe4j.dispatch.Dispatcher;
import org.moe4j.dispatch.ReduceOp;
import org.moe4j.experts.ExpertKernels;
import org.moe4j.experts.GroupedExperts;
import org.moe4j.experts.SharedExperts;
import org.moe4j.optim.OptimizerKernels;
import org.moe4j.optim.Parameter;
import org.moe4j.routing.AuxLosses;
import org.moe4j.routing.ExpertBias;
import org.moe4j.routing.Router;
import org.moe4j.routing.RouterGrads;
import org.moe4j.routing.RouterOutput;
import org.moe4j.routing.RoutingKernels;

/**
 * One Mixture-of-Experts layer on one expert-parallel rank: router → dispatch → grouped SwiGLU
 * experts → combine, plus optional shared experts, forward and backward.
 *
 * <p>Expert parallelism: the layer runs on every rank of a {@link Communicator} group of size
 * {@code W = config.expertParallel()}; rank {@code r} owns experts {@code [r·E/W, (r+1)·E/W)}.
 * Tokens, the gate and the shared experts are per rank (data parallel): each rank feeds its own
 * tokens and holds a replica of the gate and shared experts. The global loss is the <b>sum</b> of
 * the ranks' losses plus the auxiliary losses once: routed-expert gradients arrive through the
 * dispatcher from every rank, and the replicated gradients are summed over every rank's tokens, so
 * every replica sees the same gradient and stays identical after an optimiser step. On a backend whose
 * expert kernels reduce over the token-block tree ({@link ExpertKernels#supportsTokenBlockTree()}: the
 * CPU and CUDA kernels) {@link #backward} does that sum itself, over the fixed tree of
 * {@link org.moe4j.experts.TokenBlockTree}, and {@link #reduceGradients()} has nothing left to do;
 * elsewhere backward adds this rank's part and {@link #reduceGradients()} all-reduces it in rank order.
 * The auxiliary losses (switch, sequence, z) are global means over all ranks' tokens: their values
 * are the same on every rank and for every {@code W}.
 *
 * <p>Expert bias (aux-loss-free balancing): each forward adds its pre-drop assignments per expert
 * to the bias' load; {@link #updateExpertBias()} applies one update. With
 * {@link Builder#syncReplicated(boolean) syncReplicated} (default on) the load is summed over the
 * ranks first, so every rank's bias stays identical; without it each rank balances its own load
 * and the replicas may drift apart.
 *
 * <p>Dispatch: the strategy named in {@link MoeConfig#dispatch()} (found through
 * {@link org.moe4j.dispatch.DispatcherProvider}); with {@code static-all-to-all} the group offsets stay
 * in the backend's memory and the dispatcher reads nothing back ({@link #dispatcher()}'s
 * {@code hostReads()}), with identical results whenever no static chunk overflows.
 *
 * <p>A training step per rank: {@code forward} → loss gradient → {@code backward} →
 * {@code reduceGradients()} → optimiser step → {@code zeroGrad()} → {@code updateExpertBias()}.
 * <b>Determinism across world sizes</b> (dropless routing, expert kernels with the token-block tree):
 * the whole training run —
 * outputs, input gradients, every parameter gradient, every weight after any number of optimiser
 * steps, the bias, the aux losses — is bitwise identical for any {@code W} and thread count that
 * split the same global batch (rank 0's tokens first), whenever every rank except the last holds a
 * multiple of {@link org.moe4j.experts.TokenBlockTree#BLOCK} tokens (with the sequence loss, also
 * whole sequences per rank). With expert kernels that lack the tree, replicated gradients agree
 * across {@code W} to fp32 rounding only.
 *
 * <p>All or nothing: {@link #forward} and {@link #backward} check every input they will use (null,
 * closed, dtype, shape, a context of another layer or one already consumed, an input closed since
 * the forward) before any state changes or any collective starts, and a failed call leaves the
 * layer as it was. A forward adds its expert load to the bias only once every collective of the
 * forward has succeeded, so a forward that fails on one rank (bad input, non-finite logits) leaves
 * no rank with a half-counted step: the other ranks' collectives fail and they keep their state too.
 * A backward whose input check fails leaves its context open, so it can be retried with a correct
 * {@code dY}.
 *
 * <p>Threading: a layer serves one thread at a time (normally its rank's thread). A call of
 * {@code forward}, {@code backward}, {@code reduceGradients}, {@code updateExpertBias} or
 * {@code zeroGrad} from a second thread while one of them is running throws
 * {@link org.moe4j.core.ConcurrentUseException} naming both calls; the refused call changes nothing.
 *
 * <p>Model-family variants ({@link MoeConfig#features()}, docs/experts.md): a router bias {@code [experts]}
 * added to the logits ({@code gate.bias}, gpt-oss), a sigmoid gate {@code [1, hidden]} on the shared experts
 * ({@code shared_expert_gate.weight}, Qwen2-MoE), routing weights applied to the expert inputs
 * (score before experts, Llama 4), and the experts' linear biases and clamped SwiGLU (gpt-oss, in
 * {@link GroupedExperts}). They need expert kernels with {@link ExpertKernels#supportsLayerFeatures()};
 * a backend without them is refused when the layer is built.
 *
 * <p>Memory: the layer's state (weights, gradients, router state) lives in the layer's own
 * {@link BufferScope} and is counted in the layer's {@link #allocator() allocator}, a child of the
 * allocator current when it was built. {@link #newScope()} opens a scope for one training step:
 * everything the step makes (the batch, {@code f.output()}, {@code dY}, {@code dX}, contexts) is
 * freed when it closes, so a loop of steps cannot leak:
 *
 * <pre>{@code
 * for (int step = 0; step < steps; step++) {
 *     try (BufferScope s = layer.newScope()) {
 *         Buffer x = nextBatch();
 *         MoeLayer.Forward f = layer.forward(x);
 *         Buffer dX = layer.backward(f.context(), lossGradient(f.output()));
 *         ...
 *     }
 * }
 * }</pre>
 *
 * Closing every buffer by hand keeps working. {@link #close()} frees the state and fails with
 * {@link org.moe4j.core.buffer.MemoryLeakException} if buffers made in the layer's step scopes and
 * {@linkplain BufferScope#keep kept} out of them are still live.
 */
public final class MoeLayer implements AutoCloseable {
    /** Init stream of the gate weight. */
    public static final long STREAM_GATE = 10;
    /** Init stream of the shared-expert gate weight ({@link LayerFeatures#sharedExpertGate()}). */
    public static final long STREAM_SHARED_GATE = 11;

    private final MoeConfig config;
    private final Communicator comm;
    private final PooledBackend backend; // the layer's own memory pool of the chosen backend
    private final boolean syncReplicated;
    private final Router router;
    private final Dispatcher dispatcher;
    private final GroupedExperts experts;
    private final SharedExperts shared; // null when config.sharedExperts() == 0
    private final Buffer gateWeight; // [experts, hidden]
    private final Buffer gateGrad;   // [experts, hidden]
    private final OptimizerKernels elementwise; // gradient accumulation on the layer's backend
    private final ExpertKernels featureKernels; // bias, row-scaling and slot kernels of the family variants
    private final RoutingKernels gateKernels;   // x·Wᵀ and its backward, for the router bias and the shared gate
    private final DispatchKernels dispatchKernels; // what requireSyncFreeStep asks about the static plans
    private final boolean ownExpertBias; // the router made the expert bias (else the builder's, host state)
    private final Buffer routerBias;      // [experts], null without features.routerBias
    private final Buffer routerBiasGrad;  // [experts]
    private final Buffer sharedGate;      // [1, hidden], null without features.sharedExpertGate
    private final Buffer sharedGateGrad;  // [1, hidden]
    private final BufferAllocator allocator; // counts the state and the step scopes' buffers
    private final BufferScope state; // owns the weights, gradients and router state
    /** The most token counts whose {@code [0, tokens]} table {@link #rowOffsets} keeps. */
    private static final int ROW_TABLES_KEPT = 8;
    private final Map<Object, Buffer> rowTables = new HashMap<>(); // guarded by itself; kept tables per token count
    private BufferScope rowTableScope; // guarded by rowTables; owns the tables of rowTables
    /**
     * Forward contexts not yet closed and {@link TableHold}s not yet released: they may use kept tables,
     * so none is freed while one is open.
     */
    private final java.util.concurrent.atomic.AtomicInteger tableHolds = new java.util.concurrent.atomic.AtomicInteger();
    /** Token-block-tree reduction of the replicated gradients, or null where the expert kernels lack it. */
    private final ReplicatedGradReduction replicated;
    /** Refuses overlapping calls from two threads. */
    private final ExclusiveUse use = new ExclusiveUse("MoeLayer");
    private volatile boolean closed;

    /**
     * Saved state of one forward, consumed by {@link #backward}. Owns intermediates; the input is
     * borrowed and must stay alive until backward.
     */
    public static final class Context implements AutoCloseable {
        private final MoeLayer owner;
        private final Buffer x;
        private final RouterOutput route;
        private final DispatchResult dispatch;
        private final Buffer uploadedOffsets; // null unless the strategy keeps its offsets on the host only
        private final GroupedExperts.Context expertCtx;
        private final Buffer expertOut;
        private final SharedExperts.Context sharedCtx;
        private Variant variant; // family-variant state, null for the plain layer
        private boolean closed;

        Context(MoeLayer owner, Buffer x, RouterOutput route, DispatchResult dispatch, Buffer uploadedOffsets,
                GroupedExperts.Context expertCtx, Buffer expertOut, SharedExperts.Context sharedCtx) {
            this.owner = owner;
            this.x = x;
            this.route = route;
            this.dispatch = dispatch;
            this.uploadedOffsets = uploadedOffsets;
            this.expertCtx = expertCtx;
            this.expertOut = expertOut;
            this.sharedCtx = sharedCtx;
            owner.tableHolds.incrementAndGet();
        }

        /**
         * Returns the routing result of this forward.
         * @return the routing result of this forward
         */
        public RouterOutput route() {
            return route;
        }

        /**
         * Returns the dispatch context of this forward.
         * @return the dispatch context of this forward
         */
        public DispatchResult dispatch() {
            return dispatch;
        }

        /**
         * Returns whether this context was closed (by {@link MoeLayer#backward} or {@link #close()}).
         * @return whether this context was closed (by {@link MoeLayer#backward} or {@link #close()})
         */
        public boolean isClosed() {
            return closed;
        }

        @Override
        public void close() {
            if (closed) {
                return;
            }
            closed = true;
            owner.tableHolds.decrementAndGet();
            // every part is closed even if one fails; later failures are attached as suppressed
            Handover.closeAll(route, dispatch, uploadedOffsets, expertOut, variant, sharedCtx, expertCtx);
        }
    }

    /**
     * Forward state of the family variants, owned by a {@link Context}; every field may be null.
     *
     * @param logits      router logits with the router bias, {@code [tokens, experts]}
     * @param sharedOut   shared-expert output before the gate, {@code [tokens, hidden]}
     * @param sharedLogit shared-expert gate logit {@code x·w_gate}, {@code [tokens, 1]}
     * @param slotIdx     score before experts: expert of each (token, slot) row, I32 {@code [tokens·topK, 1]}
     * @param slotOnes    score before experts: unit combine weights, {@code [tokens·topK, 1]}
     * @param scaledIn    score before experts: {@code w[t,k]·x[t]} per row, {@code [tokens·topK, hidden]}
     */
    private record Variant(Buffer logits, Buffer sharedOut, Buffer sharedLogit, Buffer slotIdx, Buffer slotOnes,
                           Buffer scaledIn) implements AutoCloseable {
        @Override
        public void close() {
            for (Buffer b : new Buffer[] {logits, sharedOut, sharedLogit, slotIdx, slotOnes, scaledIn}) {
                if (b != null) {
                    b.close();
                }
            }
        }
    }

    /**
     * Result of a forward.
     *
     * @param output          F32 {@code [tokens, hidden]} (caller closes)
     * @param context         state for backward
     * @param tokensPerExpert this rank's assignments per global expert after drops
     * @param dropped         assignments dropped by the capacity limit on this rank
     * @param auxLosses       auxiliary losses of the global batch (the same on every rank when
     *                        {@code syncReplicated}, else of this rank's tokens); backward adds the
     *                        gradient of this rank's tokens, so over the ranks they count once
     */
    public record Forward(Buffer output, Context context, int[] tokensPerExpert, long dropped, AuxLosses auxLosses) {
        /**
         * Returns this rank's assignments per global expert after drops. With sync-free routing
         * ({@link Router#syncFree()}) the counts stay on the device until this is called: the call
         * then reads them (one host read, raising a pending non-finite-logits error first) and needs
         * the context still open (before backward).
         *
         * @return this rank's assignments per global expert after drops
         * @throws IllegalStateException    if the counts are on the device and the context is closed
         * @throws IllegalArgumentException if a deferred non-finite-logits error is pending
         */
        @Override
        public int[] tokensPerExpert() {
            return tokensPerExpert != null ? tokensPerExpert.clone() : context.route().tokensPerExpert().toIntArray();
        }
    }

    private MoeLayer(Builder b) {
        this.config = b.config;
        this.comm = b.comm;
        this.syncReplicated = b.syncReplicated;
        Backend chosen = Backends.backendFor(b.backend != null ? b.backend : Backends.selected(), RoutingKernels.class,
                DispatchKernels.class, ExpertKernels.class, OptimizerKernels.class);
        if (comm.size() != config.expertParallel()) {
            throw new IllegalArgumentException("MoeLayer: communicator has " + comm.size()
                    + " ranks but config.expertParallel=" + config.expertParallel());
        }
        ExpertKernels ek = b.expertKernels != null ? b.expertKernels : Backends.kernels(ExpertKernels.class, chosen);
        // every group-offset table the layer hands its expert kernels is its own (the dispatcher's, or one group
        // [0, tokens]), valid by construction: the variant that never reads them back; injected kernels as given
        ExpertKernels trusted = b.expertKernels != null ? ek : ek.offsetsCheckedOnDevice();
        LayerFeatures lf = config.features();
        if (lf.any() && !ek.supportsLayerFeatures()) {
            throw new IllegalArgumentException("MoeLayer: config.features=" + lf + " need expert kernels with"
                    + " layer-feature support; " + ek.getClass().getSimpleName() + " on backend " + chosen.name()
                    + " has none (supportsLayerFeatures() is false)");
        }
        // kernels are looked up before the state scope is entered: they are process-wide, not the layer's
        RoutingKernels rk = Backends.kernels(RoutingKernels.class, chosen);
        DispatchKernels dk = Backends.kernels(DispatchKernels.class, chosen);
        this.elementwise = Backends.kernels(OptimizerKernels.class, chosen);
        this.featureKernels = trusted;
        this.gateKernels = rk;
        this.dispatchKernels = dk;
        this.ownExpertBias = b.expertBias == null;
        this.backend = chosen.newPool("MoeLayer rank " + comm.rank()); // device memory: reported on close
        this.allocator = BufferAllocator.current().newChild("MoeLayer rank " + comm.rank());
        this.state = BufferScope.detached("MoeLayer rank " + comm.rank() + " state", allocator);
        this.rowTableScope = BufferScope.detached("MoeLayer rank " + comm.rank() + " row tables", allocator);
        try (BufferScope.Activation _ = state.enter()) {
            this.router = buildRouter(b, rk);
            this.dispatcher = Dispatcher.create(DispatchConfig.from(config).withForceBalanced(b.forceBalanced), comm,
                    backend, dk);
            int local = config.localExperts();
            // the routed experts only ever see the dispatcher's own group offsets: checked on the device, never read back
            this.experts = new GroupedExperts("experts", local, comm.rank() * local, config.hidden(), config.ffn(),
                    config.expertDtype(), b.seed, GroupedExperts.STREAM_ROUTED, backend, trusted, lf);
            this.shared = config.sharedExperts() > 0
                    ? new SharedExperts(config.hidden(), config.sharedFfnTotal(), config.expertDtype(), b.seed, backend,
                            trusted)
                    : null;
            // the token-block tree covers every replicated parameter: the gate and its bias, the shared experts
            // and their gate (docs/training.md)
            this.replicated = b.tokenBlockTree && ek.supportsTokenBlockTree()
                    ? new ReplicatedGradReduction(comm, syncReplicated, backend, ek, this::keptTable) : null;
            if (replicated != null && staticEqualShapes()) {
                replicated.assumeEqualTokens(); // the dispatcher refuses a step where the ranks' [T, K] differ
            }
            this.gateWeight = backend.allocate(DType.F32, Shape.of(config.experts(), config.hidden()));
            this.gateGrad = backend.allocate(DType.F32, Shape.of(config.experts(), config.hidden()));
            ParamInit.fillUniform(gateWeight, b.seed, STREAM_GATE, 0, ParamInit.linearBound(config.hidden()));
            this.routerBias = lf.routerBias() ? zeroed(Shape.of(config.experts())) : null;
            this.routerBiasGrad = lf.routerBias() ? zeroed(Shape.of(config.experts())) : null;
            this.sharedGate = lf.sharedExpertGate() ? backend.allocate(DType.F32, Shape.of(1, config.hidden())) : null;
            this.sharedGateGrad = lf.sharedExpertGate() ? zeroed(Shape.of(1, config.hidden())) : null;
            if (sharedGate != null) {
                ParamInit.fillUniform(sharedGate, b.seed, STREAM_SHARED_GATE, 0, ParamInit.linearBound(config.hidden()));
            }
        } catch (RuntimeException e) {
            try {
                Handover.closeAll(backend, allocator, state); // nothing half-made outlives a failed build
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    private Router buildRouter(Builder b, RoutingKernels rk) {
        Router.Builder rb = Router.builder(config).backend(backend).kernels(rk).forceBalanced(b.forceBalanced);
        if (b.expertBias != null) {
            rb.expertBias(b.expertBias);
        }
        if (syncReplicated && comm.size() > 1) {
            rb.statsExchange(new GlobalBalanceStats(comm, backend)); // aux losses over the global batch
        }
        rb.accumulateLoad(false); // forward adds the load itself once every collective succeeded
        return rb.build();
    }

    /**
     * Opens a scope for one training step: every buffer made on this thread until it closes (the
     * batch, outputs, gradients, contexts) is freed then, unless {@linkplain BufferScope#keep kept};
     * they are counted in this layer's {@link #allocator()}. Scopes nest.
     *
     * @return the open scope; close it with try-with-resources
     * @throws org.moe4j.core.buffer.BufferClosedException if the layer is closed
     */
    public BufferScope newScope() {
        return BufferScope.open("MoeLayer rank " + comm.rank() + " step", allocator);
    }

    /**
     * Returns the allocator counting this layer's state and the buffers of its step scopes.
     * @return the allocator counting this layer's state and the buffers of its step scopes
     */
    public BufferAllocator allocator() {
        return allocator;
    }

    private Buffer zeroed(Shape shape) {
        Buffer z = backend.allocate(DType.F32, shape);
        z.zero();
        return z;
    }

    /**
     * I32 {@code [2]} = {@code {0, rows}}, the one group of the family kernels' bias and bias-gradient
     * calls and of the shared experts: uploaded once per token count into a table the layer keeps (do
     * not close it), so a step after warm-up uploads nothing for it. At most {@value #ROW_TABLES_KEPT}
     * token counts are kept; a new one beyond that frees them all first (stream-ordered, after the
     * work queued on them), unless a forward context is open (it may hold one until its backward).
     */
    private Buffer rowOffsets(long rows) {
        return keptTable(rows, () -> HostBuffer.ofInts(new int[] {0, Math.toIntExact(rows)}, 2));
    }

    /**
     * A constant table the layer keeps in its backend's memory under {@code key} (do not close it): made
     * from {@code values} (closed here) on first use, so a step after warm-up uploads nothing for it
     * (a step captured as a CUDA graph reads it at every replay). The tables of at most
     * {@value #ROW_TABLES_KEPT} keys are kept; a new one beyond that frees them all first
     * (stream-ordered, after the work queued on them), unless a forward context or a {@link TableHold}
     * is open.
     */
    private Buffer keptTable(Object key, java.util.function.Supplier<HostBuffer> values) {
        synchronized (rowTables) {
            Buffer kept = rowTables.get(key);
            if (kept != null) {
                return kept;
            }
            if (rowTables.size() >= ROW_TABLES_KEPT && tableHolds.get() == 0) {
                rowTableScope.close();
                rowTables.clear();
                rowTableScope = BufferScope.detached("MoeLayer rank " + comm.rank() + " row tables", allocator);
            }
            try (HostBuffer h = values.get();
                 BufferScope.Activation _ = rowTableScope.enter()) { // owned by the layer, not the caller's scope
                Buffer made = backend.upload(h); // staged: the table is made on the host, once per key
                rowTables.put(key, made);
                return made;
            }
        }
    }

    /**
     * Keeps the layer's per-token-count tables alive until {@link #close()}: while a hold is open the
     * layer frees none of them, however many token counts it sees (it keeps more instead). Taken by
     * whoever keeps work that reads them beyond one call, e.g. a CUDA graph that captured a step.
     */
    public final class TableHold implements AutoCloseable {
        private boolean released;

        private TableHold() {
            tableHolds.incrementAndGet();
        }

        /** Releases the hold (idempotent); the tables are freed later, when the layer needs room. */
        @Override
        public synchronized void close() {
            if (!released) {
                released = true;
                tableHolds.decrementAndGet();
            }
        }
    }

    /**
     * Holds the layer's kept tables (the {@code {0, tokens}} offsets, the token-block tree's leaf
     * bounds) so that none is freed until the hold is closed: for work that reads them after the call
     * that made them returned, such as a step captured as a CUDA graph.
     *
     * @return the hold; close it when that work is gone
     * @throws IllegalStateException if the layer is closed
     */
    public TableHold holdTables() {
        if (closed) {
            throw new IllegalStateException("MoeLayer.holdTables: the layer is closed");
        }
        return new TableHold();
    }

    /**
     * Returns a builder.
     * @param config the layer config ({@code expertParallel} must equal the group size)
     * @param comm   this rank's communicator
     * @return a builder
     */
    public static Builder builder(MoeConfig config, Communicator comm) {
        return new Builder(config, comm);
    }

    /** Builder of {@link MoeLayer}. */
    public static final class Builder {
        private final MoeConfig config;
        private final Communicator comm;
        private long seed = 0;
        private boolean syncReplicated = true;
        private boolean tokenBlockTree = true;
        private Backend backend;
        private ExpertKernels expertKernels;
        private ExpertBias expertBias;
        private boolean forceBalanced;

        private Builder(MoeConfig config, Communicator comm) {
            this.config = Objects.requireNonNull(config, "config");
            this.comm = Objects.requireNonNull(comm, "comm");
        }

        /**
         * Sets {@code seed}: init seed (same on every rank).
         * @param v init seed (same on every rank)
         * @return this
         */
        public Builder seed(long v) {
            seed = v;
            return this;
        }

        /**
         * Sets {@code syncReplicated}: sum replicated gradients and the bias load over the ranks, and
         * evaluate the aux losses over the global batch (default true).
         * @param v sum replicated gradients and the bias load over the ranks, and evaluate the aux losses
         *          over the global batch (default true)
         * @return this
         */
        public Builder syncReplicated(boolean v) {
            syncReplicated = v;
            return this;
        }

        /**
         * Sets {@code tokenBlockTree}: reduce the gradients of every replicated parameter over the fixed
         * token-block tree in {@code backward} (default true).
         * @param v reduce the gradients of the replicated parameters (gate and router bias, shared experts and
         *          their gate) over the fixed token-block tree in
         *          {@code backward} where the expert kernels support it (default true: bitwise independent
         *          of the world size, see the class comment); false keeps per-rank sums that
         *          {@link MoeLayer#reduceGradients()} all-reduces in rank order (equal across world sizes to
         *          fp32 rounding only; one grouped GEMM per weight instead of one per token block)
         * @return this
         */
        public Builder tokenBlockTree(boolean v) {
            tokenBlockTree = v;
            return this;
        }

        /**
         * Sets {@code backend}: backend that allocates buffers.
         * @param v backend that allocates buffers
         * @return this
         */
        public Builder backend(Backend v) {
            backend = v;
            return this;
        }

        /**
         * Sets {@code expertKernels}: expert kernels to use.
         * @param v expert kernels to use, exactly as given (the layer does not switch them to
         *          their {@link ExpertKernels#offsetsCheckedOnDevice()} variant)
         * @return this
         */
        public Builder expertKernels(ExpertKernels v) {
            expertKernels = v;
            return this;
        }

        /**
         * Sets {@code expertBias}: expert-bias state to use.
         * @param v expert-bias state to use
         * @return this
         */
        public Builder expertBias(ExpertBias v) {
            expertBias = v;
            return this;
        }

        /**
         * Sets {@code forceBalanced}: force-balanced routing (benchmarks): slot {@code t*K+k} goes to expert {@code (t*K+k) mod E} whatever the scores (weights still come from the scores); the static-shape dispatch then moves no padding (default false).
         * @param v force-balanced routing (benchmarks): slot {@code t*K+k} goes to expert
         *          {@code (t*K+k) mod E} whatever the scores (weights still come from the scores); the
         *          static-shape dispatch then moves no padding (default false)
         * @return this
         */
        public Builder forceBalanced(boolean v) {
            forceBalanced = v;
            return this;
        }

        /**
         * Returns the layer.
         * @return the layer
         */
        public MoeLayer build() {
            return new MoeLayer(this);
        }
    }

    /**
     * Returns the config.
     * @return the config
     */
    public MoeConfig config() {
        return config;
    }

    /**
     * Returns the router.
     * @return the router (built without load accumulation: the layer's {@link #forward} adds the load
     *         to the bias once the whole forward succeeded)
     */
    public Router router() {
        return router;
    }

    /**
     * Returns the dispatcher of this rank (the strategy configured in {@link MoeConfig#dispatch()}).
     * @return the dispatcher of this rank (the strategy configured in {@link MoeConfig#dispatch()})
     */
    public Dispatcher dispatcher() {
        return dispatcher;
    }

    /**
     * Returns the routed experts of this rank.
     * @return the routed experts of this rank
     */
    public GroupedExperts experts() {
        return experts;
    }

    /**
     * Returns the shared experts, or null.
     * @return the shared experts, or null
     */
    public SharedExperts sharedExperts() {
        return shared;
    }

    /**
     * Returns the gate weight F32 {@code [experts, hidden]}.
     * @return the gate weight F32 {@code [experts, hidden]}
     */
    public Buffer gateWeight() {
        return gateWeight;
    }

    /**
     * Returns the router bias (gpt-oss).
     *
     * @return the router bias F32 {@code [experts]} added to the logits, or null without {@code features.routerBias}
     */
    public Buffer routerBias() {
        return routerBias;
    }

    /**
     * Returns the shared-expert gate weight (Qwen2-MoE).
     *
     * @return the shared-expert gate weight F32 {@code [1, hidden]}, or null without
     *         {@code features.sharedExpertGate}
     */
    public Buffer sharedExpertGate() {
        return sharedGate;
    }

    /**
     * Returns the expert-bias state.
     *
     * @return the expert-bias state
     */
    public ExpertBias expertBias() {
        return router.expertBias();
    }

    /**
     * Returns the communicator.
     * @return the communicator
     */
    public Communicator communicator() {
        return comm;
    }

    /**
     * Forward of this rank's tokens; a collective (all ranks call it). Adds the pre-drop load per
     * expert to the expert bias only after every collective of the forward succeeded.
     *
     * @param x F32 {@code [tokens, hidden]}: this rank's tokens (borrowed until backward)
     * @return output, context and statistics; the output and the context's buffers belong to the
     *         active {@link BufferScope} (if any) and are counted in {@link #allocator()}
     * @throws NullPointerException       if {@code x} is null
     * @throws IllegalArgumentException   if {@code x} is closed, not F32, not {@code [tokens, hidden]},
     *                                    or gives non-finite router logits; nothing changed
     * @throws org.moe4j.dispatch.CommunicatorException if a collective fails (e.g. another rank's
     *                                    forward failed); nothing changed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this layer
     * @throws IllegalStateException      if the layer is closed
     */
    public Forward forward(Buffer x) {
        enter("forward");
        try (BufferScope.Activation _ = allocator.use()) { // what forward makes is counted in this layer
            return forwardUnguarded(x);
        } finally {
            use.exit();
        }
    }

    private Forward forwardUnguarded(Buffer x) {
        Objects.requireNonNull(x, "MoeLayer.forward: x");
        requireOpen("MoeLayer.forward", "x", x);
        if (x.shape().rank() != 2) {
            throw new IllegalArgumentException("MoeLayer.forward: x must be F32 [tokens, hidden=" + config.hidden()
                    + "] but is " + x.dtype() + " " + x.shape());
        }
        x.require("MoeLayer.forward: x", DType.F32, x.shape().dim(0), config.hidden());
        LayerFeatures lf = config.features();
        long tokens = x.shape().dim(0);
        Buffer logits = null;
        RouterOutput route;
        if (routerBias != null) {
            logits = backend.allocate(DType.F32, Shape.of(tokens, config.experts()));
            try {
                Buffer whole = rowOffsets(tokens); // kept by the layer
                gateKernels.gateLogits(x, gateWeight, logits);
                featureKernels.addGroupBias(logits, routerBias, whole);
                route = router.forwardLogits(logits);
            } catch (RuntimeException e) {
                logits.close();
                throw e;
            }
        } else {
            route = router.forward(x, gateWeight);
        }
        DispatchResult d = null;
        Buffer off = null;
        GroupedExperts.Result ex = null;
        SharedExperts.Result sh = null;
        Buffer slotIdx = null;
        Buffer slotOnes = null;
        Buffer scaledIn = null;
        Buffer sharedLogit = null;
        Buffer sharedOut = null;
        try {
            if (lf.scoreBeforeExperts()) {
                // one row per (token, slot): w[t,k]·x[t], routed top-1 with unit weight; the combine
                // returns E(w·x) per row and the slots are summed below
                int k = config.topK();
                scaledIn = backend.allocate(DType.F32, Shape.of(tokens * k, config.hidden()));
                featureKernels.scaleExpand(x, route.topkWeights(), scaledIn);
                try (HostBuffer idx = route.topkIdx().toHost(); HostBuffer ones = HostBuffer.allocate(DType.F32, tokens * k, 1)) {
                    slotIdx = backend.upload(idx.reshape(tokens * k, 1)); // staged: a [tokens·K, 1] view of topkIdx
                    for (long i = 0; i < tokens * k; i++) {
                        ones.setFloat(i, 1f);
                    }
                    slotOnes = backend.upload(ones);
                }
                d = dispatcher.dispatch(scaledIn, slotIdx, slotOnes);
            } else {
                d = dispatcher.dispatch(x, route.topkIdx(), route.topkWeights());
            }
            Buffer deviceOffsets = d.groupOffsetsBuffer(); // owned by d; null unless the strategy keeps them there
            if (deviceOffsets == null) {
                int[] offsets = d.groupOffsets();
                try (HostBuffer h = HostBuffer.ofInts(offsets, offsets.length)) {
                    off = backend.upload(h); // staged: this strategy reports the offsets on the host only
                }
            }
            ex = experts.forward(d.expertInput(), deviceOffsets != null ? deviceOffsets : off);
            Buffer out = dispatcher.combine(d, ex.output());
            if (lf.scoreBeforeExperts()) {
                try (Buffer perSlot = out) {
                    out = backend.allocate(DType.F32, Shape.of(tokens, config.hidden()));
                    featureKernels.sumSlots(perSlot, config.topK(), out);
                }
            }
            if (shared != null) {
                sh = shared.forward(x, rowOffsets(tokens)); // {0, tokens}: the table the layer keeps
                if (sharedGate != null) {
                    sharedOut = sh.output();
                    sharedLogit = backend.allocate(DType.F32, Shape.of(tokens, 1));
                    gateKernels.gateLogits(x, sharedGate, sharedLogit);
                    featureKernels.rowScaleForward(sharedLogit, true, sharedOut, out, true);
                } else {
                    addInto(out, sh.output());
                    sh.output().close();
                }
            }
            int[] tpe = router.syncFree() ? null : route.tokensPerExpert().toIntArray(); // sync-free: read on request
            Context ctx = new Context(this, x, route, d, off, ex.context(), ex.output(), sh == null ? null : sh.context());
            if (lf.any()) {
                ctx.variant = new Variant(logits, sharedOut, sharedLogit, slotIdx, slotOnes, scaledIn);
            }
            Forward f = new Forward(out, ctx, tpe, route.dropped(), route.auxLosses());
            router.accumulateLoad(route); // last: every collective succeeded
            return f;
        } catch (RuntimeException e) {
            try {
                Context ctx = new Context(this, x, route, d, off, ex == null ? null : ex.context(),
                        ex == null ? null : ex.output(), sh == null ? null : sh.context());
                ctx.variant = new Variant(logits, sharedOut, sharedLogit, slotIdx, slotOnes, scaledIn);
                ctx.close();
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    /** Enters a guarded call: refuses a second thread, then a closed layer. */
    private void enter(String call) {
        use.enter(call);
        if (closed) {
            use.exit();
            throw new IllegalStateException("MoeLayer." + call + ": the layer is closed");
        }
    }

    private static void requireOpen(String where, String name, Buffer b) {
        if (b.isClosed()) {
            throw new IllegalArgumentException(where + ": " + name + " is closed");
        }
    }

    /**
     * Backward of one forward: returns {@code dX} and adds the gate, expert and shared-expert
     * gradients. With the token-block tree (see the class comment) the gradients of the replicated
     * parameters (gate, router bias, shared experts, shared-expert gate) added are already summed over
     * every rank's tokens (when {@code syncReplicated}); else they are this rank's part (see
     * {@link #reduceGradients()}). Closes the context. A collective: all ranks call it.
     *
     * <p>Every input is checked first; if a check fails nothing changed and the context stays open
     * (the call may be repeated with a correct {@code dY}).
     *
     * @param ctx the forward context
     * @param dY  F32 {@code [tokens, hidden]} gradient of the output
     * @return F32 {@code [tokens, hidden]} (caller closes, or the active {@link BufferScope} does)
     * @throws NullPointerException     if {@code ctx} or {@code dY} is null
     * @throws IllegalArgumentException if {@code ctx} came from another layer or is closed, the forward
     *                                  input {@code x} was closed since the forward, or {@code dY} is
     *                                  closed, not F32 or not {@code [tokens, hidden]}
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this layer
     * @throws IllegalStateException    if the layer is closed
     */
    public Buffer backward(Context ctx, Buffer dY) {
        enter("backward");
        try (BufferScope.Activation _ = allocator.use()) { // dX is counted in this layer
            return backwardUnguarded(ctx, dY);
        } finally {
            use.exit();
        }
    }

    private Buffer backwardUnguarded(Context ctx, Buffer dY) {
        Objects.requireNonNull(ctx, "MoeLayer.backward: ctx");
        Objects.requireNonNull(dY, "MoeLayer.backward: dY");
        if (ctx.owner != this) {
            throw new IllegalArgumentException("MoeLayer.backward: ctx was produced by another MoeLayer");
        }
        if (ctx.closed) {
            throw new IllegalArgumentException("MoeLayer.backward: ctx is closed (a context is consumed by one backward)");
        }
        requireOpen("MoeLayer.backward", "x (the forward input, borrowed until backward)", ctx.x);
        requireOpen("MoeLayer.backward", "dY", dY);
        long tokens = ctx.x.shape().dim(0);
        if (dY.dtype() != DType.F32 || !dY.shape().equals(Shape.of(tokens, config.hidden()))) {
            throw new IllegalArgumentException("MoeLayer.backward: dY must be F32 " + Shape.of(tokens, config.hidden())
                    + " but is " + dY.dtype() + " " + dY.shape());
        }
        try (ctx) {
            Buffer dX = null;
            Buffer dXs = null;
            GroupedExperts.WeightGrads pending = null;
            GroupedExperts.WeightGrads sharedPending = null;
            ReplicatedGradReduction.Plan plan = null;
            List<ReplicatedGradReduction.Gathered> gathered = new ArrayList<>(); // replicated gradients, in order:
            List<Buffer> targets = new ArrayList<>();                            // gate, shared down/gate/up_proj
            Variant v = ctx.variant;
            boolean before = config.features().scoreBeforeExperts();
            Buffer dCombined = null; // score before experts: dY per (token, slot) row
            Buffer dTopk = null;     // score before experts: gradient of the routing weights
            Buffer dS = null;        // gated shared expert: gradient of the ungated shared output
            Buffer dLogit = null;    // gated shared expert: gradient of its gate logit
            RuntimeException failure = null;
            try {
                if (before) {
                    dCombined = backend.allocate(DType.F32, Shape.of(tokens * config.topK(), config.hidden()));
                    featureKernels.scaleExpand(dY, v.slotOnes(), dCombined);
                }
                if (sharedGate != null) {
                    dS = backend.allocate(DType.F32, Shape.of(tokens, config.hidden()));
                    dLogit = backend.allocate(DType.F32, Shape.of(tokens, 1));
                    featureKernels.rowScaleBackward(v.sharedLogit(), true, v.sharedOut(), dY, dS, dLogit);
                }
            try (CombineGrads cg = dispatcher.combineBackward(ctx.dispatch, before ? dCombined : dY)) {
                GroupedExperts.InputGrad ig = experts.backwardInput(ctx.expertCtx, cg.dExpertOutput());
                pending = ig.weightGrads();
                try (Buffer dExpIn = ig.dX()) {
                    Buffer dIn = dispatcher.dispatchBackward(ctx.dispatch, dExpIn);
                    if (before) {
                        try (dIn) {
                            dX = backend.allocate(DType.F32, Shape.of(tokens, config.hidden()));
                            dTopk = backend.allocate(DType.F32, Shape.of(tokens, config.topK()));
                            featureKernels.scaleExpandBackward(ctx.x, ctx.route.topkWeights(), dIn, dX, dTopk);
                        }
                    } else {
                        dX = dIn;
                    }
                }
                try (RouterGrads rg = router.backward(ctx.route, before ? dTopk : cg.dTopkWeights(), replicated == null)) {
                    if (shared != null) {
                        GroupedExperts.InputGrad sg = shared.mlp().backwardInput(ctx.sharedCtx.inner(),
                                sharedGate != null ? dS : dY);
                        sharedPending = sg.weightGrads();
                        dXs = sg.dX();
                    }
                    if (replicated != null) {
                        // the token-block tree's collectives: token counts, then every rank's node values
                        plan = replicated.plan(tokens);
                        gathered.add(replicated.gather(plan, rg.dLogits(), ctx.x, false)); // dGate = dLogitsᵀ · x
                        targets.add(gateGrad);
                        if (routerBias != null) {
                            gathered.add(replicated.gatherSum(plan, rg.dLogits())); // dBias = Σ_t dLogits[t]
                            targets.add(routerBiasGrad);
                        }
                        if (sharedPending != null) {
                            ReplicatedGradReduction.Plan p = plan;
                            sharedPending.reduce((a, b, grad, spec) -> {
                                gathered.add(replicated.gather(p, a, b, spec.bf16Operands()));
                                targets.add(grad);
                            });
                        }
                        if (sharedGate != null) {
                            gathered.add(replicated.gather(plan, dLogit, ctx.x, false)); // dGateₛ = dLogitᵀ · x
                            targets.add(sharedGateGrad);
                        }
                    }
                    // Every collective of this backward has succeeded; only now does any gradient change, so
                    // a collective that fails (another rank failed) leaves this rank's gradients untouched.
                    pending.apply();
                    if (routerBias != null) { // routed from logits with the bias: the gate backward is done here
                        boolean local = replicated == null; // else the tree above reduced the weight and bias
                        try (Buffer dXr = backend.allocate(DType.F32, Shape.of(tokens, config.hidden()));
                             Buffer dW = local ? backend.allocate(DType.F32, Shape.of(config.experts(), config.hidden())) : null) {
                            gateKernels.gateBackward(ctx.x, gateWeight, rg.dLogits(), dXr, dW);
                            addInto(dX, dXr);
                            if (local) {
                                addInto(gateGrad, dW);
                                featureKernels.groupBiasGrad(rg.dLogits(), rowOffsets(tokens), routerBiasGrad);
                            }
                        }
                    } else {
                        addInto(dX, rg.dX());
                    }
                    if (replicated == null) {
                        if (routerBias == null) {
                            addInto(gateGrad, rg.dGateWeight());
                        }
                        if (sharedPending != null) {
                            sharedPending.apply();
                        }
                    } else {
                        for (int i = 0; i < gathered.size(); i++) {
                            if (gathered.get(i) != null) {
                                gathered.get(i).addTo(targets.get(i));
                            }
                        }
                    }
                    if (dXs != null) {
                        addInto(dX, dXs);
                    }
                    if (sharedGate != null) {
                        boolean local = replicated == null; // else the tree above reduced its gradient
                        try (Buffer dXg = backend.allocate(DType.F32, Shape.of(tokens, config.hidden()));
                             Buffer dG = local ? backend.allocate(DType.F32, Shape.of(1, config.hidden())) : null) {
                            gateKernels.gateBackward(ctx.x, sharedGate, dLogit, dXg, dG);
                            addInto(dX, dXg);
                            if (local) {
                                addInto(sharedGateGrad, dG);
                            }
                        }
                    }
                }
            }
            } catch (RuntimeException e) {
                failure = e;
                if (dX != null) {
                    try {
                        dX.close();
                    } catch (RuntimeException closing) {
                        e.addSuppressed(closing);
                    }
                }
                throw e;
            } finally {
                List<AutoCloseable> scratch = new ArrayList<>(java.util.Arrays.asList(pending, sharedPending, dXs, plan,
                        dCombined, dTopk, dS, dLogit));
                scratch.addAll(gathered);
                RuntimeException closing = null;
                for (AutoCloseable c : scratch) {
                    try {
                        closeQuietly(c);
                    } catch (RuntimeException e) {
                        if (closing == null) {
                            closing = e;
                        } else {
                            closing.addSuppressed(e);
                        }
                    }
                }
                if (closing != null) { // a failure already on its way out keeps its place: the close is attached
                    if (failure == null) {
                        throw closing;
                    }
                    failure.addSuppressed(closing);
                }
            }
            return dX;
        }
    }

    private static void closeQuietly(AutoCloseable c) {
        if (c == null) {
            return;
        }
        try {
            c.close();
        } catch (Exception e) {
            throw new IllegalStateException("MoeLayer.backward: closing " + c, e);
        }
    }

    private void addInto(Buffer acc, Buffer add) {
        elementwise.accumulate(acc, add);
    }

    /**
     * Sums the gradients of the replicated parameters (gate and its bias, shared experts and their gate) over
     * the ranks, in rank order, when {@code syncReplicated} is on and the backend has no token-block tree (a no-op
     * otherwise: {@link #backward} has then already reduced them over the global batch, bitwise
     * independently of the world size). Call once per optimiser step, after the last backward. A
     * collective when it does something; calling it on every rank is always correct.
     */
    public void reduceGradients() {
        enter("reduceGradients");
        try {
            if (!syncReplicated || comm.size() == 1 || replicated != null) {
                return; // with the token-block tree, backward already reduced them over the ranks
            }
            comm.allReduce(gateGrad, ReduceOp.SUM);
            if (routerBiasGrad != null) {
                comm.allReduce(routerBiasGrad, ReduceOp.SUM);
            }
            if (shared != null) {
                for (Parameter p : shared.parameters()) {
                    comm.allReduce(p.grad(), ReduceOp.SUM);
                }
                if (sharedGateGrad != null) {
                    comm.allReduce(sharedGateGrad, ReduceOp.SUM);
                }
            }
        } finally {
            use.exit();
        }
    }

    /**
     * Applies one expert-bias update from the load accumulated since the last one (summed over the
     * ranks when {@code syncReplicated} is on). A collective when syncing.
     *
     * @return the load per expert used for the update
     */
    public long[] updateExpertBias() {
        enter("updateExpertBias");
        try {
            return updateExpertBiasUnguarded(true);
        } finally {
            use.exit();
        }
    }

    /**
     * {@link #updateExpertBias()} without returning the load: with sync-free routing
     * ({@link Router#syncFree()}) the load is summed over the ranks and the bias stepped on the device
     * with no device→host read, so this call can be part of a captured step. A collective when syncing.
     */
    public void stepExpertBias() {
        enter("stepExpertBias");
        try {
            updateExpertBiasUnguarded(false);
        } finally {
            use.exit();
        }
    }

    /** The static-shape dispatch without chunkRows: every rank dispatches the same [tokens, topK]. */
    private boolean staticEqualShapes() {
        return config.dispatch().strategy().equals(DispatchOptions.STATIC_ALL_TO_ALL) && config.dispatch().chunkRows() == 0;
    }

    /**
     * Checks that one training step of this layer (forward, backward, {@link #reduceGradients()},
     * {@link #stepExpertBias()}) makes no device→host read, as a CUDA graph capture of the step needs;
     * the optimiser's own step is the optimiser's to check. Sync-free needs: the
     * {@code static-all-to-all} dispatch strategy with dispatch kernels that build its plans on the
     * device, sync-free routing ({@link Router#syncFree()}: dropless, no auxiliary losses, an expert
     * bias made by the layer, routing kernels with device statistics), no
     * {@code features.scoreBeforeExperts}, and with W &gt; 1 and the token-block tree, no
     * {@code chunkRows} (the ranks' token counts are then known to be equal). Reads nothing.
     *
     * @throws IllegalStateException naming the first configured option that needs a host read and
     *                               what to configure instead
     */
    public void requireSyncFreeStep() {
        String why = syncFreeBlocker();
        if (why != null) {
            throw new IllegalStateException("MoeLayer step is not host-sync-free: " + why);
        }
    }

    private String syncFreeBlocker() {
        String strategy = config.dispatch().strategy();
        if (!strategy.equals(DispatchOptions.STATIC_ALL_TO_ALL)) {
            return "dispatch strategy '" + strategy + "' exchanges per-rank counts through the host every step;"
                    + " configure dispatch=" + DispatchOptions.STATIC_ALL_TO_ALL;
        }
        if (!dispatchKernels.staticPlansOnDevice()) {
            return dispatchKernels.getClass().getSimpleName() + " builds the static-shape dispatch plans through"
                    + " host staging (DispatchKernels.staticPlansOnDevice() is false)";
        }
        if (config.features().scoreBeforeExperts()) {
            return "features.scoreBeforeExperts stages the top-k indices through the host every forward";
        }
        if (!config.capacity().dropless()) {
            return "capacity " + config.capacity() + " drops over a capacity counted on the host; configure a"
                    + " dropless capacity (the static dispatch has its own overflow policy)";
        }
        if (config.auxLoss().any()) {
            return "auxLoss " + config.auxLoss() + " is computed on the host every forward; configure no auxiliary"
                    + " losses (use expertBiasCoeff for aux-loss-free balancing)";
        }
        if (!ownExpertBias) {
            return "MoeLayer.Builder.expertBias supplied host-resident bias state; let the layer make its own";
        }
        if (!router.syncFree()) {
            return "routing kernels " + gateKernels.getClass().getSimpleName() + " keep the router statistics on the"
                    + " host and check non-finite logits eagerly (RoutingKernels.deviceStatistics() is false)";
        }
        if (replicated != null && comm.size() > 1 && syncReplicated && !staticEqualShapes()) {
            return "dispatch.chunkRows=" + config.dispatch().chunkRows() + " lets the ranks' token counts differ, so"
                    + " the token-block tree all-gathers them through the host; configure chunkRows=0";
        }
        return null;
    }

    /**
     * Raises a non-finite-logits error that sync-free routing deferred (one host read of the router's
     * device flag; a no-op when the router checks eagerly), and clears it. Call it where a step's
     * result is read anyway, e.g. every N steps or after a replayed graph.
     *
     * @throws IllegalArgumentException naming the lowest bad token of the first flagged step; flagged
     *                                  steps added no expert-bias load
     * @throws IllegalStateException    if the layer is closed
     */
    public void checkStep() {
        enter("checkStep");
        try {
            router.checkStep();
        } finally {
            use.exit();
        }
    }

    private long[] updateExpertBiasUnguarded(boolean returnLoad) {
        ExpertBias bias = router.expertBias();
        if (bias.onDevice()) {
            if (syncReplicated && comm.size() > 1) {
                comm.allReduce(bias.deviceLoad(), ReduceOp.SUM); // in place: update() steps from the summed load
            }
            long[] load = returnLoad ? bias.load() : null; // the only host read, when asked for
            bias.update();
            return load;
        }
        long[] load = bias.load();
        if (syncReplicated && comm.size() > 1) {
            try (Buffer b = backend.allocate(DType.I64, Shape.of(load.length))) { // the communicator's memory
                try (HostView v = b.hostView(HostView.Mode.WRITE)) {
                    for (int i = 0; i < load.length; i++) {
                        v.host().segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, i, load[i]);
                    }
                }
                comm.allReduce(b, ReduceOp.SUM);
                try (HostView v = b.hostView(HostView.Mode.READ)) {
                    for (int i = 0; i < load.length; i++) {
                        load[i] = v.host().getLong(i);
                    }
                }
            }
        }
        bias.update(load);
        return load;
    }

    /**
     * Returns the trainable parameters.
     *
     * @return gate weight, router bias (if any), routed experts, shared experts and their gate (if any),
     *         each with its gradient
     */
    public List<Parameter> parameters() {
        List<Parameter> out = new ArrayList<>();
        out.add(new Parameter("gate.weight", gateWeight, gateGrad));
        if (routerBias != null) {
            out.add(new Parameter("gate.bias", routerBias, routerBiasGrad));
        }
        out.addAll(experts.parameters());
        if (shared != null) {
            out.addAll(shared.parameters());
            if (sharedGate != null) {
                out.add(new Parameter("shared_expert_gate.weight", sharedGate, sharedGateGrad));
            }
        }
        return out;
    }

    /**
     * Returns whether {@link #close()} was called.
     * @return true after {@link #close()}
     */
    public boolean isClosed() {
        return closed;
    }

    /** Zeroes every gradient. */
    public void zeroGrad() {
        enter("zeroGrad");
        try {
            gateGrad.zero();
            if (routerBiasGrad != null) {
                routerBiasGrad.zero();
            }
            if (sharedGateGrad != null) {
                sharedGateGrad.zero();
            }
            experts.zeroGrad();
            if (shared != null) {
                shared.zeroGrad();
            }
        } finally {
            use.exit();
        }
    }

    /**
     * This rank's parameters with Hugging Face DeepSeek-V3 names: {@code gate.weight},
     * {@code experts.{i}.gate_proj/up_proj/down_proj.weight} (global {@code i}, local experts only),
     * {@code shared_experts.*}; with the family variants also {@code gate.bias} and
     * {@code shared_expert_gate.weight} (expert linear biases have no per-expert names: they travel
     * through {@link #export}/{@link #load(java.nio.file.Path, String, MoeNameMap, LayerCheckpoint.Options)}
     * with the gpt-oss map; other families' names: {@link MoeNameMap}). The expert bias is not included (it is not a parameter; see
     * {@link #expertBias()}). On a host backend the entries are live views; on a device backend they
     * are host snapshots taken now (writing them does not change the layer; use {@link #load}).
     *
     * @param prefix e.g. {@code mlp.} or {@code model.layers.3.mlp.}
     * @return name → host buffer
     */
    public Map<String, HostBuffer> namedTensors(String prefix) {
        return namedTensors(prefix, new IdentityHashMap<>(), true); // the views stay open: host memory or snapshots
    }

    /**
     * @param views    filled with parameter → host view of it (the parameter's own memory, or a
     *                 staged copy for device memory); the caller closes or abandons the views
     * @param download whether staged copies get the parameter's current values (else they are
     *                 written and uploaded on close)
     */
    private Map<String, HostBuffer> namedTensors(String prefix, Map<Buffer, HostView> views, boolean download) {
        Function<Buffer, HostBuffer> host = p -> views.computeIfAbsent(p,
                d -> d.hostView(download ? HostView.Mode.READ : HostView.Mode.WRITE)).host();
        Map<String, HostBuffer> out = new LinkedHashMap<>();
        out.put(prefix + "gate.weight", host.apply(gateWeight));
        if (routerBias != null) {
            out.put(prefix + "gate.bias", host.apply(routerBias));
        }
        out.putAll(Checkpoints.expertTensors(experts, prefix, host));
        if (shared != null) {
            out.putAll(Checkpoints.sharedTensors(shared, prefix, host));
            if (sharedGate != null) {
                out.put(prefix + "shared_expert_gate.weight", host.apply(sharedGate));
            }
        }
        return out;
    }

    /**
     * Loads this rank's tensors (and the expert bias) with DeepSeek-V3 names; all or nothing. Same as
     * {@link #load(java.nio.file.Path, String, MoeNameMap, LayerCheckpoint.Options)} with
     * {@link MoeNameMap#deepseekV3()} (plus {@code gate.bias} and {@code shared_expert_gate.weight} for
     * layers with those variants, as {@link #save} writes them, and the per-expert
     * {@code experts.{e}.gate_up_proj.bias} / {@code down_proj.bias} of the training state for layers
     * with expert linear biases) and strict options.
     *
     * @param path   a safetensors file, a {@code model.safetensors.index.json}, or a checkpoint directory
     * @param prefix e.g. {@code model.layers.3.mlp.}
     * @throws org.moe4j.checkpoint.CheckpointException on a bad file; the layer is then unchanged
     */
    public void load(java.nio.file.Path path, String prefix) {
        load(path, prefix, LayerCheckpointing.stateNames(this), LayerCheckpoint.Options.strict());
    }

    /**
     * Loads this rank's tensors from a Hugging Face checkpoint (sharded through its index or a single
     * file), in a family's names; all or nothing. Only the shards holding this rank's tensors are
     * opened and only its own experts' bytes are read; F32/BF16/F16, FP8 E4M3 with block scales and
     * MXFP4 are dequantised into the layer's dtypes. Every tensor is checked (present, shape, dtype,
     * finite values) and decoded into host staging buffers before the first parameter is written.
     * The expert bias is set from the family's score-correction bias, or to zero when the family has
     * none. On a device backend the staged values are uploaded at the end. A collective: all ranks
     * call it, and a status all-reduce before the commit makes a failure on any rank a failure on
     * every rank, with no rank changed.
     *
     * @param path    a checkpoint directory, its index, or one safetensors file
     * @param prefix  the MoE block's prefix, e.g. {@code model.layers.3.mlp.}
     * @param names   the family's name map ({@link MoeNameMap#forModelType(String)})
     * @param options what to accept (non-finite values, tensors under the prefix the layer does not read)
     * @throws IllegalArgumentException on a null argument or a layer tensor the family cannot supply
     * @throws org.moe4j.checkpoint.CheckpointException naming the file and tensor at fault (on the other
     *                                                  ranks: naming the failing rank and its message);
     *                                                  the layer is then unchanged
     * @throws IllegalStateException if the layer is closed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this layer
     */
    public void load(java.nio.file.Path path, String prefix, MoeNameMap names, LayerCheckpoint.Options options) {
        enter("load");
        try {
            LayerCheckpointing.load(this, path, prefix, names, options);
        } finally {
            use.exit();
        }
    }

    /**
     * Exports the layer as a Hugging Face sharded checkpoint in {@code dir}, written once across the
     * ranks: rank {@code r} writes {@code model-<id>-<r+1>-of-<W>.safetensors} (a save id the ranks
     * agree on) with its experts (rank 0 also the router, the bias where the family has one, and the
     * shared experts), each file crash-safe; after every rank's shard is durable, rank 0 writes
     * {@code model.safetensors.index.json} from the shards' headers. The index is the commit point: a
     * failed export leaves an earlier one in {@code dir} intact, and a successful one deletes the
     * shards of earlier exports that its index does not list. A collective: all ranks call it. Fused-expert families (Llama 4,
     * gpt-oss) store every expert in one tensor: at W &gt; 1 the ranks fill one shared shard in place,
     * each writing its experts' slices.
     *
     * @param dir    destination directory (created if missing)
     * @param prefix the MoE block's prefix, e.g. {@code model.layers.3.mlp.}
     * @param names  the family's name map
     * @param dtype  file dtype: BF16 (HF's usual) or F32 (bitwise round trip of fp32 weights)
     * @throws IllegalArgumentException on a null or non-float argument, or a layer tensor the family
     *                                  cannot store
     * @throws org.moe4j.checkpoint.CheckpointException when any rank fails to write (no index is written)
     * @throws IllegalStateException if the layer is closed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this layer
     */
    public void export(java.nio.file.Path dir, String prefix, MoeNameMap names, DType dtype) {
        enter("export");
        try {
            LayerCheckpointing.export(this, dir, prefix, names, dtype);
        } finally {
            use.exit();
        }
    }

    /**
     * Saves everything a training step depends on, for an exact resume: fp32 weights, the optimiser's
     * moments and step count and options, the expert bias and every rank's accumulated load, the
     * config and the caller's step, as {@code moe4j-state-<id>-<r+1>-of-<W>.safetensors} shards plus
     * {@code moe4j-state.safetensors.index.json} (written as {@link #export} writes). Routed-expert
     * state is stored per global expert, so it can be resumed at another W when saved right after
     * {@link #updateExpertBias()}. A collective.
     *
     * @param dir       destination directory (created if missing)
     * @param optimizer the optimiser over {@link #parameters()}
     * @param step      the caller's step counter, returned by {@link #loadTrainingState}
     * @throws IllegalArgumentException if the optimiser does not hold this layer's parameters, or step &lt; 0
     * @throws org.moe4j.checkpoint.CheckpointException on write failure on any rank
     * @throws IllegalStateException if the layer is closed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this layer
     */
    public void saveTrainingState(java.nio.file.Path dir, org.moe4j.optim.AdamW optimizer, long step) {
        enter("saveTrainingState");
        try {
            LayerCheckpointing.saveState(this, dir, optimizer, step);
        } finally {
            use.exit();
        }
    }

    /**
     * Restores what {@link #saveTrainingState} saved, all or nothing: the config must match (except
     * {@code expertParallel}); at another W the saved loads must be empty. A collective: if any rank
     * fails (its shard, its optimiser), every rank throws and no rank is changed.
     *
     * @param dir       the directory holding {@code moe4j-state.safetensors.index.json}
     * @param optimizer the optimiser over {@link #parameters()} (its moments, steps and options are replaced)
     * @return the saved step
     * @throws IllegalArgumentException if the optimiser does not hold this layer's parameters
     * @throws org.moe4j.checkpoint.CheckpointException naming what is missing or inconsistent; nothing
     *                                                  is then changed
     * @throws IllegalStateException if the layer is closed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this layer
     */
    public long loadTrainingState(java.nio.file.Path dir, org.moe4j.optim.AdamW optimizer) {
        enter("loadTrainingState");
        try {
            return LayerCheckpointing.loadState(this, dir, optimizer);
        } finally {
            use.exit();
        }
    }

    /** Whether replicated gradients and the bias load are summed over the ranks ({@link Builder#syncReplicated}). */
    boolean syncReplicated() {
        return syncReplicated;
    }

    /**
     * Sums small counters over the ranks (a collective; every rank gets the sums).
     *
     * @param values this rank's values
     * @return the element-wise sums over the ranks
     */
    long[] sumOverRanks(long[] values) {
        if (comm.size() == 1) {
            return values.clone();
        }
        long[] out = values.clone();
        try (HostBuffer h = HostBuffer.allocate(DType.I64, out.length)) {
            for (int i = 0; i < out.length; i++) {
                h.segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, i, out[i]);
            }
            try (Buffer b = backend.upload(h)) { // staged: the communicator works in the backend's memory
                comm.allReduce(b, ReduceOp.SUM);
                b.copyTo(h);
            }
            for (int i = 0; i < out.length; i++) {
                out[i] = h.getLong(i);
            }
        }
        return out;
    }

    /**
     * Saves this rank's tensors (for W &gt; 1, each rank writes its own file holding its experts).
     * On a device backend the parameters are downloaded to host mirrors first.
     *
     * @param path   destination
     * @param prefix e.g. {@code model.layers.3.mlp.}
     * @throws IllegalArgumentException for a layer with expert linear biases (use {@link #export} with the
     *                                  gpt-oss map, or {@link #saveTrainingState})
     */
    public void save(java.nio.file.Path path, String prefix) {
        if (experts.b1() != null) { // refused before anything is written
            throw new IllegalArgumentException("MoeLayer.save: expert linear biases (config.features.expertLinearBias)"
                    + " are not among the tensors save writes; use export with MoeNameMap.forModelType(\"gpt_oss\")"
                    + " (W = 1) or saveTrainingState");
        }
        Map<Buffer, HostView> views = new IdentityHashMap<>();
        try (HostBuffer bias = HostBuffer.ofFloats(router.expertBias().values(), config.experts())) {
            Map<String, HostBuffer> t = namedTensors(prefix, views, true);
            t.put(prefix + "gate.e_score_correction_bias", bias);
            Checkpoints.save(path, t, Map.of("format", "pt", "producer", "moe4j"));
        } finally {
            Handover.closeAll(views.values().toArray(HostView[]::new)); // read-only: nothing is uploaded
        }
    }

    /**
     * Frees the layer's state (weights, gradients, router state) and closes its allocator and its
     * device memory pool (see {@link Backend#newPool}); idempotent. Any later call of {@code forward},
     * {@code backward}, {@code reduceGradients}, {@code updateExpertBias} or {@code zeroGrad} throws
     * {@link IllegalStateException}.
     *
     * @throws org.moe4j.core.buffer.MemoryLeakException if host buffers this layer made (or its step
     *                                                  scopes counted) are still live (they are freed first)
     * @throws IllegalStateException {@code memory leaked} if device buffers of the layer's pool are still live
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this layer
     */
    @Override
    public void close() {
        use.enter("close");
        try {
            if (closed) {
                return;
            }
            closed = true;
            Handover.closeAll(backend, allocator, state, router, gateGrad, gateWeight, sharedGateGrad, sharedGate,
                    routerBiasGrad, routerBias, shared, experts, rowTableScope); // under use, as rowOffsets
        } finally {
            use.exit();
        }
    }
}
