package org.moe4j.routing;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.ExclusiveUse;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.backend.Scratch;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.buffer.HostView;
import org.moe4j.core.config.AuxLoss;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.routing.internal.CpuRoutingKernels;

/**
 * Token-choice top-k router (torchtitan {@code TokenChoiceTopKRouter}, DeepSeek-V3 {@code noaux_tc}).
 *
 * <p>Per token: {@code logits = x · Wgᵀ} (fp32), {@code scores = softmax|sigmoid(logits)},
 * selection on {@code scores + expertBias}, optionally restricted to the best
 * {@code limitedGroups} of {@code expertGroups} groups (group score: top-2 sum or max), top-k with
 * ties to the lower expert index, weights {@code = scores[topkIdx]} (optionally divided by their sum
 * + 1e-20) times {@code routeScale}. Then an optional capacity limit drops assignments, and the
 * configured auxiliary losses are evaluated. {@link #backward} differentiates
 * {@code Σ dTopkWeights · topkWeights + auxLosses.total()} with respect to the logits and, when the
 * forward started from hidden states, {@code x} and the gate weight.
 *
 * <p>Each forward adds its pre-drop assignments per expert to the {@link ExpertBias} load (unless
 * disabled in the builder); the caller decides when to {@link ExpertBias#update()}.
 * A failed call leaves the bias and its load unchanged.
 *
 * <p>Sync-free routing ({@link #syncFree()}): on kernels with
 * {@linkplain RoutingKernels#deviceStatistics() device statistics}, a dropless config without
 * auxiliary losses and an expert bias made by this router, a forward makes no device→host read. The
 * counts per expert, the load and the bias stay on the device (the bias is stepped by a kernel), and
 * the non-finite-logits check is deferred: the first bad token index is kept in a device flag, a step
 * that raised it (and every later one until it is reported) adds no load, and the error is thrown,
 * as {@link IllegalArgumentException} naming the token, by the next {@link #checkStep()} or host read
 * of the step's statistics ({@link RouterOutput#tokensPerExpert()}), which also clears the flag.
 * Everywhere else (the CPU backend included) the check is eager: the forward itself throws.
 *
 * <p>Threading: one router serves one thread at a time (it reuses its output memory). A call from a
 * second thread while {@code forward}, {@code forwardLogits}, {@code backward}, {@code checkStep} or
 * {@code accumulateLoad} is running throws
 * {@link org.moe4j.core.ConcurrentUseException} naming both calls and changes nothing.
 */
public final class Router implements AutoCloseable {
    /**
     * Tokens per segment of the batch-wide balance statistics (the switch and z losses, and the
     * sequence loss over the whole batch). Equal to the token block of the layer's reduction tree, so
     * the statistics of a batch split over ranks are the same segments as on one rank.
     */
    public static final int STATS_BLOCK = 64;

    private final MoeConfig config;
    private final RouteParams params;
    private final RoutingKernels kernels;
    private final Backend backend;
    private final ExpertBias expertBias;
    private final boolean accumulateLoad;
    private final BalanceStats.Exchange statsExchange; // null: the losses are over this router's tokens only
    /** Reused memory of the forward outputs, given back by {@link RouterOutput#close()}. */
    private final Scratch scratch;
    private final boolean ownsExpertBias;
    /** Refuses a call from a second thread while one is running (the scratch use is per call). */
    private final ExclusiveUse use = new ExclusiveUse("Router");
    /** Sync-free routing: the statistics stay on the device and the non-finite check is deferred. */
    private final boolean syncFree;
    /** Sync-free routing: I32 [1] device flag, the lowest non-finite token index or MAX_VALUE (else null). */
    private final Buffer firstBad;

