package org.moe4j.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;
import org.moe4j.optim.internal.CpuOptimizerKernels;

/** The CPU optimizer kernels: exact element-wise results, thread-count invariance, registration. */
class CpuOptimizerKernelsTest {
    private static final int N = 40_000; // several 16384-element chunks

    private static HostBuffer random(Random g, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) g.nextGaussian();
        }
        return HostBuffer.ofFloats(v, n);
    }

    @Test
    void accumulateAddsElementWiseExactly() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        Random g = new Random(seed);
        try (HostBuffer acc = random(g, N); HostBuffer x = random(g, N)) {
            float[] expect = acc.toFloatArray();
            float[] add = x.toFloatArray();
            for (int i = 0; i < N; i++) {
                expect[i] = expect[i] + add[i];
            }
            new CpuOptimizerKernels().accumulate(acc, x);
            assertArrayEquals(expect, acc.toFloatArray());
        }
    }

    @Test
    void adamWIsBitwiseTheSameForAnyThreadCount() {
        long seed = System.nanoTime();
        System.out.println("seed " + seed);
        OptimizerKernels.AdamWStep s = new OptimizerKernels.AdamWStep(1e-3f, 0.9f, 0.999f, 0.1f, 0.001f, 1e-8f, 0.9999f);
        float[][] results = new float[2][];
        int[] threads = {1, 3};
        for (int r = 0; r < 2; r++) {
            Random g = new Random(seed);
            try (HostBuffer p = random(g, N); HostBuffer grad = random(g, N); HostBuffer m = random(g, N);
                 HostBuffer v = HostBuffer.allocate(DType.F32, N); CpuParallel pool = new CpuParallel(threads[r])) {
                new CpuOptimizerKernels(pool).adamW(p, grad, m, v, s);
                results[r] = p.toFloatArray();
            }
        }
        assertArrayEquals(results[0], results[1]);
    }

    @Test
    void cpuKernelsRefuseNonHostBuffersAndAreRegistered() {
        assertTrue(Backends.kernels(OptimizerKernels.class, new CpuBackend()) instanceof CpuOptimizerKernels);
        try (HostBuffer a = HostBuffer.allocate(DType.F32, 2)) {
            var e = assertThrows(IllegalArgumentException.class, () -> new CpuOptimizerKernels().accumulate(a, null));
            assertTrue(e.getMessage().contains("x: the cpu optimizer kernels need a HostBuffer"), e.getMessage());
        }
    }

    @Test
    void adamWOnAnExplicitBackendMatchesTheDefaultConstructorBitForBit() {
        float[][] out = new float[2][];
        for (int r = 0; r < 2; r++) {
            try (HostBuffer p = HostBuffer.ofFloats(new float[] {0.5f, -1f, 2f, 0.25f}, 2, 2);
                 HostBuffer g = HostBuffer.ofFloats(new float[] {0.1f, 0.2f, -0.3f, 0.4f}, 2, 2);
                 AdamW opt = r == 0 ? new AdamW(List.of(new Parameter("w", p, g)), AdamW.Options.defaults(0.1))
                         : new AdamW(List.of(new Parameter("w", p, g)), AdamW.Options.defaults(0.1), new CpuBackend())) {
                opt.step();
                opt.step();
                out[r] = p.toFloatArray();
            }
        }
        assertArrayEquals(out[0], out[1]);
        assertEquals(4, out[0].length);
    }
}
