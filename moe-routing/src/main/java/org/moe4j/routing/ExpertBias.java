package org.moe4j.routing;

import java.util.Arrays;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.BiasCentering;
import org.moe4j.core.config.MoeConfig;

/**
 * Aux-loss-free load balancing state (DeepSeek-V3): an fp32 bias per expert that is added to the
 * scores for selection only, plus the load (assignments per expert) accumulated over micro-batches.
 *
 * <p>{@link #update()} applies {@code bias += coeff · sign(mean(load) − load)}, then, with
 * {@link BiasCentering#ZERO_MEAN}, subtracts the mean of that step (torchtitan) so the bias keeps
 * zero mean; with {@link BiasCentering#NONE} the step is applied as is (Megatron-Core). The load is
 * reset after every update. Under expert parallelism, sum {@link #load()} over the ranks and call
 * {@link #update(long[])} with the sum on every rank, so all ranks keep the same bias.
 *
 * <p>Every method validates its arguments before touching the state: a failed call changes
 * nothing. Methods are synchronized; the bias buffer is read by the router's kernels.
 *
 * <p>Residency: the state starts in host memory. A {@link Router} on a device backend whose kernels
 * keep {@linkplain RoutingKernels#deviceStatistics() device statistics} moves the bias it made itself
 * to the device ({@link #onDevice()}): the load is then accumulated and the bias stepped by kernels
 * with no device→host read, and {@link #values()}, {@link #load()} and {@link #update(long[])}
 * become explicit transfers (a host read each for the first two), made only when called.
 */
public final class ExpertBias implements AutoCloseable {
    private final int experts;
    private final float coeff;
    private final BiasCentering centering;
    private final HostBuffer bias; // [experts]
    private final long[] load; // [experts]
    private int microBatches;
    private Resident device; // null: host-resident

    /** The device copy of the state: the kernels that step it, the bias and the load. */
    private record Resident(RoutingKernels kernels, Buffer bias, Buffer load) {
    }

    /**
     * Creates a new {@code ExpertBias}.
     * @param experts   number of experts, >= 1
     * @param coeff     update step, finite and >= 0 (0 = the bias never moves)
     * @param centering re-centring after each step
     * @throws IllegalArgumentException for out-of-range arguments
     */
    public ExpertBias(int experts, double coeff, BiasCentering centering) {
        if (experts < 1) {
            throw new IllegalArgumentException("ExpertBias: experts=" + experts + " must be >= 1");
        }
        if (!(coeff >= 0) || Double.isInfinite(coeff)) {
            throw new IllegalArgumentException("ExpertBias: coeff=" + coeff + " must be finite and >= 0");
        }
        this.experts = experts;
        this.coeff = (float) coeff;
        this.centering = Objects.requireNonNull(centering, "centering");
        this.bias = HostBuffer.allocate(DType.F32, experts);
        this.load = new long[experts];
    }

    /**
     * Returns a zero bias for that config.
     * @param config layer config (experts, expertBiasCoeff, biasCentering)
     * @return a zero bias for that config
     */
    public static ExpertBias of(MoeConfig config) {
        return new ExpertBias(config.experts(), config.expertBiasCoeff(), config.biasCentering());
    }

    /**
     * Returns number of experts.
     * @return number of experts
     */
    public int experts() {
        return experts;
    }

    /**
     * Returns the update step as fp32.
     * @return the update step as fp32
     */
    public float coeff() {
        return coeff;
    }

    /**
     * Returns the centring mode.
     * @return the centring mode
     */
    public BiasCentering centering() {
        return centering;
    }

    /**
     * Returns a copy of the bias values.
     * @return a copy of the bias values
     */
    public synchronized float[] values() {
        if (device != null) {
            try (HostBuffer h = device.bias().toHost()) { // a host read, made only when asked
                return h.toFloatArray();
            }
        }
        return bias.toFloatArray();
    }

