package org.moe4j.optim;

import org.moe4j.core.buffer.Buffer;

/**
 * The element-wise F32 kernels of a training step: gradient accumulation and the AdamW update.
 * The CPU reference ships in this module (registered as the {@code cpu}
 * {@link org.moe4j.core.backend.KernelProvider}); a device backend implements the same interface so
 * that parameters, gradients and optimiser state never leave the device.
 *
 * <p>Both operations are element-wise with separately rounded fp32 operations (no fused
 * multiply-add), so every backend gives bitwise the same result. Validation of dtypes and shapes is
 * the caller's job; all buffers of one call hold the same number of F32 elements.
 */
public interface OptimizerKernels {

    /**
     * Scalars of one AdamW update, already in fp32 (see {@link AdamW} for the formula).
     *
     * @param lr    learning rate
     * @param beta1 first-moment decay
     * @param beta2 second-moment decay
     * @param bias1 {@code 1 − beta1^step}
     * @param bias2 {@code 1 − beta2^step}
     * @param eps   denominator epsilon
     * @param decay the decoupled weight-decay factor {@code 1 − lr·wd} (1 for undecayed tensors)
     */
    record AdamWStep(float lr, float beta1, float beta2, float bias1, float bias2, float eps, float decay) {
    }

    /**
     * {@code acc[i] = acc[i] + x[i]} for every element.
     *
     * @param acc in/out: F32
     * @param x   F32, same element count
     */
    void accumulate(Buffer acc, Buffer x);

    /**
     * One AdamW update of every element, in this order and with each operation rounded to fp32:
     * <pre>
     *   m = beta1·m + (1 − beta1)·g
     *   v = beta2·v + (1 − beta2)·g·g
     *   p = p·decay − lr·(m / bias1) / (sqrt(v / bias2) + eps)
     * </pre>
     *
     * @param param in/out: F32 parameter values
     * @param grad  F32 gradient
     * @param m     in/out: F32 first moment
     * @param v     in/out: F32 second moment
     * @param step  the scalars
     */
    void adamW(Buffer param, Buffer grad, Buffer m, Buffer v, AdamWStep step);

    /**
     * Finds the first NaN or infinite element ({@link AdamW} skips a step whose gradients hold one).
     * The default copies the buffer to the host and scans it there; a backend may override it with a
     * device scan that returns the same index.
     *
     * @param x F32
     * @return the flat index of the first non-finite element, or -1 when every element is finite
     */
    default long firstNonFinite(Buffer x) {
        try (org.moe4j.core.buffer.HostBuffer h = x.toHost()) {
            java.lang.foreign.MemorySegment s = h.segment();
            long n = h.numel();
            for (long i = 0; i < n; i++) {
                if (!Float.isFinite(s.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, i))) {
                    return i;
                }
            }
            return -1;
        }
    }

    /**
     * Whether these kernels decide AdamW's non-finite skip on the device ({@link #flagNonFinite},
     * {@link #adamWGuarded}, {@link #finishGuardedStep}), so {@link AdamW#stepOnDevice()} reads
     * nothing back. False by default: host kernels decide on the host at no synchronisation cost.
     *
     * @return true when the guarded device step is implemented
     */
    default boolean skipsOnDevice() {
        return false;
    }

    /**
     * Sets {@code state[2] = 1} when {@code x} holds a NaN or infinite element (leaves it otherwise);
     * queued, nothing read back.
     *
     * @param x     F32
     * @param state I64 {@code [4]}: {applied steps, skipped steps, skip flag, bias-table base}
     * @throws UnsupportedOperationException where {@link #skipsOnDevice()} is false
     */
    default void flagNonFinite(Buffer x, Buffer state) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no device-side skip decision");
    }

    /**
     * {@link #adamW} unless {@code state[2]} is set (then nothing changes), with the bias corrections
     * of step {@code t = state[0] + 1} taken from {@code biasTable} (row {@code state[0] - state[3]}:
     * the table's base lives on the device, so the host can move the table on between replays of a
     * captured step without changing the launch); the {@code bias1}/{@code bias2} of {@code step} are
     * ignored. A {@code t} outside the table updates nothing.
     *
     * @param param     in/out: F32 parameter values
     * @param grad      F32 gradient
     * @param m         in/out: F32 first moment
     * @param v         in/out: F32 second moment
     * @param step      the other scalars
     * @param biasTable F32 {@code [rows, 2]}: {@code (1 − beta1^t, 1 − beta2^t)} for
     *                  {@code t = state[3] + 1 ...}
     * @param state     I64 {@code [4]}: {applied steps, skipped steps, skip flag, the applied-step count
     *                  before the table's first row}
     * @throws UnsupportedOperationException where {@link #skipsOnDevice()} is false
     */
    default void adamWGuarded(Buffer param, Buffer grad, Buffer m, Buffer v, AdamWStep step, Buffer biasTable,
            Buffer state) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no device-side skip decision");
    }

    /**
     * Ends a guarded step on the device: counts it as skipped ({@code state[1]++}) when flagged, else
     * as applied ({@code state[0]++}), and clears the flag.
     *
     * @param state I64 {@code [4]}: {applied steps, skipped steps, skip flag, bias-table base}
     * @throws UnsupportedOperationException where {@link #skipsOnDevice()} is false
     */
    default void finishGuardedStep(Buffer state) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " has no device-side skip decision");
    }
}
