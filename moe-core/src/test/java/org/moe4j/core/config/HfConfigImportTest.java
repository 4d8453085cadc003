package org.moe4j.core.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;

/**
 * Imports the published config.json of every supported family (src/test/resources/hf, provenance in
 * hf/SOURCES.md) and checks every mapped field; checks the per-family defaults of absent fields and
 * that fields moe4j cannot honour are refused, all of them in one message.
 */
class HfConfigImportTest {
    private static Path resource(String name) {
        try {
            return Path.of(HfConfigImportTest.class.getResource("/hf/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static MoeConfig published(String preset) throws IOException {
        return HfConfigImport.read(resource(preset + "-config.json"));
    }

    private static String msg(Path dir, String json) throws IOException {
        Path file = dir.resolve("config.json");
        Files.writeString(file, json);
        return assertThrows(IllegalArgumentException.class, () -> HfConfigImport.read(file)).getMessage();
    }

    private static MoeConfig parse(String json) {
        return HfConfigImport.parse(json, "test", b -> { });
    }

    @Test
    void deepseekV3MapsEveryMoeField() throws IOException {
        MoeConfig c = published("deepseek-v3");
        assertEquals(7168, c.hidden());
        assertEquals(256, c.experts());
        assertEquals(8, c.topK());
        assertEquals(2048, c.ffn());
        assertEquals(ScoreFunction.SIGMOID, c.scoreFunction());
        assertEquals(8, c.expertGroups());
        assertEquals(4, c.limitedGroups());
        assertEquals(GroupScore.TOP2_SUM, c.groupScore(), "noaux_tc scores groups by their top-2 sum");
        assertEquals(HfConfigImport.DEEPSEEK_V3_BIAS_UPDATE_SPEED, c.expertBiasCoeff(), "noaux_tc uses the expert bias");
        assertEquals(BiasCentering.NONE, c.biasCentering());
        assertTrue(c.routeNorm());
        assertEquals(2.5, c.routeScale());
        assertEquals(1, c.sharedExperts());
        assertEquals(2048, c.sharedFfn(), "the shared expert uses moe_intermediate_size");
        assertEquals(new AuxLoss(0, 0.001, 0, 0), c.auxLoss(), "seq_aux: aux_loss_alpha is the sequence-wise coeff");
        assertEquals(LayerFeatures.NONE, c.features());
        // not in config.json: builder defaults
        assertEquals(Capacity.DROPLESS, c.capacity());
        assertEquals(1, c.expertParallel());
        assertEquals(1, c.groupAlignment());
        assertEquals(DType.F32, c.expertDtype());
    }

    @Test
    void kimiK2IsDeepseekV3WithOneGroupAndItsOwnScale() throws IOException {
        MoeConfig c = published("kimi-k2");
        assertEquals(384, c.experts());
        assertEquals(8, c.topK());
        assertEquals(ScoreFunction.SIGMOID, c.scoreFunction());
        assertEquals(1, c.expertGroups());
        assertFalse(c.groupLimited());
        assertEquals(2.827, c.routeScale());
        assertTrue(c.routeNorm());
        assertEquals(0.001, c.expertBiasCoeff(), "noaux_tc: aux-loss-free bias");
        assertEquals(1, c.sharedExperts());
        assertEquals(new AuxLoss(0, 0.001, 0, 0), c.auxLoss());
    }

    @Test
    void deepseekV2GroupLimitedGreedyScoresGroupsByTheirMaxAndScalesUnnormalisedWeights() throws IOException {
        MoeConfig c = published("deepseek-v2");
        assertEquals(5120, c.hidden());
        assertEquals(160, c.experts());
        assertEquals(6, c.topK());
        assertEquals(1536, c.ffn());
        assertEquals(ScoreFunction.SOFTMAX, c.scoreFunction());
        assertEquals(8, c.expertGroups());
        assertEquals(3, c.limitedGroups());
        assertEquals(GroupScore.MAX, c.groupScore());
        assertEquals(0.0, c.expertBiasCoeff(), "no aux-loss-free bias in V2");
        assertFalse(c.routeNorm());
        assertEquals(16.0, c.routeScale());
        assertEquals(2, c.sharedExperts());
        assertEquals(1536, c.sharedFfn());
        assertEquals(new AuxLoss(0, 0.001, 0, 0), c.auxLoss());
    }

    @Test
    void deepseekV2LiteIsGreedy() throws IOException {
        MoeConfig c = published("deepseek-v2-lite");
        assertEquals(2048, c.hidden());
        assertEquals(64, c.experts());
        assertEquals(6, c.topK());
        assertEquals(1408, c.ffn());
        assertEquals(1, c.expertGroups());
        assertEquals(ScoreFunction.SOFTMAX, c.scoreFunction());
        assertFalse(c.routeNorm());
        assertEquals(1.0, c.routeScale());
        assertEquals(2, c.sharedExperts());
    }

    @Test
    void glm45IsSigmoidNoauxWithOneSharedExpertAndNoAuxLoss() throws IOException {
        MoeConfig c = published("glm-4.5");
        assertEquals(5120, c.hidden());
        assertEquals(160, c.experts());
        assertEquals(8, c.topK());
        assertEquals(1536, c.ffn());
        assertEquals(ScoreFunction.SIGMOID, c.scoreFunction());
        assertEquals(1, c.expertGroups());
        assertEquals(GroupScore.TOP2_SUM, c.groupScore());
        assertEquals(0.001, c.expertBiasCoeff());
        assertTrue(c.routeNorm());
        assertEquals(2.5, c.routeScale());
        assertEquals(1, c.sharedExperts());
        assertEquals(1536, c.sharedFfn());
        assertEquals(AuxLoss.NONE, c.auxLoss());
    }

    @Test
    void qwen2MoeHasOneGatedSharedExpert() throws IOException {
        MoeConfig a = published("qwen1.5-moe-a2.7b");
        assertEquals(2048, a.hidden());
        assertEquals(60, a.experts());
        assertEquals(4, a.topK());
        assertEquals(1408, a.ffn());
        assertEquals(ScoreFunction.SOFTMAX, a.scoreFunction());
        assertFalse(a.routeNorm());
        assertEquals(1, a.sharedExperts());
        assertEquals(5632, a.sharedFfn());
        assertTrue(a.features().sharedExpertGate());
        assertEquals(new AuxLoss(0.001, 0, 0, 0), a.auxLoss());
        MoeConfig b = published("qwen2-57b-a14b");
        assertEquals(3584, b.hidden());
        assertEquals(64, b.experts());
        assertEquals(8, b.topK());
        assertEquals(2560, b.ffn());
        assertEquals(20480, b.sharedFfn());
        assertTrue(b.features().sharedExpertGate());
    }

    @Test
    void qwen3MoeMapsEveryMoeField() throws IOException {
        MoeConfig c = published("qwen3-30b-a3b");
        assertEquals(2048, c.hidden());
        assertEquals(128, c.experts());
        assertEquals(8, c.topK());
        assertEquals(768, c.ffn());
        assertEquals(ScoreFunction.SOFTMAX, c.scoreFunction());
        assertTrue(c.routeNorm());
        assertEquals(1.0, c.routeScale());
        assertEquals(new AuxLoss(0.001, 0, 0, 0), c.auxLoss());
        assertEquals(1, c.expertGroups());
        assertEquals(0.0, c.expertBiasCoeff());
        assertEquals(0, c.sharedExperts());
        assertEquals(LayerFeatures.NONE, c.features());
    }

    @Test
    void olmoeUsesIntermediateSizeForItsExperts() throws IOException {
        MoeConfig c = published("olmoe-1b-7b");
        assertEquals(2048, c.hidden());
        assertEquals(64, c.experts());
        assertEquals(8, c.topK());
        assertEquals(1024, c.ffn());
        assertEquals(ScoreFunction.SOFTMAX, c.scoreFunction());
        assertFalse(c.routeNorm());
        assertEquals(new AuxLoss(0.01, 0, 0, 0), c.auxLoss());
        assertEquals(0, c.sharedExperts());
    }

    @Test
    void mixtralMapsEveryMoeField() throws IOException {
        MoeConfig c = published("mixtral-8x7b");
        assertEquals(4096, c.hidden());
        assertEquals(8, c.experts());
        assertEquals(2, c.topK());
        assertEquals(14336, c.ffn());
        assertEquals(ScoreFunction.SOFTMAX, c.scoreFunction());
        assertTrue(c.routeNorm(), "top-k of softmax renormalised = softmax over the top-k logits");
        assertEquals(1.0, c.routeScale());
        assertEquals(new AuxLoss(0.02, 0, 0, 0), c.auxLoss());
        assertEquals(1, c.expertGroups());
        assertEquals(0, c.sharedExperts());
    }

    @Test
    void gptOssHasRouterAndExpertBiasesAndTheClampedSwiglu() throws IOException {
        MoeConfig c = published("gpt-oss-20b");
        assertEquals(2880, c.hidden());
        assertEquals(32, c.experts());
        assertEquals(4, c.topK());
        assertEquals(2880, c.ffn());
        assertEquals(ScoreFunction.SOFTMAX, c.scoreFunction());
        assertTrue(c.routeNorm(), "softmax over the top-k logits");
        LayerFeatures f = c.features();
        assertTrue(f.routerBias());
        assertTrue(f.expertLinearBias());
        assertEquals(ExpertActivation.CLAMPED_SWIGLU, f.activation());
        assertEquals(7.0, f.swigluLimit());
        assertEquals(1.702, f.swigluAlpha(), "transformers' GptOssConfig default (absent from the published file)");
        assertFalse(f.scoreBeforeExperts());
        assertEquals(new AuxLoss(0.9, 0, 0, 0), c.auxLoss());
        assertEquals(0, c.sharedExperts());
    }

    @Test
    void llama4ReadsTextConfigAndWeightsTheExpertInputs() throws IOException {
        MoeConfig c = published("llama4-scout");
        assertEquals(5120, c.hidden());
        assertEquals(16, c.experts());
        assertEquals(1, c.topK());
        assertEquals(8192, c.ffn());
        assertEquals(ScoreFunction.SIGMOID, c.scoreFunction());
        assertFalse(c.routeNorm());
        assertTrue(c.features().scoreBeforeExperts());
        assertEquals(1, c.sharedExperts());
        assertEquals(8192, c.sharedFfn());
        assertEquals(AuxLoss.NONE, c.auxLoss(), "no Llama 4 model in transformers adds a balance loss");
        // the vision tower's gelu is not the MoE layer's activation
        MoeConfig text = parse(HfConfigImport.presetJson("llama4-scout"));
        assertEquals(c, text);
    }

    @ParameterizedTest
    @ValueSource(strings = {"deepseek-v3", "deepseek-v2", "deepseek-v2-lite", "kimi-k2", "glm-4.5", "qwen1.5-moe-a2.7b",
            "qwen2-57b-a14b", "qwen3-30b-a3b", "olmoe-1b-7b", "mixtral-8x7b", "gpt-oss-20b", "llama4-scout"})
    void bundledPresetsAreThePublishedFiles(String preset) throws IOException {
        assertEquals(Files.readString(resource(preset + "-config.json")), HfConfigImport.presetJson(preset));
        assertEquals(published(preset), HfConfigImport.preset(preset));
    }

    @Test
    void presetsCanBeShrunkAndUnknownOnesAreListed() {
        MoeConfig tiny = HfConfigImport.preset("deepseek-v3", b -> b.hidden(64).experts(16).ffn(32).sharedExperts(1, 32));
        assertEquals(16, tiny.experts());
        assertEquals(ScoreFunction.SIGMOID, tiny.scoreFunction());
        assertEquals(2, tiny.expertsPerGroup());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> HfConfigImport.preset("gpt-4"));
        assertEquals("unknown preset 'gpt-4'; presets: " + String.join(", ", HfConfigImport.PRESETS), e.getMessage());
    }

    @Test
    void absentFieldsTakeTheFamilysTransformersDefaults() throws IOException {
        MoeConfig v3 = parse("{\"model_type\": \"deepseek_v3\"}");
        assertEquals(published("deepseek-v3"), v3, "DeepseekV3Config's defaults are DeepSeek-V3");
        MoeConfig v2 = parse("{\"model_type\": \"deepseek_v2\", \"num_experts_per_tok\": 6}");
        assertEquals(4096, v2.hidden());
        assertEquals(64, v2.experts());
        assertEquals(1407, v2.ffn());
        assertEquals(2, v2.sharedExperts());
        assertEquals(1, v2.expertGroups(), "topk_method greedy");
        assertEquals(1.0, v2.routeScale());
        assertFalse(v2.routeNorm());
        assertEquals(new AuxLoss(0, 0.001, 0, 0), v2.auxLoss());
        MoeConfig q2 = parse("{\"model_type\": \"qwen2_moe\"}");
        assertEquals(60, q2.experts());
        assertEquals(4, q2.topK());
        assertEquals(1408, q2.ffn());
        assertEquals(5632, q2.sharedFfn());
        assertEquals(new AuxLoss(0.001, 0, 0, 0), q2.auxLoss());
        MoeConfig q3 = parse("{\"model_type\": \"qwen3_moe\"}");
        assertEquals(128, q3.experts());
        assertEquals(768, q3.ffn());
        assertFalse(q3.routeNorm(), "Qwen3MoeConfig.norm_topk_prob defaults to False");
        MoeConfig ol = parse("{\"model_type\": \"olmoe\"}");
        assertEquals(64, ol.experts());
        assertEquals(2048, ol.ffn());
        assertEquals(new AuxLoss(0.01, 0, 0, 0), ol.auxLoss());
        MoeConfig mx = parse("{\"model_type\": \"mixtral\"}");
        assertEquals(new AuxLoss(0.001, 0, 0, 0), mx.auxLoss(), "MixtralConfig default, not 0");
        assertEquals(14336, mx.ffn());
        MoeConfig glm = parse("{\"model_type\": \"glm4_moe\"}");
        assertEquals(128, glm.experts());
        assertEquals(1408, glm.ffn());
        assertEquals(1.0, glm.routeScale());
        assertTrue(glm.routeNorm());
        MoeConfig oss = parse("{\"model_type\": \"gpt_oss\"}");
        assertEquals(128, oss.experts());
        assertEquals(4, oss.topK());
        assertEquals(7.0, oss.features().swigluLimit());
        assertEquals(new AuxLoss(0.001, 0, 0, 0), oss.auxLoss());
        MoeConfig l4 = parse("{\"model_type\": \"llama4\"}");
        assertEquals(16, l4.experts());
        assertEquals(1, l4.topK());
        assertEquals(l4, parse("{\"model_type\": \"llama4_text\"}"));
    }

    @Test
    void everyFieldMoe4jCannotHonourIsRefusedInOneMessage(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("config.json");
        String json = HfConfigImport.presetJson("mixtral-8x7b")
                .replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"")
                .replace("\"rms_norm_eps\"", "\"router_jitter_noise\": 0.01, \"mlp_bias\": true, "
                        + "\"quantization_config\": {\"quant_method\": \"bitsandbytes\"}, \"rms_norm_eps\"");
        assertEquals(file + ": model_type mixtral: 4 field(s) ask for what moe4j cannot do: "
                + "hidden_act=\"gelu\" (the experts are SiLU-gated (SwiGLU) only); "
                + "mlp_bias=true (expert linear biases are implemented for gpt_oss's expert layout only); "
                + "router_jitter_noise=0.01 (moe4j's router is deterministic; multiplicative jitter is not implemented); "
                + "quantization_config.quant_method=\"bitsandbytes\" (only fp8, mxfp4 checkpoints are dequantised on load)",
                msg(dir, json));
        String limit = HfConfigImport.presetJson("qwen3-30b-a3b").replace("\"rms_norm_eps\"", "\"swiglu_limit\": 7.0, \"rms_norm_eps\"");
        assertEquals(file + ": model_type qwen3_moe: 1 field(s) ask for what moe4j cannot do: swiglu_limit=7.0 "
                + "(the clamped SwiGLU belongs to gpt_oss experts; qwen3_moe experts do not use it)", msg(dir, limit));
        String v2Sigmoid = HfConfigImport.presetJson("deepseek-v2").replace("\"softmax\"", "\"sigmoid\"");
        assertTrue(msg(dir, v2Sigmoid).endsWith("scoring_func=\"sigmoid\" (DeepSeek-V2's gate is softmax only)"));
        // zero jitter, fp8 and mxfp4 are fine
        assertEquals(32, published("gpt-oss-20b").experts());
        assertEquals(384, published("kimi-k2").experts());
        assertEquals(16, published("llama4-scout").experts());
    }

    @Test
    void deepseekV2NormalisesOrScalesNeverBoth() {
        MoeConfig c = parse(HfConfigImport.presetJson("deepseek-v2").replace("\"norm_topk_prob\": false", "\"norm_topk_prob\": true"));
        assertTrue(c.routeNorm());
        assertEquals(1.0, c.routeScale(), "DeepSeek-V2's reference gate does not scale normalised weights");
        MoeConfig v3 = parse(HfConfigImport.presetJson("deepseek-v3"));
        assertTrue(v3.routeNorm());
        assertEquals(2.5, v3.routeScale(), "V3 normalises and then scales");
    }

    @Test
    void overridesApplyBeforeValidation() throws IOException {
        MoeConfig c = HfConfigImport.read(resource("deepseek-v3-config.json"),
                b -> b.expertParallel(64).groupAlignment(128).expertDtype(DType.BF16));
        assertEquals(64, c.expertParallel());
        assertEquals(4, c.localExperts());
        assertEquals(128, c.groupAlignment());
        Path file = resource("mixtral-8x7b-config.json");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> HfConfigImport.read(file, b -> b.expertParallel(3)));
        assertEquals(file + ": MoeConfig.expertParallel=3: must divide experts (8)", e.getMessage());
    }

