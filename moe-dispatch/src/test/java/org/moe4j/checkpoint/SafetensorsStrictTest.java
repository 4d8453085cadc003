package org.moe4j.checkpoint;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;

/** The reader refuses what the safetensors reference refuses; the writer is crash-safe. */
class SafetensorsStrictTest {
    @TempDir
    Path dir;

    private Path raw(String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        Path p = dir.resolve("raw" + System.nanoTime() + ".safetensors");
        Files.write(p, b.array());
        return p;
    }

    private void refused(Path p, String fragment) {
        CheckpointException e = assertThrows(CheckpointException.class, () -> SafetensorsFile.open(p).close());
        assertTrue(e.getMessage().contains(fragment), e.getMessage());
    }

    private static String t(String name, String dtype, String shape, long b, long e) {
        return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + b + "," + e + "]}";
    }

    @Test
    void layoutMustCoverTheDataExactlyWithoutGapsOrOverlaps() throws IOException {
        refused(raw("{" + t("a", "F32", "[2]", 0, 8) + "," + t("b", "F32", "[1]", 12, 16) + "}", 16), "(gap)");
        refused(raw("{" + t("a", "F32", "[2]", 0, 8) + "," + t("b", "F32", "[2]", 4, 12) + "}", 12), "(overlap)");
        refused(raw("{" + t("a", "F32", "[2]", 0, 8) + "}", 12), "trailing bytes");
        refused(raw("{" + t("a", "F32", "[2]", 4, 12) + "}", 12), "starts at byte 4");
        // header order may differ from offset order (real HF files sort names, not offsets)
        try (SafetensorsFile f = SafetensorsFile.open(raw("{" + t("b", "F32", "[1]", 8, 12) + "," + t("a", "F32", "[2]", 0, 8)
                + "}", 12))) {
            assertEquals(List.of("b", "a"), List.copyOf(f.tensors().keySet()));
        }
    }

    @Test
    void namesAreUniqueAndNumbersAreCheckedIntegers() throws IOException {
        refused(raw("{" + t("a", "F32", "[1]", 0, 4) + "," + t("a", "F32", "[1]", 4, 8) + "}", 8), "not valid JSON");
        refused(raw("{" + t("a", "F32", "[1.5]", 0, 4) + "}", 4), "bad shape");
        refused(raw("{" + t("a", "F32", "[4294967296,4294967296]", 0, 4) + "}", 4), "overflows");
        refused(raw("{" + t("a", "F32", "[1]", 0, 4) + "} x", 4), "not valid JSON");
        refused(raw("{\"__metadata__\":{\"k\":1}," + t("a", "F32", "[1]", 0, 4) + "}", 4), "__metadata__ entry k");
    }

    @Test
    void everyFormatDtypeIsReadableIncludingFp8AndMixes() throws IOException {
        Path p = raw("{" + t("w", "F8_E4M3", "[2,2]", 0, 4) + "," + t("s", "F32", "[1,1]", 4, 8) + ","
                + t("b", "U8", "[4]", 8, 12) + "," + t("z", "BF16", "[2]", 12, 16) + "}", 16);
        try (SafetensorsFile f = SafetensorsFile.open(p)) {
            assertEquals(SafetensorsDtype.F8_E4M3, f.info("w").dtype());
            assertEquals(4, f.segment("w").byteSize());
            CheckpointException e = assertThrows(CheckpointException.class, () -> f.view("w"));
            assertTrue(e.getMessage().contains("F8_E4M3"), e.getMessage());
            assertEquals(DType.BF16, f.view("z").dtype());
        }
    }

