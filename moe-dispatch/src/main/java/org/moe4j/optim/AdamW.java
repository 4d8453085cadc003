package org.moe4j.optim;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.ExclusiveUse;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.ReduceOp;

/**
 * AdamW (Loshchilov &amp; Hutter): Adam with decoupled weight decay and bias correction, the same
 * update as {@code torch.optim.AdamW}:
 * <pre>
 *   p ← p · (1 − lr·wd)                         (decoupled decay; only tensors of rank ≥ 2)
 *   m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²
 *   p ← p − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + ε)
 * </pre>
 * Works on fp32 parameters in any backend's memory: the moments are allocated on the parameters'
 * backend and the update runs as that backend's {@link OptimizerKernels} (on the GPU, parameters
 * and state never leave the device). The update is element-wise with separately rounded fp32
 * operations, so it is deterministic for any thread count and bitwise the same on every backend.
 * State is kept per parameter in fp32.
 *
 * <p>Validation: every option is checked where it is passed ({@link Options}' constructor, which
 * {@link #options(Options)} and every constructor go through): {@code lr}, {@code eps} and
 * {@code weightDecay} must be finite ({@code lr ≥ 0}, {@code eps > 0}, {@code weightDecay ≥ 0},
 * {@code lr·weightDecay ≤ 1} so the decay factor stays in {@code [0, 1]}), betas in {@code [0, 1)};
 * null arguments, null or duplicate parameters and closed buffers are refused at the call that
 * passes them, naming the bad value.
 *
 * <p>Non-finite gradients: {@link #step()} first looks for a NaN or infinite gradient element in
 * every parameter; if it finds one, the step is <b>skipped</b> as a whole (no parameter, moment or
 * step count changes) and reported in the returned {@link StepReport} (parameter name and element
 * index) and in {@link #skippedSteps()} — the policy of mixed-precision gradient scalers
 * ({@code torch.amp.GradScaler}). The caller decides what to do next (usually {@link #zeroGrad()}
 * and continue; with loss scaling, lower the scale). The check reads every gradient once per step.
 * {@link #stepOnDevice()} applies the same policy with the decision made on the device (no host read
 * per step; the counts are read back when asked for).
 *
 * <p>Expert parallelism ({@code W > 1}): routed-expert gradients are rank-local (not all-reduced),
 * so one rank can hold a non-finite gradient while the others do not. {@link #step()} decides per
 * rank, and a rank that skips while the others apply would let the replicated parameters (gate,
 * shared experts) diverge for good. Step with {@link #step(Communicator)} instead: it sums the
 * ranks' findings over the group, so every rank skips or every rank applies.
 *
 * <p>Threading: an optimiser serves one thread at a time; a call from a second thread while
 * {@code step}, {@code zeroGrad}, {@code options(Options)} or {@code close} is running throws
 * {@link org.moe4j.core.ConcurrentUseException} naming both calls.
 */
public final class AdamW implements AutoCloseable {

