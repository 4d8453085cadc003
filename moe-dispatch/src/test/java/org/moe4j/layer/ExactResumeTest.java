package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.checkpoint.CheckpointException;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;

/** A run saved at step N and resumed equals the uninterrupted run bitwise. */
class ExactResumeTest {
    static final int TOKENS = 32;
    static final int STEPS = 4;

    @TempDir
    Path tmp;

    static MoeConfig config(int world) {
        return MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(12).sharedExperts(1, 8).expertBiasCoeff(1e-3)
                .expertParallel(world).build();
    }

    static float[] data(long seed, int step, int n) {
        Random r = new Random(seed * 1_000_003L + step);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return v;
    }

    /** One training step on this rank's slice of the global batch; the bias is updated every second step. */
    static void step(MoeLayer layer, AdamW opt, long seed, int step) {
        step(layer, opt, seed, step, TOKENS);
    }

    /** {@link #step(MoeLayer, AdamW, long, int)} with a global batch of {@code tokens} split evenly over the ranks. */
    static void step(MoeLayer layer, AdamW opt, long seed, int step, int tokens) {
        int h = layer.config().hidden();
        int w = layer.communicator().size();
        int per = tokens / w;
        int r = layer.communicator().rank();
        float[] x = data(seed, step, tokens * h);
        float[] dy = data(seed + 1, step, tokens * h);
        try (HostBuffer xr = HostBuffer.ofFloats(java.util.Arrays.copyOfRange(x, r * per * h, (r + 1) * per * h), per, h);
             HostBuffer dyr = HostBuffer.ofFloats(java.util.Arrays.copyOfRange(dy, r * per * h, (r + 1) * per * h), per, h)) {
            MoeLayer.Forward f = layer.forward(xr);
            f.output().close();
            try (Buffer dx = layer.backward(f.context(), dyr)) {
                layer.reduceGradients();
            }
            opt.step();
            opt.zeroGrad();
            if (step % 2 == 1) {
                layer.updateExpertBias();
            }
        }
    }

    /** Weights, moments, bias, load and optimiser steps of one rank. */
    static Map<String, float[]> state(MoeLayer layer, AdamW opt) {
        Map<String, float[]> out = new HashMap<>();
        for (Parameter p : layer.parameters()) {
            out.put(p.name(), ((HostBuffer) p.value()).toFloatArray());
            out.put(p.name() + ".m", ((HostBuffer) opt.firstMoment(p.value())).toFloatArray());
            out.put(p.name() + ".v", ((HostBuffer) opt.secondMoment(p.value())).toFloatArray());
        }
        out.put("bias", layer.expertBias().values());
        long[] load = layer.expertBias().load();
        float[] l = new float[load.length + 2];
        for (int i = 0; i < load.length; i++) {
            l[i] = load[i];
        }
        l[load.length] = layer.expertBias().microBatches();
        l[load.length + 1] = opt.steps();
        out.put("load+steps", l);
        return out;
    }

