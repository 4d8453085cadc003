package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;
import org.moe4j.optim.internal.CpuOptimizerKernels;

/** The device scan behind AdamW's non-finite-gradient policy finds what the CPU scan finds. */
@Tag("gpu")
class CudaOptimizerKernelsGpuTest {
    private static CudaBackend cuda;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        cuda = new CudaBackend();
    }

    @AfterAll
    static void close() {
        cuda = null;
    }

    @Test
    void firstNonFiniteMatchesTheCpuScan() {
        CudaOptimizerKernels gk = new CudaOptimizerKernels(cuda);
        CpuOptimizerKernels ck = new CpuOptimizerKernels();
        int n = 300_001;
        long[][] cases = {{}, {299_999}, {70_001, 5}, {3, 200_000, 1}};
        float[] kinds = {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY};
        for (long[] bad : cases) {
            try (HostBuffer h = HostBuffer.allocate(org.moe4j.core.DType.F32, n)) {
                for (int i = 0; i < n; i++) {
                    h.setFloat(i, (i % 2 == 0 ? 1 : -1) * Float.MAX_VALUE / (1 + i % 7));
                }
                for (int j = 0; j < bad.length; j++) {
                    h.setFloat(bad[j], kinds[j % kinds.length]);
                }
                try (Buffer d = cuda.upload(h)) {
                    assertEquals(ck.firstNonFinite(h), gk.firstNonFinite(d), java.util.Arrays.toString(bad));
                }
            }
        }
    }

    @Test
    void adamWOnTheDeviceSkipsAStepWithANonFiniteGradient() {
        try (HostBuffer w = HostBuffer.ofFloats(new float[] {1, 2, 3, 4}, 2, 2);
             HostBuffer g = HostBuffer.ofFloats(new float[] {0.5f, Float.NaN, 0.5f, 0.5f}, 2, 2);
             Buffer wd = cuda.upload(w); Buffer gd = cuda.upload(g);
             AdamW opt = new AdamW(List.of(new Parameter("w", wd, gd)), AdamW.Options.defaults(0.1), cuda)) {
            AdamW.StepReport r = opt.step();
            assertFalse(r.applied());
            assertEquals("w", r.nonFiniteParameter());
            assertEquals(1, r.nonFiniteIndex());
            try (HostBuffer back = wd.toHost()) {
                assertArrayEquals(new float[] {1, 2, 3, 4}, back.toFloatArray());
            }
        }
    }
}
