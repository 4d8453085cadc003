package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.checkpoint.CheckpointException;
import org.moe4j.checkpoint.HfCheckpoint;
import org.moe4j.checkpoint.LayerCheckpoint;
import org.moe4j.checkpoint.MoeNameMap;
import org.moe4j.checkpoint.MoeTensor;
import org.moe4j.checkpoint.SafetensorsFile;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.optim.Parameter;

/**
 * Hugging Face checkpoints into and out of a layer: the sharded FP8 fixture and the MXFP4 fixture
 * made by scripts/fixtures/checkpoint_fixtures.py, export round trips, refusal by name.
 */
class HfCheckpointLayerTest {
    static final double FP32_TOL = 1e-5;
    static final String PREFIX = "model.layers.1.mlp.";

    @TempDir
    Path tmp;

    static Path resource(String name) throws Exception {
        return Path.of(HfCheckpointLayerTest.class.getResource("/fixtures/" + name).toURI());
    }

    static Map<String, float[]> reference() throws Exception {
        Map<String, float[]> out = new HashMap<>();
        try (SafetensorsFile f = SafetensorsFile.open(resource("hf_fp8_reference.safetensors"))) {
            for (String n : f.tensors().keySet()) {
                out.put(n, f.view(n).toFloatArray());
            }
        }
        return out;
    }

    static MoeConfig config(int world) throws Exception {
        try (SafetensorsFile f = SafetensorsFile.open(resource("hf_fp8_reference.safetensors"))) {
            JsonNode c = new ObjectMapper().readTree(f.metadata().get("config"));
            return MoeConfig.builder().hidden(c.get("hidden").asInt()).experts(c.get("experts").asInt())
                    .topK(c.get("topK").asInt()).ffn(c.get("ffn").asInt())
                    .scoreFunction(ScoreFunction.valueOf(c.get("scoreFunction").asText()))
                    .routeNorm(c.get("routeNorm").asBoolean()).routeScale(c.get("routeScale").asDouble())
                    .sharedExperts(c.get("sharedExperts").asInt(), c.get("sharedFfn").asInt())
                    .expertParallel(world).build();
        }
    }

    static double relErr(float[] a, float[] b) {
        double num = 0, den = 0;
        for (int i = 0; i < a.length; i++) {
            num += (a[i] - (double) b[i]) * (a[i] - (double) b[i]);
            den += (double) b[i] * b[i];
        }
        return Math.sqrt(num / den);
    }

    /** Every weight of one rank by HF name (DeepSeek-V3 names, no prefix). */
    static Map<String, float[]> weights(MoeLayer layer) {
        Map<String, float[]> out = new HashMap<>();
        layer.namedTensors("").forEach((n, b) -> out.put(n, b.toFloatArray()));
        out.put("gate.e_score_correction_bias", layer.expertBias().values());
        return out;
    }