    static List<Map<String, float[]>> straight(int world, int steps) {
        return LocalGroup.run(world, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(world), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                for (int s = 0; s < steps; s++) {
                    step(layer, opt, 42, s);
                }
                return state(layer, opt);
            }
        });
    }

    static void assertSame(List<Map<String, float[]>> want, List<Map<String, float[]>> got, String what) {
        assertEquals(want.size(), got.size());
        for (int r = 0; r < want.size(); r++) {
            assertEquals(want.get(r).keySet(), got.get(r).keySet());
            for (String k : want.get(r).keySet()) {
                float[] a = want.get(r).get(k);
                float[] b = got.get(r).get(k);
                for (int i = 0; i < a.length; i++) {
                    assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]),
                            what + ": rank " + r + " " + k + " element " + i);
                }
            }
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2})
    void resumedRunEqualsTheStraightRunBitwise(int world) {
        List<Map<String, float[]>> want = straight(world, STEPS);
        for (int saveAt : new int[] {1, 2}) { // after step 1 the bias load is mid-accumulation
            Path dir = tmp.resolve("state-" + world + "-" + saveAt);
            LocalGroup.run(world, comm -> {
                try (MoeLayer layer = MoeLayer.builder(config(world), comm).seed(7).build();
                     AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                    for (int s = 0; s < saveAt; s++) {
                        step(layer, opt, 42, s);
                    }
                    layer.saveTrainingState(dir, opt, saveAt);
                }
                return null;
            });
            List<Map<String, float[]>> got = LocalGroup.run(world, comm -> {
                try (MoeLayer layer = MoeLayer.builder(config(world), comm).seed(1234).build();
                     AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(5))) {
                    long from = layer.loadTrainingState(dir, opt);
                    assertEquals(saveAt, from);
                    for (int s = (int) from; s < STEPS; s++) {
                        step(layer, opt, 42, s);
                    }
                    return state(layer, opt);
                }
            });
            assertSame(want, got, "W=" + world + " saved at step " + saveAt);
        }
    }

    @Test
    void stateSavedAfterABiasUpdateResumesAtAnotherWorldSize() {
        List<Map<String, float[]>> at2 = straight(2, 2);
        Path dir = tmp.resolve("state-w2");
        Path mid = tmp.resolve("state-w2-mid");
        LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(2), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                step(layer, opt, 42, 0);
                step(layer, opt, 42, 1);
                layer.saveTrainingState(dir, opt, 2);
            }
            // per-rank loads that are never summed over the ranks cannot be regrouped at another W
            try (MoeLayer layer = MoeLayer.builder(config(2), comm).seed(7).syncReplicated(false).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                step(layer, opt, 42, 0);
                layer.saveTrainingState(mid, opt, 1);
            }
            return null;
        });
        for (int w : new int[] {1, 4}) {
            List<Map<String, float[]>> got = LocalGroup.run(w, comm -> {
                try (MoeLayer layer = MoeLayer.builder(config(w), comm).seed(99).build();
                     AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                    assertEquals(2, layer.loadTrainingState(dir, opt));
                    Map<String, float[]> s = state(layer, opt);
                    CheckpointException e = assertThrows(CheckpointException.class, () -> layer.loadTrainingState(mid, opt));
                    assertTrue(e.getMessage().contains("between expert-bias updates"), e.getMessage());
                    assertSame(List.of(s), List.of(state(layer, opt)), "a refused load changed the state");
                    return s;
                }
            });
            // replicated tensors equal rank 0's at W=2; routed experts are the W=2 ranks' experts re-split
            for (Map<String, float[]> g : got) {
                for (String k : List.of("gate.weight", "gate.weight.m", "gate.weight.v", "bias")) {
                    assertSame(List.of(Map.of(k, at2.get(0).get(k))), List.of(Map.of(k, g.get(k))), "W 2 -> " + w);
                }
            }
            float[] saved = concat(at2.get(0).get("experts.gate_proj.v"), at2.get(1).get("experts.gate_proj.v"));
            float[] loaded = new float[0];
            for (Map<String, float[]> g : got) {
                loaded = concat(loaded, g.get("experts.gate_proj.v"));
            }
            assertSame(List.of(Map.of("v", saved)), List.of(Map.of("v", loaded)), "routed moments W 2 -> " + w);
        }
    }

    static float[] concat(float[] a, float[] b) {
        float[] out = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    @Test
    void stateOfAnotherConfigOrOptimiserIsRefusedBeforeAnythingChanges() {
        Path dir = tmp.resolve("state");
        LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(1), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                step(layer, opt, 42, 0);
                step(layer, opt, 42, 1);
                layer.saveTrainingState(dir, opt, 2);
                try (MoeLayer other = MoeLayer.builder(config(1), comm).seed(8).build();
                     AdamW foreign = new AdamW(other.parameters(), AdamW.Options.defaults(1e-2))) {
                    assertThrows(IllegalArgumentException.class, () -> layer.saveTrainingState(dir, foreign, 3));
                    assertThrows(IllegalArgumentException.class, () -> layer.loadTrainingState(dir, foreign));
                    assertThrows(IllegalArgumentException.class, () -> layer.saveTrainingState(dir, opt, -1));
                }
            }
            MoeConfig wider = config(1).toBuilder().ffn(13).build();
            try (MoeLayer layer = MoeLayer.builder(wider, comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                Map<String, float[]> before = state(layer, opt);
                CheckpointException e = assertThrows(CheckpointException.class, () -> layer.loadTrainingState(dir, opt));
                assertTrue(e.getMessage().contains("only expertParallel may differ"), e.getMessage());
                assertSame(List.of(before), List.of(state(layer, opt)), "refused load changed the state");
            }
            return null;
        });
    }
}