    private Router(Builder b) {
        this.config = b.config;
        this.params = RouteParams.of(b.config, b.forceBalanced);
        if (b.expertBias != null && b.expertBias.experts() != config.experts()) {
            throw new IllegalArgumentException("Router: expertBias has " + b.expertBias.experts()
                    + " experts but the config has " + config.experts());
        }
        if (b.kernels != null) {
            this.kernels = b.kernels;
            this.backend = b.backend != null ? b.backend : new CpuBackend();
        } else if (b.parallel != null) {
            // explicit CPU kernels on a thread pool: host memory
            this.kernels = new CpuRoutingKernels(b.parallel);
            this.backend = b.backend != null ? b.backend : new CpuBackend();
        } else {
            // the backend that runs the routing kernels: the chosen one, or the CPU when it has none
            this.backend = Backends.backendFor(b.backend != null ? b.backend : Backends.selected(), RoutingKernels.class);
            this.kernels = Backends.kernels(RoutingKernels.class, backend);
        }
        this.ownsExpertBias = b.expertBias == null;
        this.expertBias = b.expertBias != null ? b.expertBias : ExpertBias.of(b.config);
        this.accumulateLoad = b.accumulateLoad;
        this.statsExchange = b.statsExchange;
        this.syncFree = kernels.deviceStatistics() && ownsExpertBias && config.capacity().dropless()
                && !config.auxLoss().any();
        Buffer flag = null;
        if (syncFree) {
            try (HostBuffer clear = HostBuffer.ofInts(new int[] {Integer.MAX_VALUE}, 1)) {
                flag = backend.upload(clear);
                expertBias.moveToDevice(backend, kernels);
            } catch (RuntimeException e) {
                if (flag != null) {
                    flag.close();
                }
                expertBias.close();
                throw e;
            }
        }
        this.firstBad = flag;
        this.scratch = backend.newScratch();
    }

    /**
     * Returns whether forwards make no device→host read (see the class comment for when, and for
     * the deferred non-finite-logits contract).
     * @return whether this router routes without host synchronisation
     */
    public boolean syncFree() {
        return syncFree;
    }

    /**
     * Raises a non-finite-logits error deferred by sync-free routing (one host read of the device
     * flag; a no-op otherwise), and clears it.
     *
     * @throws IllegalArgumentException naming the lowest bad token of the first flagged step; the
     *                                  flagged steps added no load to the expert bias
     */
    public void checkStep() {
        use.enter("checkStep");
        try {
            raisePendingError("Router.checkStep");
        } finally {
            use.exit();
        }
    }

    /** Throws the pending deferred error, if any, and clears the flag. */
    void raisePendingError(String where) {
        if (!syncFree) {
            return;
        }
        int bad;
        try (HostBuffer h = firstBad.toHost()) {
            bad = h.getInt(0);
        }
        if (bad == Integer.MAX_VALUE) {
            return;
        }
        try (HostBuffer clear = HostBuffer.ofInts(new int[] {Integer.MAX_VALUE}, 1)) {
            firstBad.copyFrom(clear);
        }
        throw new IllegalArgumentException(where + ": router logits of token " + bad + " were not finite (NaN or Inf)"
                + " in a step since the last check; that step and the later ones added no load to the expert bias");
    }

    /**
     * Adds the pre-drop assignments per expert of one forward to the expert-bias load: on the device
     * without a host read when {@link #syncFree()} (nothing is added while a non-finite-logits error
     * is pending), else from the host counts. For callers that built the router with
     * {@code accumulateLoad(false)} and add the load once the rest of their step succeeded.
     *
     * @param out a forward result of this router, not closed
     * @throws IllegalArgumentException if {@code out} came from another router or is closed
     */
    public void accumulateLoad(RouterOutput out) {
        use.enter("accumulateLoad");
        try {
            accumulateLoadUnguarded(out);
        } finally {
            use.exit();
        }
    }

    private void accumulateLoadUnguarded(RouterOutput out) {
        Objects.requireNonNull(out, "out");
        if (out.router() != this || out.isClosed()) {
            throw new IllegalArgumentException("Router.accumulateLoad: out is " + (out.isClosed() ? "closed"
                    : "from another router"));
        }
        if (syncFree) {
            expertBias.accumulate(out.tokensPerExpertBuffer(), firstBad);
        } else {
            expertBias.accumulate(out.selectedPerExpert());
        }
    }

