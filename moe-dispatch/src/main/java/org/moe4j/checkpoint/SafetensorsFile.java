package org.moe4j.checkpoint;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;

/**
 * A safetensors file opened read-only and memory-mapped into its own {@link Arena}. The whole
 * header is validated on {@link #open}: JSON shape, dtypes, shapes, and that every tensor's byte
 * range lies inside the file and matches its dtype and shape. Tensor views are valid until
 * {@link #close()}.
 */
public final class SafetensorsFile implements AutoCloseable {
    /** Largest header accepted (the reference implementation uses 100 MB). */
    public static final long MAX_HEADER = 100L << 20;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path path;
    private final Arena arena;
    private final MemorySegment data;
    private final Map<String, TensorInfo> tensors;
    private final Map<String, String> metadata;

    private SafetensorsFile(Path path, Arena arena, MemorySegment data, Map<String, TensorInfo> tensors,
                            Map<String, String> metadata) {
        this.path = path;
        this.arena = arena;
        this.data = data;
        this.tensors = tensors;
        this.metadata = metadata;
    }

    /**
     * Opens, maps and validates a file.
     *
     * @param path the file
     * @return the open file
     * @throws CheckpointException naming the file and the first problem found
     */
    public static SafetensorsFile open(Path path) {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) {
                throw new CheckpointException(path + ": truncated: " + size + " bytes, too short for the 8-byte header length");
            }
            MemorySegment all = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long n = all.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN), 0);
            if (n < 2 || n > MAX_HEADER) {
                throw new CheckpointException(path + ": bad header: header length " + n + " is out of range [2, "
                        + MAX_HEADER + "]");
            }
            if (8 + n > size) {
                throw new CheckpointException(path + ": truncated: header length " + n + " but the file has only "
                        + (size - 8) + " bytes after it");
            }
            byte[] head = all.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
            MemorySegment data = all.asSlice(8 + n);
            Map<String, String> meta = new LinkedHashMap<>();
            Map<String, TensorInfo> tensors = parse(path, head, data.byteSize(), meta);
            return new SafetensorsFile(path, arena, data, Collections.unmodifiableMap(tensors),
                    Collections.unmodifiableMap(meta));
        } catch (IOException e) {
            arena.close();
            throw new CheckpointException(path + ": cannot read: " + e.getMessage(), e);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static final ObjectMapper STRICT = JSON.copy()
            .enable(com.fasterxml.jackson.core.JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    /**
     * Parses and validates a header as the safetensors reference reader does: a JSON object that
     * starts with '{', unique names, known dtypes, integral non-negative shapes, checked arithmetic,
     * and tensors that, sorted by offset, are contiguous, non-overlapping and cover the data section
     * exactly (no gap, no overlap, no trailing bytes).
     */
    private static Map<String, TensorInfo> parse(Path path, byte[] head, long dataSize, Map<String, String> meta) {
        if (head[0] != '{') {
            throw new CheckpointException(path + ": bad header: does not start with '{'");
        }
        JsonNode root;
        try {
            root = STRICT.readTree(head);
        } catch (IOException e) {
            throw new CheckpointException(path + ": bad header: not valid JSON (" + e.getMessage().lines().findFirst().orElse("") + ")", e);
        }
        if (root == null || !root.isObject()) {
            throw new CheckpointException(path + ": bad header: expected a JSON object");
        }
        Map<String, TensorInfo> out = new LinkedHashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            String name = e.getKey();
            JsonNode t = e.getValue();
            if (name.equals("__metadata__")) {
                if (!t.isObject()) {
                    throw new CheckpointException(path + ": bad header: __metadata__ is not an object");
                }
                for (Iterator<Map.Entry<String, JsonNode>> m = t.fields(); m.hasNext(); ) {
                    Map.Entry<String, JsonNode> kv = m.next();
                    if (!kv.getValue().isTextual()) {
                        throw new CheckpointException(path + ": bad header: __metadata__ entry " + kv.getKey()
                                + " is not a string");
                    }
                    meta.put(kv.getKey(), kv.getValue().asText());
                }
                continue;
            }
            String where = path + ": bad header: tensor " + name;
            if (!t.isObject() || !t.path("dtype").isTextual() || !t.path("shape").isArray()
                    || !t.path("data_offsets").isArray() || t.path("data_offsets").size() != 2 || t.size() != 3) {
                throw new CheckpointException(where + " needs exactly dtype, shape and data_offsets [begin, end]");
            }
            SafetensorsDtype dtype;
            try {
                dtype = SafetensorsDtype.parse(t.get("dtype").asText());
            } catch (IllegalArgumentException bad) {
                throw new CheckpointException(where + " has unknown dtype " + t.get("dtype").asText()
                        + " (known: " + java.util.Arrays.toString(SafetensorsDtype.values()) + ")");
            }
            long[] dims = new long[t.get("shape").size()];
            long numel = 1;
            for (int i = 0; i < dims.length; i++) {
                JsonNode d = t.get("shape").get(i);
                if (!d.isIntegralNumber() || !d.canConvertToLong() || d.asLong() < 0) {
                    throw new CheckpointException(where + " has a bad shape " + t.get("shape"));
                }
                dims[i] = d.asLong();
                try {
                    numel = Math.multiplyExact(numel, dims[i]);
                } catch (ArithmeticException overflow) {
                    throw new CheckpointException(where + ": shape " + t.get("shape") + " overflows a 64-bit element count");
                }
            }
            JsonNode b = t.get("data_offsets").get(0);
            JsonNode en = t.get("data_offsets").get(1);
            if (!b.isIntegralNumber() || !en.isIntegralNumber() || !b.canConvertToLong() || !en.canConvertToLong()
                    || b.asLong() < 0 || en.asLong() < b.asLong()) {
                throw new CheckpointException(where + " has bad data_offsets " + t.get("data_offsets"));
            }
            long begin = b.asLong();
            long end = en.asLong();
            long bytes;
            try {
                bytes = Math.multiplyExact(numel, (long) dtype.byteSize());
            } catch (ArithmeticException overflow) {
                throw new CheckpointException(where + ": " + dtype + " " + t.get("shape") + " overflows a 64-bit byte count");
            }
            if (end - begin != bytes) {
                throw new CheckpointException(where + ": data_offsets " + t.get("data_offsets") + " span "
                        + (end - begin) + " bytes but " + dtype + " " + java.util.Arrays.toString(dims) + " needs "
                        + bytes);
            }
            if (end > dataSize) {
                throw new CheckpointException(path + ": truncated: tensor " + name + " ends at byte " + end
                        + " of the data section, which has only " + dataSize + " bytes");
            }
            if (out.put(name, new TensorInfo(name, dtype, Shape.of(dims), begin, end)) != null) {
                throw new CheckpointException(where + " appears twice");
            }
        }
        java.util.List<TensorInfo> byOffset = new java.util.ArrayList<>(out.values());
        byOffset.sort(java.util.Comparator.comparingLong(TensorInfo::begin).thenComparingLong(TensorInfo::end));
        long at = 0;
        for (TensorInfo t : byOffset) {
            if (t.begin() != at) {
                throw new CheckpointException(path + ": bad header: tensor " + t.name() + " starts at byte " + t.begin()
                        + " of the data section but the previous tensor ends at " + at
                        + (t.begin() < at ? " (overlap)" : " (gap)"));
            }
            at = t.end();
        }
        if (at != dataSize) {
            throw new CheckpointException(path + ": bad header: the tensors cover " + at + " bytes but the data section has "
                    + dataSize + " (trailing bytes)");
        }
        return out;
    }

    /**
     * Returns the file.
     *
     * @return the file
     */
    public Path path() {
        return path;
    }

    /**
     * Returns every tensor, in header order.
     * @return every tensor, in header order
     */
    public Map<String, TensorInfo> tensors() {
        return tensors;
    }

    /**
     * Returns the {@code __metadata__} entries.
     * @return the {@code __metadata__} entries
     */
    public Map<String, String> metadata() {
        return metadata;
    }

    /**
     * Returns a read-only view of the mapped bytes (valid until close).
     * @param name tensor name
     * @return a read-only view of the mapped bytes (valid until close)
     * @throws CheckpointException if the tensor is missing or has a dtype moe4j buffers cannot hold
     */
    public HostBuffer view(String name) {
        TensorInfo t = info(name);
        if (t.dtype().core() == null) {
            throw new CheckpointException(path + ": tensor " + name + " has dtype " + t.dtype()
                    + ", which has no moe4j buffer type; read its bytes with segment(name)");
        }
        return HostBuffer.wrap(t.dtype().core(), t.shape(), segment(name));
    }

    /**
     * Returns the tensor's header entry.
     * @param name tensor name
     * @return the tensor's header entry
     * @throws CheckpointException if the tensor is missing
     */
    public TensorInfo info(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) {
            throw new CheckpointException(path + ": missing tensor " + name);
        }
        return t;
    }

    /**
     * Returns a read-only view of the tensor's mapped bytes, any dtype (valid until close).
     * @param name tensor name
     * @return a read-only view of the tensor's mapped bytes, any dtype (valid until close)
     * @throws CheckpointException if the tensor is missing
     */
    public MemorySegment segment(String name) {
        TensorInfo t = info(name);
        return data.asSlice(t.begin(), t.byteSize()).asReadOnly();
    }

    @Override
    public void close() {
        arena.close();
    }
}
