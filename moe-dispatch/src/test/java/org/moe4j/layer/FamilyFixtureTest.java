package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moe4j.checkpoint.LayerCheckpoint;
import org.moe4j.checkpoint.MoeNameMap;
import org.moe4j.checkpoint.SafetensorsFile;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.HfConfigImport;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.experts.GroupedExperts;
import org.moe4j.optim.Parameter;

/**
 * Every family's MoE block against its PyTorch reference (scripts/fixtures/family_fixtures.py, which
 * restates the family's transformers modeling code): the tiny config.json in the fixture is imported
 * with {@link HfConfigImport}, the weights are loaded by the family's {@link MoeNameMap} (per-expert,
 * fused chunked and fused interleaved layouts, router and expert biases, gated shared expert), and the
 * output, input gradient and every weight gradient must match at W = 1, 2, 4.
 */
class FamilyFixtureTest {
    /** fp32 Java vs float64 PyTorch (weights and inputs exactly representable in fp32). */
    static final double TOL = 1e-5;

    static Stream<Arguments> families() {
        return Stream.of("deepseek_v2", "deepseek_v3", "kimi_k2", "glm4_moe", "qwen2_moe", "qwen3_moe", "olmoe",
                "mixtral", "gpt_oss", "llama4").flatMap(f -> Stream.of(1, 2, 4).map(w -> Arguments.of(f, w)));
    }