    /**
     * Drops the reused forward memory and closes the expert bias this router made (one passed to the
     * builder stays open). Open outputs stay valid. Idempotent.
     */
    @Override
    public void close() {
        scratch.close();
        if (firstBad != null) {
            firstBad.close();
        }
        if (ownsExpertBias) {
            expertBias.close();
        }
    }

    /**
     * A router with the selected backend's kernels and a fresh zero {@link ExpertBias}.
     *
     * @param config the layer config
     */
    public Router(MoeConfig config) {
        this(builder(config));
    }

    /**
     * Returns a builder for injecting kernels, threads, backend, expert bias or force-balanced mode.
     * @param config the layer config
     * @return a builder for injecting kernels, threads, backend, expert bias or force-balanced mode
     */
    public static Builder builder(MoeConfig config) {
        return new Builder(config);
    }

    /**
     * Returns the config.
     * @return the config
     */
    public MoeConfig config() {
        return config;
    }

    /**
     * Returns the selection parameters.
     * @return the selection parameters
     */
    public RouteParams params() {
        return params;
    }

    /**
     * Returns the expert-bias state used for selection.
     * @return the expert-bias state used for selection
     */
    public ExpertBias expertBias() {
        return expertBias;
    }

    /**
     * Returns the kernels in use.
     * @return the kernels in use
     */
    public RoutingKernels kernels() {
        return kernels;
    }

    /**
     * Routes from hidden states.
     *
     * @param x          F32 or BF16 {@code [tokens, hidden]}
     * @param gateWeight F32 {@code [experts, hidden]}
     * @return the routing result; keeps references to {@code x} and {@code gateWeight} for backward
     * @throws IllegalArgumentException on wrong dtypes or shapes, or non-finite logits (naming the first bad token)
     */
    public RouterOutput forward(Buffer x, Buffer gateWeight) {
        return forward(x, gateWeight, null);
    }

    /**
     * Routes from hidden states with a padding mask.
     *
     * @param x           F32 or BF16 {@code [tokens, hidden]}
     * @param gateWeight  F32 {@code [experts, hidden]}
     * @param paddingMask I32 {@code [tokens]}, 0 = padding (routes nowhere, no load, no loss), or null
     * @return the routing result
     * @throws IllegalArgumentException on wrong dtypes or shapes, or non-finite logits (naming the first bad token)
     */
    public RouterOutput forward(Buffer x, Buffer gateWeight, Buffer paddingMask) {
        use.enter("forward");
        try {
            return forwardUnguarded(x, gateWeight, paddingMask);
        } finally {
            use.exit();
        }
    }

    private RouterOutput forwardUnguarded(Buffer x, Buffer gateWeight, Buffer paddingMask) {
        Objects.requireNonNull(x, "x");
        Objects.requireNonNull(gateWeight, "gateWeight");
        requireOpen("Router.forward", "x", x);
        if (x.dtype() != DType.F32 && x.dtype() != DType.BF16) {
            throw new IllegalArgumentException("Router.forward: x must be F32 or BF16 but is " + x.dtype());
        }
        if (x.shape().rank() != 2 || x.shape().dim(1) != config.hidden()) {
            throw new IllegalArgumentException("Router.forward: x must be [tokens, hidden=" + config.hidden()
                    + "] but is " + x.shape());
        }
        requireExact("Router.forward", "gateWeight", gateWeight, DType.F32, config.experts(), config.hidden());
        int tokens = x.shape().dimInt(0);
        List<Buffer> leases = new ArrayList<>();
        Buffer logits = output(leases, DType.F32, Shape.of(tokens, config.experts()));
        try {
            kernels.gateLogits(x, gateWeight, logits);
            return route(logits, true, x, gateWeight, paddingMask, leases);
        } catch (RuntimeException e) {
            releaseAll(leases);
            throw e;
        }
    }

    /**
     * Routes from precomputed logits.
     *
     * @param logits F32 {@code [tokens, experts]}
     * @return the routing result (keeps a reference to {@code logits})
     * @throws IllegalArgumentException on wrong dtype or shape, or non-finite logits (naming the first bad token)
     */
    public RouterOutput forwardLogits(Buffer logits) {
        return forwardLogits(logits, null);
    }

