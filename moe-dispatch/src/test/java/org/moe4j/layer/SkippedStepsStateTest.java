package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.checkpoint.CheckpointException;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.optim.AdamW;

/**
 * The training state carries {@link AdamW#skippedSteps()}: saved, restored on load, 0 for a state
 * written before the count was recorded, and a bad count is refused before anything changes.
 */
class SkippedStepsStateTest {
    static final int SKIPPED = 2;

    @TempDir
    Path tmp;

    /** Rewrites the state index's metadata entry {@code key} ({@code null} removes it). */
    static void setIndexMetadata(Path dir, String key, String value) {
        ObjectMapper json = new ObjectMapper();
        Path index = dir.resolve(LayerCheckpointing.STATE_INDEX);
        try {
            ObjectNode root = (ObjectNode) json.readTree(index.toFile());
            ObjectNode meta = (ObjectNode) root.get("metadata");
            if (value == null) {
                meta.remove(key);
            } else {
                meta.put(key, value);
            }
            json.writeValue(index.toFile(), root);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    @Test
    void skippedStepCountSurvivesTheTrainingState() {
        Path dir = tmp.resolve("state");
        LocalGroup.run(1, comm -> {
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(1), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                ExactResumeTest.step(layer, opt, 42, 0);
                for (int i = 0; i < SKIPPED; i++) { // a non-finite gradient: the step is skipped and counted
                    ((HostBuffer) layer.parameters().get(0).grad()).setFloat(i, Float.NaN);
                    assertFalse(opt.step().applied(), "a step with a NaN gradient is skipped");
                    opt.zeroGrad();
                }
                assertEquals(SKIPPED, opt.skippedSteps());
                layer.saveTrainingState(dir, opt, 1);
            }
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(1), comm).seed(8).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                assertEquals(0, opt.skippedSteps());
                assertEquals(1, layer.loadTrainingState(dir, opt));
                assertEquals(SKIPPED, opt.skippedSteps(), "restored from the state");
                assertEquals(1, opt.steps());

                setIndexMetadata(dir, LayerCheckpointing.SKIPPED_STEPS, "-3");
                var before = ExactResumeTest.state(layer, opt);
                CheckpointException e = assertThrows(CheckpointException.class, () -> layer.loadTrainingState(dir, opt));
                assertTrue(e.getMessage().contains(LayerCheckpointing.SKIPPED_STEPS) && e.getMessage().contains("-3"),
                        e.getMessage());
                assertEquals(SKIPPED, opt.skippedSteps(), "a refused load changed the count");
                ExactResumeTest.assertSame(List.of(before), List.of(ExactResumeTest.state(layer, opt)),
                        "a refused load changed the state");

                setIndexMetadata(dir, LayerCheckpointing.SKIPPED_STEPS, null); // a state written before the count
                assertEquals(1, layer.loadTrainingState(dir, opt));
                assertEquals(0, opt.skippedSteps(), "a state without the count restores 0");
                assertEquals(1, opt.steps());
            }
            return null;
        });
    }
}
