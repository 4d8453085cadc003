package org.moe4j.dispatch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.Harness.Problem;
import org.moe4j.dispatch.internal.CpuDispatchKernels;

/** A dispatcher recycles its intermediate buffers (not zeroed): reuse must never show stale values. */
class DispatcherReuseTest {

    /** One rank's inputs. */
    private record Slice(HostBuffer x, HostBuffer idx, HostBuffer w, HostBuffer dOut) implements AutoCloseable {
        static Slice of(Problem p, int rank, int world) {
            int[] split = Harness.split(p.tokens(), world);
            int t0 = split[rank];
            int t = split[rank + 1] - t0;
            int h = p.hidden();
            int k = p.topK();
            return new Slice(HostBuffer.of(p.dtype(), Arrays.copyOfRange(p.x(), t0 * h, (t0 + t) * h), t, h),
                    HostBuffer.ofInts(Arrays.copyOfRange(p.topkIdx(), t0 * k, (t0 + t) * k), t, k),
                    HostBuffer.ofFloats(Arrays.copyOfRange(p.weights(), t0 * k, (t0 + t) * k), t, k),
                    HostBuffer.of(p.dtype(), Arrays.copyOfRange(p.dOut(), t0 * h, (t0 + t) * h), t, h));
        }

        @Override
        public void close() {
            x.close();
            idx.close();
            w.close();
            dOut.close();
        }
    }

    /** Forward and backward on one rank; every output (expert input with its padding included) flattened. */
    private static float[] pass(Dispatcher dispatcher, Slice s) {
        try (DispatchResult d = dispatcher.dispatch(s.x(), s.idx(), s.w())) {
            int h = s.x().shape().dimInt(1);
            try (HostBuffer y = HostBuffer.allocate(s.x().dtype(), d.rows(), h);
                    HostBuffer dXin = HostBuffer.allocate(s.x().dtype(), d.rows(), h)) {
                float[] in = ((HostBuffer) d.expertInput()).toFloatArray();
                Harness.experts(d, (HostBuffer) d.expertInput(), y);
                try (Buffer out = dispatcher.combine(d, y); CombineGrads g = dispatcher.combineBackward(d, s.dOut())) {
                    Harness.expertsBackward(d, (HostBuffer) g.dExpertOutput(), dXin);
                    try (Buffer dX = dispatcher.dispatchBackward(d, dXin)) {
                        return DispatcherTest.concat(List.of(in, ((HostBuffer) out).toFloatArray(),
                                ((HostBuffer) dX).toFloatArray(), ((HostBuffer) g.dTopkWeights()).toFloatArray(),
                                ((HostBuffer) g.dExpertOutput()).toFloatArray()));
                    }
                }
            }
        }
    }

    @Test
    void aReusedDispatcherGivesBitwiseTheResultsOfAFreshOneAndKeepsLiveContextsIntact() {
        long seed = DispatcherTest.seed("reuse");
        // the big problem leaves large values in every recycled buffer; the small one has padding
        Problem big = Harness.problem(seed, 61, 24, 16, 4, DType.F32, 0.0);
        Problem bigScaled = new Problem(big.tokens(), big.hidden(), big.experts(), big.topK(), big.dtype(),
                scaled(big.x(), 1e6f), big.topkIdx(), big.weights(), scaled(big.dOut(), 1e6f));
        Problem small = Harness.problem(seed + 1, 23, 24, 16, 4, DType.F32, 0.2);
        for (int world : new int[] {1, 2}) {
            for (DispatchConfig config : DispatcherTest.configs(small.experts())) {
                DispatchConfig padded = config.withGroupAlignment(Math.max(config.groupAlignment(), 5));
                String what = "W=" + world + " " + padded + " seed=" + seed;
                List<float[][]> res = LocalGroup.run(world, Harness.TIMEOUT, comm -> {
                    Dispatcher reused = Dispatcher.create(padded, comm, new CpuBackend(), Harness.kernels(2));
                    Dispatcher fresh = Dispatcher.create(padded, comm, new CpuBackend(), Harness.kernels(2));
                    try (Slice b = Slice.of(bigScaled, comm.rank(), world); Slice s = Slice.of(small, comm.rank(), world)) {
                        pass(reused, b); // every intermediate is now recycled memory holding big values
                        float[] want = pass(fresh, s);
                        float[] whileLive;
                        float[] liveBefore;
                        float[] liveAfter;
                        try (DispatchResult live = reused.dispatch(b.x(), b.idx(), b.w())) {
                            liveBefore = ((HostBuffer) live.expertInput()).toFloatArray();
                            whileLive = pass(reused, s);
                            liveAfter = ((HostBuffer) live.expertInput()).toFloatArray();
                        }
                        float[] again = pass(reused, s);
                        return new float[][] {want, whileLive, again, liveBefore, liveAfter};
                    }
                });
                for (float[][] r : res) {
                    DispatcherTest.assertBitwise(r[0], r[1], "reused while another context is open, " + what);
                    DispatcherTest.assertBitwise(r[0], r[2], "reused after the big context closed, " + what);
                    DispatcherTest.assertBitwise(r[3], r[4], "open context's expert input untouched, " + what);
                    assertTrue(r[0].length > 0, what);
                }
            }
        }
    }

    @Test
    void aClosedResultsExpertInputCannotBeReadAfterItsMemoryIsRecycled() {
        Problem p = Harness.problem(7, 9, 8, 4, 2, DType.F32, 0.0);
        List<String> msgs = LocalGroup.run(1, Harness.TIMEOUT, comm -> {
            Dispatcher dispatcher = Dispatcher.create(DispatchConfig.of(4), comm, new CpuBackend(), Harness.kernels(1));
            try (Slice s = Slice.of(p, 0, 1)) {
                DispatchResult d = dispatcher.dispatch(s.x(), s.idx(), s.w());
                HostBuffer in = (HostBuffer) d.expertInput();
                d.close();
                return assertThrows(RuntimeException.class, in::segment).getMessage();
            }
        });
        assertTrue(msgs.get(0).contains("used after close"), msgs.get(0));
    }

    @Test
    void composeIndexMapsThroughTheTableAndKeepsMinusOne() {
        CpuDispatchKernels kernels = new CpuDispatchKernels();
        try (HostBuffer table = HostBuffer.ofInts(new int[] {10, 11, 12}, 3);
                HostBuffer index = HostBuffer.ofInts(new int[] {2, -1, 0, 0}, 4);
                HostBuffer out = HostBuffer.allocate(DType.I32, 4);
                HostBuffer bad = HostBuffer.ofInts(new int[] {3}, 1);
                HostBuffer out1 = HostBuffer.allocate(DType.I32, 1)) {
            kernels.composeIndex(table, index, out);
            assertEquals(List.of(12, -1, 10, 10), Arrays.stream(out.toIntArray()).boxed().toList());
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> kernels.composeIndex(table, bad, out1));
            assertTrue(e.getMessage().contains("index[0] = 3 is outside [-1, 3)"), e.getMessage());
        }
    }

    private static float[] scaled(float[] v, float a) {
        float[] o = v.clone();
        for (int i = 0; i < o.length; i++) {
            o[i] *= a;
        }
        return o;
    }
}
