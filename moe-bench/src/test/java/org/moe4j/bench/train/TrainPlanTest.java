package org.moe4j.bench.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.bench.cli.MoeCli;
import org.moe4j.core.config.HfConfigImport;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.MoeConfigJson;
import picocli.CommandLine;

/** {@code moe train} keeps a model's own routing and balancing recipe unless a flag overrides it, and says where each value came from. */
class TrainPlanTest {

    private static TrainCommand.Plan plan(String... args) {
        CommandLine cl = MoeCli.commandLine(new PrintWriter(new StringWriter()), new PrintWriter(new StringWriter()));
        List<String> all = new ArrayList<>(List.of("train"));
        all.addAll(List.of(args));
        CommandLine.ParseResult pr = cl.parseArgs(all.toArray(String[]::new));
        TrainCommand t = pr.subcommand().commandSpec().commandLine().getCommand();
        return t.plan();
    }

    private static Path hf(Path dir, String preset) throws Exception {
        return Files.writeString(dir.resolve(preset + ".json"), HfConfigImport.presetJson(preset));
    }

    private static final String[] SMALL = {"--hidden", "32", "--ffn", "16", "--experts", "16"};

    @Test
    void configKeepsTheModelsOwnBalancingRecipe(@TempDir Path dir) throws Exception {
        MoeConfig ds = HfConfigImport.preset("deepseek-v3");
        TrainCommand.Plan p = plan(cat(new String[] {"--config", hf(dir, "deepseek-v3").toString()}, SMALL));
        assertEquals(ds.expertBiasCoeff(), p.config().expertBiasCoeff(), "DeepSeek-V3's bias update speed is kept");
        assertEquals(HfConfigImport.DEEPSEEK_V3_BIAS_UPDATE_SPEED, p.config().expertBiasCoeff());
        assertEquals(ds.auxLoss(), p.config().auxLoss());
        assertEquals("config.json", p.origin().get("bias"));
        for (String model : List.of("qwen3-30b-a3b", "mixtral-8x7b")) {
            MoeConfig m = HfConfigImport.preset(model);
            TrainCommand.Plan q = plan(cat(new String[] {"--config", hf(dir, model).toString()}, "--hidden", "32",
                    "--ffn", "16"));
            assertEquals(0.0, q.config().expertBiasCoeff(), model + " has no expert bias and gets none");
            assertEquals(m.auxLoss(), q.config().auxLoss(), model + "'s aux losses are kept");
            assertEquals(m.scoreFunction(), q.config().scoreFunction());
            assertEquals(m.routeNorm(), q.config().routeNorm());
        }
    }

    @Test
    void flagsOverrideTheRecipeAndTheHeaderSaysSo(@TempDir Path dir) throws Exception {
        TrainCommand.Plan p = plan(cat(new String[] {"--config", hf(dir, "deepseek-v3").toString(), "--bias-coeff",
                "0.01", "--ranks", "2", "--steps", "3"}, SMALL));
        assertEquals(0.01, p.config().expertBiasCoeff());
        assertEquals(2, p.config().expertParallel());
        String header = String.join("\n", TrainCommand.header(p));
        assertTrue(header.contains("coeff 0.01 [--bias-coeff]"), header);
        assertTrue(header.contains("2 ranks [--ranks]"), header);
        assertTrue(header.contains("3 steps [--steps]"), header);
        assertTrue(header.contains("lr 0.003 [default]"), header);
        assertTrue(header.contains("[config.json scaled by --hidden 32 --ffn 16 --experts 16]"), header);
        assertEquals(0.0, plan("--preset", "qwen3-moe-tiny", "--no-bias").config().expertBiasCoeff());
        assertTrue(String.join("\n", TrainCommand.header(plan("--preset", "mixtral-tiny"))).contains("expert bias off [--preset]"));
    }

    @Test
    void moeConfigJsonIsReadAsIs(@TempDir Path dir) throws Exception {
        MoeConfig c = Presets.of("qwen3-moe-tiny").expertBiasCoeff(0.005).expertParallel(2).build();
        Path f = Files.writeString(dir.resolve("moe.json"), MoeConfigJson.write(c));
        TrainCommand.Plan p = plan("--moe-config", f.toString());
        assertEquals(c, p.config(), "the file's config, its expert parallelism included");
        assertEquals("--moe-config", p.origin().get("ranks"));
    }

    @Test
    void fullSizeModelsMustBeScaledDown(@TempDir Path dir) throws Exception {
        MoeCli.UsageException e = assertThrows(MoeCli.UsageException.class,
                () -> plan("--config", hf(dir, "deepseek-v3").toString()));
        assertTrue(e.getMessage().contains("--hidden"), e::getMessage);
    }

    @Test
    void scalingDownKeepsNodeLimitedRoutingValid() {
        MoeConfig ds = HfConfigImport.preset("deepseek-v3");
        for (int experts = ds.topK(); experts <= 64; experts++) {
            List<String> notes = new ArrayList<>();
            MoeConfig c = ScaleDown.apply(ds, 32, 16, experts, notes).build();
            assertEquals(experts, c.experts());
            assertEquals(ds.topK(), c.topK());
            assertEquals(ds.scoreFunction(), c.scoreFunction());
            assertEquals(ds.expertBiasCoeff(), c.expertBiasCoeff());
            assertTrue(c.expertGroups() <= ds.expertGroups());
            assertTrue(c.limitedGroups() * (c.experts() / c.expertGroups()) >= c.topK());
            assertEquals(Math.max(1, Math.round((double) ds.sharedFfn() * 16 / ds.ffn())), c.sharedFfn());
        }
        assertThrows(IllegalArgumentException.class, () -> ScaleDown.apply(ds, null, null, ds.topK() - 1, new ArrayList<>()));
    }

    private static String[] cat(String[] a, String... b) {
        List<String> l = new ArrayList<>(List.of(a));
        l.addAll(List.of(b));
        return l.toArray(String[]::new);
    }
}
