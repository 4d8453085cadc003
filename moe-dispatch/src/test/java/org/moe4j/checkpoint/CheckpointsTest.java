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
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.core.DType;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.experts.GroupedExperts;
import org.moe4j.experts.internal.CpuExpertKernels;

class CheckpointsTest {
    static final String PREFIX = "model.layers.3.mlp.";

    @TempDir
    Path dir;

    static GroupedExperts experts(long seed) {
        return new GroupedExperts("experts", 4, 0, 8, 6, DType.F32, seed, GroupedExperts.STREAM_ROUTED,
                new CpuBackend(), new CpuExpertKernels());
    }

    static float[] all(GroupedExperts e) {
        float[] a = ((HostBuffer) e.w1()).toFloatArray();
        float[] b = ((HostBuffer) e.w3()).toFloatArray();
        float[] c = ((HostBuffer) e.w2()).toFloatArray();
        float[] out = Arrays.copyOf(a, a.length + b.length + c.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        System.arraycopy(c, 0, out, a.length + b.length, c.length);
        return out;
    }

    @Test
    void roundTripIsBitExactWithHuggingFaceNames() {
        Path p = dir.resolve("layer.safetensors");
        try (GroupedExperts src = experts(1); GroupedExperts dst = experts(2)) {
            Checkpoints.save(p, Checkpoints.expertTensors(src, PREFIX), Map.of("format", "pt"));
            try (SafetensorsFile f = SafetensorsFile.open(p)) {
                assertTrue(f.tensors().containsKey(PREFIX + "experts.3.down_proj.weight"));
                assertEquals("pt", f.metadata().get("format"));
                assertEquals(12, f.tensors().size());
            }
            Checkpoints.load(p, Checkpoints.expertTensors(dst, PREFIX));
            float[] a = all(src), b = all(dst);
            for (int i = 0; i < a.length; i++) {
                assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]), "element " + i);
            }
        }
    }

    @Test
    void bf16TensorsRoundTripBitExactAndWidenIntoF32Targets() {
        Path p = dir.resolve("bf16.safetensors");
        float[] vals = {1.5f, -2.25f, 3.0e-3f, 7f, -0f, 65504f};
        try (var b = HostBuffer.of(DType.BF16, vals, 2, 3); var back = HostBuffer.allocate(DType.BF16, 2, 3);
             var wide = HostBuffer.allocate(DType.F32, 2, 3)) {
            Checkpoints.save(p, Map.of("t", b), Map.of());
            Checkpoints.load(p, Map.of("t", back));
            assertArrayEquals(b.toFloatArray(), back.toFloatArray(), 0f);
            Checkpoints.load(p, Map.of("t", wide));
            assertArrayEquals(b.toFloatArray(), wide.toFloatArray(), 0f);
        }
    }

    private void assertRefusedAndUnchanged(Path p, String fragment) {
        try (GroupedExperts dst = experts(5)) {
            float[] before = all(dst);
            var e = assertThrows(CheckpointException.class, () -> Checkpoints.load(p, Checkpoints.expertTensors(dst, PREFIX)));
            assertTrue(e.getMessage().contains(fragment), e.getMessage());
            assertArrayEquals(before, all(dst), 0f);
        }
    }

    private Path saved(Map<String, HostBuffer> tensors) {
        Path p = dir.resolve("x" + System.nanoTime() + ".safetensors");
        Checkpoints.save(p, tensors, Map.of());
        return p;
    }

    @Test
    void truncatedFileIsRefusedAndLayerUnchanged() throws IOException {
        Path p;
        try (GroupedExperts src = experts(1)) {
            p = saved(Checkpoints.expertTensors(src, PREFIX));
        }
        byte[] bytes = Files.readAllBytes(p);
        Files.write(p, Arrays.copyOf(bytes, bytes.length - 10));
        assertRefusedAndUnchanged(p, "truncated: tensor " + PREFIX + "experts.3.down_proj.weight ends at byte");
        Files.write(p, Arrays.copyOf(bytes, 20));
        assertRefusedAndUnchanged(p, "truncated: header length");
    }

    @Test
    void missingTensorIsRefusedAndLayerUnchanged() {
        Path p;
        try (GroupedExperts src = experts(1)) {
            Map<String, HostBuffer> t = new LinkedHashMap<>(Checkpoints.expertTensors(src, PREFIX));
            t.remove(PREFIX + "experts.2.up_proj.weight");
            p = saved(t);
        }
        assertRefusedAndUnchanged(p, "missing tensor " + PREFIX + "experts.2.up_proj.weight");
    }

    @Test
    void wrongShapeIsRefusedAndLayerUnchanged() {
        Path p;
        try (GroupedExperts src = experts(1); var bad = HostBuffer.allocate(DType.F32, 8, 6)) {
            Map<String, HostBuffer> t = new LinkedHashMap<>(Checkpoints.expertTensors(src, PREFIX));
            t.put(PREFIX + "experts.3.gate_proj.weight", bad);
            p = saved(t);
        }
        assertRefusedAndUnchanged(p, "tensor " + PREFIX + "experts.3.gate_proj.weight has shape [8, 6] but the layer needs [6, 8]");
    }

    @Test
    void wrongDtypeIsRefusedAndLayerUnchanged() {
        Path p;
        try (GroupedExperts src = experts(1); var bad = HostBuffer.allocate(DType.I32, 6, 8)) {
            Map<String, HostBuffer> t = new LinkedHashMap<>(Checkpoints.expertTensors(src, PREFIX));
            t.put(PREFIX + "experts.3.gate_proj.weight", bad);
            p = saved(t);
        }
        assertRefusedAndUnchanged(p, "experts.3.gate_proj.weight has dtype I32; expected a floating dtype");
    }

    private Path raw(String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        Path p = dir.resolve("raw" + System.nanoTime() + ".safetensors");
        Files.write(p, b.array());
        return p;
    }

    @Test
    void badHeadersAreRefusedAndLayerUnchanged() throws IOException {
        assertRefusedAndUnchanged(raw("{not json", 0), "bad header: not valid JSON");
        assertRefusedAndUnchanged(raw("[1,2]", 0), "bad header: does not start with '{'");
        assertRefusedAndUnchanged(raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8), "bad header: tensor a needs exactly dtype, shape and data_offsets");
        assertRefusedAndUnchanged(raw("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), "unknown dtype Q4");
        assertRefusedAndUnchanged(raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "span 8 bytes but F32 [3] needs 12");
    }
}
