package org.moe4j.core.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.core.DType;

class MoeConfigJsonTest {
    private static MoeConfig full() {
        return MoeConfig.builder().hidden(1024).experts(64).topK(6).ffn(512)
                .scoreFunction(ScoreFunction.SIGMOID).groups(8, 3).groupScore(GroupScore.MAX)
                .routeNorm(true).routeScale(2.5).expertBiasCoeff(0.001).biasCentering(BiasCentering.NONE)
                .auxLoss(new AuxLoss(0.01, 1e-4, 1e-3, 4096)).capacity(new Capacity(1.25, DropPolicy.BY_POSITION))
                .sharedExperts(2, 256).expertParallel(8).groupAlignment(16).expertDtype(DType.BF16)
                .dispatch(new DispatchOptions(DispatchOptions.STATIC_ALL_TO_ALL, false, false, 1.5, 0)).build();
    }

    private static String msg(String json) {
        return assertThrows(IllegalArgumentException.class, () -> MoeConfigJson.read(json)).getMessage();
    }

    @Test
    void writeThenReadGivesAnEqualConfig(@TempDir Path dir) throws IOException {
        MoeConfig c = full();
        assertEquals(c, MoeConfigJson.read(MoeConfigJson.write(c)));
        Path file = dir.resolve("moe.json");
        MoeConfigJson.write(c, file);
        assertEquals(c, MoeConfigJson.read(file));
        MoeConfig small = MoeConfig.builder().hidden(8).experts(4).topK(1).ffn(16).build();
        assertEquals(small, MoeConfigJson.read(MoeConfigJson.write(small)));
        MoeConfig gptOss = MoeConfig.builder().hidden(8).experts(4).topK(2).ffn(16).routerBias(true)
                .expertLinearBias(true).clampedSwiglu(7.0, 1.702).build();
        assertEquals(gptOss, MoeConfigJson.read(MoeConfigJson.write(gptOss)));
        MoeConfig gated = MoeConfig.builder().hidden(8).experts(4).topK(1).ffn(16).sharedExperts(1, 8)
                .sharedExpertGate(true).scoreBeforeExperts(true).build();
        assertEquals(gated, MoeConfigJson.read(MoeConfigJson.write(gated)));
    }

