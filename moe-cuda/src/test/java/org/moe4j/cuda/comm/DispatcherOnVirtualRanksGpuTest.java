package org.moe4j.cuda.comm;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.core.DType;
import org.moe4j.core.backend.Backends;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;
import org.moe4j.dispatch.DispatchStrategy;
import org.moe4j.dispatch.Dispatcher;
import org.moe4j.dispatch.LocalGroup;

/**
 * The real dispatcher (CPU kernels) over virtual ranks on one GPU: dispatch, per-expert work,
 * combine and dispatch backward give bytes identical to the same run over {@link LocalGroup}.
 */
@Tag("gpu")
class DispatcherOnVirtualRanksGpuTest {
    private static final Duration TIMEOUT = Duration.ofSeconds(60);
    private static final int EXPERTS = 8;
    private static final int TOKENS = 24;
    private static final int HIDDEN = 8;
    private static final int TOP_K = 2;
    private static CudaContext gpu;

    @BeforeAll
    static void open() {
        GpuTestSupport.assumeGpu();
        gpu = CudaContext.open(0);
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    static List<Arguments> cases() {
        List<Arguments> list = new ArrayList<>();
        for (int w : new int[] {2, 4, 8}) {
            for (DispatchStrategy s : DispatchStrategy.values()) {
                list.add(Arguments.of(w, s));
            }
        }
        return list;
    }

    /** One rank's step: dispatch, expert e scales its rows by (e + 1), combine, dispatch backward. */
    private static List<byte[]> step(Communicator comm, DispatchStrategy strategy, long seed) {
        CpuBackend cpu = new CpuBackend();
        Dispatcher d = Dispatcher.create(DispatchConfig.of(EXPERTS).withStrategy(strategy), comm, cpu,
                Backends.kernels(DispatchKernels.class, cpu));
        Random g = new Random(seed * 131 + comm.rank());
        try (HostBuffer x = CommExercise.random(g, DType.F32, TOKENS, HIDDEN);
             HostBuffer idx = HostBuffer.allocate(DType.I32, TOKENS, TOP_K);
             HostBuffer w = HostBuffer.allocate(DType.F32, TOKENS, TOP_K)) {
            for (int t = 0; t < TOKENS; t++) {
                int first = g.nextInt(EXPERTS);
                idx.setInt(t * TOP_K, t % 7 == 3 ? -1 : first);
                idx.setInt(t * TOP_K + 1, (first + 1 + g.nextInt(EXPERTS - 1)) % EXPERTS);
                w.setFloat(t * TOP_K, t % 7 == 3 ? 0f : g.nextFloat());
                w.setFloat(t * TOP_K + 1, g.nextFloat());
            }
            try (DispatchResult res = d.dispatch(x, idx, w)) {
                HostBuffer y = ((HostBuffer) res.expertInput()).copy();
                int[] off = res.groupOffsets();
                for (int l = 0; l < res.localExperts(); l++) {
                    float scale = res.firstExpert() + l + 1;
                    for (long i = (long) off[l] * HIDDEN; i < (long) off[l + 1] * HIDDEN; i++) {
                        y.setFloat(i, y.getFloat(i) * scale);
                    }
                }
                Buffer out = d.combine(res, y);
                Buffer dx = d.dispatchBackward(res, y);
                List<byte[]> bytes = List.of(raw(out), raw(dx), raw((HostBuffer) res.expertInput()));
                out.close();
                dx.close();
                y.close();
                return bytes;
            }
        }
    }

    private static byte[] raw(Buffer b) {
        return ((HostBuffer) b).segment().toArray(ValueLayout.JAVA_BYTE);
    }

    @ParameterizedTest
    @MethodSource("cases")
    void dispatcherOverVirtualRanksMatchesLocalGroupBitForBit(int world, DispatchStrategy strategy) {
        long seed = System.nanoTime();
        System.out.println("seed " + seed + " world " + world + " " + strategy);
        List<List<byte[]>> reference = LocalGroup.run(world, c -> step(c, strategy, seed));
        List<List<byte[]>> virtual = VirtualRankGroup.run(gpu, world, TIMEOUT, c -> {
            try (HostStagingCommunicator staged = new HostStagingCommunicator(c, gpu)) {
                return step(staged, strategy, seed);
            }
        });
        assertEquals(world, virtual.size());
        for (int r = 0; r < world; r++) {
            for (int i = 0; i < reference.get(r).size(); i++) {
                assertArrayEquals(reference.get(r).get(i), virtual.get(r).get(i),
                        "rank " + r + " output " + i + " seed " + seed);
            }
        }
    }
}