    /**
     * Hyper-parameters.
     *
     * @param lr          learning rate
     * @param beta1       first-moment decay
     * @param beta2       second-moment decay
     * @param eps         denominator epsilon
     * @param weightDecay decoupled weight decay (applied to tensors of rank ≥ 2 only; biases and
     *                    vectors are not decayed)
     */
    public record Options(double lr, double beta1, double beta2, double eps, double weightDecay) {
        /**
         * Validates the hyper-parameters.
         *
         * @throws IllegalArgumentException naming the bad value: a NaN or infinite {@code lr},
         *                                  {@code eps} or {@code weightDecay}, {@code lr < 0},
         *                                  {@code eps <= 0} (or below fp32's smallest value),
         *                                  {@code weightDecay < 0}, {@code lr·weightDecay > 1}, or a
         *                                  beta outside {@code [0, 1)}
         */
        public Options {
            if (!(lr >= 0) || Double.isInfinite(lr)) {
                throw new IllegalArgumentException("AdamW lr=" + lr + ": must be finite and >= 0");
            }
            if (!(beta1 >= 0 && beta1 < 1)) {
                throw new IllegalArgumentException("AdamW beta1=" + beta1 + ": must be in [0, 1)");
            }
            if (!(beta2 >= 0 && beta2 < 1)) {
                throw new IllegalArgumentException("AdamW beta2=" + beta2 + ": must be in [0, 1)");
            }
            if (!(eps > 0) || Double.isInfinite(eps) || (float) eps == 0f || Float.isInfinite((float) eps)) {
                throw new IllegalArgumentException("AdamW eps=" + eps + ": must be finite and > 0 (in fp32)");
            }
            if (!(weightDecay >= 0) || Double.isInfinite(weightDecay)) {
                throw new IllegalArgumentException("AdamW weightDecay=" + weightDecay + ": must be finite and >= 0");
            }
            if (Float.isInfinite((float) lr)) {
                throw new IllegalArgumentException("AdamW lr=" + lr + ": overflows fp32");
            }
            if (lr * weightDecay > 1) {
                throw new IllegalArgumentException("AdamW lr=" + lr + " x weightDecay=" + weightDecay + " = "
                        + lr * weightDecay + ": must be <= 1 (the decay factor 1 - lr*weightDecay would be negative)");
            }
        }

        /**
         * Returns torch's defaults (β=(0.9, 0.999), ε=1e-8, wd=0.01) with this learning rate.
         * @param lr learning rate
         * @return torch's defaults (β=(0.9, 0.999), ε=1e-8, wd=0.01) with this learning rate
         */
        public static Options defaults(double lr) {
            return new Options(lr, 0.9, 0.999, 1e-8, 0.01);
        }

        /**
         * Returns a copy with that learning rate.
         * @param v new learning rate
         * @return a copy with that learning rate
         */
        public Options withLr(double v) {
            return new Options(v, beta1, beta2, eps, weightDecay);
        }
    }

    /**
     * What one {@link #step()} did.
     *
     * @param applied            whether the update was applied (false: skipped for a non-finite gradient)
     * @param step               the step count after the call ({@link #steps()})
     * @param nonFiniteParameter the first parameter (in list order) whose gradient holds a NaN or
     *                           infinite element, or null when the step was applied
     * @param nonFiniteIndex     flat index of the first such element in that gradient, or -1
     * @param nonFiniteRanks     how many ranks found a non-finite gradient ({@link #step()}: 1 or 0,
     *                           this rank only; {@link #step(Communicator)}: over the group — a rank
     *                           may skip with a null {@code nonFiniteParameter} when only other
     *                           ranks found one)
     */
    public record StepReport(boolean applied, long step, String nonFiniteParameter, long nonFiniteIndex,
            long nonFiniteRanks) {
    }

    private final Backend backend;

    private final List<Parameter> params;
    private final List<Buffer> m = new ArrayList<>(); // per parameter, its shape, F32
    private final List<Buffer> v = new ArrayList<>();
    private final OptimizerKernels kernels;
    private final ExclusiveUse use = new ExclusiveUse("AdamW");
    private Options options;
    private long step;
    private long skipped;
    private boolean closed;
    private DeviceCounters device; // stepOnDevice(): counters, flag and bias table on the device; null before
    private int tableRows = DEVICE_TABLE_STEPS; // rows of the device bias table when it is made

    /**
     * An optimiser on the backend that holds the parameters: the CPU backend for host buffers,
     * otherwise the selected backend (see {@link Backends#backendFor(Class[])}).
     *
     * @param params  the parameters to update (F32)
     * @param options hyper-parameters
     * @throws IllegalArgumentException if a parameter is not F32, or lives in memory the chosen
     *                                  backend does not own
     */
    public AdamW(List<Parameter> params, Options options) {
        this(params, options, defaultBackend(checkParams(params)));
    }

    /**
     * Creates a new {@code AdamW}.
     * @param params  the parameters to update (F32, in {@code backend}'s memory)
     * @param options hyper-parameters
     * @param backend allocates the optimiser state; its {@link OptimizerKernels} run the update
     * @throws IllegalArgumentException if a parameter is not F32, or is on another device than the
     *                                  backend's kernels expect
     */
    public AdamW(List<Parameter> params, Options options, Backend backend) {
        this(params, options, backend, Backends.kernels(OptimizerKernels.class,
                Objects.requireNonNull(backend, "AdamW: backend")));
    }

