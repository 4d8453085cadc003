package org.moe4j.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.EnumMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;

/** Fused-expert families (Llama 4 chunked, gpt-oss interleaved with biases): export → load is bitwise. */
class LayerCheckpointFusedTest {
    static final int E = 4;
    static final int H = 6;
    static final int F = 5;

    @TempDir
    Path dir;

    static Map<MoeTensor, HostBuffer> slots(MoeNameMap n, int local, Random rnd) {
        Map<MoeTensor, HostBuffer> t = new EnumMap<>(MoeTensor.class);
        t.put(MoeTensor.ROUTER_WEIGHT, HostBuffer.allocate(DType.F32, E, H));
        t.put(MoeTensor.EXPERT_GATE, HostBuffer.allocate(DType.F32, local, F, H));
        t.put(MoeTensor.EXPERT_UP, HostBuffer.allocate(DType.F32, local, F, H));
        t.put(MoeTensor.EXPERT_DOWN, HostBuffer.allocate(DType.F32, local, H, F));
        if (n.routerBias() != null) {
            t.put(MoeTensor.ROUTER_BIAS, HostBuffer.allocate(DType.F32, E));
            t.put(MoeTensor.EXPERT_GATE_BIAS, HostBuffer.allocate(DType.F32, local, F));
            t.put(MoeTensor.EXPERT_UP_BIAS, HostBuffer.allocate(DType.F32, local, F));
            t.put(MoeTensor.EXPERT_DOWN_BIAS, HostBuffer.allocate(DType.F32, local, H));
        }
        if (n.hasSharedExperts()) {
            t.put(MoeTensor.SHARED_GATE, HostBuffer.allocate(DType.F32, 3, H));
            t.put(MoeTensor.SHARED_UP, HostBuffer.allocate(DType.F32, 3, H));
            t.put(MoeTensor.SHARED_DOWN, HostBuffer.allocate(DType.F32, H, 3));
        }
        if (rnd != null) {
            for (HostBuffer b : t.values()) {
                for (long i = 0; i < b.numel(); i++) {
                    b.setFloat(i, (float) rnd.nextGaussian());
                }
            }
        }
        return t;
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt_oss", "llama4"})
    void fusedExportLoadsBackBitwiseOnEveryRank(String family) {
        long seed = new Random().nextLong();
        System.out.println("fusedExportLoadsBackBitwiseOnEveryRank " + family + " seed=" + seed);
        MoeNameMap n = MoeNameMap.forModelType(family);
        Map<MoeTensor, HostBuffer> src = slots(n, E, new Random(seed));
        LayerCheckpoint.Geometry all = new LayerCheckpoint.Geometry(E, 0, E, H, F);
        Map<String, HostBuffer> out = LayerCheckpoint.exportTensors("m.", n, all, src, DType.F32, true, true);
        try {
            assertEquals(java.util.List.of(E, H, 2 * F).toString(), java.util.Arrays.toString(
                    java.util.Arrays.stream(out.get("m." + n.gateProj()).shape().dims()).mapToInt(x -> (int) x).toArray()));
            SafetensorsWriter.write(dir.resolve(HfCheckpoint.SINGLE), out, Map.of());
        } finally {
            out.values().forEach(HostBuffer::close);
        }
        // W = 2: each rank reads its experts out of the fused tensors
        for (int rank = 0; rank < 2; rank++) {
            LayerCheckpoint.Geometry g = new LayerCheckpoint.Geometry(E, rank * 2, 2, H, F);
            Map<MoeTensor, HostBuffer> dst = slots(n, 2, null);
            try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
                LayerCheckpoint.load(ck, "m.", n, g, dst, LayerCheckpoint.Options.strict());
                for (Map.Entry<MoeTensor, HostBuffer> e : dst.entrySet()) {
                    float[] want = src.get(e.getKey()).toFloatArray();
                    float[] got = e.getValue().toFloatArray();
                    int off = e.getKey().routed() ? rank * got.length : 0;
                    for (int i = 0; i < got.length; i++) {
                        assertEquals(Float.floatToRawIntBits(want[off + i]), Float.floatToRawIntBits(got[i]),
                                family + " rank " + rank + " " + e.getKey() + " element " + i);
                    }
                }
            } finally {
                dst.values().forEach(HostBuffer::close);
            }
        }
        LayerCheckpoint.Geometry half = new LayerCheckpoint.Geometry(E, 0, 2, H, F);
        Map<MoeTensor, HostBuffer> part = slots(n, 2, null);
        try {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> LayerCheckpoint.exportTensors("m.", n, half, part, DType.F32, true, true));
            assertTrue(e.getMessage().contains("stores all experts in one tensor"), e.getMessage());
        } finally {
            part.values().forEach(HostBuffer::close);
            src.values().forEach(HostBuffer::close);
        }
    }

    @org.junit.jupiter.api.Test
    void loadIsAllOrNothingWhenAValueIsNotFinite() {
        MoeNameMap n = MoeNameMap.forModelType("llama4");
        Map<MoeTensor, HostBuffer> src = slots(n, E, new Random(3));
        LayerCheckpoint.Geometry all = new LayerCheckpoint.Geometry(E, 0, E, H, F);
        src.get(MoeTensor.EXPERT_DOWN).setFloat(src.get(MoeTensor.EXPERT_DOWN).numel() - 1, Float.NaN);
        Map<String, HostBuffer> out = LayerCheckpoint.exportTensors("m.", n, all, src, DType.F32, true, true);
        try {
            SafetensorsWriter.write(dir.resolve(HfCheckpoint.SINGLE), out, Map.of());
        } finally {
            out.values().forEach(HostBuffer::close);
            src.values().forEach(HostBuffer::close);
        }
        Map<MoeTensor, HostBuffer> dst = slots(n, E, null);
        try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
            dst.values().forEach(b -> {
                for (long i = 0; i < b.numel(); i++) {
                    b.setFloat(i, 7f);
                }
            });
            CheckpointException e = assertThrows(CheckpointException.class,
                    () -> LayerCheckpoint.load(ck, "m.", n, all, dst, LayerCheckpoint.Options.strict()));
            assertTrue(e.getMessage().contains("m.experts.down_proj[expert 3]: element [" + (H - 1) + ", " + (F - 1) + "]"),
                    e.getMessage());
            for (Map.Entry<MoeTensor, HostBuffer> t : dst.entrySet()) {
                for (float v : t.getValue().toFloatArray()) {
                    assertEquals(7f, v, 0f, t.getKey() + " was written by a refused load");
                }
            }
            LayerCheckpoint.load(ck, "m.", n, all, dst, new LayerCheckpoint.Options(true, false));
            assertTrue(Float.isNaN(dst.get(MoeTensor.EXPERT_DOWN).getFloat(dst.get(MoeTensor.EXPERT_DOWN).numel() - 1)));
        } finally {
            dst.values().forEach(HostBuffer::close);
        }
    }

    /** Exports a full layer under {@code m.}, adds {@code extra} (closed here) and writes it. */
    private void writeLayer(MoeNameMap n, Map<MoeTensor, HostBuffer> src, Map<String, HostBuffer> extra) {
        LayerCheckpoint.Geometry all = new LayerCheckpoint.Geometry(E, 0, E, H, F);
        Map<String, HostBuffer> out = LayerCheckpoint.exportTensors("m.", n, all, src, DType.F32, true, true);
        try {
            out.putAll(extra);
            SafetensorsWriter.write(dir.resolve(HfCheckpoint.SINGLE), out, Map.of());
        } finally {
            out.values().forEach(HostBuffer::close);
            extra.values().forEach(HostBuffer::close);
        }
    }

    /** Loads {@code dst} strictly (or ignoring unused tensors) and returns the failure, or null. */
    private static CheckpointException tryLoad(MoeNameMap n, LayerCheckpoint.Geometry g, Map<MoeTensor, HostBuffer> dst,
                                               boolean ignoreUnused, Path dir) {
        try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
            LayerCheckpoint.load(ck, "m.", n, g, dst, new LayerCheckpoint.Options(false, ignoreUnused));
            return null;
        } catch (CheckpointException e) {
            return e;
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"gpt_oss", "llama4"})
    void anUnreadFusedTensorUnderTheLayerPrefixIsRefusedByNameUnlessIgnoreUnused(String family) {
        MoeNameMap n = MoeNameMap.forModelType(family);
        Map<MoeTensor, HostBuffer> src = slots(n, E, new Random(11));
        LayerCheckpoint.Geometry all = new LayerCheckpoint.Geometry(E, 0, E, H, F);
        try {
            // a tensor under another prefix, or not of the family's layout, is not the layer's business
            writeLayer(n, src, Map.of("other.experts.gate_up_proj", HostBuffer.allocate(DType.F32, E, H, 2 * F),
                    "m.reference_output", HostBuffer.allocate(DType.F32, 3, H)));
            // the layer's fused tensors count as read when a rank reads only its slice of them, or only
            // one of gate/up (gate_up is still read) ...
            for (int rank = 0; rank < 2; rank++) {
                Map<MoeTensor, HostBuffer> part = slots(n, 2, null);
                try {
                    part.remove(MoeTensor.EXPERT_UP).close();
                    assertEquals(null, tryLoad(n, new LayerCheckpoint.Geometry(E, 2 * rank, 2, H, F), part, false, dir));
                } finally {
                    part.values().forEach(HostBuffer::close);
                }
            }
            // ... but a fused tensor the layer does not read at all is named
            Map<MoeTensor, HostBuffer> noDown = slots(n, E, null);
            try {
                noDown.remove(MoeTensor.EXPERT_DOWN).close();
                CheckpointException e = tryLoad(n, all, noDown, false, dir);
                assertTrue(e != null && e.getMessage().contains("holds m." + n.downProj() + " under the layer prefix"),
                        String.valueOf(e));
            } finally {
                noDown.values().forEach(HostBuffer::close);
            }
            // an extra fused tensor under the layer's prefix: gate_up in MXFP4 form beside the plain one the layer reads
            String extra = "m." + n.mxfp4Blocks(n.gateProj());
            writeLayer(n, src, Map.of(extra, HostBuffer.allocate(DType.F32, E, 2 * F, 1, 16)));
            Map<MoeTensor, HostBuffer> dst = slots(n, E, null);
            try {
                CheckpointException e = tryLoad(n, all, dst, false, dir);
                assertTrue(e != null && e.getMessage().contains("holds " + extra + " under the layer prefix 'm.'")
                        && e.getMessage().contains("ignoreUnused"), String.valueOf(e));
                for (float v : dst.get(MoeTensor.EXPERT_GATE).toFloatArray()) {
                    assertEquals(0f, v, 0f, "a refused load writes nothing");
                }
                assertEquals(null, tryLoad(n, all, dst, true, dir), "ignoreUnused loads the rest");
                assertTrue(java.util.Arrays.equals(src.get(MoeTensor.EXPERT_UP).toFloatArray(),
                        dst.get(MoeTensor.EXPERT_UP).toFloatArray()), "experts loaded with ignoreUnused");
            } finally {
                dst.values().forEach(HostBuffer::close);
            }
        } finally {
            src.values().forEach(HostBuffer::close);
        }
    }

    @org.junit.jupiter.api.Test
    void perExpertTensorsOfOtherRanksAreReadButExpertsBeyondTheLayerAreRefused() {
        MoeNameMap n = MoeNameMap.deepseekV3();
        Map<MoeTensor, HostBuffer> src = slots(n, E, new Random(5));
        writeLayer(n, src, Map.of("m.experts." + E + ".gate_proj.weight", HostBuffer.allocate(DType.F32, F, H)));
        src.values().forEach(HostBuffer::close);
        for (int rank = 0; rank < 2; rank++) {
            Map<MoeTensor, HostBuffer> dst = slots(n, 2, null);
            try {
                LayerCheckpoint.Geometry g = new LayerCheckpoint.Geometry(E, 2 * rank, 2, H, F);
                CheckpointException e = tryLoad(n, g, dst, false, dir);
                assertTrue(e != null && e.getMessage().contains("holds m.experts." + E + ".gate_proj.weight under"),
                        "rank " + rank + ": only the expert beyond E=" + E + " is unread: " + e);
                assertEquals(null, tryLoad(n, g, dst, true, dir));
            } finally {
                dst.values().forEach(HostBuffer::close);
            }
        }
    }
}