    @Test
    void unknownOrMissingModelTypeListsTheSupportedOnes(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("config.json");
        String supported = String.join(", ", HfConfigImport.SUPPORTED_MODEL_TYPES);
        assertTrue(supported.contains("qwen2_moe") && supported.contains("gpt_oss") && supported.contains("llama4"));
        assertEquals(file + ": model_type 'llama' is not supported; supported: " + supported,
                msg(dir, "{\"model_type\": \"llama\", \"hidden_size\": 4096}"));
        assertEquals(file + ": no model_type; supported: " + supported, msg(dir, "{\"hidden_size\": 4096}"));
    }

    @Test
    void aRequiredFieldWithoutADefaultIsNamed(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("config.json");
        String noTopK = HfConfigImport.presetJson("deepseek-v2").replace("\"num_experts_per_tok\": 6,", "");
        assertEquals(file + ": missing required field 'num_experts_per_tok' (model_type deepseek_v2; "
                + "DeepseekV2Config's default None means a dense model)", msg(dir, noTopK));
        String noGroups = HfConfigImport.presetJson("deepseek-v2").replace("\"n_group\": 8,", "");
        assertEquals(file + ": missing required field 'n_group' (model_type deepseek_v2; DeepseekV2Config's default None)",
                msg(dir, noGroups));
    }

