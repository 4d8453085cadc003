package org.moe4j.cuda.comm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.DropPolicy;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.cuda.kernels.CudaDispatchKernels;
import org.moe4j.cuda.kernels.HostStagedStaticPlans;
import org.moe4j.dispatch.CombineGrads;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;
import org.moe4j.dispatch.Dispatcher;

/**
 * The static-shape all-to-all on the CUDA backend (device-side plans) over virtual ranks: a whole
 * dispatch, combine, combine backward and dispatch backward step reads nothing back to the host
 * ({@link CudaBackend#hostReadCount()} unchanged over every rank's steps), and every output, gradient
 * and drop count is bitwise that of the same step with the host-staged plans (the
 * {@link DispatchKernels} defaults), with and without over-full chunks, for both drop policies.
 */
@Tag("gpu")
class StaticDispatchSyncFreeGpuTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static final int WORLD = 2;
    private static final int EXPERTS = 8;
    private static final int TOKENS = 24;
    private static final int HIDDEN = 8;
    private static final int TOP_K = 2;
    private static final int STEPS = 2;
    /** Buffers kept per step: expertInput, out, dExpertOutput, dTopkWeights, dX, then the 4 inputs. */
    private static final int PER_STEP = 9;
    private static CudaBackend cuda;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        cuda = new CudaBackend();
    }

    /** Everything of one rank's steps, downloaded after the measured window. */
    private record RankRun(List<byte[]> outputs, long[] overflow) {
    }

    @ParameterizedTest(name = "chunkRows={0} {1}")
    @CsvSource({"12, BY_POSITION", "12, BY_SCORE", "48, BY_POSITION"})
    void stepsReadNothingBackAndEqualTheHostStagedPlansBitwise(int chunkRows, DropPolicy policy) {
        long seed = System.nanoTime();
        System.out.println("StaticDispatchSyncFreeGpuTest seed " + seed + " chunkRows " + chunkRows + " " + policy);
        DispatchConfig config = DispatchConfig.of(EXPERTS)
                .withOptions(new DispatchOptions(DispatchOptions.STATIC_ALL_TO_ALL, false, false, 0, chunkRows))
                .withDropPolicy(policy);
        AtomicLong deviceReads = new AtomicLong();
        AtomicLong stagedReads = new AtomicLong();
        List<RankRun> got = run(config, new CudaDispatchKernels(cuda), seed, deviceReads);
        List<RankRun> want = run(config, new HostStagedStaticPlans(new CudaDispatchKernels(cuda)), seed, stagedReads);
        assertEquals(0, deviceReads.get(), "device→host reads during " + STEPS + " static steps on " + WORLD + " ranks");
        assertTrue(stagedReads.get() > 0, "the host-staged plans must show up in the counter (control)");
        long overflowed = 0;
        for (int r = 0; r < WORLD; r++) {
            assertArrayEquals(want.get(r).overflow(), got.get(r).overflow(), "rank " + r + " overflow, seed " + seed);
            for (long o : got.get(r).overflow()) {
                overflowed += o;
            }
            for (int i = 0; i < want.get(r).outputs().size(); i++) {
                assertArrayEquals(want.get(r).outputs().get(i), got.get(r).outputs().get(i),
                        "rank " + r + " output " + i + " seed " + seed);
            }
        }
        if (chunkRows < TOKENS * TOP_K / WORLD) {
            assertTrue(overflowed > 0, "chunkRows " + chunkRows + " overflowed nothing: the drop path was not exercised");
        } else {
            assertEquals(0, overflowed, "chunkRows " + chunkRows + " holds every slot");
        }
    }

    private static List<RankRun> run(DispatchConfig config, DispatchKernels kernels, long seed, AtomicLong reads) {
        CyclicBarrier barrier = new CyclicBarrier(WORLD);
        long[] before = new long[1];
        return VirtualRankGroup.run(cuda.context(), WORLD, TIMEOUT, c -> {
            Dispatcher d = Dispatcher.create(config, c, cuda, kernels);
            List<Buffer> keep = new ArrayList<>();
            List<DispatchResult> results = new ArrayList<>();
            try {
                List<Buffer[]> inputs = new ArrayList<>();
                for (int s = 0; s < STEPS; s++) {
                    inputs.add(inputs(new Random(seed * 31 + 7L * s + c.rank())));
                }
                await(barrier);
                if (c.rank() == 0) {
                    before[0] = cuda.hostReadCount();
                }
                await(barrier);
                for (Buffer[] in : inputs) {
                    DispatchResult res = d.dispatch(in[0], in[1], in[2]);
                    results.add(res);
                    Buffer out = d.combine(res, res.expertInput());
                    CombineGrads g = d.combineBackward(res, in[3]);
                    Buffer dX = d.dispatchBackward(res, g.dExpertOutput());
                    keep.addAll(List.of(res.expertInput(), out, g.dExpertOutput(), g.dTopkWeights(), dX));
                    keep.addAll(List.of(in));
                }
                await(barrier);
                if (c.rank() == 0) {
                    reads.set(cuda.hostReadCount() - before[0]);
                }
                await(barrier);
                List<byte[]> outputs = new ArrayList<>();
                for (int s = 0; s < STEPS; s++) {
                    for (int i = 0; i < 5; i++) {
                        outputs.add(bytes(keep.get(s * PER_STEP + i)));
                    }
                }
                long[] overflow = results.stream().mapToLong(DispatchResult::overflow).toArray();
                return new RankRun(outputs, overflow);
            } finally {
                for (int s = 0; s < keep.size(); s++) {
                    if (s % PER_STEP != 0) { // expertInput belongs to its DispatchResult
                        keep.get(s).close();
                    }
                }
                results.forEach(DispatchResult::close);
            }
        });
    }

    /** x, topkIdx (distinct experts, some empty slots), topkWeights, dOut, on the device. */
    private static Buffer[] inputs(Random g) {
        try (HostBuffer x = HostBuffer.allocate(DType.F32, TOKENS, HIDDEN);
                HostBuffer idx = HostBuffer.allocate(DType.I32, TOKENS, TOP_K);
                HostBuffer w = HostBuffer.allocate(DType.F32, TOKENS, TOP_K);
                HostBuffer dOut = HostBuffer.allocate(DType.F32, TOKENS, HIDDEN)) {
            for (long i = 0; i < x.numel(); i++) {
                x.setFloat(i, (float) g.nextGaussian());
                dOut.setFloat(i, (float) g.nextGaussian());
            }
            for (int t = 0; t < TOKENS; t++) {
                int first = g.nextInt(EXPERTS);
                idx.setInt(t * TOP_K, t % 7 == 3 ? -1 : first);
                idx.setInt(t * TOP_K + 1, (first + 1 + g.nextInt(EXPERTS - 1)) % EXPERTS);
                w.setFloat(t * TOP_K, g.nextInt(4) == 0 ? 0.5f : g.nextFloat());
                w.setFloat(t * TOP_K + 1, g.nextFloat());
            }
            return new Buffer[] {cuda.upload(x), cuda.upload(idx), cuda.upload(w), cuda.upload(dOut)};
        }
    }

    private static byte[] bytes(Buffer b) {
        try (HostBuffer h = b.toHost()) {
            return h.segment().toArray(ValueLayout.JAVA_BYTE);
        }
    }

    private static void await(CyclicBarrier b) {
        try {
            b.await();
        } catch (Exception e) {
            throw new IllegalStateException("rank barrier", e);
        }
    }

    @Test
    void refusedRoutingIsDeferredToOverflowWithoutAReadInDispatch() {
        DispatchConfig config = DispatchConfig.of(EXPERTS)
                .withOptions(new DispatchOptions(DispatchOptions.STATIC_ALL_TO_ALL, false, false, 0, TOKENS * TOP_K));
        List<String> messages = VirtualRankGroup.run(cuda.context(), WORLD, TIMEOUT, c -> {
            Dispatcher d = Dispatcher.create(config, c, cuda, new CudaDispatchKernels(cuda));
            Buffer[] in = inputs(new Random(c.rank()));
            try (HostBuffer w = in[2].toHost()) {
                if (c.rank() == 1) {
                    w.setFloat(5, Float.POSITIVE_INFINITY); // slot [2, 1]
                }
                in[2].copyFrom(w);
                try (DispatchResult res = d.dispatch(in[0], in[1], in[2])) {
                    assertEquals(0, d.hostReads(), "dispatch read nothing back (rank " + c.rank() + ")");
                    if (c.rank() == 0) {
                        assertEquals(0, res.overflow(), "rank 0's routing is fine");
                        return "";
                    }
                    return assertThrows(IllegalArgumentException.class, res::overflow).getMessage();
                }
            } finally {
                for (Buffer b : in) {
                    b.close();
                }
            }
        });
        assertTrue(messages.get(1).contains("topkWeights[2, 1] = Infinity is not finite"), messages.get(1));
    }
}
