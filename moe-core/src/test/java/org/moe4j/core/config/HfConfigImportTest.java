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
import org.moe4j.core.DType;

/**
 * Imports config.json files written in src/test/resources/hf from the models' published values
 * (DeepSeek-V3 671B, Qwen3-30B-A3B, Mixtral-8x7B) and checks every mapped field.
 */
class HfConfigImportTest {
    private static Path resource(String name) {
        try {
            return Path.of(HfConfigImportTest.class.getResource("/hf/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    private static String msg(Path dir, String json) throws IOException {
        Path file = dir.resolve("config.json");
        Files.writeString(file, json);
        return assertThrows(IllegalArgumentException.class, () -> HfConfigImport.read(file)).getMessage();
    }

    @Test
    void deepseekV3MapsEveryMoeField() throws IOException {
        MoeConfig c = HfConfigImport.read(resource("deepseek-v3-config.json"));
        assertEquals(7168, c.hidden());
        assertEquals(256, c.experts());
        assertEquals(8, c.topK());
        assertEquals(2048, c.ffn());
        assertEquals(ScoreFunction.SIGMOID, c.scoreFunction());
        assertEquals(8, c.expertGroups());
        assertEquals(4, c.limitedGroups());
        assertEquals(GroupScore.TOP2_SUM, c.groupScore(), "noaux_tc scores groups by their top-2 sum");
        assertEquals(HfConfigImport.DEEPSEEK_V3_BIAS_UPDATE_SPEED, c.expertBiasCoeff(), "noaux_tc uses the expert bias");
        assertEquals(0.001, c.expertBiasCoeff());
        assertEquals(BiasCentering.NONE, c.biasCentering());
        assertTrue(c.routeNorm());
        assertEquals(2.5, c.routeScale());
        assertEquals(1, c.sharedExperts());
        assertEquals(2048, c.sharedFfn(), "the shared expert uses moe_intermediate_size");
        assertEquals(new AuxLoss(0, 0.001, 0, 0), c.auxLoss(), "seq_aux: aux_loss_alpha is the sequence-wise coeff");
        // not in config.json: builder defaults
        assertEquals(Capacity.DROPLESS, c.capacity());
        assertEquals(1, c.expertParallel());
        assertEquals(1, c.groupAlignment());
        assertEquals(DType.F32, c.expertDtype());
    }

    @Test
    void qwen3MoeMapsEveryMoeField() throws IOException {
        MoeConfig c = HfConfigImport.read(resource("qwen3-30b-a3b-config.json"));
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
    }

    @Test
    void mixtralMapsEveryMoeField() throws IOException {
        MoeConfig c = HfConfigImport.read(resource("mixtral-8x7b-config.json"));
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
    void bundledPresetsEqualTheTestFilesAndCanBeShrunk() throws IOException {
        assertEquals(HfConfigImport.read(resource("deepseek-v3-config.json")), HfConfigImport.preset("deepseek-v3"));
        assertEquals(HfConfigImport.read(resource("qwen3-30b-a3b-config.json")), HfConfigImport.preset("qwen3-30b-a3b"));
        assertEquals(HfConfigImport.read(resource("mixtral-8x7b-config.json")), HfConfigImport.preset("mixtral-8x7b"));
        MoeConfig tiny = HfConfigImport.preset("deepseek-v3", b -> b.hidden(64).experts(16).ffn(32).sharedExperts(1, 32));
        assertEquals(16, tiny.experts());
        assertEquals(ScoreFunction.SIGMOID, tiny.scoreFunction());
        assertEquals(2, tiny.expertsPerGroup());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> HfConfigImport.preset("gpt-4"));
        assertEquals("unknown preset 'gpt-4'; presets: deepseek-v3, qwen3-30b-a3b, mixtral-8x7b", e.getMessage());
    }

    @Test
    void unknownOrMissingModelTypeListsTheSupportedOnes(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("config.json");
        assertEquals(file + ": model_type 'llama' is not supported; supported: deepseek_v3, qwen3_moe, mixtral",
                msg(dir, "{\"model_type\": \"llama\", \"hidden_size\": 4096}"));
        assertEquals(file + ": no model_type; supported: deepseek_v3, qwen3_moe, mixtral",
                msg(dir, "{\"hidden_size\": 4096}"));
    }

    @Test
    void aMissingRequiredFieldIsNamedWithTheFile(@TempDir Path dir) throws IOException {
        Path file = dir.resolve("config.json");
        String noExperts = HfConfigImport.presetJson("deepseek-v3").replace("\"n_routed_experts\": 256,", "");
        assertEquals(file + ": missing required field 'n_routed_experts' (model_type deepseek_v3)", msg(dir, noExperts));
        String noGroups = HfConfigImport.presetJson("deepseek-v3").replace("\"n_group\": 8,", "");
        assertEquals(file + ": missing required field 'n_group' (model_type deepseek_v3)", msg(dir, noGroups));
        String noLocal = HfConfigImport.presetJson("mixtral-8x7b").replace("\"num_local_experts\": 8,", "");
        assertEquals(file + ": missing required field 'num_local_experts' (model_type mixtral)", msg(dir, noLocal));
        String noFfn = HfConfigImport.presetJson("qwen3-30b-a3b").replace("\"moe_intermediate_size\": 768,", "");
        assertEquals(file + ": missing required field 'moe_intermediate_size' (model_type qwen3_moe)", msg(dir, noFfn));
    }

    @Test
    void deepseekTopkMethodsSelectTheGroupRecipe(@TempDir Path dir) throws IOException {
        String base = HfConfigImport.presetJson("deepseek-v3");
        MoeConfig limited = HfConfigImport.parse(base.replace("noaux_tc", "group_limited_greedy"), "v2-style", b -> { });
        assertEquals(GroupScore.MAX, limited.groupScore());
        assertEquals(4, limited.limitedGroups());
        assertEquals(0.0, limited.expertBiasCoeff());
        MoeConfig greedy = HfConfigImport.parse(base.replace("noaux_tc", "greedy").replace("\"n_group\": 8,", ""),
                "greedy", b -> { });
        assertEquals(1, greedy.expertGroups());
        assertFalse(greedy.groupLimited());
        MoeConfig switchAux = HfConfigImport.parse(base.replace("\"seq_aux\": true", "\"seq_aux\": false"), "s", b -> { });
        assertEquals(new AuxLoss(0.001, 0, 0, 0), switchAux.auxLoss());
        MoeConfig noShared = HfConfigImport.parse(base.replace("\"n_shared_experts\": 1,", ""), "s", b -> { });
        assertEquals(0, noShared.sharedExperts());
        Path file = dir.resolve("config.json");
        assertEquals(file + ": field 'topk_method' must be one of noaux_tc, group_limited_greedy, greedy, got \"random\"",
                msg(dir, base.replace("noaux_tc", "random")));
        assertEquals(file + ": field 'scoring_func' must be one of sigmoid, softmax, got \"tanh\"",
                msg(dir, base.replace("\"sigmoid\"", "\"tanh\"")));
        assertEquals(file + ": field 'n_routed_experts' must be an integer, got \"256\"",
                msg(dir, base.replace("\"n_routed_experts\": 256", "\"n_routed_experts\": \"256\"")));
    }
}