    /**
     * Creates a new {@code AdamW}.
     * @param params  the parameters to update (F32, in {@code backend}'s memory)
     * @param options hyper-parameters
     * @param backend allocates the optimiser state
     * @param kernels run the update
     * @throws NullPointerException     if an argument or a parameter is null (naming its index)
     * @throws IllegalArgumentException if a parameter is not F32, is closed, or appears twice
     */
    public AdamW(List<Parameter> params, Options options, Backend backend, OptimizerKernels kernels) {
        this.params = List.copyOf(checkParams(params));
        this.options = Objects.requireNonNull(options, "AdamW: options");
        this.kernels = Objects.requireNonNull(kernels, "AdamW: kernels");
        this.backend = Objects.requireNonNull(backend, "AdamW: backend");
        for (Parameter p : this.params) {
            f32(p.name(), p.value());
            f32(p.name() + ".grad", p.grad());
        }
        try {
            for (Parameter p : this.params) {
                m.add(backend.allocate(DType.F32, p.value().shape()));
                v.add(backend.allocate(DType.F32, p.value().shape()));
                Buffer state = m.get(m.size() - 1);
                if (!state.device().equals(p.value().device()) || !state.device().equals(p.grad().device())) {
                    throw new IllegalArgumentException("AdamW: parameter " + p.name() + " is on " + p.value().device()
                            + " (grad on " + p.grad().device() + ") but backend " + backend.name()
                            + " keeps the optimiser state on " + state.device());
                }
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /** Null list, null entries, closed buffers and duplicates (one buffer updated twice per step). */
    private static List<Parameter> checkParams(List<Parameter> params) {
        Objects.requireNonNull(params, "AdamW: params");
        Map<Object, String> seen = new IdentityHashMap<>();
        for (int i = 0; i < params.size(); i++) {
            Parameter p = params.get(i);
            if (p == null) {
                throw new NullPointerException("AdamW: params[" + i + "] is null");
            }
            for (Buffer b : new Buffer[] {p.value(), p.grad()}) {
                if (b.isClosed()) {
                    throw new IllegalArgumentException("AdamW: parameter " + p.name() + " (params[" + i + "]) is closed");
                }
                String before = seen.putIfAbsent(b, p.name());
                if (before != null) {
                    throw new IllegalArgumentException("AdamW: parameter " + p.name() + " (params[" + i
                            + "]) shares a buffer with parameter " + before + "; each tensor may be listed once");
                }
            }
        }
        return params;
    }

    private static Backend defaultBackend(List<Parameter> params) {
        if (params.isEmpty()) {
            return Backends.backendFor(OptimizerKernels.class);
        }
        org.moe4j.core.Device device = params.get(0).value().device();
        for (Parameter p : params) {
            if (!p.value().device().equals(device) || !p.grad().device().equals(device)) {
                throw new IllegalArgumentException("AdamW: parameter " + p.name() + " is on " + p.value().device()
                        + " (grad on " + p.grad().device() + ") but " + params.get(0).name() + " is on " + device);
            }
        }
        return Backends.backendFor(Backends.forDevice(device), OptimizerKernels.class);
    }

    private static void f32(String name, Buffer b) {
        if (b.dtype() != DType.F32) {
            throw new IllegalArgumentException("AdamW: parameter " + name + " must be F32, got " + b.dtype()
                    + " on " + b.device());
        }
    }

    /**
     * Returns the parameters this optimiser updates, in the order given.
     * @return the parameters this optimiser updates (unmodifiable)
     */
    public List<Parameter> parameters() {
        return params;
    }

    /**
     * Returns whether {@link #close()} was called.
     * @return true after {@link #close()}
     */
    public boolean isClosed() {
        return closed;
    }

    /**
     * Returns the current hyper-parameters.
     * @return the current hyper-parameters
     */
    public Options options() {
        return options;
    }

    /**
     * Replaces the hyper-parameters from the next step on.
     *
     * @param options new hyper-parameters (e.g. a scheduled learning rate), validated by {@link Options}
     * @throws NullPointerException if {@code options} is null
     */
    public void options(Options options) {
        Objects.requireNonNull(options, "AdamW.options: options");
        use.enter("options");
        try {
            this.options = options;
        } finally {
            use.exit();
        }
    }

    /**
     * Returns the number of steps applied.
     *
     * @return steps applied (skipped steps do not count)
     */
    public long steps() {
        syncCounters();
        return step;
    }

    /**
     * Returns steps skipped because a gradient held a NaN or infinite element.
     * @return steps skipped because a gradient held a NaN or infinite element
     */
    public long skippedSteps() {
        syncCounters();
        return skipped;
    }

    /**
     * Applies one update to every parameter from its current gradient (gradients are not zeroed),
     * unless a gradient holds a NaN or infinite element: then nothing changes and the report names
     * the first such parameter and element (see the class comment for this policy).
     *
     * @return whether the step was applied, and why not
     * @throws IllegalStateException if this optimiser or one of its parameters was closed (nothing changed)
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public StepReport step() {
        use.enter("step");
        try {
            return stepUnguarded();
        } finally {
            use.exit();
        }
    }

    /**
     * The collective form of {@link #step()} for expert parallelism: every rank of {@code group}
     * must call it (with its own optimiser) at the same point. Each rank scans its gradients, the
     * findings are summed over the group, and then every rank skips (if any rank found a NaN or
     * infinite gradient element) or every rank applies — so replicated parameters stay identical.
     * The report names this rank's first non-finite parameter (null if only other ranks found one)
     * and {@link StepReport#nonFiniteRanks()} counts the ranks that found one. With one rank it
     * behaves as {@link #step()}. Costs one small all-reduce per step.
     *
     * @param group the communicator of the expert-parallel group (e.g. {@code layer.communicator()})
     * @return whether the step was applied on every rank, and why not
     * @throws NullPointerException  if {@code group} is null (before any collective)
     * @throws IllegalStateException on every rank if this or another rank's optimiser or one of its
     *                               parameters was closed (nothing changed on any rank)
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public StepReport step(Communicator group) {
        Objects.requireNonNull(group, "AdamW.step: group");
        use.enter("step");
        try {
            String invalid = null;
            long[] bad = null;
            try {
                checkUsable();
                hostTakesOver();
                bad = firstNonFinite();
            } catch (IllegalStateException e) {
                invalid = e.getMessage();
            }
            long[] sums = sumOverRanks(group, new long[] {bad != null ? 1 : 0, invalid != null ? 1 : 0});
            if (sums[1] > 0) {
                throw new IllegalStateException(invalid != null ? invalid
                        : "AdamW.step: " + sums[1] + " other rank(s) of the group have a closed optimiser or"
                                + " parameter; nothing was updated on any rank");
            }
            if (sums[0] > 0) {
                skipped++;
                return bad != null ? new StepReport(false, step, params.get((int) bad[0]).name(), bad[1], sums[0])
                        : new StepReport(false, step, null, -1, sums[0]);
            }
            return apply();
        } finally {
            use.exit();
        }
    }

    private long[] sumOverRanks(Communicator group, long[] values) {
        if (group.size() == 1) {
            return values.clone();
        }
        long[] out = values.clone();
        try (HostBuffer h = HostBuffer.allocate(DType.I64, out.length)) {
            for (int i = 0; i < out.length; i++) {
                h.segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, i, out[i]);
            }
            try (Buffer b = backend.upload(h)) { // the communicator works in the backend's memory
                group.allReduce(b, ReduceOp.SUM);
                b.copyTo(h);
            }
            for (int i = 0; i < out.length; i++) {
                out[i] = h.getLong(i);
            }
        }
        return out;
    }

    private void checkUsable() {
        if (closed) {
            throw new IllegalStateException("AdamW.step: the optimiser is closed");
        }
        for (Parameter p : params) {
            if (p.value().isClosed() || p.grad().isClosed()) {
                throw new IllegalStateException("AdamW.step: parameter " + p.name() + " was closed; nothing was updated");
            }
        }
    }

    /** @return {parameter index, element index} of the first non-finite gradient element, or null */
    private long[] firstNonFinite() {
        for (int i = 0; i < params.size(); i++) {
            long bad = kernels.firstNonFinite(params.get(i).grad());
            if (bad >= 0) {
                return new long[] {i, bad};
            }
        }
        return null;
    }

    private StepReport stepUnguarded() {
        checkUsable();
        hostTakesOver();
        long[] bad = firstNonFinite();
        if (bad != null) {
            skipped++;
            return new StepReport(false, step, params.get((int) bad[0]).name(), bad[1], 1);
        }
        return apply();
    }

    private StepReport apply() {
        step++;
        Options o = options;
        float c1 = biasCorrection(o.beta1(), step);
        float c2 = biasCorrection(o.beta2(), step);
        for (int i = 0; i < params.size(); i++) {
            kernels.adamW(params.get(i).value(), params.get(i).grad(), m.get(i), v.get(i), scalars(o, params.get(i), c1, c2));
        }
        return new StepReport(true, step, null, -1, 0);
    }

    /** {@code 1 − beta^step} rounded to fp32: the one formula of the host and the device bias tables. */
    private static float biasCorrection(double beta, long step) {
        return (float) (1 - Math.pow(beta, step));
    }

    private static OptimizerKernels.AdamWStep scalars(Options o, Parameter p, float c1, float c2) {
        float decay = p.value().shape().rank() >= 2 ? (float) (1 - o.lr() * o.weightDecay()) : 1f;
        return new OptimizerKernels.AdamWStep((float) o.lr(), (float) o.beta1(), (float) o.beta2(), c1, c2,
                (float) o.eps(), decay);
    }

    /** Default steps between two reads of the device counters by {@link #stepOnDevice()} (rows of the bias table). */
    static final int DEVICE_TABLE_STEPS = 1024;
    /** The most rows {@link #deviceTableSteps(int)} accepts. */
    public static final int MAX_DEVICE_TABLE_STEPS = 1 << 20;

    /**
     * {@link #step()} with the non-finite check and the skip decided on the device, so nothing is read
     * back to the host and the step can be captured in a CUDA graph. The policy is {@link #step()}'s
     * exactly: when a gradient holds a NaN or infinite element no parameter, moment or step count
     * changes and the step counts as skipped; otherwise the update is bitwise {@link #step()}'s (the
     * bias corrections come from a table the host computes with the same formula, indexed on the
     * device by the device step count minus the table's base, which the device holds too). The step
     * and skip counts live on the device and are read back only when asked for ({@link #steps()},
     * {@link #skippedSteps()}, or a {@link #step()}/{@link #restore} that takes over), plus once every
     * {@link #deviceTableSteps()} calls to move the bias table on; no report names the bad element.
     * Where the kernels cannot decide on the device ({@link OptimizerKernels#skipsOnDevice()} false,
     * e.g. the CPU backend, where the check costs no synchronisation) this is {@link #step()}.
     *
     * <p>Captured in a CUDA graph, the call's host part runs once, at capture; each replay runs its
     * device part. Before each replay call {@link #prepareDeviceStep()}, and after it
     * {@link #recordReplayedStep()}, so the table is moved on in time and the counts are read back on
     * request (the graph classes of the CUDA backend do this).
     *
     * @throws IllegalStateException if this optimiser or one of its parameters was closed (nothing changed)
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public void stepOnDevice() {
        use.enter("stepOnDevice");
        try {
            if (!kernels.skipsOnDevice()) {
                stepUnguarded();
                return;
            }
            checkUsable();
            Options o = options;
            DeviceCounters d = deviceCounters(o);
            for (Parameter p : params) {
                kernels.flagNonFinite(p.grad(), d.state);
            }
            for (int i = 0; i < params.size(); i++) {
                kernels.adamWGuarded(params.get(i).value(), params.get(i).grad(), m.get(i), v.get(i),
                        scalars(o, params.get(i), 0f, 0f), d.table, d.state);
            }
            kernels.finishGuardedStep(d.state);
            d.pending++;
        } finally {
            use.exit();
        }
    }

    /**
     * Makes the next guarded step ({@link #stepOnDevice()}, or the replay of a CUDA graph that captured
     * it) runnable with no host work: creates the device counters and bias table, or rebuilds them
     * when they are stale (after {@link #step()} or a restore), when the table has no row left for the
     * step, or when the options' betas changed. A rebuild reads the device counters back (one
     * device→host read) and uploads the table and counters, on the context's default stream and
     * synchronously, so call it on the host, never while a stream captures. Cheap when nothing is due.
     *
     * @throws IllegalStateException if the optimiser or one of its parameters was closed, or its kernels
     *                               decide the skip on the host ({@link OptimizerKernels#skipsOnDevice()}
     *                               false: there is no device step to prepare)
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public void prepareDeviceStep() {
        use.enter("prepareDeviceStep");
        try {
            requireDeviceStep("prepareDeviceStep");
            deviceCounters(options);
        } finally {
            use.exit();
        }
    }

    /**
     * Counts one guarded step that ran outside this object: the replay of a CUDA graph that captured
     * {@link #stepOnDevice()}, launched after {@link #prepareDeviceStep()}. {@link #steps()} and
     * {@link #skippedSteps()} then read the device counters back, and the next
     * {@link #prepareDeviceStep()} moves the table on once its rows are used up. Reads nothing.
     *
     * @throws IllegalStateException if the optimiser or one of its parameters was closed, its kernels
     *                               have no device step, or no device step was prepared since the host
     *                               last took the counters over (nothing to replay)
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public void recordReplayedStep() {
        use.enter("recordReplayedStep");
        try {
            requireDeviceStep("recordReplayedStep");
            DeviceCounters d = device;
            if (d == null || d.pending < 0 || d.pending >= d.rows) {
                throw new IllegalStateException("AdamW.recordReplayedStep: no device step was prepared for it"
                        + (d != null && d.pending >= d.rows ? " (the bias table's " + d.rows + " rows are used up)" : "")
                        + "; call prepareDeviceStep() before each replay");
            }
            d.pending++;
        } finally {
            use.exit();
        }
    }

    /**
     * Returns the rows of the device bias table: how many guarded steps run between two reads of the
     * device counters.
     *
     * @return the rows of the device bias table ({@value #DEVICE_TABLE_STEPS} unless set)
     */
    public int deviceTableSteps() {
        return tableRows;
    }

    /**
     * Sets the rows of the device bias table (fewer rows: less memory, more frequent reads of the
     * device counters). Only before the first device step, since a captured step holds the table.
     *
     * @param rows between 1 and {@value #MAX_DEVICE_TABLE_STEPS}
     * @throws IllegalArgumentException if {@code rows} is outside that range
     * @throws IllegalStateException    if a device step was already made or prepared, or the optimiser is closed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public void deviceTableSteps(int rows) {
        if (rows < 1 || rows > MAX_DEVICE_TABLE_STEPS) {
            throw new IllegalArgumentException("AdamW.deviceTableSteps: rows=" + rows + " must be in [1, "
                    + MAX_DEVICE_TABLE_STEPS + "]");
        }
        use.enter("deviceTableSteps");
        try {
            if (closed) {
                throw new IllegalStateException("AdamW.deviceTableSteps: the optimiser is closed");
            }
            if (device != null) {
                throw new IllegalStateException("AdamW.deviceTableSteps: the device table already exists ("
                        + device.rows + " rows); set its size before the first device step");
            }
            tableRows = rows;
        } finally {
            use.exit();
        }
    }

    private void requireDeviceStep(String call) {
        if (!kernels.skipsOnDevice()) {
            throw new IllegalStateException("AdamW." + call + ": " + kernels.getClass().getSimpleName()
                    + " decide the non-finite skip on the host (OptimizerKernels.skipsOnDevice() is false): no device step");
        }
        checkUsable();
    }

    /** The device side of {@link #stepOnDevice()}: {applied, skipped, flag, table base} and the bias table from base + 1. */
    private static final class DeviceCounters {
        Buffer state;         // I64 [4]: applied steps, skipped steps, skip flag, the applied-step count the table starts after
        Buffer table;         // F32 [rows, 2]
        int rows;
        double beta1 = Double.NaN;
        double beta2 = Double.NaN;
        int pending = -1;     // guarded steps since the host counters were last equal to the device's; -1: stale

        void close() {
            if (state != null) {
                state.close();
            }
            if (table != null) {
                table.close();
            }
        }
    }

    /** Ready for one more guarded step: (re)uploads counters and table when stale, full or for other betas. */
    private DeviceCounters deviceCounters(Options o) {
        DeviceCounters d = device;
        if (d == null) {
            d = new DeviceCounters();
            d.rows = tableRows;
            try {
                d.state = backend.allocate(DType.I64, org.moe4j.core.Shape.of(4));
                d.table = backend.allocate(DType.F32, org.moe4j.core.Shape.of(d.rows, 2));
            } catch (RuntimeException e) {
                d.close();
                throw e;
            }
            device = d;
        }
        if (d.pending >= 0 && d.pending < d.rows && d.beta1 == o.beta1() && d.beta2 == o.beta2()) {
            return d;
        }
        syncCounters();
        try (org.moe4j.core.buffer.HostBuffer h = org.moe4j.core.buffer.HostBuffer.allocate(DType.F32,
                d.rows, 2); org.moe4j.core.buffer.HostBuffer c = org.moe4j.core.buffer.HostBuffer.allocate(
                        DType.I64, 4)) {
            for (int i = 0; i < d.rows; i++) {
                h.setFloat(2L * i, biasCorrection(o.beta1(), step + 1 + i));
                h.setFloat(2L * i + 1, biasCorrection(o.beta2(), step + 1 + i));
            }
            c.segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0, step);
            c.segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 1, skipped);
            c.segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 3, step); // the table's base
            d.table.copyFrom(h);
            d.state.copyFrom(c);
        }
        d.beta1 = o.beta1();
        d.beta2 = o.beta2();
        d.pending = 0;
        return d;
    }

