package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.dispatch.LocalGroupException;
import org.moe4j.optim.Parameter;

/** MoeLayer on the static-shape strategy: bitwise the count-exchange layer, and no dispatcher host read. */
class StaticDispatchLayerTest {

    static MoeConfig config(int world, int alignment, DType expertDtype, DispatchOptions dispatch) {
        return MoeConfig.builder().hidden(16).experts(8).topK(3).ffn(12).scoreFunction(ScoreFunction.SIGMOID)
                .routeNorm(true).sharedExperts(1, 8).expertParallel(world).groupAlignment(alignment)
                .expertDtype(expertDtype).dispatch(dispatch).build();
    }

    /** Output, dX, every gradient (per rank, by name) and the dispatcher's host reads over two steps. */
    static Map<String, float[]> run(MoeConfig cfg, float[] x, float[] dy, long[] hostReads) {
        int world = cfg.expertParallel();
        int h = cfg.hidden();
        int per = x.length / h / world;
        List<Map<String, float[]>> ranks = LocalGroup.run(world, comm -> {
            Map<String, float[]> out = new LinkedHashMap<>();
            int r = comm.rank();
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(5).build();
                    HostBuffer xr = HostBuffer.ofFloats(java.util.Arrays.copyOfRange(x, r * per * h, (r + 1) * per * h), per, h);
                    HostBuffer dyr = HostBuffer.ofFloats(java.util.Arrays.copyOfRange(dy, r * per * h, (r + 1) * per * h), per,
                            h)) {
                long before = layer.dispatcher().hostReads();
                for (int step = 0; step < 2; step++) {
                    MoeLayer.Forward f = layer.forward(xr);
                    out.put("out" + step, ((HostBuffer) f.output()).toFloatArray());
                    f.output().close();
                    try (Buffer dx = layer.backward(f.context(), dyr)) {
                        out.put("dx" + step, ((HostBuffer) dx).toFloatArray());
                    }
                }
                hostReads[r] = layer.dispatcher().hostReads() - before;
                layer.reduceGradients();
                for (Parameter p : layer.parameters()) {
                    try (HostBuffer g = p.grad().toHost()) { // a copy: closed here
                        out.put("grad." + p.name() + "@" + r, g.toFloatArray());
                    }
                }
            }
            return out;
        });
        Map<String, float[]> all = new LinkedHashMap<>();
        ranks.forEach(all::putAll);
        for (String k : List.of("out0", "dx0", "out1", "dx1")) {
            List<float[]> parts = new ArrayList<>();
            ranks.forEach(m -> parts.add(m.get(k)));
            all.put(k, concat(parts));
        }
        return all;
    }

    static float[] concat(List<float[]> parts) {
        float[] out = new float[parts.stream().mapToInt(a -> a.length).sum()];
        int at = 0;
        for (float[] a : parts) {
            System.arraycopy(a, 0, out, at, a.length);
            at += a.length;
        }
        return out;
    }

    @ParameterizedTest(name = "W={0} alignment={1} {2}")
    @CsvSource({"1,1,F32", "2,4,F32", "4,1,BF16", "4,8,F32"})
    void aLayerOnTheStaticShapeIsBitwiseTheCountExchangeLayerAndReadsNothingBack(int world, int alignment, DType dtype) {
        long seed = System.nanoTime();
        System.out.println("static layer seed=" + seed);
        Random rnd = new Random(seed);
        int tokens = 24;
        float[] x = new float[tokens * 16];
        float[] dy = new float[tokens * 16];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) rnd.nextGaussian();
            dy[i] = (float) rnd.nextGaussian();
        }
        long[] countReads = new long[world];
        long[] staticReads = new long[world];
        Map<String, float[]> want = run(config(world, alignment, dtype, DispatchOptions.DEFAULT), x, dy, countReads);
        Map<String, float[]> got = run(config(world, alignment, dtype, DispatchOptions.of("static-all-to-all")), x, dy,
                staticReads);
        assertEquals(want.keySet(), got.keySet());
        for (String k : want.keySet()) {
            assertArrayEquals(want.get(k), got.get(k), k + " seed=" + seed); // assertArrayEquals on floats is bitwise
        }
        for (int r = 0; r < world; r++) {
            assertEquals(0, staticReads[r], "dispatcher host reads in two static-shape steps, rank " + r);
            assertTrue(countReads[r] > 0, "the count exchange reads counts back, rank " + r);
        }
    }

    @Test
    void forceBalancedRoutingTakesTheFastPathWithoutPaddingAndEqualsTheGeneralPathBitForBit() {
        int world = 4;
        int per = 8; // 8 tokens x top-3 = 24 slots per rank: 3 per expert, 6 per destination rank
        Random rnd = new Random(7);
        float[] x = new float[world * per * 16];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        List<float[]> outs = new ArrayList<>();
        for (DispatchOptions d : List.of(DispatchOptions.DEFAULT, DispatchOptions.of("static-all-to-all"))) {
            MoeConfig cfg = config(world, 1, DType.F32, d);
            List<float[]> parts = LocalGroup.run(world, comm -> {
                int r = comm.rank();
                try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(3).forceBalanced(true).build();
                        HostBuffer xr = HostBuffer.ofFloats(java.util.Arrays.copyOfRange(x, r * per * 16, (r + 1) * per * 16),
                                per, 16)) {
                    long reads = layer.dispatcher().hostReads();
                    MoeLayer.Forward f = layer.forward(xr);
                    if (d != DispatchOptions.DEFAULT) {
                        assertEquals(per * 3, f.context().dispatch().rows(), "expert-input rows: W chunks of exactly 6");
                        assertEquals(0, layer.dispatcher().hostReads() - reads, "no host read on the fast path");
                        assertEquals(0, f.context().dispatch().overflow());
                    }
                    float[] out = ((HostBuffer) f.output()).toFloatArray();
                    f.output().close();
                    f.context().close();
                    return out;
                }
            });
            outs.add(concat(parts));
        }
        assertArrayEquals(outs.get(0), outs.get(1), "force-balanced fast path vs count exchange");
    }

    @Test
    void aStrategyRegisteredOutsideMoeDispatchIsFoundByNameAndUsedByTheLayer() {
        int world = 2;
        Random rnd = new Random(11);
        float[] x = new float[world * 12 * 16];
        float[] dy = new float[x.length];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) rnd.nextGaussian();
            dy[i] = (float) rnd.nextGaussian();
        }
        int before = org.moe4j.dispatch.CountingDispatcherProvider.CREATED.get();
        Map<String, float[]> want = run(config(world, 1, DType.F32, DispatchOptions.DEFAULT), x, dy, new long[world]);
        Map<String, float[]> got = run(config(world, 1, DType.F32,
                DispatchOptions.of(org.moe4j.dispatch.CountingDispatcherProvider.ID)), x, dy, new long[world]);
        assertEquals(before + world, org.moe4j.dispatch.CountingDispatcherProvider.CREATED.get(),
                "one dispatcher per rank from the registered provider");
        for (String k : want.keySet()) {
            assertArrayEquals(want.get(k), got.get(k), k);
        }
    }

    @Test
    void anUnknownStrategyIsRefusedWhenTheLayerIsBuiltNamingTheKnownOnes() {
        MoeConfig cfg = config(1, 1, DType.F32, DispatchOptions.of("deep-ep"));
        LocalGroupException e = assertThrows(LocalGroupException.class,
                () -> LocalGroup.run(1, comm -> MoeLayer.builder(cfg, comm).build()));
        assertTrue(e.getCause().getMessage().startsWith("no dispatch strategy 'deep-ep' is registered; known: ["),
                e.getCause().getMessage());
    }
}
