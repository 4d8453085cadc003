package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.checkpoint.CheckpointException;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.optim.AdamW;

/** Sharded saves commit through their index: a failed save leaves the previous one loadable and intact. */
class CheckpointCommitTest {
    @TempDir
    Path tmp;

    static List<String> files(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void aSaveThatFailsOnOneRankLeavesTheEarlierSaveIntact() throws Exception {
        Path dir = tmp.resolve("state");
        List<Map<String, float[]>> first = LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(2), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                ExactResumeTest.step(layer, opt, 42, 0);
                layer.saveTrainingState(dir, opt, 1);
                Map<String, float[]> s = ExactResumeTest.state(layer, opt);
                ExactResumeTest.step(layer, opt, 42, 1);
                LayerCheckpointing.beforeShardWrite = r -> {
                    if (r == 1) {
                        throw new CheckpointException("injected failure on rank 1");
                    }
                };
                try {
                    assertThrows(CheckpointException.class, () -> layer.saveTrainingState(dir, opt, 2));
                } finally {
                    comm.barrier();
                    LayerCheckpointing.beforeShardWrite = r -> { };
                }
                return s;
            }
        });
        assertEquals(3, files(dir).size(), "two shards + index, nothing of the failed save: " + files(dir));
        List<Map<String, float[]>> got = LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(2), comm).seed(1234).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(5))) {
                assertEquals(1, layer.loadTrainingState(dir, opt));
                return ExactResumeTest.state(layer, opt);
            }
        });
        ExactResumeTest.assertSame(first, got, "the earlier save after a failed save");
    }

    @Test
    void aSuccessfulSaveRemovesTheShardsOfTheSaveBefore() throws Exception {
        Path dir = tmp.resolve("again");
        LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(2), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                layer.saveTrainingState(dir, opt, 1);
                layer.saveTrainingState(dir, opt, 2);
            }
            return null;
        });
        List<String> f = files(dir);
        assertEquals(3, f.size(), f.toString());
        assertTrue(f.contains(LayerCheckpointing.STATE_INDEX), f.toString());
    }
}