    /**
     * Routes from precomputed logits with a padding mask.
     *
     * @param logits      F32 {@code [tokens, experts]}
     * @param paddingMask I32 {@code [tokens]}, 0 = padding, or null
     * @return the routing result (keeps a reference to {@code logits})
     * @throws IllegalArgumentException on wrong dtype or shape, or non-finite logits (naming the first bad token)
     */
    public RouterOutput forwardLogits(Buffer logits, Buffer paddingMask) {
        use.enter("forwardLogits");
        try {
            return forwardLogitsUnguarded(logits, paddingMask);
        } finally {
            use.exit();
        }
    }

    private RouterOutput forwardLogitsUnguarded(Buffer logits, Buffer paddingMask) {
        Objects.requireNonNull(logits, "logits");
        requireOpen("Router.forwardLogits", "logits", logits);
        if (logits.dtype() != DType.F32 || logits.shape().rank() != 2 || logits.shape().dim(1) != config.experts()) {
            throw new IllegalArgumentException("Router.forwardLogits: logits must be F32 [tokens, experts="
                    + config.experts() + "] but is " + logits.dtype() + " " + logits.shape());
        }
        return route(logits, false, null, null, paddingMask, new ArrayList<>());
    }

    /**
     * A forward output that the kernels overwrite completely: backend scratch memory, given back by
     * {@link RouterOutput#close()}.
     */
    private Buffer output(List<Buffer> leases, DType dtype, Shape shape) {
        Buffer b = scratch.take(dtype, shape);
        leases.add(b);
        return b;
    }

    void releaseAll(List<Buffer> leases) {
        for (Buffer b : leases) {
            scratch.give(b);
        }
        leases.clear();
    }

    private static void requireExact(String where, String name, Buffer b, DType dtype, long... dims) {
        Objects.requireNonNull(b, name);
        requireOpen(where, name, b);
        if (b.dtype() != dtype || !b.shape().equals(Shape.of(dims))) {
            throw new IllegalArgumentException(where + ": " + name + " must be " + dtype + " " + Shape.of(dims)
                    + " but is " + b.dtype() + " " + b.shape());
        }
    }

    private static void requireOpen(String where, String name, Buffer b) {
        if (b.isClosed()) {
            throw new IllegalArgumentException(where + ": " + name + " is closed");
        }
    }

