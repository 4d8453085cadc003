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
 */
public final class ExpertBias implements AutoCloseable {
    private final int experts;
    private final float coeff;
    private final BiasCentering centering;
    private final HostBuffer bias; // [experts]
    private final long[] load; // [experts]
    private int microBatches;

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
    }

    /**
     * Returns the live F32 {@code [experts]} host buffer the router reads; do not close it.
     * @return the live F32 {@code [experts]} host buffer the router reads; do not close it
     */
    public Buffer buffer() {
        return bias;
    }

    /**
     * Returns a copy of the load accumulated since the last update.
     * @return a copy of the load accumulated since the last update
     */
    public synchronized long[] load() {
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
        for (int e = 0; e < experts; e++) {
            load[e] += tokensPerExpert[e];
        }
        microBatches++;
    }

    /** Steps the bias from the accumulated load, then resets the load. */
    public synchronized void update() {
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
    }
}