    /**
     * Replaces the bias (e.g. from a checkpoint).
     *
     * @param values {@code experts} finite values
     * @throws IllegalArgumentException on wrong length or a non-finite value (naming its index)
     */
    public synchronized void setValues(float[] values) {
        if (values.length != experts) {
            throw new IllegalArgumentException("ExpertBias.setValues: got " + values.length + " values for "
                    + experts + " experts");
        }
        for (int e = 0; e < experts; e++) {
            if (!Float.isFinite(values[e])) {
                throw new IllegalArgumentException("ExpertBias.setValues: value of expert " + e + " is " + values[e]);
            }
        }
        bias.copyFrom(values);
        if (device != null) {
            device.bias().copyFrom(bias);
        }
    }

    /**
     * Returns the live F32 {@code [experts]} buffer the router reads (host memory, or the device copy
     * when {@link #onDevice()}); do not close it.
     * @return the live F32 {@code [experts]} buffer the router reads; do not close it
     */
    public synchronized Buffer buffer() {
        return device != null ? device.bias() : bias;
    }

    /**
     * Returns whether the bias and the load live on a device (stepped by kernels, read only on request).
     * @return whether the bias and the load live on a device
     */
    public synchronized boolean onDevice() {
        return device != null;
    }

    /**
     * Returns the live I64 {@code [experts]} device load, for an all-reduce over expert-parallel ranks
     * before {@link #update()} (which then steps from the summed contents); do not close it.
     *
     * @return the device load
     * @throws IllegalStateException if the state is host-resident (use {@link #load()})
     */
    public synchronized Buffer deviceLoad() {
        if (device == null) {
            throw new IllegalStateException("ExpertBias.deviceLoad: the state is host-resident; use load()");
        }
        return device.load();
    }

    /**
     * Moves the state to a device: the bias and the load are uploaded into {@code backend} memory
     * and from then on stepped by {@code kernels}. Called by the router that made this bias.
     */
    synchronized void moveToDevice(org.moe4j.core.backend.Backend backend, RoutingKernels kernels) {
        if (device != null) {
            throw new IllegalStateException("ExpertBias: already on a device");
        }
        Buffer b = backend.upload(bias);
        try (HostBuffer l = longs(load)) {
            device = new Resident(kernels, b, backend.upload(l));
        } catch (RuntimeException e) {
            b.close();
            throw e;
        }
    }

    /**
     * Adds one micro-batch's device counts to the device load, unless {@code firstBad} flags
     * non-finite logits (no host read).
     */
    synchronized void accumulate(Buffer tokensPerExpert, Buffer firstBad) {
        device.kernels().accumulateLoad(tokensPerExpert, firstBad, device.load());
        microBatches++;
    }

    /**
     * Returns a copy of the load accumulated since the last update.
     * @return a copy of the load accumulated since the last update
     */
    public synchronized long[] load() {
        if (device != null) {
            try (HostBuffer h = device.load().toHost()) { // a host read, made only when asked
                long[] out = new long[experts];
                for (int e = 0; e < experts; e++) {
                    out[e] = h.getLong(e);
                }
                return out;
            }
        }
        return load.clone();
    }

    /**
     * Returns forward calls accumulated since the last update.
     * @return forward calls accumulated since the last update
     */
    public synchronized int microBatches() {
        return microBatches;
    }

    /**
     * Replaces the load accumulated since the last update (e.g. when resuming from a checkpoint
     * saved between updates).
     *
     * @param load         {@code experts} non-negative counts
     * @param microBatches forward calls they came from, ≥ 0
     * @throws IllegalArgumentException on wrong length or a negative value (naming it); nothing changes
     */
    public synchronized void restoreLoad(long[] load, int microBatches) {
        requireLoad("restoreLoad", load);
        if (microBatches < 0) {
            throw new IllegalArgumentException("ExpertBias.restoreLoad: microBatches=" + microBatches + " is negative");
        }
        System.arraycopy(load, 0, this.load, 0, experts);
        if (device != null) {
            try (HostBuffer h = longs(load)) {
                device.load().copyFrom(h);
            }
        }
        this.microBatches = microBatches;
    }