    private RouterOutput route(Buffer logits, boolean ownsLogits, Buffer x, Buffer gate, Buffer paddingMask,
            List<Buffer> leases) {
        int tokens = logits.shape().dimInt(0);
        int experts = config.experts();
        int k = config.topK();
        String where = ownsLogits ? "Router.forward" : "Router.forwardLogits";
        if (paddingMask != null) {
            requireExact(where, "paddingMask", paddingMask, DType.I32, tokens);
        }
        AuxLoss aux = config.auxLoss();
        int seqLength = aux.seqLength() == 0 ? Math.max(tokens, 1) : aux.seqLength();
        if (aux.seqCoeff() != 0 && tokens % seqLength != 0) {
            throw new IllegalArgumentException(where + ": tokens=" + tokens + " is not a multiple of auxLoss.seqLength="
                    + aux.seqLength());
        }
        List<Buffer> owned = new ArrayList<>();
        try {
            Buffer scores = output(leases, DType.F32, Shape.of(tokens, experts));
            Buffer selected = output(leases, DType.I32, Shape.of(tokens, k));
            Buffer weights = output(leases, DType.F32, Shape.of(tokens, k));
            Buffer lse = aux.zCoeff() != 0 ? output(leases, DType.F32, Shape.of(tokens)) : null;
            if (syncFree) {
                Buffer counts = track(owned, backend.allocate(DType.I32, Shape.of(experts))); // zeroed
                kernels.routeDeferred(params, logits, expertBias.buffer(), paddingMask, scores, selected, weights, lse,
                        counts, firstBad);
                RouterOutput out = new RouterOutput(this, tokens, x, gate, logits, scores, selected, selected, weights,
                        lse, counts, null, null, -1, 0, AuxLosses.NONE, null, Math.max(tokens, 1), 0f, leases);
                if (accumulateLoad) {
                    expertBias.accumulate(counts, firstBad); // last: nothing above may fail after this
                }
                return out;
            }
            int bad;
            Buffer staged = stagedBias();
            try {
                bad = kernels.route(params, logits, staged, paddingMask, scores, selected, weights, lse);
            } finally {
                scratch.give(staged);
            }
            if (bad >= 0) {
                throw new IllegalArgumentException(where + ": router logits of token " + bad
                        + " are not finite (NaN or Inf)" + (ownsLogits ? "; check x and gateWeight" : ""));
            }
            HostBuffer selCounts = track(owned, HostBuffer.allocate(DType.I32, experts)); // a host table by contract
            kernels.countTokens(selected, selCounts);
            int[] selectedPerExpert = selCounts.toIntArray();
            long assignments = 0;
            for (int c : selectedPerExpert) {
                assignments += c;
            }
            int valid = (int) (assignments / k);
            Buffer topkIdx = selected;
            HostBuffer tokensPerExpert = selCounts;
            long dropped = 0;
            if (!config.capacity().dropless()) {
                int capacity = config.capacity().perExpert(valid, k, experts);
                topkIdx = track(owned, backend.allocate(DType.I32, Shape.of(tokens, k)));
                dropped = kernels.dropOverCapacity(selected, scores, capacity, config.capacity().policy(), topkIdx,
                        weights);
                tokensPerExpert = track(owned, HostBuffer.allocate(DType.I32, experts));
                kernels.countTokens(topkIdx, tokensPerExpert);
            }
            AuxResult ar = auxLosses(tokens, scores, selected, lse, owned);
            if (tokensPerExpert != selCounts) {
                owned.remove(selCounts);
                selCounts.close(); // the pre-drop counts are no longer needed
            }
            RouterOutput out = new RouterOutput(this, tokens, x, gate, logits, scores, selected, topkIdx, weights, lse,
                    tokensPerExpert, tokensPerExpert, selectedPerExpert, valid, dropped, ar.losses, ar.grad, ar.segmentLength, ar.zGrad,
                    leases);
            if (accumulateLoad) {
                expertBias.accumulate(selectedPerExpert); // last: nothing above may fail after this
            }
            return out;
        } catch (RuntimeException e) {
            releaseAll(leases);
            for (Buffer b : owned) {
                b.close();
            }
            throw e;
        }
    }

    /**
     * The expert bias where the kernels read it: a scratch buffer of the backend written through
     * {@link Buffer#hostView} (in place on the CPU, an upload of E floats on a device); the caller
     * gives it back. The bias is host state, updated once per step.
     */
    private Buffer stagedBias() {
        Buffer b = scratch.take(DType.F32, Shape.of(config.experts()));
        try (HostView v = b.hostView(HostView.Mode.WRITE)) {
            float[] values = expertBias.values();
            v.host().copyFrom(values);
        } catch (RuntimeException e) {
            scratch.give(b);
            throw e;
        }
        return b;
    }

    private static <B extends Buffer> B track(List<Buffer> owned, B b) {
        owned.add(b);
        return b;
    }

    private record AuxResult(AuxLosses losses, HostBuffer grad, int segmentLength, float zGrad) {
    }

