package org.moe4j.bench;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;
import org.moe4j.bench.support.ShortCpuBenchmark;
import org.moe4j.checkpoint.HfCheckpoint;
import org.moe4j.checkpoint.LayerCheckpoint;
import org.moe4j.checkpoint.MoeNameMap;
import org.moe4j.checkpoint.MoeTensor;
import org.moe4j.checkpoint.SafetensorsDtype;
import org.moe4j.checkpoint.SafetensorsWriter;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Loading one layer's routed experts ({@code experts} × gate/up/down, {@code [ffn, hidden]}) from a
 * DeepSeek-V3-named checkpoint into fp32 weights: {@code load} opens the checkpoint (index, mapping,
 * header validation) and decodes every expert ({@code LayerCheckpoint.decodeInto}, into buffers that
 * stand for a layer's staging buffers), from BF16 or from {@code F8_E4M3} with 128×128 block scales; {@code copy} is a plain memory copy of the same number of destination bytes in the same
 * run, the peer to compare with. GB/s = {@code 3·experts·hidden·ffn·4 / time} for both.
 */
@State(Scope.Benchmark)
public class CheckpointLoadBenchmark extends ShortCpuBenchmark {
    @Param({"16"})
    int experts;
    @Param({"512"})
    int hidden;
    @Param({"256"})
    int ffn;
    @Param({"BF16", "F8_E4M3"})
    String encoding;

    Path dir;
    Map<MoeTensor, HostBuffer> targets;
    LayerCheckpoint.Geometry geometry;
    Arena arena;
    MemorySegment src;
    MemorySegment dst;

    /** Creates the benchmark state (JMH instantiates it). */
    public CheckpointLoadBenchmark() {
    }

    /**
     * Writes the checkpoint to load and allocates the targets and the copy peer's buffers.
     *
     * @throws IOException if the temporary checkpoint cannot be written
     */
    @Setup(Level.Trial)
    public void setup() throws IOException {
        dir = Files.createTempDirectory("moe4j-load-bench");
        MoeNameMap names = MoeNameMap.deepseekV3();
        arena = Arena.ofShared();
        Map<String, SafetensorsWriter.RawTensor> t = new LinkedHashMap<>();
        int sr = (ffn + 127) / 128;
        int sc = (hidden + 127) / 128;
        for (int e = 0; e < experts; e++) {
            for (String name : new String[] {names.expertGate(e), names.expertUp(e)}) {
                put(t, name, ffn, hidden, sr, sc, names);
            }
            put(t, names.expertDown(e), hidden, ffn, (hidden + 127) / 128, (ffn + 127) / 128, names);
        }
        SafetensorsWriter.writeRaw(dir.resolve(HfCheckpoint.SINGLE), t, Map.of("format", "pt"));
        targets = new LinkedHashMap<>();
        targets.put(MoeTensor.EXPERT_GATE, HostBuffer.allocate(DType.F32, experts, ffn, hidden));
        targets.put(MoeTensor.EXPERT_UP, HostBuffer.allocate(DType.F32, experts, ffn, hidden));
        targets.put(MoeTensor.EXPERT_DOWN, HostBuffer.allocate(DType.F32, experts, hidden, ffn));
        geometry = new LayerCheckpoint.Geometry(experts, 0, experts, hidden, ffn);
        long bytes = 3L * experts * hidden * ffn * 4;
        src = arena.allocate(bytes, 64);
        dst = arena.allocate(bytes, 64);
        src.fill((byte) 1);
    }

    /** One weight in the benchmark's encoding (BF16: small values; FP8: bytes 0..0x7D, scale 2⁻⁸). */
    private void put(Map<String, SafetensorsWriter.RawTensor> t, String name, int rows, int cols, int sr, int sc,
                     MoeNameMap names) {
        if (encoding.equals("BF16")) {
            MemorySegment w = arena.allocate(2L * rows * cols);
            for (long i = 0; i < (long) rows * cols; i++) {
                w.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, DType.f32ToBf16((i % 17) * 0.01f));
            }
            t.put(name, new SafetensorsWriter.RawTensor(SafetensorsDtype.BF16, Shape.of(rows, cols), w));
            return;
        }
        MemorySegment w = arena.allocate((long) rows * cols);
        for (long i = 0; i < w.byteSize(); i++) {
            w.set(ValueLayout.JAVA_BYTE, i, (byte) (i % 0x7E));
        }
        t.put(name, new SafetensorsWriter.RawTensor(SafetensorsDtype.F8_E4M3, Shape.of(rows, cols), w));
        MemorySegment s = arena.allocate(4L * sr * sc);
        for (long i = 0; i < (long) sr * sc; i++) {
            s.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, 1f / 256);
        }
        t.put(names.fp8Scale(name), new SafetensorsWriter.RawTensor(SafetensorsDtype.F32, Shape.of(sr, sc), s));
    }

    /**
     * Loads and decodes every expert tensor of the checkpoint into the targets.
     *
     * @return the targets, so the work is not optimised away
     */
    @Benchmark
    public Map<MoeTensor, HostBuffer> load() {
        try (HfCheckpoint ck = HfCheckpoint.open(dir)) {
            LayerCheckpoint.decodeInto(ck, "", MoeNameMap.deepseekV3(), geometry, targets,
                    LayerCheckpoint.Options.strict());
        }
        return targets;
    }

    /**
     * A plain copy of the same bytes: the peer.
     *
     * @return the destination, so the copy is not optimised away
     */
    @Benchmark
    public MemorySegment copy() {
        MemorySegment.copy(src, 0, dst, 0, src.byteSize());
        return dst;
    }

    /**
     * Frees the buffers and deletes the temporary checkpoint.
     *
     * @throws IOException if a file cannot be deleted
     */
    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        targets.values().forEach(HostBuffer::close);
        arena.close();
        try (Stream<Path> s = Files.list(dir)) {
            for (Path p : s.toList()) {
                Files.delete(p);
            }
        }
        Files.delete(dir);
    }
}