    /**
     * Adds one micro-batch's assignments per expert to the load.
     *
     * @param tokensPerExpert {@code experts} non-negative counts
     * @throws IllegalArgumentException on wrong length or a negative count (naming its expert)
     */
    public synchronized void accumulate(int[] tokensPerExpert) {
        requireLoad("accumulate", Arrays.stream(tokensPerExpert).asLongStream().toArray());
        if (device != null) {
            long[] sum = load();
            for (int e = 0; e < experts; e++) {
                sum[e] += tokensPerExpert[e];
            }
            restoreLoad(sum, microBatches + 1);
            return;
        }
        for (int e = 0; e < experts; e++) {
            load[e] += tokensPerExpert[e];
        }
        microBatches++;
    }

    /**
     * Steps the bias from the accumulated load, then resets the load. On the device this is one
     * kernel over the device load (its current contents, e.g. after an all-reduce of
     * {@link #deviceLoad()}), with no host read.
     */
    public synchronized void update() {
        if (device != null) {
            device.kernels().updateExpertBias(device.load(), coeff, centering == BiasCentering.ZERO_MEAN, device.bias());
            microBatches = 0;
            return;
        }
        update(load.clone());
    }

    /**
     * Steps the bias from an externally summed load (e.g. all-reduced over expert-parallel ranks),
     * then resets this object's own accumulated load.
     *
     * @param summedLoad {@code experts} non-negative counts
     * @throws IllegalArgumentException on wrong length or a negative count (naming its expert)
     */
    public synchronized void update(long[] summedLoad) {
        requireLoad("update", summedLoad);
        if (device != null) {
            try (HostBuffer h = longs(summedLoad)) {
                device.load().copyFrom(h);
            }
            update();
            return;
        }
        float[] b = bias.toFloatArray();
        float[] delta = step(summedLoad, coeff, centering);
        for (int e = 0; e < experts; e++) {
            b[e] += delta[e];
        }
        bias.copyFrom(b);
        Arrays.fill(load, 0);
        microBatches = 0;
    }

    /**
     * The bias step for a load, without applying it.
     *
     * @param load      counts per expert
     * @param coeff     step size
     * @param centering centring mode
     * @return {@code coeff · sign(mean − load)}, minus its mean for {@link BiasCentering#ZERO_MEAN}
     */
    static float[] step(long[] load, float coeff, BiasCentering centering) {
        int n = load.length;
        long total = 0;
        for (long l : load) {
            total += l;
        }
        float mean = (float) total / n;
        float[] delta = new float[n];
        float sum = 0f;
        for (int e = 0; e < n; e++) {
            delta[e] = coeff * Math.signum(mean - (float) load[e]);
            sum += delta[e];
        }
        if (centering == BiasCentering.ZERO_MEAN) {
            float m = sum / n;
            for (int e = 0; e < n; e++) {
                delta[e] -= m;
            }
        }
        return delta;
    }

    /** A host I64 {@code [experts]} copy of {@code values} (caller closes it). */
    private HostBuffer longs(long[] values) {
        HostBuffer h = HostBuffer.allocate(DType.I64, experts);
        for (int e = 0; e < experts; e++) {
            h.segment().setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, e, values[e]);
        }
        return h;
    }

    private void requireLoad(String method, long[] values) {
        if (values.length != experts) {
            throw new IllegalArgumentException("ExpertBias." + method + ": got " + values.length + " counts for "
                    + experts + " experts");
        }
        for (int e = 0; e < experts; e++) {
            if (values[e] < 0) {
                throw new IllegalArgumentException("ExpertBias." + method + ": count of expert " + e + " is negative ("
                        + values[e] + ")");
            }
        }
    }

    /** Frees the bias buffer. */
    @Override
    public synchronized void close() {
        bias.close();
        if (device != null) {
            device.bias().close();
            device.load().close();
        }
    }
}
