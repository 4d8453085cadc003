package org.moe4j.checkpoint;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
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
 * tensor bytes in the order given.
 *
 * <p>Crash safety: the bytes go to a temporary file with a unique short name in the target's
 * directory (so long target names and concurrent writers never collide), which is flushed and
 * fsynced, atomically renamed over the target, and then the directory itself is fsynced so the
 * rename survives a power cut. A reader therefore sees the old file or the complete new one, never a
 * mix of two concurrent saves or a half-written file; on any failure the temporary file is removed.
 */
public final class SafetensorsWriter {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final java.security.SecureRandom RANDOM = new java.security.SecureRandom();
    /** Prefix of the temporary files this writer creates beside its targets. */
    public static final String TEMP_PREFIX = ".moe4j-";

    private SafetensorsWriter() {
    }

    /**
     * Writes tensors and metadata to a safetensors file.
     *
     * @param path     destination
     * @param tensors  name → host buffer (F32, BF16, F16, I32 or I64), written in iteration order
     * @param metadata free-form string metadata ({@code __metadata__}); may be empty
     * @throws IllegalArgumentException on a null or blank name, the reserved name {@code __metadata__},
     *                                  a null or closed buffer, or null metadata; nothing is written
     * @throws CheckpointException      on I/O errors; the target is then unchanged, except when only the
     *                                  directory fsync after the rename fails: the message then says the
     *                                  file is published but not yet durable
     */
    public static void write(Path path, Map<String, HostBuffer> tensors, Map<String, String> metadata) {
        if (path == null || tensors == null || metadata == null) {
            throw new IllegalArgumentException("SafetensorsWriter.write: path, tensors and metadata must not be null");
        }
        Map<String, RawTensor> raw = new LinkedHashMap<>();
        for (Map.Entry<String, HostBuffer> e : tensors.entrySet()) {
            HostBuffer b = e.getValue();
            if (b == null || b.isClosed()) {
                throw new IllegalArgumentException(path + ": tensor " + e.getKey() + " is " + (b == null ? "null" : "closed"));
            }
            raw.put(e.getKey(), new RawTensor(SafetensorsDtype.of(b.dtype()), b.shape(), b.segment().asSlice(0, b.byteSize())));
        }
        writeRaw(path, raw, metadata);
    }

    /**
     * Writes tensors given as raw bytes in any format dtype (e.g. {@code F8_E4M3} weights, {@code U8}
     * MXFP4 blocks), with the same validation and crash safety as {@link #write}.
     *
     * @param path     destination
     * @param tensors  name → raw tensor, written in iteration order
     * @param metadata free-form string metadata ({@code __metadata__}); may be empty
     * @throws IllegalArgumentException on a null or blank name, the reserved name {@code __metadata__},
     *                                  a null tensor, or null metadata; nothing is written
     * @throws CheckpointException      on I/O errors; the target is then unchanged, except when only the
     *                                  directory fsync after the rename fails: the message then says the
     *                                  file is published but not yet durable
     */
    public static void writeRaw(Path path, Map<String, RawTensor> tensors, Map<String, String> metadata) {
        if (path == null || tensors == null || metadata == null) {
            throw new IllegalArgumentException("SafetensorsWriter.writeRaw: path, tensors and metadata must not be null");
        }
        Map<String, RawTensor> ordered = new LinkedHashMap<>(tensors);
        for (Map.Entry<String, RawTensor> e : ordered.entrySet()) {
            if (e.getKey() == null || e.getKey().isBlank() || e.getKey().equals("__metadata__")) {
                throw new IllegalArgumentException(path + ": bad tensor name " + (e.getKey() == null ? "null" : "'" + e.getKey() + "'"));
            }
            if (e.getValue() == null) {
                throw new IllegalArgumentException(path + ": tensor " + e.getKey() + " is null");
            }
        }
        for (Map.Entry<String, String> m : metadata.entrySet()) {
            if (m.getKey() == null || m.getValue() == null) {
                throw new IllegalArgumentException(path + ": metadata entry " + m.getKey() + "=" + m.getValue() + " has a null");
            }
        }
        Map<String, TensorSpec> specs = new LinkedHashMap<>();
        ordered.forEach((n, t) -> specs.put(n, new TensorSpec(t.dtype(), t.shape())));
        byte[] head = layout(specs, metadata).head();
        atomically(path, ch -> {
            writeFully(ch, ByteBuffer.wrap(head));
            for (RawTensor b : ordered.values()) {
                inSlices(b.data(), SLICE_BYTES, (slice, offset) -> writeFully(ch, slice));
            }
        });
    }