    @ParameterizedTest(name = "{0} W={1}")
    @MethodSource("families")
    void forwardAndBackwardMatchTheTransformersSemantics(String family, int world) throws Exception {
        Path path = MoeLayerTest.fixture("family_" + family);
        try (SafetensorsFile f = SafetensorsFile.open(path)) {
            Map<String, float[]> got = run(family, world);
            int experts = HfConfigImport.parse(f.metadata().get("config"), family, b -> { }).experts();
            int checked = 0;
            for (String key : f.tensors().keySet()) {
                if (!key.equals("out") && !key.equals("dx") && !key.startsWith("grad.")) {
                    continue;
                }
                float[] a = got.get(key);
                assertNotNull(a, family + ": no result for " + key);
                float[] ref = f.view(key).toFloatArray();
                assertEquals(ref.length, a.length, key);
                double e = MoeLayerTest.relErr(a, ref);
                assertTrue(e < TOL, family + " " + key + ": relative error " + e + " (W=" + world + ")");
                checked++;
            }
            assertTrue(checked >= 5 + experts / 4, family + ": checked only " + checked + " tensors");
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("familyNames")
    void outputInputGradientAndExpertGradientsAreBitwiseIdenticalForWorldSizes124(String family) throws Exception {
        Map<String, float[]> w1 = run(family, 1);
        for (int world : new int[] {2, 4}) {
            Map<String, float[]> ww = run(family, world);
            assertEquals(w1.keySet(), ww.keySet());
            for (String k : w1.keySet()) {
                if (k.equals("out") || k.equals("dx") || k.contains("experts.") && !k.contains("shared_expert")) {
                    assertArrayEquals(w1.get(k), ww.get(k), 0f, family + " " + k + " W=" + world);
                } else { // replicated parameters: summed over the ranks in rank order
                    assertTrue(MoeLayerTest.relErr(ww.get(k), w1.get(k)) < MoeLayerTest.REPLICA_TOL, family + " " + k);
                }
            }
        }
    }

    static Stream<String> familyNames() {
        return families().map(a -> (String) a.get()[0]).distinct();
    }

    /** One forward and backward of the family's fixture at world size {@code world}, gathered by HF name. */
    static Map<String, float[]> run(String family, int world) throws Exception {
        Path path = MoeLayerTest.fixture("family_" + family);
        try (SafetensorsFile f = SafetensorsFile.open(path)) {
            String json = f.metadata().get("config");
            MoeConfig cfg = HfConfigImport.parse(json, "fixture " + family, b -> b.expertParallel(world));
            MoeNameMap names = MoeNameMap.forModelType(HfConfigImport.modelType(json, family));
            float[] x = f.view("x").toFloatArray();
            float[] dy = f.view("dy").toFloatArray();
            int h = cfg.hidden();
            int per = x.length / h / world;
            List<Map<String, float[]>> ranks = LocalGroup.run(world, comm -> {
                try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(5).build();
                     HostBuffer xr = HostBuffer.ofFloats(Arrays.copyOfRange(x, comm.rank() * per * h, (comm.rank() + 1) * per * h), per, h);
                     HostBuffer dyr = HostBuffer.ofFloats(Arrays.copyOfRange(dy, comm.rank() * per * h, (comm.rank() + 1) * per * h), per, h)) {
                    load(layer, f, names);
                    // the checkpoint loader (MoeNameMap-driven) reads the same HF tensors into the same parameters
                    try (MoeLayer viaLoader = MoeLayer.builder(cfg, comm).seed(6).build()) {
                        viaLoader.load(path, "", names, new LayerCheckpoint.Options(false, true));
                        List<Parameter> mine = layer.parameters();
                        List<Parameter> theirs = viaLoader.parameters();
                        assertEquals(mine.size(), theirs.size());
                        for (int i = 0; i < mine.size(); i++) {
                            assertArrayEquals(((HostBuffer) mine.get(i).value()).toFloatArray(),
                                    ((HostBuffer) theirs.get(i).value()).toFloatArray(), family + " " + mine.get(i).name());
                        }
                        assertArrayEquals(layer.expertBias().values(), viaLoader.expertBias().values(), family + " bias");
                    }
                    MoeLayer.Forward fw = layer.forward(xr);
                    Map<String, float[]> out = new HashMap<>();
                    out.put("out", ((HostBuffer) fw.output()).toFloatArray());
                    fw.output().close();
                    try (Buffer dx = layer.backward(fw.context(), dyr)) {
                        out.put("dx", ((HostBuffer) dx).toFloatArray());
                    }
                    layer.reduceGradients();
                    grads(layer, names, out);
                    return out;
                }
            });
            Map<String, float[]> all = new HashMap<>();
            for (String key : f.tensors().keySet()) {
                if (key.equals("out") || key.equals("dx") || key.startsWith("grad.")) {
                    float[] v = gather(ranks, key, cfg.experts());
                    if (v != null) {
                        all.put(key, v);
                    }
                }
            }
            return all;
        }
    }

    /** out/dx concatenated over ranks; per-rank expert slices of a fused gradient concatenated by expert. */
    static float[] gather(List<Map<String, float[]>> ranks, String key, int experts) {
        if (key.equals("out") || key.equals("dx")) {
            return MoeLayerTest.concat(ranks, key);
        }
        for (Map<String, float[]> r : ranks) {
            if (r.containsKey(key)) {
                return r.get(key); // replicated (reduced) or a per-expert tensor held by one rank
            }
        }
        float[][] slices = new float[experts][];
        int total = 0;
        for (Map<String, float[]> r : ranks) {
            for (int e = 0; e < experts; e++) {
                float[] s = r.get(key + "@" + e);
                if (s != null) {
                    slices[e] = s;
                    total += s.length;
                }
            }
        }
        if (slices[0] == null) {
            return null;
        }
        float[] out = new float[total];
        int at = 0;
        for (float[] s : slices) {
            System.arraycopy(s, 0, out, at, s.length);
            at += s.length;
        }
        return out;
    }

    // ------------------------------------------------------------------ HF layout <-> layer parameters

    private static void copy(float[] src, Buffer dst) {
        HostBuffer d = (HostBuffer) dst;
        assertEquals(d.numel(), src.length, "tensor size");
        for (int i = 0; i < src.length; i++) {
            d.setFloat(i, src[i]);
        }
    }

    /** Loads this rank's parameters from HF-named tensors through the family's name map. */
    static void load(MoeLayer layer, SafetensorsFile f, MoeNameMap m) {
        MoeConfig c = layer.config();
        copy(f.view(m.routerWeight()).toFloatArray(), layer.gateWeight());
        if (m.routerBias() != null && c.features().routerBias()) {
            copy(f.view(m.routerBias()).toFloatArray(), layer.routerBias());
        }
        if (m.scoreCorrectionBias() != null && f.tensors().containsKey(m.scoreCorrectionBias())) {
            layer.expertBias().setValues(f.view(m.scoreCorrectionBias()).toFloatArray());
        }
        GroupedExperts ex = layer.experts();
        int hid = ex.hidden();
        int ffn = ex.ffn();
        HostBuffer w1 = (HostBuffer) ex.w1();
        HostBuffer w3 = (HostBuffer) ex.w3();
        HostBuffer w2 = (HostBuffer) ex.w2();
        for (int e = 0; e < ex.localExperts(); e++) {
            int g = ex.firstExpert() + e;
            long b13 = (long) e * ffn * hid;
            long b2 = (long) e * hid * ffn;
            switch (m.expertLayout()) {
                case PER_EXPERT -> {
                    float[] gate = f.view(m.expertGate(g)).toFloatArray();
                    float[] up = f.view(m.expertUp(g)).toFloatArray();
                    float[] down = f.view(m.expertDown(g)).toFloatArray();
                    for (int i = 0; i < ffn * hid; i++) {
                        w1.setFloat(b13 + i, gate[i]);
                        w3.setFloat(b13 + i, up[i]);
                        w2.setFloat(b2 + i, down[i]);
                    }
                }
                case FUSED_CHUNKED, FUSED_INTERLEAVED -> {
                    boolean inter = m.expertLayout() == MoeNameMap.ExpertLayout.FUSED_INTERLEAVED;
                    float[] gu = f.view(m.gateProj()).toFloatArray();   // [E, hid, 2·ffn]
                    float[] dn = f.view(m.downProj()).toFloatArray();   // [E, ffn, hid]
                    long gb = (long) g * hid * 2 * ffn;
                    for (int r = 0; r < ffn; r++) {
                        int gc = inter ? 2 * r : r;
                        int uc = inter ? 2 * r + 1 : ffn + r;
                        for (int k = 0; k < hid; k++) {
                            w1.setFloat(b13 + (long) r * hid + k, gu[(int) (gb + (long) k * 2 * ffn + gc)]);
                            w3.setFloat(b13 + (long) r * hid + k, gu[(int) (gb + (long) k * 2 * ffn + uc)]);
                            w2.setFloat(b2 + (long) k * ffn + r, dn[(int) ((long) g * ffn * hid + (long) r * hid + k)]);
                        }
                    }
                    if (m.gateUpBias() != null && ex.b1() != null) {
                        float[] gub = f.view(m.gateUpBias()).toFloatArray(); // [E, 2·ffn]
                        float[] db = f.view(m.downBias()).toFloatArray();    // [E, hid]
                        for (int r = 0; r < ffn; r++) {
                            ((HostBuffer) ex.b1()).setFloat((long) e * ffn + r, gub[g * 2 * ffn + (inter ? 2 * r : r)]);
                            ((HostBuffer) ex.b3()).setFloat((long) e * ffn + r, gub[g * 2 * ffn + (inter ? 2 * r + 1 : ffn + r)]);
                        }
                        for (int k = 0; k < hid; k++) {
                            ((HostBuffer) ex.b2()).setFloat((long) e * hid + k, db[g * hid + k]);
                        }
                    }
                }
            }
        }
        if (layer.sharedExperts() != null) {
            List<Parameter> sp = layer.sharedExperts().parameters();
            copy(f.view(m.sharedGateProj()).toFloatArray(), sp.get(0).value());
            copy(f.view(m.sharedUpProj()).toFloatArray(), sp.get(1).value());
            copy(f.view(m.sharedDownProj()).toFloatArray(), sp.get(2).value());
            if (m.sharedExpertGate() != null) {
                copy(f.view(m.sharedExpertGate()).toFloatArray(), layer.sharedExpertGate());
            }
        }
    }

    private static float[] arr(Buffer b) {
        return ((HostBuffer) b).toFloatArray();
    }

    /** This rank's gradients under "grad." + HF name (fused tensors: one "@expert" slice per local expert). */
    static void grads(MoeLayer layer, MoeNameMap m, Map<String, float[]> out) {
        Map<String, Parameter> ps = new HashMap<>();
        for (Parameter p : layer.parameters()) {
            ps.put(p.name(), p);
        }
        out.put("grad." + m.routerWeight(), arr(ps.get("gate.weight").grad()));
        if (ps.containsKey("gate.bias")) {
            out.put("grad." + m.routerBias(), arr(ps.get("gate.bias").grad()));
        }
        GroupedExperts ex = layer.experts();
        int hid = ex.hidden();
        int ffn = ex.ffn();
        float[] g1 = arr(ps.get("experts.gate_proj").grad());
        float[] g3 = arr(ps.get("experts.up_proj").grad());
        float[] g2 = arr(ps.get("experts.down_proj").grad());
        for (int e = 0; e < ex.localExperts(); e++) {
            int g = ex.firstExpert() + e;
            int b13 = e * ffn * hid;
            switch (m.expertLayout()) {
                case PER_EXPERT -> {
                    out.put("grad." + m.expertGate(g), Arrays.copyOfRange(g1, b13, b13 + ffn * hid));
                    out.put("grad." + m.expertUp(g), Arrays.copyOfRange(g3, b13, b13 + ffn * hid));
                    out.put("grad." + m.expertDown(g), Arrays.copyOfRange(g2, b13, b13 + ffn * hid));
                }
                case FUSED_CHUNKED, FUSED_INTERLEAVED -> {
                    boolean inter = m.expertLayout() == MoeNameMap.ExpertLayout.FUSED_INTERLEAVED;
                    float[] gu = new float[hid * 2 * ffn];
                    float[] dn = new float[ffn * hid];
                    for (int r = 0; r < ffn; r++) {
                        for (int k = 0; k < hid; k++) {
                            gu[k * 2 * ffn + (inter ? 2 * r : r)] = g1[b13 + r * hid + k];
                            gu[k * 2 * ffn + (inter ? 2 * r + 1 : ffn + r)] = g3[b13 + r * hid + k];
                            dn[r * hid + k] = g2[e * hid * ffn + k * ffn + r];
                        }
                    }
                    out.put("grad." + m.gateProj() + "@" + g, gu);
                    out.put("grad." + m.downProj() + "@" + g, dn);
                    if (m.gateUpBias() != null && ps.containsKey("experts.gate_proj_bias")) {
                        float[] gb1 = arr(ps.get("experts.gate_proj_bias").grad());
                        float[] gb3 = arr(ps.get("experts.up_proj_bias").grad());
                        float[] gb2 = arr(ps.get("experts.down_proj_bias").grad());
                        float[] gub = new float[2 * ffn];
                        for (int r = 0; r < ffn; r++) {
                            gub[inter ? 2 * r : r] = gb1[e * ffn + r];
                            gub[inter ? 2 * r + 1 : ffn + r] = gb3[e * ffn + r];
                        }
                        out.put("grad." + m.gateUpBias() + "@" + g, gub);
                        out.put("grad." + m.downBias() + "@" + g, Arrays.copyOfRange(gb2, e * hid, (e + 1) * hid));
                    }
                }
            }
        }
        if (layer.sharedExperts() != null) {
            List<Parameter> sp = layer.sharedExperts().parameters();
            out.put("grad." + m.sharedGateProj(), arr(sp.get(0).grad()));
            out.put("grad." + m.sharedUpProj(), arr(sp.get(1).grad()));
            out.put("grad." + m.sharedDownProj(), arr(sp.get(2).grad()));
            if (m.sharedExpertGate() != null) {
                out.put("grad." + m.sharedExpertGate(), arr(ps.get("shared_expert_gate.weight").grad()));
            }
        }
    }
}