    @Test
    void deepseekTopkMethodsSelectTheGroupRecipe(@TempDir Path dir) throws IOException {
        String base = HfConfigImport.presetJson("deepseek-v3");
        MoeConfig limited = parse(base.replace("noaux_tc", "group_limited_greedy"));
        assertEquals(GroupScore.MAX, limited.groupScore());
        assertEquals(4, limited.limitedGroups());
        assertEquals(0.0, limited.expertBiasCoeff());
        MoeConfig greedy = parse(base.replace("noaux_tc", "greedy").replace("\"n_group\": 8,", ""));
        assertEquals(1, greedy.expertGroups());
        assertFalse(greedy.groupLimited());
        MoeConfig switchAux = parse(base.replace("\"seq_aux\": true", "\"seq_aux\": false"));
        assertEquals(new AuxLoss(0.001, 0, 0, 0), switchAux.auxLoss());
        MoeConfig defaultShared = parse(base.replace("\"n_shared_experts\": 1,", ""));
        assertEquals(1, defaultShared.sharedExperts(), "DeepseekV3Config.n_shared_experts defaults to 1");
        MoeConfig noShared = parse(base.replace("\"n_shared_experts\": 1,", "\"n_shared_experts\": null,"));
        assertEquals(0, noShared.sharedExperts(), "null: no shared experts");
        Path file = dir.resolve("config.json");
        assertEquals(file + ": model_type deepseek_v3: 1 field(s) ask for what moe4j cannot do: topk_method=\"random\" "
                + "(must be noaux_tc, group_limited_greedy or greedy)", msg(dir, base.replace("noaux_tc", "random")));
        assertEquals(file + ": model_type deepseek_v3: 1 field(s) ask for what moe4j cannot do: scoring_func=\"tanh\" "
                + "(must be sigmoid or softmax)", msg(dir, base.replace("\"sigmoid\"", "\"tanh\"")));
        assertEquals(file + ": field 'n_routed_experts' must be an integer, got \"256\"",
                msg(dir, base.replace("\"n_routed_experts\": 256", "\"n_routed_experts\": \"256\"")));
    }

    @Test
    void badArgumentsAreRefusedBeforeAnythingIsRead() {
        assertThrows(NullPointerException.class, () -> HfConfigImport.parse(null, "s", b -> { }));
        assertThrows(NullPointerException.class, () -> HfConfigImport.parse("{}", null, b -> { }));
        assertThrows(NullPointerException.class, () -> HfConfigImport.parse("{}", "s", null));
        assertEquals("s: expected a JSON object at the top level, got array",
                assertThrows(IllegalArgumentException.class, () -> HfConfigImport.builder("[]", "s")).getMessage());
        assertEquals("s: field 'text_config' must be an object, got 3", assertThrows(IllegalArgumentException.class,
                () -> HfConfigImport.builder("{\"model_type\": \"llama4\", \"text_config\": 3}", "s")).getMessage());
    }
}
