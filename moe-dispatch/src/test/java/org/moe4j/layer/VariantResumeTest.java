package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.optim.AdamW;

/**
 * Exact resume (as {@link ExactResumeTest}) of a layer with the family variants the training state
 * stores: router bias, gated shared expert, weights before the experts.
 */
class VariantResumeTest {
    @TempDir
    Path tmp;

    static MoeConfig config(int world) {
        return MoeConfig.builder().hidden(16).experts(8).topK(2).ffn(12).scoreFunction(ScoreFunction.SIGMOID)
                .sharedExperts(1, 8).sharedExpertGate(true).routerBias(true).scoreBeforeExperts(true)
                .expertBiasCoeff(1e-3).expertParallel(world).build();
    }

    static List<Map<String, float[]>> run(int world, int steps, Path saveTo, Path resumeFrom) {
        return LocalGroup.run(world, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config(world), comm).seed(resumeFrom == null ? 7 : 99).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                int from = resumeFrom == null ? 0 : (int) layer.loadTrainingState(resumeFrom, opt);
                for (int s = from; s < steps; s++) {
                    ExactResumeTest.step(layer, opt, 42, s);
                }
                if (saveTo != null) {
                    layer.saveTrainingState(saveTo, opt, steps);
                }
                return ExactResumeTest.state(layer, opt);
            }
        });
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2})
    void resumedVariantRunEqualsTheStraightRunBitwise(int world) {
        List<Map<String, float[]>> want = run(world, 3, null, null);
        assertEquals(true, want.get(0).containsKey("gate.bias") && want.get(0).containsKey("shared_expert_gate.weight"));
        Path dir = tmp.resolve("w" + world);
        run(world, 2, dir, null);
        List<Map<String, float[]>> got = run(world, 3, null, dir);
        ExactResumeTest.assertSame(want, got, "variants W=" + world);
    }
}
