package org.moe4j.checkpoint;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;

/**
 * Writes the <a href="https://huggingface.co/docs/safetensors">safetensors</a> format: an 8-byte
 * little-endian header length, a JSON header (padded with spaces to a multiple of 8 bytes) mapping
 * each name to {@code dtype}, {@code shape} and {@code data_offsets}, then the raw little-endian
 * tensor bytes in the order given. The file is written to a temporary sibling and moved into place,
 * so a failed write never leaves a half-written checkpoint under the final name.
 */
public final class SafetensorsWriter {
    private static final ObjectMapper JSON = new ObjectMapper();

    private SafetensorsWriter() {
    }

    /**
     * Writes tensors and metadata to a safetensors file.
     *
     * @param path     destination
     * @param tensors  name → host buffer (F32, BF16, F16, I32 or I64), written in iteration order
     * @param metadata free-form string metadata ({@code __metadata__}); may be empty
     * @throws CheckpointException on I/O errors
     */
    public static void write(Path path, Map<String, HostBuffer> tensors, Map<String, String> metadata) {
        ObjectNode header = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = header.putObject("__metadata__");
            metadata.forEach(meta::put);
        }
        long offset = 0;
        Map<String, HostBuffer> ordered = new LinkedHashMap<>(tensors);
        for (Map.Entry<String, HostBuffer> e : ordered.entrySet()) {
            HostBuffer b = e.getValue();
            ObjectNode t = header.putObject(e.getKey());
            t.put("dtype", code(b.dtype()));
            ArrayNode shape = t.putArray("shape");
            for (long d : b.shape().dims()) {
                shape.add(d);
            }
            ArrayNode off = t.putArray("data_offsets");
            off.add(offset);
            off.add(offset + b.byteSize());
            offset += b.byteSize();
        }
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(header);
        } catch (IOException e) {
            throw new CheckpointException(path + ": cannot encode header", e);
        }
        int padded = (json.length + 7) / 8 * 8;
        byte[] head = new byte[8 + padded];
        ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN).putLong(padded);
        System.arraycopy(json, 0, head, 8, json.length);
        for (int i = 8 + json.length; i < head.length; i++) {
            head[i] = ' ';
        }
        Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                    StandardOpenOption.WRITE, StandardOpenOption.READ); Arena arena = Arena.ofConfined()) {
                long total = head.length + offset;
                MemorySegment map = ch.map(FileChannel.MapMode.READ_WRITE, 0, total, arena);
                MemorySegment.copy(MemorySegment.ofArray(head), 0, map, 0, head.length);
                long at = head.length;
                for (HostBuffer b : ordered.values()) {
                    MemorySegment.copy(b.segment(), 0, map, at, b.byteSize());
                    at += b.byteSize();
                }
                map.force();
            }
            Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            CheckpointException failure = new CheckpointException(path + ": cannot write checkpoint: " + e.getMessage(), e);
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException cleanup) {
                failure.addSuppressed(cleanup); // the temporary file is left behind; say so with the cause
            }
            throw failure;
        }
    }

    /**
     * @param d dtype
     * @return the safetensors dtype code
     */
    static String code(DType d) {
        return switch (d) {
            case F32 -> "F32";
            case BF16 -> "BF16";
            case F16 -> "F16";
            case I32 -> "I32";
            case I64 -> "I64";
        };
    }

    static String headerString(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }
}