    @Test
    void featuresReadWithDefaultsAndClampedSwigluTakesTheGptOssConstants() {
        MoeConfig c = MoeConfigJson.read("""
                {"hidden": 16, "experts": 8, "topK": 2, "ffn": 32,
                 "features": {"routerBias": true, "activation": "clamped_swiglu"}}""");
        assertEquals(new LayerFeatures(false, false, true, false, ExpertActivation.CLAMPED_SWIGLU, 7.0, 1.702),
                c.features());
        assertEquals("MoeConfig JSON: MoeConfig.features.sharedExpertGate=true: needs shared experts (sharedExperts=0)",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"features\": {\"sharedExpertGate\": true}}"));
    }

    @Test
    void writtenJsonListsEveryFieldInOrder() {
        String json = MoeConfigJson.write(full());
        int last = -1;
        for (String field : MoeConfigJson.FIELDS) {
            int at = json.indexOf("\"" + field + "\"");
            assertTrue(at > last, field + " missing or out of order in\n" + json);
            last = at;
        }
        assertTrue(json.contains("\"scoreFunction\" : \"SIGMOID\""), json);
    }

    @Test
    void missingOptionalFieldsTakeTheBuilderDefaults() {
        MoeConfig c = MoeConfigJson.read("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32}");
        assertEquals(MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(32).build(), c);
        MoeConfig partial = MoeConfigJson.read("""
                {"hidden": 16, "experts": 8, "topK": 2, "ffn": 32, "expertGroups": 4,
                 "scoreFunction": "sigmoid", "auxLoss": {"zCoeff": 0.001}, "capacity": {"factor": 2}}""");
        assertEquals(4, partial.limitedGroups(), "limitedGroups follows expertGroups");
        assertEquals(ScoreFunction.SIGMOID, partial.scoreFunction(), "enum names are case-insensitive");
        assertEquals(new AuxLoss(0, 0, 0.001, 0), partial.auxLoss());
        assertEquals(new Capacity(2, DropPolicy.BY_SCORE), partial.capacity());
    }

    @Test
    void theDispatchStrategyAndItsOptionsRoundTripAndBadOnesNameTheField() {
        MoeConfig c = MoeConfigJson.read("""
                {"hidden": 16, "experts": 8, "topK": 2, "ffn": 32,
                 "dispatch": {"strategy": "static-all-to-all", "chunkRows": 64}}""");
        assertEquals(new DispatchOptions("static-all-to-all", false, false, 0, 64), c.dispatch());
        assertEquals(c, MoeConfigJson.read(MoeConfigJson.write(c)));
        assertEquals(DispatchOptions.DEFAULT, MoeConfigJson.read(
                "{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"dispatch\": {}}").dispatch());
        String bad = msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32,"
                + " \"dispatch\": {\"strategy\": \"all-gather\", \"perRankDedup\": true}}");
        assertTrue(bad.contains("field 'dispatch': DispatchOptions: perRankDedup and weightBeforeReturn apply to the "
                + "all-to-all strategy only, not 'all-gather'"), bad);
        String unknown = msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32,"
                + " \"dispatch\": {\"splits\": 3}}");
        assertTrue(unknown.contains("splits"), unknown);
        String name = msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32,"
                + " \"dispatch\": {\"strategy\": \"All To All\"}}");
        assertTrue(name.contains("dispatch strategy name 'All To All' is invalid"), name);
    }

    @Test
    void anUnknownFieldIsAnErrorListingTheKnownOnes() {
        assertEquals("MoeConfig JSON: unknown field 'topk'; known fields: hidden, experts, topK, ffn, scoreFunction,"
                + " expertGroups, limitedGroups, groupScore, routeNorm, routeScale, expertBiasCoeff, biasCentering,"
                + " auxLoss, capacity, sharedExperts, sharedFfn, expertParallel, groupAlignment, expertDtype, dispatch, features",
                msg("{\"hidden\": 16, \"experts\": 8, \"topk\": 2, \"ffn\": 32}"));
        assertEquals("MoeConfig JSON: unknown field 'features.gate'; known fields of features: sharedExpertGate,"
                + " scoreBeforeExperts, routerBias, expertLinearBias, activation, swigluLimit, swigluAlpha",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"features\": {\"gate\": true}}"));
        assertEquals("MoeConfig JSON: unknown field 'auxLoss.alpha'; known fields of auxLoss: switchCoeff, seqCoeff,"
                + " zCoeff, seqLength",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"auxLoss\": {\"alpha\": 1}}"));
        assertEquals("MoeConfig JSON: unknown field 'capacity.drop'; known fields of capacity: factor, policy",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"capacity\": {\"drop\": 1}}"));
    }

    @Test
    void wrongTypesMissingRequiredFieldsAndBadEnumsNameTheField() {
        assertEquals("MoeConfig JSON: missing required field 'ffn'", msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2}"));
        assertEquals("MoeConfig JSON: field 'experts' must be an integer, got \"8\"",
                msg("{\"hidden\": 16, \"experts\": \"8\", \"topK\": 2, \"ffn\": 32}"));
        assertEquals("MoeConfig JSON: field 'topK' must be an integer, got 2.5",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2.5, \"ffn\": 32}"));
        assertEquals("MoeConfig JSON: field 'routeNorm' must be true or false, got 1",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"routeNorm\": 1}"));
        assertEquals("MoeConfig JSON: field 'scoreFunction' must be one of SOFTMAX, SIGMOID, got \"relu\"",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"scoreFunction\": \"relu\"}"));
        assertEquals("MoeConfig JSON: field 'capacity.policy' must be one of BY_SCORE, BY_POSITION, got \"random\"",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"capacity\": {\"factor\": 1, \"policy\": \"random\"}}"));
        assertTrue(msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"expertDtype\": \"fp8\"}")
                .startsWith("MoeConfig JSON: field 'expertDtype': unknown dtype 'fp8'"));
    }

    @Test
    void invalidValuesAreReportedWithTheSource(@TempDir Path dir) throws IOException {
        assertEquals("MoeConfig JSON: MoeConfig.topK=9: must not exceed experts (8)",
                msg("{\"hidden\": 16, \"experts\": 8, \"topK\": 9, \"ffn\": 32}"));
        Path file = dir.resolve("bad.json");
        Files.writeString(file, "{\"hidden\": 16, \"experts\": 8, \"topK\": 2, \"ffn\": 32, \"expertParallel\": 3}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MoeConfigJson.read(file));
        assertEquals("MoeConfig JSON " + file + ": MoeConfig.expertParallel=3: must divide experts (8)", e.getMessage());
    }

    @Test
    void malformedJsonDuplicatesAndNonObjectsAreErrors() {
        assertTrue(msg("{\"hidden\": 16,").startsWith("MoeConfig JSON: invalid JSON: "), msg("{\"hidden\": 16,"));
        assertTrue(msg("{\"hidden\": 16, \"hidden\": 32}").contains("Duplicate field 'hidden'"));
        assertEquals("MoeConfig JSON: expected a JSON object at the top level, got array", msg("[1, 2]"));
    }
}
