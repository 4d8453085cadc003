package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.StandardOpenOption;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.checkpoint.CheckpointException;
import org.moe4j.checkpoint.HfCheckpoint;
import org.moe4j.checkpoint.LayerCheckpoint;
import org.moe4j.checkpoint.MoeNameMap;
import org.moe4j.checkpoint.TensorInfo;
import org.moe4j.core.DType;
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

    /** Writes a NaN over element 0 of a tensor, in whichever shard of {@code dir} holds it. */
    static void poison(Path dir, String index, String name) throws Exception {
        Path shard;
        TensorInfo t;
        try (HfCheckpoint ck = HfCheckpoint.open(dir.resolve(index))) {
            shard = ck.shardOf(name).path();
            t = ck.shardOf(name).info(name);
        }
        try (FileChannel ch = FileChannel.open(shard, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            ch.read(len, 0);
            ByteBuffer nan = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(Float.NaN).flip();
            ch.write(nan, 8 + len.flip().getLong() + t.begin());
        }
    }

    @Test
    void aNaNInOneRanksShardLeavesEveryRankUnchanged() throws Exception {
        Path dir = tmp.resolve("hf");
        var cfg = ExactResumeTest.config(2);
        LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(3).build()) {
                layer.export(dir, "", MoeNameMap.deepseekV3(), DType.F32);
            }
            return null;
        });
        poison(dir, HfCheckpoint.INDEX, "experts." + (cfg.experts() - 1) + ".up_proj.weight"); // rank 1's expert
        List<String> messages = LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(cfg, comm).seed(4).build()) {
                Map<String, float[]> before = HfCheckpointLayerTest.weights(layer);
                CheckpointException e = assertThrows(CheckpointException.class,
                        () -> layer.load(dir, "", MoeNameMap.deepseekV3(), LayerCheckpoint.Options.strict()));
                Map<String, float[]> after = HfCheckpointLayerTest.weights(layer);
                for (String k : before.keySet()) {
                    HfCheckpointLayerTest.assertBitwise(before.get(k), after.get(k), "rank " + comm.rank() + " " + k);
                }
                return e.getMessage();
            }
        });
        assertTrue(messages.get(0).contains("rank 1") && messages.get(0).contains("up_proj"), messages.get(0));
    }

    @Test
    void aTrainingStateLoadFailingOnOneRankChangesNoRank() throws Exception {
        Path dir = tmp.resolve("nan-state");
        LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(2), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                ExactResumeTest.step(layer, opt, 42, 0);
                ExactResumeTest.step(layer, opt, 42, 1);
                layer.saveTrainingState(dir, opt, 2);
            }
            return null;
        });
        Path good = tmp.resolve("good-state");
        Files.createDirectories(good);
        for (String f : files(dir)) {
            Files.copy(dir.resolve(f), good.resolve(f));
        }
        poison(dir, LayerCheckpointing.STATE_INDEX, "experts.7.gate_proj.weight.exp_avg"); // rank 1's expert
        LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(2), comm).seed(1234).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(5))) {
                Map<String, float[]> before = ExactResumeTest.state(layer, opt);
                assertThrows(CheckpointException.class, () -> layer.loadTrainingState(dir, opt));
                ExactResumeTest.assertSame(List.of(before), List.of(ExactResumeTest.state(layer, opt)),
                        "rank " + comm.rank() + " after a load that failed on rank 1");
                assertEquals(5, opt.options().lr());
                // a closed optimiser on rank 0 only: refused on both ranks before anything is written
                AdamW other = new AdamW(layer.parameters(), AdamW.Options.defaults(5));
                if (comm.rank() == 0) {
                    other.close();
                }
                try {
                    assertThrows(RuntimeException.class, () -> layer.loadTrainingState(good, other));
                    ExactResumeTest.assertSame(List.of(before), List.of(ExactResumeTest.state(layer, opt)),
                            "rank " + comm.rank() + " after a load refused by rank 0's closed optimiser");
                    assertEquals(0, other.steps());
                } finally {
                    other.close();
                }
            }
            return null;
        });
    }

    @Test
    void savesRemoveTheTemporaryFilesOfInterruptedSaves() throws Exception {
        Path state = tmp.resolve("leftover-state");
        Path hf = tmp.resolve("leftover-hf");
        Path fused = tmp.resolve("leftover-fused");
        List<Path> stale = List.of(state.resolve(".moe4j-123.tmp"), hf.resolve(".moe4j-456.tmp"),
                fused.resolve(".moe4j-shared-789.tmp"));
        for (Path p : stale) {
            Files.createDirectories(p.getParent());
            Files.write(p, new byte[] {1, 2, 3});
        }
        LocalGroup.run(2, comm -> {
            try (MoeLayer layer = MoeLayer.builder(ExactResumeTest.config(2), comm).seed(7).build();
                 AdamW opt = new AdamW(layer.parameters(), AdamW.Options.defaults(1e-2))) {
                layer.saveTrainingState(state, opt, 0);
                layer.export(hf, "", MoeNameMap.deepseekV3(), DType.F32);
            }
            var noShared = org.moe4j.core.config.MoeConfig.builder().hidden(32).experts(8).topK(2).ffn(32)
                    .expertParallel(2).build();
            try (MoeLayer layer = MoeLayer.builder(noShared, comm).seed(7).build()) {
                layer.export(fused, "", MoeNameMap.forModelType("gpt_oss"), DType.F32);
            }
            return null;
        });
        for (Path p : stale) {
            assertTrue(Files.notExists(p), p + " is still there: " + files(p.getParent()));
        }
    }
}
