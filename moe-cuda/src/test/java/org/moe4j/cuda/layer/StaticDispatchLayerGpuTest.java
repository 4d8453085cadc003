package org.moe4j.cuda.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.comm.VirtualRankGroup;

/**
 * MoeLayer on the CUDA backend with the static-shape dispatch: forward, backward and AdamW steps are
 * bitwise those of the same layer with the count-exchange dispatch (same device kernels, the same rows
 * in the same order; the static plans are built on the device by {@code CudaDispatchKernels}). Runs on a GPU
 * or on the CPU device, over virtual ranks on one device.
 */
@Tag("gpu")
class StaticDispatchLayerGpuTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static CudaBackend cuda;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        cuda = new CudaBackend();
    }

    @ParameterizedTest(name = "W={0}")
    @ValueSource(ints = {2})
    void staticShapeLayerOnTheGpuIsBitwiseTheCountExchangeLayer(int world) {
        MoeConfig countExchange = MoeLayerGpuTest.config(world, DType.F32);
        MoeConfig staticShape = countExchange.toBuilder().dispatch(DispatchOptions.of(DispatchOptions.STATIC_ALL_TO_ALL))
                .build();
        long seed = System.nanoTime();
        System.out.println("StaticDispatchLayerGpuTest seed " + seed + " world " + world);
        List<MoeLayerGpuTest.RankResult> want = VirtualRankGroup.run(cuda.context(), world, TIMEOUT,
                c -> MoeLayerGpuTest.step(c, cuda, countExchange, seed));
        List<MoeLayerGpuTest.RankResult> got = VirtualRankGroup.run(cuda.context(), world, TIMEOUT,
                c -> MoeLayerGpuTest.step(c, cuda, staticShape, seed));
        for (int r = 0; r < world; r++) {
            MoeLayerGpuTest.RankResult a = got.get(r);
            MoeLayerGpuTest.RankResult e = want.get(r);
            String where = "rank " + r + " seed " + seed;
            assertTrue(a.onDevice(), where + ": output not in device memory");
            assertArrayEquals(e.topkIdx(), a.topkIdx(), where + ": topkIdx");
            assertArrayEquals(e.out(), a.out(), where + ": output");
            assertArrayEquals(e.dX(), a.dX(), where + ": dX");
            for (String name : e.grads().keySet()) {
                assertArrayEquals(e.grads().get(name), a.grads().get(name), where + ": gradient of " + name);
                assertArrayEquals(e.trained().get(name), a.trained().get(name), where + ": " + name + " after AdamW");
            }
        }
    }
}
