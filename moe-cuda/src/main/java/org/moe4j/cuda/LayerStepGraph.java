package org.moe4j.cuda;

import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.ExclusiveUse;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferClosedException;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.layer.MoeLayer;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;

/**
 * One whole training step of a {@link MoeLayer} on the CUDA backend, captured once as a CUDA graph and
 * replayed with one {@code cuGraphLaunch} per step. The step, in this order, on the backend's compute
 * stream: {@link MoeLayer#zeroGrad()}, {@link MoeLayer#forward} of the fixed input {@code x},
 * {@link MoeLayer#backward} with the fixed output gradient {@code dY}, {@link MoeLayer#reduceGradients()},
 * copies of the step's output and input gradient into the fixed buffers {@link #output()} and
 * {@link #inputGrad()} that this object owns, {@link MoeLayer#stepExpertBias()}, and
 * {@link AdamW#stepOnDevice()}. The inputs are read where they are at each replay: write the next
 * batch into {@code x} and {@code dY} (stream-ordered or synchronously) before calling {@link #replay()}.
 *
 * <p>{@link #capture} runs the step once eagerly (this is the first training step: it makes the
 * layer's per-token-count tables and the kernels' modules outside the graph), then captures the same
 * step without running it. Every allocation and free inside the captured step is stream-ordered on the
 * compute stream, so it becomes the graph's own memory, kept by the driver until {@link #close()}; the
 * capture is refused if a buffer it allocated outlives it. The capture starts with
 * {@link MoeLayer#requireSyncFreeStep()}: a configuration that needs a host read refuses with an
 * {@link IllegalStateException} naming the option before anything runs. So does an expert-parallel
 * group ({@code W > 1}): the communicators of this backend cannot be captured (the in-process virtual
 * ranks meet through the host at every collective; {@code NcclCommunicator} queues on its own stream
 * and waits on the host for each collective, its watchdog).
 *
 * <p>A replay is exactly one more step: bitwise the eager step on the same inputs (output, input
 * gradient, every weight and gradient, the expert bias, the AdamW moments and counts). What does
 * <b>not</b> advance on the host during replays, and how to bring it back:
 * <ul>
 *   <li>{@link AdamW#steps()} / {@link AdamW#skippedSteps()}: replays are counted
 *       ({@link AdamW#recordReplayedStep()}), so these read the device counters back on request; the
 *       device bias-correction table is moved on by {@link AdamW#prepareDeviceStep()} before the
 *       replay that would run past it (one read and one upload every
 *       {@link AdamW#deviceTableSteps()} replays).</li>
 *   <li>The hyper-parameters are those of the capture (they are kernel arguments): changing
 *       {@link AdamW#options(AdamW.Options)} makes {@link #replay()} refuse; capture a new graph.</li>
 *   <li>Non-finite router logits are only flagged on the device: call {@link MoeLayer#checkStep()}
 *       after replays where you want them reported. Expert loads and bias live on the device and
 *       are read on request ({@code layer.expertBias().load()}).</li>
 * </ul>
 * Eager calls of the layer between replays are allowed (the graph uses the weights as they are): the
 * graph holds the layer's per-token-count tables ({@link MoeLayer#holdTables()}) until it is closed,
 * so however many token counts the layer sees meanwhile, the tables a replay reads stay alive. The
 * capture is refused if the captured step copies between host memory and the device (such a node
 * would touch host memory freed after the capture at every replay).
 *
 * <p>Threading: one thread at a time; {@link #replay()} returns once the step is queued (read the
 * results with a synchronous copy, or after synchronising the compute stream). The layer and the
 * optimiser must not be used from another thread during a replay. Close this graph before the layer
 * and the optimiser; {@link #replay()} after {@link #close()} throws {@link BufferClosedException}.
 */
public final class LayerStepGraph implements AutoCloseable {
    private final MoeLayer layer;
    private final AdamW optimizer;
    private final AdamW.Options options;
    private final DeviceBuffer x;      // [tokens, hidden] F32, the caller's
    private final DeviceBuffer dY;     // [tokens, hidden] F32, the caller's
    private final DeviceBuffer y;      // [tokens, hidden] F32, owned
    private final DeviceBuffer dX;     // [tokens, hidden] F32, owned
    private final CudaStream stream;
    private final MoeLayer.TableHold tables; // the per-token-count tables the graph reads stay alive
    private final ExclusiveUse use = new ExclusiveUse("LayerStepGraph");
    private CudaGraph graph;
    private long replays;
    private volatile boolean closed;

