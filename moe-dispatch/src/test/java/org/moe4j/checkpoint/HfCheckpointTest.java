package org.moe4j.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.core.buffer.HostBuffer;

/** Opening checkpoints: directory, index or file; bad indexes refused by name; shards opened lazily. */
class HfCheckpointTest {
    @TempDir
    Path dir;

    private void refused(String index, String fragment) throws IOException {
        Path p = Files.writeString(dir.resolve(HfCheckpoint.INDEX), index);
        CheckpointException e = assertThrows(CheckpointException.class, () -> HfCheckpoint.open(p).close());
        assertTrue(e.getMessage().contains(fragment), e.getMessage());
    }

    @Test
    void badIndexesAreRefusedNamingTheProblem() throws IOException {
        refused("{not json", "bad index");
        refused("{\"weight_map\": []}", "expected an object with a weight_map object");
        refused("{\"weight_map\": {\"a\": 3}}", "weight_map entry a is not a file name");
        refused("{\"weight_map\": {\"a\": \"/etc/passwd\"}}", "not a plain file name");
        refused("{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}", "bad index");
        refused("{\"weight_map\": {\"a\": \"x\"}, \"metadata\": 5}", "metadata is not an object");
        CheckpointException e = assertThrows(CheckpointException.class, () -> HfCheckpoint.open(dir.resolve("nothing")));
        assertTrue(e.getMessage().contains("no such checkpoint"), e.getMessage());
        Path empty = Files.createDirectories(dir.resolve("empty"));
        e = assertThrows(CheckpointException.class, () -> HfCheckpoint.open(empty));
        assertTrue(e.getMessage().contains("neither " + HfCheckpoint.INDEX), e.getMessage());
    }

    @Test
    void shardsOpenOnFirstUseAndAMissingShardIsNamed() throws IOException {
        try (HostBuffer a = HostBuffer.ofFloats(new float[] {1, 2}, 2); HostBuffer b = HostBuffer.ofFloats(new float[] {3}, 1)) {
            Checkpoints.save(dir.resolve("s1.safetensors"), Map.of("a", a), Map.of());
            Checkpoints.save(dir.resolve("s2.safetensors"), Map.of("b", b), Map.of());
        }
        Files.writeString(dir.resolve(HfCheckpoint.INDEX), "{\"metadata\": {\"total_size\": 12}, \"weight_map\": "
                + "{\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\", \"c\": \"s3.safetensors\"}}");
        try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
            assertEquals(Set.of("a", "b", "c"), ck.names());
            assertEquals("12", ck.metadata().get("total_size"));
            assertEquals(Set.of(), ck.openedShards());
            assertEquals(2, ck.info("a").shape().dim(0));
            assertEquals(Set.of("s1.safetensors"), ck.openedShards());
            CheckpointException e = assertThrows(CheckpointException.class, () -> ck.info("c"));
            assertTrue(e.getMessage().contains("s3.safetensors"), e.getMessage());
            e = assertThrows(CheckpointException.class, () -> ck.info("d"));
            assertTrue(e.getMessage().contains("missing tensor d"), e.getMessage());
        }
        try (HfCheckpoint ck = HfCheckpoint.open(dir.resolve("s2.safetensors"))) { // a single file is its own index
            assertEquals(Set.of("b"), ck.names());
        }
    }
}