    @Test
    void nonFiniteValuesAreRefusedByTensorAndIndexUnlessAllowed() {
        Path p = dir.resolve("nan.safetensors");
        try (HostBuffer a = HostBuffer.ofFloats(new float[] {1, 2, Float.NaN, 4}, 4);
             HostBuffer dst = HostBuffer.ofFloats(new float[] {9, 9, 9, 9}, 4)) {
            Checkpoints.save(p, Map.of("a", a), Map.of());
            try (SafetensorsFile f = SafetensorsFile.open(p)) {
                CheckpointException e = assertThrows(CheckpointException.class, () -> Checkpoints.load(f, Map.of("a", dst)));
                assertTrue(e.getMessage().contains("tensor a element 2 is NaN"), e.getMessage());
                assertArrayEquals(new float[] {9, 9, 9, 9}, dst.toFloatArray(), 0f);
                Checkpoints.load(f, Map.of("a", dst), true);
                assertTrue(Float.isNaN(dst.toFloatArray()[2]));
            }
        }
    }

    private List<Path> temps() throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(x -> x.getFileName().toString().startsWith(SafetensorsWriter.TEMP_PREFIX)).toList();
        }
    }

    @Test
    void failedWriteLeavesTheOldFileAndNoTemporary() throws IOException {
        Path p = dir.resolve("x.safetensors");
        try (HostBuffer a = HostBuffer.ofFloats(new float[] {1, 2}, 2)) {
            Checkpoints.save(p, Map.of("a", a), Map.of());
        }
        byte[] before = Files.readAllBytes(p);
        HostBuffer closed = HostBuffer.ofFloats(new float[] {3}, 1);
        closed.close();
        assertThrows(IllegalArgumentException.class, () -> Checkpoints.save(p, Map.of("a", closed), Map.of()));
        // an I/O failure after the temporary file exists: the target is a directory that is not empty
        Path busy = Files.createDirectories(dir.resolve("busy.safetensors"));
        Files.writeString(busy.resolve("keep"), "x");
        try (HostBuffer a = HostBuffer.ofFloats(new float[] {1, 2}, 2)) {
            CheckpointException e = assertThrows(CheckpointException.class, () -> Checkpoints.save(busy, Map.of("a", a), Map.of()));
            assertTrue(e.getMessage().contains("cannot write checkpoint"), e.getMessage());
        }
        assertArrayEquals(before, Files.readAllBytes(p));
        assertEquals(List.of(), temps());
    }

    @Test
    void leftoversOfAnInterruptedSaveAreRemovedAndNothingElse() throws IOException {
        Path stale = Files.writeString(dir.resolve(SafetensorsWriter.TEMP_PREFIX + "123.tmp"), "half a file");
        Path keep = Files.writeString(dir.resolve("model.safetensors.tmp"), "not ours");
        assertEquals(List.of(stale), SafetensorsWriter.removeLeftovers(dir));
        assertTrue(Files.exists(keep));
        assertEquals(List.of(), temps());
    }

    @Test
    void longNamesAndConcurrentSavesGiveOneCompleteFile() throws Exception {
        Path p = dir.resolve("m".repeat(240) + ".safetensors"); // 252 bytes: name + ".tmp" would not fit
        int writers = 4;
        List<HostBuffer> bufs = new ArrayList<>();
        for (int w = 0; w < writers; w++) {
            float[] v = new float[1 << 16];
            java.util.Arrays.fill(v, w);
            bufs.add(HostBuffer.ofFloats(v, v.length));
        }
        ExecutorService pool = Executors.newFixedThreadPool(writers);
        try {
            for (int round = 0; round < 5; round++) {
                List<Future<?>> fs = new ArrayList<>();
                for (HostBuffer b : bufs) {
                    fs.add(pool.submit(() -> Checkpoints.save(p, Map.of("w", b), Map.of())));
                }
                for (Future<?> f : fs) {
                    f.get();
                }
                try (SafetensorsFile f = SafetensorsFile.open(p)) {
                    float[] got = f.view("w").toFloatArray();
                    for (float x : got) {
                        assertEquals(got[0], x, "a file mixes two writers' bytes");
                    }
                }
            }
        } finally {
            pool.shutdownNow();
            bufs.forEach(HostBuffer::close);
        }
        assertEquals(List.of(), temps());
    }
}