    /**
     * The auxiliary losses and their gradient tables. With a {@link BalanceStats.Exchange} every
     * statistic is over the whole global batch (all ranks' segments folded in global order, global
     * token and sequence counts), so the values and gradients mean the same for any number of ranks;
     * the exchange runs on every rank, also one without valid tokens.
     */
    private AuxResult auxLosses(int tokens, Buffer scores, Buffer selected, Buffer lse, List<Buffer> owned) {
        AuxLoss aux = config.auxLoss();
        int wholeBatch = Math.max(tokens, 1);
        if (!aux.any()) {
            return new AuxResult(AuxLosses.NONE, null, wholeBatch, 0f);
        }
        int experts = config.experts();
        int k = config.topK();
        boolean perSequence = aux.seqCoeff() != 0 && aux.seqLength() > 0;
        BalanceStats batch = aux.switchCoeff() != 0 || aux.zCoeff() != 0 || (aux.seqCoeff() != 0 && !perSequence)
                ? global(stats(scores, selected, lse, STATS_BLOCK)) : null;
        BalanceStats seqLocal = perSequence ? stats(scores, selected, lse, aux.seqLength()) : null;
        BalanceStats seqAll = perSequence ? global(seqLocal) : null;
        long n = 0;
        for (int v : (batch != null ? batch : seqAll).valid()) {
            n += v;
        }
        if (n == 0) {
            return new AuxResult(AuxLosses.NONE, null, wholeBatch, 0f);
        }
        double[] count = new double[experts]; // over the whole batch
        double[] probSum = new double[experts];
        double lseSq = 0;
        if (batch != null) {
            for (int sIdx = 0; sIdx < batch.segments(); sIdx++) {
                for (int e = 0; e < experts; e++) {
                    count[e] += batch.counts()[sIdx * experts + e];
                    probSum[e] += batch.probSum()[sIdx * experts + e];
                }
                lseSq += batch.lseSq()[sIdx];
            }
        }
        double switchLoss = 0;
        double[] switchGrad = null;
        if (aux.switchCoeff() != 0) {
            switchGrad = new double[experts];
            for (int e = 0; e < experts; e++) {
                switchLoss += count[e] / ((double) n * k) * (probSum[e] / n);
                switchGrad[e] = aux.switchCoeff() * experts * count[e] / (k * (double) n * n);
            }
            switchLoss *= aux.switchCoeff() * experts;
        }
        double seqLoss = 0;
        HostBuffer grad = null;
        int segLen = wholeBatch;
        if (aux.seqCoeff() != 0 && !perSequence) {
            // the whole global batch is one sequence
            grad = track(owned, HostBuffer.allocate(DType.F32, 1, experts));
            for (int e = 0; e < experts; e++) {
                seqLoss += (experts * count[e] / (k * (double) n)) * (probSum[e] / n);
                double g = aux.seqCoeff() * experts * count[e] / (k * (double) n * n);
                grad.setFloat(e, (float) (g + (switchGrad == null ? 0 : switchGrad[e])));
            }
            seqLoss *= aux.seqCoeff();
        } else if (perSequence) {
            int seqsTotal = seqAll.segments();
            for (int sIdx = 0; sIdx < seqsTotal; sIdx++) {
                seqLoss += sequenceTerm(seqAll, sIdx, k);
            }
            seqLoss *= aux.seqCoeff() / seqsTotal;
            int seqs = seqLocal.segments();
            if (seqs > 0) {
                grad = track(owned, HostBuffer.allocate(DType.F32, seqs, experts));
                segLen = aux.seqLength();
                for (int sIdx = 0; sIdx < seqs; sIdx++) {
                    double ns = seqLocal.valid()[sIdx];
                    for (int e = 0; e < experts; e++) {
                        int c = seqLocal.counts()[sIdx * experts + e];
                        double g = ns == 0 ? 0 : aux.seqCoeff() * experts * c / ((double) seqsTotal * k * ns * ns);
                        grad.setFloat((long) sIdx * experts + e, (float) (g + (switchGrad == null ? 0 : switchGrad[e])));
                    }
                }
            }
        } else if (switchGrad != null) {
            grad = track(owned, HostBuffer.allocate(DType.F32, 1, experts));
            for (int e = 0; e < experts; e++) {
                grad.setFloat(e, (float) switchGrad[e]);
            }
        }
        double zLoss = aux.zCoeff() != 0 ? aux.zCoeff() * lseSq / n : 0;
        float zGrad = aux.zCoeff() != 0 ? (float) (2 * aux.zCoeff() / n) : 0f;
        return new AuxResult(new AuxLosses(switchLoss, seqLoss, zLoss), grad, segLen, zGrad);
    }

