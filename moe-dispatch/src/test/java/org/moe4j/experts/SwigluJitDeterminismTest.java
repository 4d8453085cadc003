package org.moe4j.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.experts.internal.CpuExpertKernels;

/**
 * The CPU SwiGLU gives the same bits before and after the JIT compiles it. The Vector API's
 * {@code lanewise(EXP)} does not (its C2 intrinsic and its Java fallback differ in the last bit for a few
 * percent of arguments), which made a training run's bits depend on how warm the JVM was: on which run
 * of a test, and so on the world size compared. Run first in a fresh JVM, the first repetition is
 * interpreted and the later ones compiled.
 */
class SwigluJitDeterminismTest {
    static final int ELEMENTS = 1 << 14;
    /** Enough calls for C2 to compile the kernel loop (it did within 20 on the old code). */
    static final int REPETITIONS = 300;

    @Test
    void swigluBitsDoNotDependOnTheJitState() {
        long seed = System.nanoTime();
        System.out.println("SwigluJitDeterminismTest seed " + seed);
        Random r = new Random(seed);
        float[] gate = new float[ELEMENTS];
        float[] up = new float[ELEMENTS];
        float[] dOut = new float[ELEMENTS];
        for (int i = 0; i < ELEMENTS; i++) {
            gate[i] = (float) (r.nextGaussian() * 4);
            up[i] = (float) r.nextGaussian();
            dOut[i] = (float) r.nextGaussian();
        }
        try (CpuParallel pool = new CpuParallel(1);
             HostBuffer g = HostBuffer.ofFloats(gate, ELEMENTS);
             HostBuffer u = HostBuffer.ofFloats(up, ELEMENTS);
             HostBuffer d = HostBuffer.ofFloats(dOut, ELEMENTS);
             HostBuffer out = HostBuffer.allocate(DType.F32, ELEMENTS);
             HostBuffer dGate = HostBuffer.allocate(DType.F32, ELEMENTS);
             HostBuffer dUp = HostBuffer.allocate(DType.F32, ELEMENTS)) {
            CpuExpertKernels k = new CpuExpertKernels(pool);
            float[][] first = null;
            for (int rep = 0; rep < REPETITIONS; rep++) {
                k.swigluForward(g, u, out);
                k.swigluBackward(g, u, d, dGate, dUp);
                float[][] now = {out.toFloatArray(), dGate.toFloatArray(), dUp.toFloatArray()};
                if (first == null) {
                    first = now;
                    continue;
                }
                for (int i = 0; i < now.length; i++) {
                    assertArrayEquals(first[i], now[i], 0f, "output " + i + " changed at call " + rep);
                }
            }
        }
    }
}
