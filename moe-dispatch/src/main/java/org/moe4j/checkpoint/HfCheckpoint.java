package org.moe4j.checkpoint;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;

/**
 * A Hugging Face checkpoint: one {@code model.safetensors} file, or shards listed by
 * {@code model.safetensors.index.json} ({@code weight_map}: tensor name → shard file name). Shards
 * are opened (memory-mapped and validated) only when a tensor in them is first asked for, so a
 * reader that needs a few tensors touches only their shards and only their bytes.
 *
 * <p>Not thread-safe; close it to unmap every opened shard.
 */
public final class HfCheckpoint implements AutoCloseable {
    /** File name of the sharded index. */
    public static final String INDEX = "model.safetensors.index.json";
    /** File name of an unsharded checkpoint. */
    public static final String SINGLE = "model.safetensors";
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private final Path dir;
    private final Path origin;
    private final Map<String, String> weightMap; // name → shard file name
    private final Map<String, String> metadata;
    private final Map<String, SafetensorsFile> open = new LinkedHashMap<>();

    private HfCheckpoint(Path dir, Path origin, Map<String, String> weightMap, Map<String, String> metadata) {
        this.metadata = metadata;
        this.dir = dir;
        this.origin = origin;
        this.weightMap = weightMap;
    }

    /**
     * Opens a checkpoint: a directory (its index if present, else {@code model.safetensors}), an
     * index file, or a single safetensors file.
     *
     * @param path the directory, the {@code *.index.json} file or a {@code *.safetensors} file
     * @return the checkpoint (no shard opened yet, except a single file, whose header is the index)
     * @throws CheckpointException naming the path when it does not exist, the index is not valid
     *                             (not JSON, no {@code weight_map}, a non-string entry, a shard name
     *                             that is not a plain file name in the index's directory)
     */
    public static HfCheckpoint open(Path path) {
        if (path == null) {
            throw new IllegalArgumentException("HfCheckpoint.open: path is null");
        }
        Path p = path.toAbsolutePath().normalize();
        if (Files.isDirectory(p)) {
            if (Files.isRegularFile(p.resolve(INDEX))) {
                return openIndex(p.resolve(INDEX));
            }
            if (Files.isRegularFile(p.resolve(SINGLE))) {
                return openSingle(p.resolve(SINGLE));
            }
            throw new CheckpointException(p + ": neither " + INDEX + " nor " + SINGLE + " is in this directory");
        }
        if (!Files.isRegularFile(p)) {
            throw new CheckpointException(p + ": no such checkpoint file or directory");
        }
        return p.getFileName().toString().endsWith(".json") ? openIndex(p) : openSingle(p);
    }

    private static HfCheckpoint openSingle(Path file) {
        SafetensorsFile f = SafetensorsFile.open(file);
        Map<String, String> map = new LinkedHashMap<>();
        for (String name : f.tensors().keySet()) {
            map.put(name, file.getFileName().toString());
        }
        HfCheckpoint c = new HfCheckpoint(file.getParent(), file, Collections.unmodifiableMap(map), f.metadata());
        c.open.put(file.getFileName().toString(), f);
        return c;
    }

    private static HfCheckpoint openIndex(Path index) {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(index));
        } catch (IOException e) {
            throw new CheckpointException(index + ": bad index: " + e.getMessage().lines().findFirst().orElse(""), e);
        }
        if (root == null || !root.isObject() || !root.path("weight_map").isObject()) {
            throw new CheckpointException(index + ": bad index: expected an object with a weight_map object");
        }
        Map<String, String> map = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.get("weight_map").fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getValue().isTextual()) {
                throw new CheckpointException(index + ": bad index: weight_map entry " + e.getKey() + " is not a file name");
            }
            String shard = e.getValue().asText();
            if (shard.isEmpty() || shard.contains("/") || shard.contains("\\") || shard.equals(".") || shard.equals("..")
                    || shard.indexOf('\0') >= 0) {
                throw new CheckpointException(index + ": bad index: weight_map entry " + e.getKey() + " names '" + shard
                        + "', which is not a plain file name beside the index");
            }
            map.put(e.getKey(), shard);
        }
        Map<String, String> meta = new LinkedHashMap<>();
        if (root.has("metadata")) {
            if (!root.get("metadata").isObject()) {
                throw new CheckpointException(index + ": bad index: metadata is not an object");
            }
            root.get("metadata").fields().forEachRemaining(m -> meta.put(m.getKey(),
                    m.getValue().isTextual() ? m.getValue().asText() : m.getValue().toString()));
        }
        return new HfCheckpoint(index.getParent(), index, Collections.unmodifiableMap(map),
                Collections.unmodifiableMap(meta));
    }

    /**
     * Returns the index file or the single safetensors file this checkpoint was opened from.
     *
     * @return the index file or the single safetensors file this checkpoint was opened from
     */
    public Path origin() {
        return origin;
    }

    /**
     * The checkpoint's metadata: the index's {@code metadata} object, or a single file's header metadata.
     *
     * @return the index's {@code metadata} object (numbers as their JSON text), or a single file's
     *         {@code __metadata__}
     */
    public Map<String, String> metadata() {
        return metadata;
    }

    /**
     * Returns every tensor name the checkpoint lists.
     *
     * @return every tensor name the checkpoint lists
     */
    public Set<String> names() {
        return weightMap.keySet();
    }

    /**
     * Whether the checkpoint lists a tensor.
     *
     * @param name a tensor name
     * @return whether the checkpoint lists it
     */
    public boolean contains(String name) {
        return weightMap.containsKey(name);
    }

    /**
     * The open shard holding a tensor (opened and validated now if it was not).
     *
     * @param name a tensor name
     * @return the open shard holding it (opened and validated now if it was not)
     * @throws CheckpointException if the tensor is not listed, its shard cannot be opened, or the
     *                             shard does not hold it
     */
    public SafetensorsFile shardOf(String name) {
        String shard = weightMap.get(name);
        if (shard == null) {
            throw new CheckpointException(origin + ": missing tensor " + name);
        }
        SafetensorsFile f = open.get(shard);
        if (f == null) {
            f = SafetensorsFile.open(dir.resolve(shard));
            open.put(shard, f);
        }
        if (!f.tensors().containsKey(name)) {
            throw new CheckpointException(f.path() + ": missing tensor " + name + " (the index " + origin
                    + " places it in this shard)");
        }
        return f;
    }

    /**
     * The header entry of a tensor.
     *
     * @param name a tensor name
     * @return its header entry
     * @throws CheckpointException as {@link #shardOf(String)}
     */
    public TensorInfo info(String name) {
        return shardOf(name).info(name);
    }

    /**
     * Returns the shard file names opened so far (for tests and diagnostics).
     *
     * @return the shard file names opened so far (for tests and diagnostics)
     */
    public Set<String> openedShards() {
        return Collections.unmodifiableSet(open.keySet());
    }

    /** Unmaps every opened shard. */
    @Override
    public void close() {
        open.values().forEach(SafetensorsFile::close);
        open.clear();
    }
}