    /** {@code Σ_e f'_e · P'_e} of one sequence (0 without valid tokens). */
    private static double sequenceTerm(BalanceStats st, int s, int k) {
        int experts = st.experts();
        double ns = st.valid()[s];
        double sum = 0;
        if (ns > 0) {
            for (int e = 0; e < experts; e++) {
                sum += (experts * st.counts()[s * experts + e] / (k * ns)) * (st.probSum()[s * experts + e] / ns);
            }
        }
        return sum;
    }

    /** Every rank's statistics in rank order (this router's alone without an exchange). */
    private BalanceStats global(BalanceStats local) {
        if (statsExchange == null) {
            return local;
        }
        BalanceStats all = statsExchange.gather(local);
        if (all == null || all.experts() != local.experts()) {
            throw new IllegalStateException("Router: the statistics exchange returned " + all + " for " + local.experts()
                    + " experts");
        }
        return all;
    }

    private BalanceStats stats(Buffer scores, Buffer selected, Buffer lse, int segmentLength) {
        int tokens = scores.shape().dimInt(0);
        int experts = config.experts();
        if (tokens == 0) {
            return new BalanceStats(experts, new float[0], new int[0], new int[0], new float[0]);
        }
        int segs = CpuParallel.chunks(tokens, segmentLength);
        try (HostBuffer prob = HostBuffer.allocate(DType.F32, segs, experts);
                HostBuffer cnt = HostBuffer.allocate(DType.I32, segs, experts);
                HostBuffer val = HostBuffer.allocate(DType.I32, segs);
                HostBuffer lsq = HostBuffer.allocate(DType.F32, segs)) {
            kernels.segmentStats(config.scoreFunction(), scores, selected, lse, segmentLength, prob, cnt, val, lsq);
            return new BalanceStats(experts, prob.toFloatArray(), cnt.toIntArray(), val.toIntArray(), lsq.toFloatArray());
        }
    }

    /**
     * Gradients of {@code Σ dTopkWeights · topkWeights + auxLosses.total()}.
     *
     * @param out          a forward result of this router, not closed
     * @param dTopkWeights F32 {@code [tokens, topK]} upstream gradient of the top-k weights (entries
     *                     of dropped or padding slots are ignored), or null for aux losses only
     * @return dLogits, plus dX and dGateWeight when {@code out} came from {@link #forward}
     * @throws IllegalArgumentException on a foreign or closed {@code out}, or a wrong dtype or shape
     */
    public RouterGrads backward(RouterOutput out, Buffer dTopkWeights) {
        return backward(out, dTopkWeights, true);
    }

    /**
     * Gradients of {@code Σ dTopkWeights · topkWeights + auxLosses.total()}, optionally without the
     * gate weight gradient (for a caller that reduces {@code dLogitsᵀ · x} over the tokens itself,
     * as {@code MoeLayer} does over its token-block tree).
     *
     * @param out            a forward result of this router, not closed
     * @param dTopkWeights   F32 {@code [tokens, topK]} upstream gradient of the top-k weights, or null
     * @param gateWeightGrad whether to compute {@code dGateWeight} (else it is null in the result)
     * @return dLogits, plus dX (and dGateWeight when asked) when {@code out} came from {@link #forward}
     * @throws IllegalArgumentException on a foreign or closed {@code out}, or a wrong dtype or shape
     */
    public RouterGrads backward(RouterOutput out, Buffer dTopkWeights, boolean gateWeightGrad) {
        use.enter("backward");
        try {
            return backwardUnguarded(out, dTopkWeights, gateWeightGrad);
        } finally {
            use.exit();
        }
    }

