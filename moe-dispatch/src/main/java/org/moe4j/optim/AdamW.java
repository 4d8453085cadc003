package org.moe4j.optim;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;

/**
 * AdamW (Loshchilov &amp; Hutter): Adam with decoupled weight decay and bias correction, the same
 * update as {@code torch.optim.AdamW}:
 * <pre>
 *   p ← p · (1 − lr·wd)                         (decoupled decay; only tensors of rank ≥ 2)
 *   m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²
 *   p ← p − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + ε)
 * </pre>
 * Works on fp32 host parameters (the CPU backend); the update is element-wise, so it is
 * deterministic for any thread count. State is kept per parameter in fp32.
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

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final int CHUNK = 16384;

    private final List<Parameter> params;
    private final List<HostBuffer> m = new ArrayList<>();
    private final List<HostBuffer> v = new ArrayList<>();
    private final CpuParallel parallel;
    private Options options;
    private long step;

    /**
     * @param params  the parameters to update (fp32 host buffers)
     * @param options hyper-parameters
     * @throws IllegalArgumentException if a parameter is not an F32 host buffer
     */
    public AdamW(List<Parameter> params, Options options) {
        this.params = List.copyOf(params);
        this.options = options;
        this.parallel = CpuParallel.common();
        for (Parameter p : this.params) {
            host(p.name(), p.value());
            host(p.name() + ".grad", p.grad());
            m.add(HostBuffer.allocate(DType.F32, p.value().shape()));
            v.add(HostBuffer.allocate(DType.F32, p.value().shape()));
        }
    }

    private static HostBuffer host(String name, Buffer b) {
        if (!(b instanceof HostBuffer h) || b.dtype() != DType.F32) {
            throw new IllegalArgumentException("AdamW: parameter " + name + " must be an F32 host buffer, got "
                    + b.dtype() + " on " + b.device());
        }
        return h;
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
            MemorySegment ps = ((HostBuffer) p.value()).segment();
            MemorySegment gs = ((HostBuffer) p.grad()).segment();
            MemorySegment ms = m.get(i).segment();
            MemorySegment vs = v.get(i).segment();
            int n = Math.toIntExact(p.value().numel());
            parallel.forEachChunk(n, CHUNK, (chunk, from, to) -> {
                for (int j = from; j < to; j++) {
                    float g = gs.getAtIndex(F32, j);
                    float mj = b1 * ms.getAtIndex(F32, j) + (1 - b1) * g;
                    float vj = b2 * vs.getAtIndex(F32, j) + (1 - b2) * g * g;
                    ms.setAtIndex(F32, j, mj);
                    vs.setAtIndex(F32, j, vj);
                    float pj = ps.getAtIndex(F32, j) * decay;
                    pj -= lr * (mj / c1) / ((float) Math.sqrt(vj / c2) + eps);
                    ps.setAtIndex(F32, j, pj);
                }
            });
        }
    }

    /** Sets every gradient to zero. */
    public void zeroGrad() {
        for (Parameter p : params) {
            ((HostBuffer) p.grad()).zero();
        }
    }

    @Override
    public void close() {
        m.forEach(HostBuffer::close);
        v.forEach(HostBuffer::close);
    }
}
