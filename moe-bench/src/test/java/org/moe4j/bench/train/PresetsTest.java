package org.moe4j.bench.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.config.HfConfigImport;
import org.moe4j.core.config.MoeConfig;

/** The demo presets are the published models shrunk by one rule that keeps the routing recipe and shape. */
class PresetsTest {
    @Test
    void everyBundledModelHasATinyPresetWithItsRoutingRecipe() {
        assertEquals(HfConfigImport.PRESETS.size() + Presets.ALIASES.size(), Presets.NAMES.size());
        for (String model : HfConfigImport.PRESETS) {
            assertTrue(Presets.NAMES.contains(model + "-tiny"), model);
            MoeConfig real = HfConfigImport.preset(model);
            MoeConfig tiny = Presets.of(model + "-tiny").expertParallel(4).build();
            String m = model + ": ";
            assertEquals(Presets.HIDDEN, tiny.hidden(), m + "hidden");
            assertEquals(Presets.FFN, tiny.ffn(), m + "ffn");
            assertEquals(real.topK(), tiny.topK(), m + "topK kept");
            assertEquals(real.expertGroups(), tiny.expertGroups(), m + "groups kept");
            assertEquals(real.limitedGroups(), tiny.limitedGroups(), m + "limited groups kept");
            assertEquals(real.scoreFunction(), tiny.scoreFunction(), m);
            assertEquals(real.groupScore(), tiny.groupScore(), m);
            assertEquals(real.routeNorm(), tiny.routeNorm(), m);
            assertEquals(real.routeScale(), tiny.routeScale(), m);
            assertEquals(real.expertBiasCoeff(), tiny.expertBiasCoeff(), m);
            assertEquals(real.auxLoss(), tiny.auxLoss(), m);
            assertEquals(real.features(), tiny.features(), m + "family features kept");
            assertEquals(real.sharedExperts(), tiny.sharedExperts(), m);
            assertTrue(tiny.experts() <= Math.max(real.experts(), Presets.TARGET_EXPERTS), m + tiny.experts());
            assertEquals(Math.min(real.experts(), tiny.experts()), tiny.experts(), m + "never more experts than the model");
            assertTrue(tiny.experts() % 4 == 0, m + "the default 4 ranks divide the experts");
            assertTrue(tiny.topK() <= tiny.limitedGroups() * tiny.expertsPerGroup(), m + "top-k reachable");
        }
        MoeConfig v3 = Presets.of("deepseek-v3-tiny").build();
        assertEquals(32, v3.experts());
        assertEquals(4, v3.expertsPerGroup(), "8 groups of 4: node-limited routing still limits");
        assertTrue(v3.groupLimited());
        MoeConfig qwen2 = Presets.of("qwen1.5-moe-a2.7b-tiny").build();
        assertEquals(128, qwen2.sharedFfn(), "shared 5632 scaled by 32/1408");
        assertTrue(qwen2.features().sharedExpertGate());
    }

    @Test
    void oldNamesStillWorkAndUnknownOnesAreListed() {
        assertEquals(Presets.of("mixtral-8x7b-tiny").build(), Presets.of("mixtral-tiny").build());
        assertEquals(Presets.of("qwen3-30b-a3b-tiny").build(), Presets.of("qwen3-moe-tiny").build());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Presets.of("gpt-4-tiny"));
        assertTrue(e.getMessage().startsWith("unknown preset 'gpt-4-tiny'; choose one of deepseek-v3-tiny, "), e.getMessage());
        assertThrows(NullPointerException.class, () -> Presets.of(null));
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt-oss-20b-tiny", "qwen1.5-moe-a2.7b-tiny", "llama4-scout-tiny", "deepseek-v2-tiny"})
    void theTrainDemoRunsEveryFamilyVariant(String preset) {
        MoeConfig cfg = Presets.of(preset).expertParallel(2).build();
        List<Trainer.Step> steps = Trainer.run(new Trainer.Settings(cfg, 3, 32, 3e-3, 1, 1.0), s -> { });
        assertEquals(3, steps.size());
        for (Trainer.Step s : steps) {
            assertTrue(Double.isFinite(s.loss()) && s.loss() > 0, preset + " loss " + s.loss());
        }
        assertFalse(steps.get(2).loss() == steps.get(0).loss(), preset + ": the student must move");
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt-oss-20b", "llama4-scout", "qwen2-57b-a14b", "kimi-k2"})
    void moeTrainConfigAcceptsEveryFamilyScaledDown(String model, @TempDir Path dir) throws Exception {
        Path cfg = dir.resolve("config.json");
        Files.writeString(cfg, HfConfigImport.presetJson(model));
        Path out = dir.resolve("run");
        int rc = new CommandLine(new TrainCommand()).execute("--config", cfg.toString(), "--hidden", "64", "--ffn", "32",
                "--experts", "16", "--ranks", "2", "--steps", "2", "--tokens", "16", "--quiet", "--out", out.toString());
        assertEquals(0, rc, model);
        assertTrue(Files.size(out.resolve("metrics.json")) > 0, model + ": metrics written");
        assertTrue(Files.readString(out.resolve("metrics.json")).contains("\"hidden\""), model);
    }
}