    private RouterGrads backwardUnguarded(RouterOutput out, Buffer dTopkWeights, boolean gateWeightGrad) {
        Objects.requireNonNull(out, "out");
        if (out.router() != this) {
            throw new IllegalArgumentException("Router.backward: out was produced by another router");
        }
        if (out.isClosed()) {
            throw new IllegalArgumentException("Router.backward: out is closed");
        }
        int tokens = out.tokens();
        if (dTopkWeights != null) {
            requireExact("Router.backward", "dTopkWeights", dTopkWeights, DType.F32, tokens, config.topK());
        }
        List<Buffer> owned = new ArrayList<>();
        try {
            Buffer dLogits = track(owned, backend.allocate(DType.F32, Shape.of(tokens, config.experts())));
            kernels.routeBackward(params, out.logits(), out.scores(), out.selected(), out.topkIdx(), dTopkWeights,
                    out.auxGrad(), out.auxSegmentLength(), out.lse(), out.zGrad(), dLogits);
            if (!out.fromHidden()) {
                return new RouterGrads(dLogits, null, null);
            }
            Buffer dX = track(owned, backend.allocate(DType.F32, Shape.of(tokens, config.hidden())));
            Buffer dGate = gateWeightGrad
                    ? track(owned, backend.allocate(DType.F32, Shape.of(config.experts(), config.hidden()))) : null;
            kernels.gateBackward(out.x(), out.gateWeight(), dLogits, dX, dGate);
            return new RouterGrads(dLogits, dX, dGate);
        } catch (RuntimeException e) {
            for (Buffer b : owned) {
                b.close();
            }
            throw e;
        }
    }

    /** Builder for {@link Router}. */
    public static final class Builder {
        private final MoeConfig config;
        private RoutingKernels kernels;
        private CpuParallel parallel;
        private Backend backend;
        private ExpertBias expertBias;
        private boolean forceBalanced;
        private boolean accumulateLoad = true;
        private BalanceStats.Exchange statsExchange;

        private Builder(MoeConfig config) {
            this.config = Objects.requireNonNull(config, "config");
        }

        /**
         * Sets {@code kernels}: kernels to use instead of the selected backend's.
         * @param v kernels to use instead of the selected backend's
         * @return this
         */
        public Builder kernels(RoutingKernels v) {
            kernels = v;
            return this;
        }

        /**
         * Sets {@code parallel}: run the CPU kernels on this thread pool.
         * @param v run the CPU kernels on this thread pool
         * @return this
         */
        public Builder parallel(CpuParallel v) {
            parallel = v;
            return this;
        }

        /**
         * Sets {@code backend}: backend that allocates outputs (must match the kernels).
         * @param v backend that allocates outputs (must match the kernels)
         * @return this
         */
        public Builder backend(Backend v) {
            backend = v;
            return this;
        }

        /**
         * Sets {@code expertBias}: expert-bias state to use (shared with the caller).
         * @param v expert-bias state to use (shared with the caller)
         * @return this
         */
        public Builder expertBias(ExpertBias v) {
            expertBias = v;
            return this;
        }

        /**
         * Sets {@code forceBalanced}: round-robin selection for perfectly even load (benchmarks, tests).
         * @param v round-robin selection for perfectly even load (benchmarks, tests)
         * @return this
         */
        public Builder forceBalanced(boolean v) {
            forceBalanced = v;
            return this;
        }

        /**
         * Sets {@code accumulateLoad}: add each forward's load to the expert bias (default true).
         * @param v add each forward's load to the expert bias (default true)
         * @return this
         */
        public Builder accumulateLoad(boolean v) {
            accumulateLoad = v;
            return this;
        }

        /**
         * Makes the auxiliary losses global: each forward hands its balance statistics to
         * {@code v}, which returns those of every rank routing the same global batch, so loss values
         * and gradients are means over all tokens, identical for any number of ranks (given segments
         * of {@link #STATS_BLOCK} tokens, or whole sequences, that never straddle two ranks).
         * Every forward then calls {@code v} on every rank (a collective) when aux losses are on.
         *
         * @param v the exchange, or null for losses over this router's tokens only (default)
         * @return this
         */
        public Builder statsExchange(BalanceStats.Exchange v) {
            statsExchange = v;
            return this;
        }

        /**
         * Returns the router.
         *
         * @return the router
         */
        public Router build() {
            return new Router(this);
        }
    }
}