    /** Brings {@code step}/{@code skipped} up to date from the device after guarded steps (one device→host read). */
    private void syncCounters() {
        DeviceCounters d = device;
        if (d == null || d.pending <= 0) {
            return;
        }
        try (org.moe4j.core.buffer.HostView h = d.state.hostView(org.moe4j.core.buffer.HostView.Mode.READ)) {
            step = h.host().segment().getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0);
            skipped = h.host().segment().getAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 1);
        }
        d.pending = 0;
    }

    /** The host counters take over (a host step or a restore follows): the device copies become stale. */
    private void hostTakesOver() {
        syncCounters();
        if (device != null) {
            device.pending = -1;
        }
    }

    /**
     * The first-moment state of one parameter (for checkpoints: read it, or overwrite it to resume).
     *
     * @param value the value buffer of one of this optimiser's parameters
     * @return its F32 first-moment buffer, same shape, on the parameters' backend (do not close it)
     * @throws IllegalArgumentException if {@code value} is not a parameter of this optimiser
     * @throws IllegalStateException    if the optimiser is closed
     */
    public Buffer firstMoment(Buffer value) {
        return m.get(indexOf(value, "firstMoment"));
    }

    /**
     * The second-moment state of one parameter.
     *
     * @param value the value buffer of one of this optimiser's parameters
     * @return its F32 second-moment buffer, same shape, on the parameters' backend (do not close it)
     * @throws IllegalArgumentException if {@code value} is not a parameter of this optimiser
     * @throws IllegalStateException    if the optimiser is closed
     */
    public Buffer secondMoment(Buffer value) {
        return v.get(indexOf(value, "secondMoment"));
    }

    private int indexOf(Buffer value, String what) {
        if (closed) {
            throw new IllegalStateException("AdamW." + what + ": the optimiser is closed");
        }
        for (int i = 0; i < params.size(); i++) {
            if (params.get(i).value() == value) {
                return i;
            }
        }
        throw new IllegalArgumentException("AdamW." + what + ": " + value + " is not a parameter of this optimiser");
    }

    /**
     * Sets the number of steps taken, as when resuming from a checkpoint (the bias corrections of the
     * next step use {@code steps + 1}).
     *
     * @param steps steps already taken, ≥ 0
     * @throws IllegalArgumentException if negative
     * @throws IllegalStateException    if the optimiser is closed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public void restoreSteps(long steps) {
        if (steps < 0) {
            throw new IllegalArgumentException("AdamW.restoreSteps: steps=" + steps + " must be >= 0");
        }
        use.enter("restoreSteps");
        try {
            if (closed) {
                throw new IllegalStateException("AdamW.restoreSteps: the optimiser is closed");
            }
            hostTakesOver();
            step = steps;
        } finally {
            use.exit();
        }
    }

    /**
     * Restores a checkpoint's optimiser state all or nothing, with no skipped steps: the same as
     * {@link #restore(long, long, Options, Runnable) restore(steps, 0, options, commit)} (a checkpoint
     * that does not record {@link #skippedSteps()}).
     *
     * @param steps   steps already taken, &ge; 0
     * @param options the hyper-parameters to restore
     * @param commit  writes the rest of the restored state; runs while this optimiser is held
     * @throws IllegalArgumentException if {@code steps} is negative
     * @throws NullPointerException     if {@code options} or {@code commit} is null
     * @throws IllegalStateException    if the optimiser is closed ({@code commit} then does not run)
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     *                                               ({@code commit} then does not run)
     */
    public void restore(long steps, Options options, Runnable commit) {
        restore(steps, 0, options, commit);
    }

    /**
     * Restores a checkpoint's optimiser state all or nothing: checks the arguments and that this
     * optimiser is open, then, inside one exclusive use of it, runs {@code commit} (which writes the
     * moments, e.g. into the {@link #firstMoment}/{@link #secondMoment} buffers, and may refuse by
     * throwing) and only when it returns sets the step count, the skipped-step count and the options.
     * If anything throws, none of them changes.
     *
     * @param steps        steps already taken, &ge; 0
     * @param skippedSteps steps skipped for a non-finite gradient so far ({@link #skippedSteps()}), &ge; 0
     * @param options      the hyper-parameters to restore
     * @param commit       writes the rest of the restored state; runs while this optimiser is held
     * @throws IllegalArgumentException if {@code steps} or {@code skippedSteps} is negative
     * @throws NullPointerException     if {@code options} or {@code commit} is null
     * @throws IllegalStateException    if the optimiser is closed ({@code commit} then does not run)
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     *                                               ({@code commit} then does not run)
     */
    public void restore(long steps, long skippedSteps, Options options, Runnable commit) {
        if (steps < 0) {
            throw new IllegalArgumentException("AdamW.restore: steps=" + steps + " must be >= 0");
        }
        if (skippedSteps < 0) {
            throw new IllegalArgumentException("AdamW.restore: skippedSteps=" + skippedSteps + " must be >= 0");
        }
        Objects.requireNonNull(options, "AdamW.restore: options");
        Objects.requireNonNull(commit, "AdamW.restore: commit");
        use.enter("restore");
        try {
            if (closed) {
                throw new IllegalStateException("AdamW.restore: the optimiser is closed");
            }
            hostTakesOver();
            commit.run();
            step = steps;
            skipped = skippedSteps;
            this.options = options;
        } finally {
            use.exit();
        }
    }

    /**
     * Sets every gradient to zero.
     *
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    public void zeroGrad() {
        use.enter("zeroGrad");
        try {
            for (Parameter p : params) {
                p.grad().zero();
            }
        } finally {
            use.exit();
        }
    }

    /**
     * Frees the optimiser state; idempotent. {@link #step()} refuses to run afterwards.
     *
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this optimiser
     */
    @Override
    public void close() {
        use.enter("close");
        try {
            closed = true;
            m.forEach(Buffer::close);
            v.forEach(Buffer::close);
            if (device != null) {
                device.close();
            }
        } finally {
            use.exit();
        }
    }
}