    /**
     * A tensor of a file being laid out before its bytes exist.
     *
     * @param dtype the format dtype
     * @param shape the shape
     */
    public record TensorSpec(SafetensorsDtype dtype, org.moe4j.core.Shape shape) {
        /**
         * Checks the components.
         *
         * @throws IllegalArgumentException on a null component
         */
        public TensorSpec {
            if (dtype == null || shape == null) {
                throw new IllegalArgumentException("TensorSpec: dtype and shape must not be null");
            }
        }

        /**
         * The tensor's byte count.
         *
         * @return {@code numel · dtype size}
         * @throws IllegalArgumentException on overflow
         */
        public long byteSize() {
            try {
                return Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
            } catch (ArithmeticException overflow) {
                throw new IllegalArgumentException("TensorSpec: " + dtype + " " + shape + " overflows a byte count");
            }
        }
    }

    /**
     * The layout of a safetensors file: its header bytes and where each tensor's data starts.
     *
     * @param head      length prefix + padded JSON header
     * @param start     name → absolute file offset of the tensor's first byte
     * @param fileSize  total file size
     */
    public record Layout(byte[] head, Map<String, Long> start, long fileSize) {
    }

    /**
     * Lays out a file (tensors in iteration order), for writers that fill it in parts: several
     * ranks each writing their experts' slices of one shard.
     *
     * @param specs    name → dtype and shape, in file order
     * @param metadata {@code __metadata__} entries
     * @return the header bytes and the data offsets
     * @throws IllegalArgumentException on a bad name, null spec or metadata
     */
    public static Layout layout(Map<String, TensorSpec> specs, Map<String, String> metadata) {
        if (specs == null || metadata == null) {
            throw new IllegalArgumentException("SafetensorsWriter.layout: specs and metadata must not be null");
        }
        ObjectNode header = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = header.putObject("__metadata__");
            metadata.forEach((k, v) -> {
                if (k == null || v == null) {
                    throw new IllegalArgumentException("metadata entry " + k + "=" + v + " has a null");
                }
                meta.put(k, v);
            });
        }
        long offset = 0;
        Map<String, Long> rel = new LinkedHashMap<>();
        for (Map.Entry<String, TensorSpec> e : specs.entrySet()) {
            if (e.getKey() == null || e.getKey().isBlank() || e.getKey().equals("__metadata__") || e.getValue() == null) {
                throw new IllegalArgumentException("SafetensorsWriter.layout: bad tensor " + e.getKey());
            }
            TensorSpec b = e.getValue();
            ObjectNode t = header.putObject(e.getKey());
            t.put("dtype", b.dtype().name());
            ArrayNode shape = t.putArray("shape");
            for (long d : b.shape().dims()) {
                shape.add(d);
            }
            ArrayNode off = t.putArray("data_offsets");
            off.add(offset);
            off.add(offset + b.byteSize());
            rel.put(e.getKey(), offset);
            offset += b.byteSize();
        }
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(header);
        } catch (IOException e) {
            throw new CheckpointException("cannot encode a safetensors header", e);
        }
        int padded = (json.length + 7) / 8 * 8;
        byte[] head = new byte[8 + padded];
        ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN).putLong(padded);
        System.arraycopy(json, 0, head, 8, json.length);
        for (int i = 8 + json.length; i < head.length; i++) {
            head[i] = ' ';
        }
        Map<String, Long> start = new LinkedHashMap<>();
        rel.forEach((n, o) -> start.put(n, head.length + o));
        return new Layout(head, java.util.Collections.unmodifiableMap(start), head.length + offset);
    }

    /**
     * Creates a file of a layout's full size holding its header (data zero), fsynced, for parts to be
     * written into with {@link #writeAt} and then published with {@link #publish}.
     *
     * @param file   the temporary file to create (must not exist)
     * @param layout the layout
     * @throws CheckpointException on I/O errors (the file is then removed)
     */
    public static void createSized(Path file, Layout layout) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            writeFully(ch, ByteBuffer.wrap(layout.head()));
            if (layout.fileSize() > layout.head().length) {
                ch.write(ByteBuffer.wrap(new byte[1]), layout.fileSize() - 1);
            }
            ch.force(true);
        } catch (IOException e) {
            try {
                Files.deleteIfExists(file);
            } catch (IOException ignored) {
                // reported through the failure below
            }
            throw new CheckpointException(file + ": cannot create: " + e, e);
        }
    }

    /**
     * Writes bytes at a position of an existing file and fsyncs it.
     *
     * @param file     the file
     * @param position where the bytes go
     * @param bytes    the bytes
     * @throws CheckpointException on I/O errors
     */
    public static void writeAt(Path file, long position, java.lang.foreign.MemorySegment bytes) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
            inSlices(bytes, SLICE_BYTES, (b, offset) -> {
                long at = position + offset;
                while (b.hasRemaining()) {
                    at += ch.write(b, at);
                }
            });
            ch.force(true);
        } catch (IOException e) {
            throw new CheckpointException(file + ": cannot write at " + position + ": " + e, e);
        }
    }

    /**
     * Atomically renames a complete temporary file over its target and fsyncs the directory.
     *
     * @param tmp    the complete file
     * @param target its final name (same directory)
     * @throws CheckpointException on I/O errors (the temporary file is then removed and the target is
     *                             unchanged), or if the directory fsync fails after the rename (the file
     *                             is then published but not yet durable; the message says so)
     */
    public static void publish(Path tmp, Path target) {
        try {
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // reported through the failure below
            }
            throw new CheckpointException(target + ": cannot publish " + tmp + ": " + e, e);
        }
        durable(target.toAbsolutePath().getParent(), target);
    }

    /**
     * One tensor as raw little-endian bytes.
     *
     * @param dtype the format dtype
     * @param shape the shape
     * @param data  exactly {@code numel · dtype.byteSize()} bytes (borrowed until the write returns)
     */
    public record RawTensor(SafetensorsDtype dtype, org.moe4j.core.Shape shape, java.lang.foreign.MemorySegment data) {
        /**
         * Checks the components.
         *
         * @throws IllegalArgumentException on a null component or a byte count that does not match
         */
        public RawTensor {
            if (dtype == null || shape == null || data == null) {
                throw new IllegalArgumentException("RawTensor: dtype, shape and data must not be null");
            }
            long want;
            try {
                want = Math.multiplyExact(shape.numel(), (long) dtype.byteSize());
            } catch (ArithmeticException overflow) {
                throw new IllegalArgumentException("RawTensor: " + dtype + " " + shape + " overflows a byte count");
            }
            if (data.byteSize() != want) {
                throw new IllegalArgumentException("RawTensor: " + dtype + " " + shape + " needs " + want + " bytes, got "
                        + data.byteSize());
            }
        }
    }

    /**
     * Writes a small file (e.g. a checkpoint index) with the same crash safety as {@link #write}.
     *
     * @param path  destination
     * @param bytes the whole content
     * @throws IllegalArgumentException on a null argument
     * @throws CheckpointException      on I/O errors; the target is then unchanged, except when only the
     *                                  directory fsync after the rename fails: the message then says the
     *                                  file is published but not yet durable
     */
    public static void writeBytes(Path path, byte[] bytes) {
        if (path == null || bytes == null) {
            throw new IllegalArgumentException("SafetensorsWriter.writeBytes: path and bytes must not be null");
        }
        atomically(path, ch -> writeFully(ch, ByteBuffer.wrap(bytes)));
    }

    /**
     * Deletes the temporary files an interrupted save (a crash, a kill) left in a directory: the
     * {@value #TEMP_PREFIX}{@code *.tmp} files this writer creates. Call it when no save into the
     * directory is running (e.g. when a job starts): a running save's temporary file would be removed
     * and that save would fail.
     *
     * @param dir a checkpoint directory
     * @return the files deleted
     * @throws IllegalArgumentException if {@code dir} is null
     * @throws CheckpointException      if the directory cannot be listed or a file cannot be deleted
     */
    public static java.util.List<Path> removeLeftovers(Path dir) {
        if (dir == null) {
            throw new IllegalArgumentException("SafetensorsWriter.removeLeftovers: dir is null");
        }
        java.util.List<Path> removed = new java.util.ArrayList<>();
        try (java.util.stream.Stream<Path> files = Files.list(dir)) {
            for (Path p : files.toList()) {
                String n = p.getFileName().toString();
                if (n.startsWith(TEMP_PREFIX) && n.endsWith(".tmp") && Files.isRegularFile(p)) {
                    Files.deleteIfExists(p);
                    removed.add(p);
                }
            }
        } catch (IOException e) {
            throw new CheckpointException(dir + ": cannot remove leftover temporary files: " + e, e);
        }
        return removed;
    }

    /**
     * The most bytes handed to the channel in one buffer: {@link java.lang.foreign.MemorySegment#asByteBuffer}
     * refuses segments over {@link Integer#MAX_VALUE} bytes, so larger tensors are written in slices.
     */
    static final long SLICE_BYTES = 1L << 30;

    /** Receives one slice of a segment and its offset in the segment. */
    @FunctionalInterface
    interface SliceSink {
        void accept(ByteBuffer slice, long offset) throws IOException;
    }

    /**
     * Hands a segment to {@code sink} as byte buffers of at most {@code sliceBytes} bytes, in order.
     *
     * @param segment    the bytes
     * @param sliceBytes the largest slice, 1 to {@link Integer#MAX_VALUE}
     * @param sink       receives each slice and its offset
     * @throws IOException as the sink throws
     */
    static void inSlices(java.lang.foreign.MemorySegment segment, long sliceBytes, SliceSink sink) throws IOException {
        if (sliceBytes < 1 || sliceBytes > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("SafetensorsWriter: slice size " + sliceBytes + " out of range");
        }
        long size = segment.byteSize();
        for (long off = 0; off < size; off += sliceBytes) {
            sink.accept(segment.asSlice(off, Math.min(sliceBytes, size - off)).asByteBuffer(), off);
        }
    }

    /** Writes the content of a file through a channel. */
    @FunctionalInterface
    private interface Body {
        void write(FileChannel ch) throws IOException;
    }

    private static void atomically(Path path, Body body) {
        Path abs = path.toAbsolutePath();
        Path dir = abs.getParent();
        Path tmp = null;
        try {
            FileChannel created = null;
            while (created == null) { // a fresh random name; default permissions (0666 less the umask), not 0600
                tmp = dir.resolve(TEMP_PREFIX + Long.toHexString(RANDOM.nextLong() >>> 1) + ".tmp");
                try {
                    created = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
                } catch (java.nio.file.FileAlreadyExistsException taken) {
                    tmp = null;
                }
            }
            try (FileChannel ch = created) {
                body.write(ch);
                ch.force(true);
            }
            Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            tmp = null;
        } catch (IOException | RuntimeException e) {
            CheckpointException failure = new CheckpointException(path + ": cannot write checkpoint: " + e, e);
            if (tmp != null) {
                try {
                    Files.deleteIfExists(tmp);
                } catch (IOException cleanup) {
                    failure.addSuppressed(cleanup); // the temporary file is left behind; say so with the cause
                }
            }
            throw failure;
        }
        durable(dir, abs);
    }

    /** Fsyncs the directory of a file just renamed into place; a failure says the file is already published. */
    private static void durable(Path dir, Path published) {
        try {
            fsyncDirectory(dir);
        } catch (IOException e) {
            throw new CheckpointException(published + ": published (readers see the new file), but not yet durable:"
                    + " the directory fsync failed, so a power cut may still bring the old file back: " + e, e);
        }
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /**
     * Makes a rename in {@code dir} durable (POSIX: fsync of the directory). Platforms that cannot
     * open a directory for reading (Windows) make renames durable by themselves.
     *
     * @param dir a directory
     * @throws IOException if the fsync fails
     */
    static void fsyncDirectory(Path dir) throws IOException {
        FileChannel ch;
        try {
            ch = FileChannel.open(dir, StandardOpenOption.READ);
        } catch (IOException | UnsupportedOperationException notSupported) {
            return;
        }
        try (ch) {
            ch.force(true);
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