    private LayerStepGraph(MoeLayer layer, AdamW optimizer, DeviceBuffer x, DeviceBuffer dY, DeviceBuffer y,
            DeviceBuffer dX, CudaStream stream, MoeLayer.TableHold tables) {
        this.layer = layer;
        this.optimizer = optimizer;
        this.options = optimizer.options();
        this.x = x;
        this.dY = dY;
        this.y = y;
        this.dX = dX;
        this.stream = stream;
        this.tables = tables;
    }

    /**
     * Runs one training step of {@code layer} eagerly and captures the same step as a CUDA graph (see
     * the class comment). Every argument is checked before anything runs.
     *
     * @param layer     a sync-free layer ({@link MoeLayer#requireSyncFreeStep()}) on the CUDA backend,
     *                  with {@code W = 1}
     * @param optimizer an AdamW over exactly the layer's {@link MoeLayer#parameters()}, with the device
     *                  step ({@link AdamW#stepOnDevice()} decided on the device)
     * @param x         the fixed input: F32 {@code [tokens, hidden]} device buffer of the layer's
     *                  context, {@code tokens >= 1}; read at each replay, keep it open
     * @param dY        the fixed output gradient: F32, the shape of {@code x}; read at each replay
     * @return the captured step, its outputs holding the first (eager) step's results
     * @throws NullPointerException     if an argument is null
     * @throws IllegalArgumentException if {@code x} or {@code dY} is not a device buffer of the layer's
     *                                  context, closed, not F32 or of the wrong shape; if the layer's
     *                                  state is not on the CUDA backend's compute stream; if the
     *                                  optimiser's parameters are not exactly the layer's
     * @throws IllegalStateException    if the layer or optimiser is closed, the layer's step needs a host
     *                                  read (naming the option), {@code W > 1}, or the optimiser cannot
     *                                  step on the device; nothing ran
     * @throws CudaException            if the capture was refused by the driver (naming the operation);
     *                                  the eager step has then run, the graph is not kept
     */
    public static LayerStepGraph capture(MoeLayer layer, AdamW optimizer, Buffer x, Buffer dY) {
        Objects.requireNonNull(layer, "LayerStepGraph.capture: layer");
        Objects.requireNonNull(optimizer, "LayerStepGraph.capture: optimizer");
        Objects.requireNonNull(x, "LayerStepGraph.capture: x");
        Objects.requireNonNull(dY, "LayerStepGraph.capture: dY");
        if (layer.isClosed()) {
            throw new IllegalStateException("LayerStepGraph.capture: the layer is closed");
        }
        if (optimizer.isClosed()) {
            throw new IllegalStateException("LayerStepGraph.capture: the optimizer is closed");
        }
        DevicePool pool = layerPool(layer); // not on the CUDA backend: said first, before the options
        layer.requireSyncFreeStep();
        int world = layer.communicator().size();
        if (world > 1) {
            throw new IllegalStateException("LayerStepGraph.capture: expert parallelism over " + world + " ranks"
                    + " cannot be captured: the virtual ranks meet through the host at every collective and"
                    + " NcclCommunicator waits on the host for each collective; capture W = 1 layers");
        }
        CudaStream compute = new CudaBackend().stream();
        if (pool.stream() != compute) {
            throw new IllegalArgumentException("LayerStepGraph.capture: the layer's memory is ordered on " + pool.stream()
                    + ", not on the CUDA backend's compute stream " + compute + "; build the layer on the cuda backend");
        }
        int hidden = layer.config().hidden();
        DeviceBuffer dx = input("x", x, pool, -1, hidden);
        DeviceBuffer dy = input("dY", dY, pool, dx.shape().dim(0), hidden);
        requireSameParameters(layer.parameters(), optimizer.parameters());
        optimizer.prepareDeviceStep(); // refuses host-decided optimisers; the last check, the first change
        long tokens = dx.shape().dim(0);
        BufferScope owned = BufferScope.detached("LayerStepGraph outputs", layer.allocator());
        DeviceBuffer y;
        DeviceBuffer dX;
        try (BufferScope.Activation _ = owned.enter()) {
            y = pool.allocateUninitialized(DType.F32, Shape.of(tokens, hidden));
            dX = pool.allocateUninitialized(DType.F32, Shape.of(tokens, hidden));
            owned.detach(y); // the graph owns them, not a scope
            owned.detach(dX);
        } finally {
            owned.close();
        }
        LayerStepGraph g = new LayerStepGraph(layer, optimizer, dx, dy, y, dX, compute, layer.holdTables());
        try {
            g.step(); // the first step, eagerly: tables and modules are made outside the graph
            optimizer.prepareDeviceStep();
            int liveBefore = pool.liveCount();
            List<String> hostCopies = new java.util.ArrayList<>();
            g.graph = CudaGraph.capture(compute, g::step, hostCopies);
            if (!hostCopies.isEmpty()) { // a replay would read (or write) host memory that is gone by then
                throw new IllegalStateException("LayerStepGraph.capture: the captured step copies between host memory and"
                        + " the device " + hostCopies.size() + " time(s), which a replay would repeat on host memory"
                        + " freed after the capture: " + String.join("; ", hostCopies));
            }
            if (pool.liveCount() != liveBefore) {
                List<String> live = pool.liveBuffers();
                throw new IllegalStateException("LayerStepGraph.capture: the captured step left "
                        + (pool.liveCount() - liveBefore) + " buffer(s) allocated inside the graph alive (a cache made"
                        + " on first use inside the capture?); live now: " + String.join("; ", live));
            }
        } catch (RuntimeException | Error e) {
            try {
                g.close();
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
        return g;
    }

    /** One step: zero the gradients, forward, backward, reduce, copy out, bias step, optimiser step. */
    private void step() {
        layer.zeroGrad();
        try (BufferScope _ = layer.newScope()) { // what the step makes is freed before it ends
            MoeLayer.Forward f = layer.forward(x);
            Buffer out = f.output();
            Buffer in = layer.backward(f.context(), dY);
            layer.reduceGradients();
            y.copyFromAsync((DeviceBuffer) out, stream);
            dX.copyFromAsync((DeviceBuffer) in, stream);
        }
        layer.stepExpertBias();
        optimizer.stepOnDevice();
    }

    private static DevicePool layerPool(MoeLayer layer) {
        Buffer w = layer.gateWeight();
        if (!(w instanceof DeviceBuffer d)) {
            throw new IllegalArgumentException("LayerStepGraph.capture: the layer's weights are on " + w.device()
                    + " (backend not cuda); a CUDA graph needs a layer built on the cuda backend");
        }
        return d.pool();
    }

    private static DeviceBuffer input(String name, Buffer b, DevicePool pool, long tokens, int hidden) {
        if (!(b instanceof DeviceBuffer d)) {
            throw new IllegalArgumentException("LayerStepGraph.capture: " + name + " is on " + b.device()
                    + "; it must be a device buffer of the layer's device " + pool.device());
        }
        if (d.isClosed()) {
            throw new IllegalArgumentException("LayerStepGraph.capture: " + name + " is closed");
        }
        if (d.context() != pool.context()) {
            throw new IllegalArgumentException("LayerStepGraph.capture: " + name + " is on " + d.device()
                    + ", another context than the layer's " + pool.device());
        }
        Shape s = d.shape();
        boolean shaped = s.rank() == 2 && s.dim(1) == hidden && (tokens < 0 ? s.dim(0) >= 1 : s.dim(0) == tokens);
        if (d.dtype() != DType.F32 || !shaped) {
            throw new IllegalArgumentException("LayerStepGraph.capture: " + name + " must be F32 [" + (tokens < 0
                    ? "tokens >= 1" : tokens) + ", hidden=" + hidden + "] but is " + d.dtype() + " " + s);
        }
        return d;
    }

    private static void requireSameParameters(List<Parameter> layerParams, List<Parameter> optParams) {
        Map<Buffer, String> mine = new IdentityHashMap<>();
        for (Parameter p : layerParams) {
            mine.put(p.value(), p.name());
        }
        for (Parameter p : optParams) {
            if (mine.remove(p.value()) == null) {
                throw new IllegalArgumentException("LayerStepGraph.capture: the optimizer updates " + p.name()
                        + ", which is not a parameter of this layer; give it exactly layer.parameters()");
            }
        }
        if (!mine.isEmpty()) {
            throw new IllegalArgumentException("LayerStepGraph.capture: the optimizer does not update the layer's "
                    + mine.values() + "; give it exactly layer.parameters()");
        }
    }

    /**
     * Runs one more training step: one {@code cuGraphLaunch} on the compute stream, preceded, once
     * every {@link AdamW#deviceTableSteps()} replays, by the optimiser's table refresh (one device→host
     * read and one upload). Returns once the step is queued.
     *
     * @throws BufferClosedException if this graph is closed
     * @throws IllegalStateException if the layer, the optimiser, {@code x} or {@code dY} was closed, or
     *                               the optimiser's options changed since the capture; nothing ran
     * @throws CudaException         if the launch failed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this graph
     */
    public void replay() {
        use.enter("replay");
        try {
            requireUsable("replay");
            if (!optimizer.options().equals(options)) {
                throw new IllegalStateException("LayerStepGraph.replay: the optimizer's options changed since the capture ("
                        + options + " -> " + optimizer.options() + "); they are arguments of the captured kernels:"
                        + " capture a new graph");
            }
            optimizer.prepareDeviceStep();
            graph.launch();
            optimizer.recordReplayedStep();
            replays++;
        } finally {
            use.exit();
        }
    }

    /**
     * Runs the captured step once eagerly, without the graph: the same calls on the same fixed buffers
     * (with the optimiser's current options), so {@link #output()} and {@link #inputGrad()} hold its
     * results and the next replay continues from it. What a replay saves is the host work of this call
     * (JMH's {@code LayerStepGraphBenchmark} compares the two). Not counted in {@link #replays()}.
     *
     * @throws BufferClosedException if this graph is closed
     * @throws IllegalStateException if the layer, the optimiser, {@code x} or {@code dY} was closed
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this graph
     */
    public void stepEagerly() {
        use.enter("stepEagerly");
        try {
            requireUsable("stepEagerly");
            step();
        } finally {
            use.exit();
        }
    }

    private void requireUsable(String call) {
        if (closed) {
            throw new BufferClosedException(toString());
        }
        if (layer.isClosed() || optimizer.isClosed()) {
            throw new IllegalStateException("LayerStepGraph." + call + ": the " + (layer.isClosed() ? "layer" : "optimizer")
                    + " was closed; close the graph first");
        }
        if (x.isClosed() || dY.isClosed()) {
            throw new IllegalStateException("LayerStepGraph." + call + ": the fixed input " + (x.isClosed() ? "x" : "dY")
                    + " was closed; the graph reads it at every replay");
        }
    }

    /**
     * Returns the step's output {@code y}: F32 {@code [tokens, hidden]}, owned by this graph (do not
     * close it), rewritten by every replay.
     *
     * @return the output buffer
     */
    public DeviceBuffer output() {
        return y;
    }

    /**
     * Returns the step's input gradient {@code dX}: F32 {@code [tokens, hidden]}, owned by this graph
     * (do not close it), rewritten by every replay.
     *
     * @return the input-gradient buffer
     */
    public DeviceBuffer inputGrad() {
        return dX;
    }

    /**
     * Returns the replays so far (the eager step of {@link #capture} not counted).
     * @return the number of {@link #replay()} calls that launched the graph
     */
    public long replays() {
        return replays;
    }

    /**
     * Returns the token count of the captured step.
     * @return the rows of {@code x}
     */
    public long tokens() {
        return x.shape().dim(0);
    }

    /**
     * Destroys the executable graph (the driver then releases the graph's memory) and frees the
     * output buffers. Idempotent.
     *
     * @throws org.moe4j.core.ConcurrentUseException if another thread is inside a call of this graph
     */
    @Override
    public void close() {
        use.enter("close");
        try {
            if (closed) {
                return;
            }
            closed = true;
            try {
                if (graph != null) {
                    graph.close();
                }
            } finally {
                try {
                    y.close();
                    dX.close();
                } finally {
                    tables.close();
                }
            }
        } finally {
            use.exit();
        }
    }

    @Override
    public String toString() {
        return "LayerStepGraph[" + tokens() + " tokens, " + replays + " replays" + (closed ? ", closed" : "") + "]";
    }
}