    static void assertBitwise(float[] want, float[] got, String what) {
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) {
            assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]), what + " element " + i);
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 4})
    void shardedMixedDtypeFp8LayerLoadsExactlyAndMatchesTheReference(int world) throws Exception {
        Map<String, float[]> ref = reference();
        MoeConfig cfg = config(world);
        Path dir = resource("hf_fp8_sharded");
        int h = cfg.hidden();
        int tokens = ref.get("x").length / h;
        int per = tokens / world;
        List<Map<String, float[]>> ranks = LocalGroup.run(world, comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(5).build();
                 HostBuffer x = HostBuffer.ofFloats(Arrays.copyOfRange(ref.get("x"), comm.rank() * per * h, (comm.rank() + 1) * per * h), per, h);
                 HostBuffer dy = HostBuffer.ofFloats(Arrays.copyOfRange(ref.get("dy"), comm.rank() * per * h, (comm.rank() + 1) * per * h), per, h)) {
                layer.load(dir, PREFIX, MoeNameMap.forModelType("deepseek_v3"), LayerCheckpoint.Options.strict());
                Map<String, float[]> out = new HashMap<>(weights(layer));
                MoeLayer.Forward f = layer.forward(x);
                out.put("out", ((HostBuffer) f.output()).toFloatArray());
                f.output().close();
                try (Buffer dx = layer.backward(f.context(), dy)) {
                    out.put("dx", ((HostBuffer) dx).toFloatArray());
                }
                layer.reduceGradients();
                for (Parameter p : layer.parameters()) {
                    if (p.name().equals("gate.weight")) {
                        out.put("grad.gate.weight", ((HostBuffer) p.grad()).toFloatArray());
                    }
                }
                return out;
            }
        });
        float[] out = new float[tokens * h];
        float[] dx = new float[tokens * h];
        for (int r = 0; r < world; r++) {
            Map<String, float[]> m = ranks.get(r);
            for (Map.Entry<String, float[]> e : m.entrySet()) {
                if (ref.containsKey(PREFIX + e.getKey())) { // dequantisation is exact: bitwise equal to the reference
                    assertBitwise(ref.get(PREFIX + e.getKey()), e.getValue(), "W=" + world + " rank " + r + " " + e.getKey());
                }
            }
            System.arraycopy(m.get("out"), 0, out, r * per * h, per * h);
            System.arraycopy(m.get("dx"), 0, dx, r * per * h, per * h);
        }
        assertEquals(cfg.experts() / world * 3 + 1 + 3 + 1, ranks.get(0).size() - 3, "tensors per rank");
        assertTrue(relErr(out, ref.get("out")) < FP32_TOL, "out " + relErr(out, ref.get("out")));
        assertTrue(relErr(dx, ref.get("dx")) < FP32_TOL, "dx " + relErr(dx, ref.get("dx")));
        float[] gg = ranks.get(0).get("grad.gate.weight");
        assertTrue(relErr(gg, ref.get("grad." + PREFIX + "gate.weight")) < FP32_TOL, "gate grad");
    }

    static Geometry2 geo(MoeConfig c, int rank, int world) {
        int local = c.experts() / world;
        return new Geometry2(new LayerCheckpoint.Geometry(c.experts(), rank * local, local, c.hidden(), c.ffn()), local);
    }

    record Geometry2(LayerCheckpoint.Geometry g, int local) {
    }

    @Test
    void eachRankOpensOnlyTheShardsHoldingItsTensors() throws Exception {
        MoeConfig c = config(2);
        Set<String>[] opened = new Set[2];
        for (int rank = 0; rank < 2; rank++) {
            LayerCheckpoint.Geometry g = geo(c, rank, 2).g();
            try (HfCheckpoint ck = HfCheckpoint.open(resource("hf_fp8_sharded"));
                 HostBuffer w1 = HostBuffer.allocate(DType.F32, 2, c.ffn(), c.hidden())) {
                assertTrue(ck.openedShards().isEmpty(), "the index alone opens no shard");
                LayerCheckpoint.load(ck, PREFIX, MoeNameMap.deepseekV3(), g, Map.of(MoeTensor.EXPERT_GATE, w1),
                        new LayerCheckpoint.Options(false, true));
                opened[rank] = Set.copyOf(ck.openedShards());
            }
        }
        assertEquals(Set.of("model-00001-of-00003.safetensors"), opened[0]);
        assertEquals(Set.of("model-00002-of-00003.safetensors"), opened[1]);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2})
    void mxfp4DequantisationIsExactInTransformersOrientation(int world) throws Exception {
        Map<String, float[]> ref = new HashMap<>();
        int e;
        int h;
        int f;
        String pre;
        try (SafetensorsFile rf = SafetensorsFile.open(resource("hf_mxfp4_reference.safetensors"))) {
            for (String n : rf.tensors().keySet()) {
                ref.put(n, rf.view(n).toFloatArray());
            }
            e = Integer.parseInt(rf.metadata().get("experts"));
            h = Integer.parseInt(rf.metadata().get("hidden"));
            f = Integer.parseInt(rf.metadata().get("ffn"));
            pre = rf.metadata().get("prefix");
        }
        float[] gu = ref.get(pre + "experts.gate_up_proj"); // [E, H, 2F]
        float[] dn = ref.get(pre + "experts.down_proj");    // [E, F, H]
        float[] gub = ref.get(pre + "experts.gate_up_proj_bias"); // [E, 2F]
        float[] dnb = ref.get(pre + "experts.down_proj_bias");    // [E, H]
        MoeNameMap oss = MoeNameMap.forModelType("gpt_oss");
        int local = e / world;
        for (int rank = 0; rank < world; rank++) {
            LayerCheckpoint.Geometry g = new LayerCheckpoint.Geometry(e, rank * local, local, h, f);
            Map<MoeTensor, HostBuffer> t = new EnumMap<>(MoeTensor.class);
            t.put(MoeTensor.ROUTER_WEIGHT, HostBuffer.allocate(DType.F32, e, h));
            t.put(MoeTensor.ROUTER_BIAS, HostBuffer.allocate(DType.F32, e));
            t.put(MoeTensor.EXPERT_GATE, HostBuffer.allocate(DType.F32, local, f, h));
            t.put(MoeTensor.EXPERT_UP, HostBuffer.allocate(DType.F32, local, f, h));
            t.put(MoeTensor.EXPERT_DOWN, HostBuffer.allocate(DType.F32, local, h, f));
            t.put(MoeTensor.EXPERT_GATE_BIAS, HostBuffer.allocate(DType.F32, local, f));
            t.put(MoeTensor.EXPERT_UP_BIAS, HostBuffer.allocate(DType.F32, local, f));
            t.put(MoeTensor.EXPERT_DOWN_BIAS, HostBuffer.allocate(DType.F32, local, h));
            try (HfCheckpoint ck = HfCheckpoint.open(resource("hf_mxfp4"))) {
                LayerCheckpoint.load(ck, pre, oss, g, t, LayerCheckpoint.Options.strict());
                float[] w1 = t.get(MoeTensor.EXPERT_GATE).toFloatArray();
                float[] w3 = t.get(MoeTensor.EXPERT_UP).toFloatArray();
                float[] w2 = t.get(MoeTensor.EXPERT_DOWN).toFloatArray();
                float[] b1 = t.get(MoeTensor.EXPERT_GATE_BIAS).toFloatArray();
                float[] b3 = t.get(MoeTensor.EXPERT_UP_BIAS).toFloatArray();
                float[] b2 = t.get(MoeTensor.EXPERT_DOWN_BIAS).toFloatArray();
                for (int le = 0; le < local; le++) {
                    int ge = rank * local + le;
                    for (int j = 0; j < f; j++) {
                        for (int k = 0; k < h; k++) {
                            float gate = gu[(ge * h + k) * 2 * f + 2 * j];
                            float up = gu[(ge * h + k) * 2 * f + 2 * j + 1];
                            assertEquals(Float.floatToRawIntBits(gate), Float.floatToRawIntBits(w1[(le * f + j) * h + k]));
                            assertEquals(Float.floatToRawIntBits(up), Float.floatToRawIntBits(w3[(le * f + j) * h + k]));
                            assertEquals(Float.floatToRawIntBits(dn[(ge * f + j) * h + k]),
                                    Float.floatToRawIntBits(w2[(le * h + k) * f + j]));
                        }
                        assertEquals(gub[ge * 2 * f + 2 * j], b1[le * f + j], 0f);
                        assertEquals(gub[ge * 2 * f + 2 * j + 1], b3[le * f + j], 0f);
                    }
                    for (int k = 0; k < h; k++) {
                        assertEquals(dnb[ge * h + k], b2[le * h + k], 0f);
                    }
                }
                assertArrayEquals(ref.get(pre + "router.weight"), t.get(MoeTensor.ROUTER_WEIGHT).toFloatArray(), 0f);
                assertArrayEquals(ref.get(pre + "router.bias"), t.get(MoeTensor.ROUTER_BIAS).toFloatArray(), 0f);
            } finally {
                t.values().forEach(HostBuffer::close);
            }
        }
    }

    private Path copyFixture(String name) throws Exception {
        Path src = resource(name);
        Path dst = Files.createDirectories(tmp.resolve(name + System.nanoTime()));
        try (Stream<Path> s = Files.list(src)) {
            for (Path p : s.toList()) {
                Files.copy(p, dst.resolve(p.getFileName()));
            }
        }
        return dst;
    }

    private void assertRefusedUnchanged(Path ckpt, MoeNameMap names, String fragment) throws Exception {
        MoeConfig cfg = config(1);
        LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(3).build()) {
                Map<String, float[]> before = weights(layer);
                Exception e = assertThrows(RuntimeException.class,
                        () -> layer.load(ckpt, PREFIX, names, LayerCheckpoint.Options.strict()));
                assertTrue(e.getMessage().contains(fragment), e.getMessage());
                Map<String, float[]> after = weights(layer);
                for (String n : before.keySet()) {
                    assertArrayEquals(before.get(n), after.get(n), 0f, n + " changed by a refused load");
                }
            }
            return null;
        });
    }

    @Test
    void missingOrMisShapedFamilyTensorsAreRefusedByNameBeforeAnyWeightIsWritten() throws Exception {
        ObjectMapper json = new ObjectMapper();
        // a scale missing from the index
        Path d1 = copyFixture("hf_fp8_sharded");
        ObjectNode idx = (ObjectNode) json.readTree(d1.resolve(HfCheckpoint.INDEX).toFile());
        ((ObjectNode) idx.get("weight_map")).remove(PREFIX + "experts.3.down_proj.weight_scale_inv");
        json.writeValue(d1.resolve(HfCheckpoint.INDEX).toFile(), idx);
        assertRefusedUnchanged(d1, MoeNameMap.deepseekV3(), "has no block scales " + PREFIX + "experts.3.down_proj.weight_scale_inv");
        // the index points at a shard that lacks the tensor
        Path d2 = copyFixture("hf_fp8_sharded");
        idx = (ObjectNode) json.readTree(d2.resolve(HfCheckpoint.INDEX).toFile());
        ((ObjectNode) idx.get("weight_map")).put(PREFIX + "experts.3.up_proj.weight", "model-00003-of-00003.safetensors");
        json.writeValue(d2.resolve(HfCheckpoint.INDEX).toFile(), idx);
        assertRefusedUnchanged(d2, MoeNameMap.deepseekV3(), "missing tensor " + PREFIX + "experts.3.up_proj.weight");
        // a file holding family tensors the layer has no parameter for (gpt-oss router and expert biases)
        MoeConfig oss = MoeConfig.builder().hidden(32).experts(4).topK(2).ffn(32).build();
        LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(oss, comm).seed(3).build()) {
                float[] before = ((HostBuffer) layer.experts().w1()).toFloatArray();
                Exception e = assertThrows(CheckpointException.class, () -> layer.load(resource("hf_mxfp4"),
                        "model.layers.0.mlp.", MoeNameMap.forModelType("gpt_oss"), LayerCheckpoint.Options.strict()));
                assertTrue(e.getMessage().contains("holds model.layers.0.mlp.router.bias (ROUTER_BIAS)"), e.getMessage());
                assertArrayEquals(before, ((HostBuffer) layer.experts().w1()).toFloatArray(), 0f);
                layer.load(resource("hf_mxfp4"), "model.layers.0.mlp.", MoeNameMap.forModelType("gpt_oss"),
                        new LayerCheckpoint.Options(false, true)); // explicitly dropping them loads the rest
                assertFalse(Arrays.equals(before, ((HostBuffer) layer.experts().w1()).toFloatArray()));
            }
            return null;
        });
        // a shard-escaping index entry
        Path d3 = copyFixture("hf_fp8_sharded");
        idx = (ObjectNode) json.readTree(d3.resolve(HfCheckpoint.INDEX).toFile());
        ((ObjectNode) idx.get("weight_map")).put(PREFIX + "gate.weight", "../model-00002-of-00003.safetensors");
        json.writeValue(d3.resolve(HfCheckpoint.INDEX).toFile(), idx);
        assertRefusedUnchanged(d3, MoeNameMap.deepseekV3(), "not a plain file name");
        // mis-shaped and missing tensors in an export
        MoeConfig cfg = config(1);
        Path good = tmp.resolve("good");
        LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(1).build()) {
                layer.export(good, PREFIX, MoeNameMap.deepseekV3(), DType.F32);
            }
            return null;
        });
        MoeConfig wider = cfg.toBuilder().ffn(cfg.ffn() + 1).build();
        LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(wider, comm).seed(3).build()) {
                Exception e = assertThrows(CheckpointException.class,
                        () -> layer.load(good, PREFIX, MoeNameMap.deepseekV3(), LayerCheckpoint.Options.strict()));
                assertTrue(e.getMessage().contains("has shape [" + cfg.ffn() + ", " + cfg.hidden() + "] but the layer needs ["
                        + wider.ffn()), e.getMessage());
            }
            return null;
        });
        assertRefusedUnchanged(good, MoeNameMap.forModelType("qwen3_moe"), "family qwen3_moe has no tensor for SHARED_GATE");
    }

    @Test
    void familiesWithoutABiasLoadWithoutOneAndZeroTheLayersBias() throws Exception {
        MoeConfig cfg = config(1).toBuilder().sharedExperts(0, 0).build();
        Path dir = tmp.resolve("qwen3");
        LocalGroup.run(1, comm -> {
            try (MoeLayer a = MoeLayer.builder(cfg, comm).seed(1).build();
                 MoeLayer b = MoeLayer.builder(cfg, comm).seed(2).build()) {
                a.export(dir, "model.layers.0.mlp.", MoeNameMap.forModelType("qwen3_moe"), DType.F32);
                b.expertBias().setValues(new float[] {1, 2, 3, 4});
                b.load(dir, "model.layers.0.mlp.", MoeNameMap.forModelType("qwen3_moe"), LayerCheckpoint.Options.strict());
                assertArrayEquals(new float[4], b.expertBias().values(), 0f);
                assertArrayEquals(a.experts().w2() instanceof HostBuffer hb ? hb.toFloatArray() : null,
                        ((HostBuffer) b.experts().w2()).toFloatArray(), 0f);
            }
            return null;
        });
        try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
            assertFalse(ck.names().stream().anyMatch(n -> n.contains("bias")), ck.names().toString());
        }
    }

    @Test
    void nonFiniteValuesAreRefusedNamingTensorAndElement() throws Exception {
        MoeConfig cfg = config(1);
        Path dir = tmp.resolve("nan");
        LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(1).build()) {
                ((HostBuffer) layer.experts().w3()).setFloat(cfg.ffn() * cfg.hidden() + 5, Float.POSITIVE_INFINITY);
                layer.export(dir, PREFIX, MoeNameMap.deepseekV3(), DType.BF16);
            }
            return null;
        });
        assertRefusedUnchanged(dir, MoeNameMap.deepseekV3(), PREFIX + "experts.1.up_proj.weight: element [0, 5]");
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 4})
    void exportThenLoadRoundTripsBitwiseAtAnyWorldSize(int world) throws Exception {
        MoeConfig cfg = config(world);
        Path dir = tmp.resolve("export-" + world);
        Path bf = tmp.resolve("export-bf16-" + world);
        List<Map<String, float[]>> saved = LocalGroup.run(world, comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(1).build()) {
                layer.load(resource("hf_fp8_sharded"), PREFIX, MoeNameMap.deepseekV3(), LayerCheckpoint.Options.strict());
                layer.export(dir, PREFIX, MoeNameMap.deepseekV3(), DType.F32);
                layer.export(bf, PREFIX, MoeNameMap.deepseekV3(), DType.BF16);
                String check = System.getProperty("moe4j.exportCheckDir");
                if (check != null && world == 2) { // for scripts/fixtures/checkpoint_fixtures.py --check-export
                    layer.export(Path.of(check), PREFIX, MoeNameMap.deepseekV3(), DType.F32);
                }
                return weights(layer);
            }
        });
        Map<String, float[]> all = new HashMap<>();
        saved.forEach(all::putAll);
        try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
            assertEquals(1 + 1 + 3 + cfg.experts() * 3, ck.names().size(), ck.names().toString());
            String first = ck.shardOf(PREFIX + "gate.weight").path().getFileName().toString();
            assertTrue(first.matches("model-[0-9a-f]+-00001-of-0000" + world + "\\.safetensors"), first);
            String last = ck.shardOf(PREFIX + "experts." + (cfg.experts() - 1) + ".up_proj.weight").path().getFileName()
                    .toString();
            assertTrue(last.matches("model-[0-9a-f]+-0000" + world + "-of-0000" + world + "\\.safetensors"), last);
        }
        for (int w2 : new int[] {1, 2, 4}) {
            MoeConfig c2 = cfg.toBuilder().expertParallel(w2).build();
            List<Map<String, float[]>> loaded = LocalGroup.run(w2, comm -> {
                try (MoeLayer layer = MoeLayer.builder(c2, comm).seed(9).build()) {
                    layer.load(dir, PREFIX, MoeNameMap.deepseekV3(), LayerCheckpoint.Options.strict());
                    Map<String, float[]> m = weights(layer);
                    try (MoeLayer b = MoeLayer.builder(c2, comm).seed(9).build()) {
                        b.load(bf, PREFIX, MoeNameMap.deepseekV3(), LayerCheckpoint.Options.strict());
                        weights(b).forEach((n, v) -> m.put("bf16." + n, v));
                    }
                    return m;
                }
            });
            for (Map<String, float[]> m : loaded) {
                for (Map.Entry<String, float[]> e : m.entrySet()) {
                    if (e.getKey().startsWith("bf16.")) {
                        float[] want = all.get(e.getKey().substring(5)).clone();
                        for (int i = 0; i < want.length; i++) {
                            want[i] = DType.bf16ToF32(DType.f32ToBf16(want[i]));
                        }
                        assertBitwise(want, e.getValue(), "bf16 export, W " + world + " -> " + w2 + ": " + e.getKey());
                    } else {
                        assertBitwise(all.get(e.getKey()), e.getValue(), "W " + world + " -> " + w2 + ": " + e.getKey());
                    }
                }
            }
        }
        List<String> files = new ArrayList<>();
        try (Stream<Path> s = Files.list(dir)) {
            s.forEach(p -> files.add(p.getFileName().toString()));
        }
        assertEquals(world + 1, files.size(), "shards + index, no temporaries: " + files);
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama4", "gpt_oss"})
    void fusedFamiliesExportFromEveryRankIntoOneShardAndLoadBackBitwise(String family) throws Exception {
        MoeNameMap names = MoeNameMap.forModelType(family);
        MoeConfig base = MoeConfig.builder().hidden(32).experts(8).topK(2).ffn(32)
                .sharedExperts(names.hasSharedExperts() ? 1 : 0, names.hasSharedExperts() ? 16 : 0).build();
        Path dir = tmp.resolve("fused-" + family);
        MoeConfig at2 = base.toBuilder().expertParallel(2).build();
        List<Map<String, float[]>> saved = LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(at2, comm).seed(21).build()) {
                layer.export(dir, "model.layers.0.mlp.", names, DType.F32);
                return weights(layer);
            }
        });
        Map<String, float[]> all = new HashMap<>();
        saved.forEach(all::putAll);
        try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
            Set<String> shards = Set.copyOf(ck.names().stream().map(n -> ck.shardOf(n).path().getFileName().toString()).toList());
            assertEquals(1, shards.size(), shards.toString());
            assertTrue(shards.iterator().next().matches("model-[0-9a-f]+-00001-of-00001\\.safetensors"), shards.toString());
        }
        List<String> files = new ArrayList<>();
        try (Stream<Path> s = Files.list(dir)) {
            s.forEach(p -> files.add(p.getFileName().toString()));
        }
        assertEquals(2, files.size(), "one shard + index, no temporaries: " + files);
        for (int w : new int[] {1, 4}) {
            MoeConfig c = base.toBuilder().expertParallel(w).build();
            List<Map<String, float[]>> got = LocalGroup.run(w, comm -> {
                try (MoeLayer layer = MoeLayer.builder(c, comm).seed(5).build()) {
                    layer.load(dir, "model.layers.0.mlp.", names, LayerCheckpoint.Options.strict());
                    return weights(layer);
                }
            });
            for (Map<String, float[]> m : got) {
                for (Map.Entry<String, float[]> e : m.entrySet()) {
                    assertBitwise(all.get(e.getKey()), e.getValue(), family + " W 2 -> " + w + ": " + e.getKey());
                }
            }
        }
    }
}
