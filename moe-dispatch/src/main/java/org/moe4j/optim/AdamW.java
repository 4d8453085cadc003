package org.moe4j.optim;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.buffer.Buffer;

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
         * @throws IllegalArgumentException naming the bad value
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
            if (!(eps > 0)) {
                throw new IllegalArgumentException("AdamW eps=" + eps + ": must be > 0");
            }
            if (!(weightDecay >= 0)) {
                throw new IllegalArgumentException("AdamW weightDecay=" + weightDecay + ": must be >= 0");
            }
        }

        /**
         * @param lr learning rate
         * @return torch's defaults (β=(0.9, 0.999), ε=1e-8, wd=0.01) with this learning rate
         */
        public static Options defaults(double lr) {
            return new Options(lr, 0.9, 0.999, 1e-8, 0.01);
        }

        /**
         * @param v new learning rate
         * @return a copy with that learning rate
         */
        public Options withLr(double v) {
            return new Options(v, beta1, beta2, eps, weightDecay);
        }
    }

    private final List<Parameter> params;
    private final List<Buffer> m = new ArrayList<>(); // per parameter, its shape, F32
    private final List<Buffer> v = new ArrayList<>();
    private final OptimizerKernels kernels;
    private Options options;
    private long step;

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
        this(params, options, defaultBackend(params));
    }

    /**
     * @param params  the parameters to update (F32, in {@code backend}'s memory)
     * @param options hyper-parameters
     * @param backend allocates the optimiser state; its {@link OptimizerKernels} run the update
     * @throws IllegalArgumentException if a parameter is not F32, or is on another device than the
     *                                  backend's kernels expect
     */
    public AdamW(List<Parameter> params, Options options, Backend backend) {
        this(params, options, backend, Backends.kernels(OptimizerKernels.class, backend));
    }

    /**
     * @param params  the parameters to update (F32, in {@code backend}'s memory)
     * @param options hyper-parameters
     * @param backend allocates the optimiser state
     * @param kernels run the update
     * @throws IllegalArgumentException if a parameter is not F32
     */
    public AdamW(List<Parameter> params, Options options, Backend backend, OptimizerKernels kernels) {
        this.params = List.copyOf(params);
        this.options = Objects.requireNonNull(options, "options");
        this.kernels = Objects.requireNonNull(kernels, "kernels");
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

    /** @return the current hyper-parameters */
    public Options options() {
        return options;
    }

    /** @param options new hyper-parameters (e.g. a scheduled learning rate) */
    public void options(Options options) {
        this.options = options;
    }

    /** @return steps taken */
    public long steps() {
        return step;
    }

    /** Applies one update to every parameter from its current gradient (gradients are not zeroed). */
    public void step() {
        step++;
        Options o = options;
        float b1 = (float) o.beta1();
        float b2 = (float) o.beta2();
        float c1 = (float) (1 - Math.pow(o.beta1(), step));
        float c2 = (float) (1 - Math.pow(o.beta2(), step));
        float lr = (float) o.lr();
        float eps = (float) o.eps();
        for (int i = 0; i < params.size(); i++) {
            Parameter p = params.get(i);
            float decay = p.value().shape().rank() >= 2 ? (float) (1 - o.lr() * o.weightDecay()) : 1f;
            kernels.adamW(p.value(), p.grad(), m.get(i), v.get(i), new OptimizerKernels.AdamWStep(lr, b1, b2, c1, c2,
                    eps, decay));
        }
    }

    /** Sets every gradient to zero. */
    public void zeroGrad() {
        for (Parameter p : params) {
            p.grad().zero();
        }
    }

    @Override
    public void close() {
        m.forEach(Buffer::close);
        v.forEach(Buffer::close);
    }
}
