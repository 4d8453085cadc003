package org.moe4j.layer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import org.moe4j.checkpoint.CheckpointException;
import org.moe4j.checkpoint.HfCheckpoint;
import org.moe4j.checkpoint.LayerCheckpoint;
import org.moe4j.checkpoint.MoeNameMap;
import org.moe4j.checkpoint.MoeTensor;
import org.moe4j.checkpoint.SafetensorsFile;
import org.moe4j.checkpoint.SafetensorsWriter;
import org.moe4j.checkpoint.TensorInfo;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.MoeConfigJson;
import org.moe4j.optim.AdamW;

/**
 * The checkpoint operations of {@link MoeLayer}: HF-layout load and export, and the moe4j training
 * state for exact resume. Every load stages into fresh host buffers and commits to the layer only
 * after the whole checkpoint has been checked and decoded.
 */
final class LayerCheckpointing {
    /** Index of the training state written by {@link #saveState}. */
    static final String STATE_INDEX = "moe4j-state.safetensors.index.json";
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final MoeNameMap STATE_NAMES = MoeNameMap.deepseekV3();
    /** Metadata key of {@link AdamW#skippedSteps()} (absent in older states: 0). */
    static final String SKIPPED_STEPS = "moe4j.adamw.skipped_steps";
    /**
     * Metadata key: whether the saved per-rank loads are summed over the ranks at the bias update (so a
     * resume at another W may regroup them); absent in older states, which count as summed only at W = 1.
     */
    static final String LOAD_SUMMED = "moe4j.bias.load_summed";

    private LayerCheckpointing() {
    }

    static LayerCheckpoint.Geometry geometry(MoeLayer layer) {
        MoeConfig c = layer.config();
        return new LayerCheckpoint.Geometry(c.experts(), layer.experts().firstExpert(), layer.experts().localExperts(),
                c.hidden(), c.ffn());
    }

    /** The layer's trainable tensors by slot (backend buffers). */
    static Map<MoeTensor, Buffer> params(MoeLayer layer) {
        Map<MoeTensor, Buffer> p = new EnumMap<>(MoeTensor.class);
        p.put(MoeTensor.ROUTER_WEIGHT, layer.gateWeight());
        p.put(MoeTensor.EXPERT_GATE, layer.experts().w1());
        p.put(MoeTensor.EXPERT_UP, layer.experts().w3());
        p.put(MoeTensor.EXPERT_DOWN, layer.experts().w2());
        if (layer.sharedExperts() != null) {
            p.put(MoeTensor.SHARED_GATE, layer.sharedExperts().mlp().w1());
            p.put(MoeTensor.SHARED_UP, layer.sharedExperts().mlp().w3());
            p.put(MoeTensor.SHARED_DOWN, layer.sharedExperts().mlp().w2());
        }
        // model-family variants (MoeConfig.features)
        if (layer.routerBias() != null) {
            p.put(MoeTensor.ROUTER_BIAS, layer.routerBias());
        }
        if (layer.experts().b1() != null) {
            p.put(MoeTensor.EXPERT_GATE_BIAS, layer.experts().b1());
            p.put(MoeTensor.EXPERT_UP_BIAS, layer.experts().b3());
            p.put(MoeTensor.EXPERT_DOWN_BIAS, layer.experts().b2());
        }
        if (layer.sharedExpertGate() != null) {
            p.put(MoeTensor.SHARED_EXPERT_GATE, layer.sharedExpertGate());
        }
        return p;
    }

    /**
     * Names of the training state: DeepSeek-V3's, plus {@code gate.bias},
     * {@code shared_expert_gate.weight} and the per-expert {@code experts.{e}.gate_up_proj.bias}
     * {@code [2·ffn]} (gate then up) and {@code experts.{e}.down_proj.bias} {@code [hidden]} for
     * layers with those variants.
     */
    static MoeNameMap stateNames(MoeLayer layer) {
        MoeNameMap d = STATE_NAMES;
        boolean expertBias = layer.experts().b1() != null;
        return new MoeNameMap(d.family(), d.routerWeight(), layer.routerBias() != null ? "gate.bias" : null,
                d.scoreCorrectionBias(), d.expertLayout(), d.gateProj(), d.upProj(), d.downProj(),
                expertBias ? "experts.{e}.gate_up_proj.bias" : null, expertBias ? "experts.{e}.down_proj.bias" : null,
                d.sharedGateProj(), d.sharedUpProj(), d.sharedDownProj(),
                layer.sharedExpertGate() != null ? "shared_expert_gate.weight" : null, d.fp8ScaleSuffix(),
                d.mxfp4BlocksSuffix(), d.mxfp4ScalesSuffix());
    }

    /** The 2-D view a slot's loader/exporter expects of a shared-expert {@code [1, rows, cols]} buffer. */
    private static HostBuffer view(MoeTensor slot, HostBuffer h) {
        if (slot == MoeTensor.SHARED_GATE || slot == MoeTensor.SHARED_UP || slot == MoeTensor.SHARED_DOWN) {
            return h.reshape(h.shape().dim(1), h.shape().dim(2));
        }
        return h;
    }

    /** Host staging buffers, one per source buffer, closed together. */
    private static final class Staging implements AutoCloseable {
        final Map<Buffer, HostBuffer> host = new LinkedHashMap<>();

        HostBuffer fresh(Buffer b) {
            return host.computeIfAbsent(b, x -> HostBuffer.allocate(x.dtype(), x.shape()));
        }

        HostBuffer download(Buffer b) {
            return host.computeIfAbsent(b, Buffer::toHost);
        }

        void commit() {
            host.forEach(Buffer::copyFrom);
        }

        @Override
        public void close() {
            host.values().forEach(HostBuffer::close);
        }
    }

    static void load(MoeLayer layer, Path path, String prefix, MoeNameMap names, LayerCheckpoint.Options options) {
        Objects.requireNonNull(path, "path");
        Objects.requireNonNull(prefix, "prefix");
        Objects.requireNonNull(names, "names");
        Objects.requireNonNull(options, "options");
        LayerCheckpoint.Geometry g = geometry(layer);
        try (Staging st = new Staging();
             HostBuffer bias = HostBuffer.allocate(DType.F32, layer.config().experts())) {
            RuntimeException failure = null;
            float[] b = null;
            try (HfCheckpoint ckpt = HfCheckpoint.open(path)) {
                Map<MoeTensor, HostBuffer> targets = new EnumMap<>(MoeTensor.class);
                params(layer).forEach((slot, buf) -> targets.put(slot, view(slot, st.fresh(buf))));
                if (names.scoreCorrectionBias() != null) {
                    targets.put(MoeTensor.SCORE_CORRECTION_BIAS, bias);
                }
                LayerCheckpoint.decodeInto(ckpt, prefix, names, g, targets, options); // staged: committed below
                b = bias.toFloatArray(); // zero when the family has no score-correction bias
            } catch (RuntimeException e) {
                failure = e;
            }
            agree(layer, failure, path + ": load"); // all ranks commit, or none
            st.commit();
            layer.expertBias().setValues(b);
        }
    }

    /**
     * A status all-reduce before a commit: every rank reports whether it is ready; if any is not, the
     * failing ranks' messages are gathered and every rank throws (a failing rank its own exception, the
     * others a {@link CheckpointException} carrying those messages), so all ranks commit or none does.
     */
    private static void agree(MoeLayer layer, RuntimeException failure, String what) {
        int world = layer.communicator().size();
        int rank = layer.communicator().rank();
        if (world == 1) {
            if (failure != null) {
                throw failure;
            }
            return;
        }
        byte[] msg = new byte[0];
        if (failure != null) {
            String m = String.valueOf(failure.getMessage());
            byte[] full = m.getBytes(StandardCharsets.UTF_8);
            msg = java.util.Arrays.copyOf(full, Math.min(full.length, 2000));
        }
        long[] lengths = new long[world];
        lengths[rank] = failure == null ? 0 : msg.length + 1;
        lengths = layer.sumOverRanks(lengths);
        long total = 0;
        long offset = 0;
        for (int r = 0; r < world; r++) {
            long len = Math.max(0, lengths[r] - 1);
            if (r < rank) {
                offset += len;
            }
            total += len;
        }
        boolean allOk = true;
        for (long l : lengths) {
            allOk &= l == 0;
        }
        if (allOk) {
            return;
        }
        long[] bytes = new long[(int) total];
        for (int i = 0; i < msg.length; i++) {
            bytes[(int) offset + i] = msg[i];
        }
        bytes = layer.sumOverRanks(bytes);
        if (failure != null) {
            throw failure;
        }
        StringBuilder why = new StringBuilder();
        int at = 0;
        for (int r = 0; r < world; r++) {
            if (lengths[r] == 0) {
                continue;
            }
            byte[] m = new byte[(int) (lengths[r] - 1)];
            for (int i = 0; i < m.length; i++) {
                m[i] = (byte) bytes[at + i];
            }
            at += m.length;
            why.append(why.isEmpty() ? "" : "; ").append("rank ").append(r).append(": ")
                    .append(new String(m, StandardCharsets.UTF_8));
        }
        throw new CheckpointException(what + " refused on every rank, nothing changed, because " + why);
    }

    static String shardName(String stem, long id, int rank, int world) {
        return String.format("%s-%s-%05d-of-%05d.safetensors", stem, Long.toHexString(id), rank + 1, world);
    }

    /** Test hook: runs on each rank just before it writes its shard (a throw there fails that rank's write). */
    static volatile java.util.function.IntConsumer beforeShardWrite = r -> { };

    /** A save id all ranks agree on: rank 0's random number, spread by a sum. */
    private static long saveId(MoeLayer layer) {
        boolean first = layer.communicator().rank() == 0;
        return layer.sumOverRanks(new long[] {first ? new java.security.SecureRandom().nextLong() >>> 1 : 0})[0];
    }

    /**
     * Each rank writes its shard under a name unique to this save, then every rank learns whether all
     * succeeded; rank 0 then writes the index from the shards' own headers (the commit point: a reader
     * sees the previous save's index and shards, or this one's) and deletes the shards of earlier saves.
     */
    private static void writeSharded(MoeLayer layer, Path dir, String stem, String indexName,
                                     Map<String, HostBuffer> tensors, Map<String, String> shardMeta,
                                     Map<String, String> indexMeta) {
        int rank = layer.communicator().rank();
        int world = layer.communicator().size();
        removeLeftovers(layer, dir);
        long id = saveId(layer);
        Path mine = dir.resolve(shardName(stem, id, rank, world));
        RuntimeException failure = null;
        try {
            Files.createDirectories(dir);
            beforeShardWrite.accept(rank);
            SafetensorsWriter.write(mine, tensors, shardMeta);
        } catch (IOException e) {
            failure = new CheckpointException(dir + ": cannot create the checkpoint directory: " + e, e);
        } catch (RuntimeException e) {
            failure = e;
        }
        long[] ok = layer.sumOverRanks(new long[] {failure == null ? 1 : 0});
        if (ok[0] != world) {
            deleteQuietly(mine); // not referenced by any index
        }
        if (failure != null) {
            throw failure;
        }
        if (ok[0] != world) {
            throw new CheckpointException(dir + ": " + (world - ok[0]) + " of " + world + " ranks failed to write their"
                    + " shard; no index was written (the previous save, if any, is unchanged)");
        }
        if (rank == 0) {
            try {
                List<String> shards = new ArrayList<>();
                for (int r = 0; r < world; r++) {
                    shards.add(shardName(stem, id, r, world));
                }
                writeIndex(dir, shards, indexName, indexMeta);
                removeStaleShards(dir, stem, shards);
            } catch (RuntimeException e) {
                failure = e;
            }
        }
        phase(layer, failure, dir, "publish the index", null); // no rank returns before the index is durable
    }

    /**
     * Before a save writes anything: rank 0 deletes the temporary files interrupted saves left in
     * {@code dir} ({@link SafetensorsWriter#removeLeftovers}), then a status all-reduce (a barrier) keeps
     * every rank from writing until that is done.
     */
    private static void removeLeftovers(MoeLayer layer, Path dir) {
        RuntimeException failure = null;
        if (layer.communicator().rank() == 0 && Files.isDirectory(dir)) {
            try {
                SafetensorsWriter.removeLeftovers(dir);
            } catch (RuntimeException e) {
                failure = e;
            }
        }
        phase(layer, failure, dir, "remove leftover temporary files", null);
    }

    /**
     * Deletes the shards of earlier saves ({@code <stem>-[<id>-]<r>-of-<W>.safetensors}) that the
     * just-published index does not list.
     */
    private static void removeStaleShards(Path dir, String stem, List<String> keep) {
        java.util.regex.Pattern shard = java.util.regex.Pattern.compile(
                java.util.regex.Pattern.quote(stem) + "-([0-9a-f]+-)?[0-9]{5}-of-[0-9]{5}\\.safetensors");
        try (java.util.stream.Stream<Path> files = Files.list(dir)) {
            for (Path p : files.toList()) {
                String n = p.getFileName().toString();
                if (shard.matcher(n).matches() && !keep.contains(n)) {
                    Files.deleteIfExists(p);
                }
            }
        } catch (IOException e) {
            throw new CheckpointException(dir + ": the new index is published, but the shards of an earlier save could"
                    + " not be removed: " + e, e);
        }
    }

    private static void deleteQuietly(Path p) {
        try {
            Files.deleteIfExists(p);
        } catch (IOException ignored) {
            // an unreferenced file; removeStaleShards deletes it after the next successful save
        }
    }

    private static void writeIndex(Path dir, List<String> shards, String indexName, Map<String, String> meta) {
        Map<String, String> weightMap = new TreeMap<>();
        long total = 0;
        for (String shard : shards) {
            try (SafetensorsFile f = SafetensorsFile.open(dir.resolve(shard))) {
                for (TensorInfo t : f.tensors().values()) {
                    if (weightMap.put(t.name(), shard) != null) {
                        throw new CheckpointException(dir + ": tensor " + t.name() + " is in two shards");
                    }
                    total += t.byteSize();
                }
            }
        }
        ObjectNode root = JSON.createObjectNode();
        ObjectNode m = root.putObject("metadata");
        m.put("total_size", total);
        meta.forEach(m::put);
        ObjectNode wm = root.putObject("weight_map");
        weightMap.forEach(wm::put);
        byte[] bytes;
        try {
            bytes = JSON.writerWithDefaultPrettyPrinter().writeValueAsString(root).getBytes(StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new CheckpointException(dir + ": cannot encode the index", e);
        }
        SafetensorsWriter.writeBytes(dir.resolve(indexName), bytes);
    }

    static void export(MoeLayer layer, Path dir, String prefix, MoeNameMap names, DType dtype) {
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(prefix, "prefix");
        Objects.requireNonNull(names, "names");
        LayerCheckpoint.Geometry g = geometry(layer);
        boolean first = layer.communicator().rank() == 0;
        Map<String, HostBuffer> tensors = Map.of();
        try (Staging st = new Staging();
             HostBuffer bias = HostBuffer.ofFloats(layer.expertBias().values(), layer.config().experts())) {
            Map<MoeTensor, HostBuffer> src = new EnumMap<>(MoeTensor.class);
            params(layer).forEach((slot, b) -> src.put(slot, view(slot, st.download(b))));
            if (names.scoreCorrectionBias() != null) {
                src.put(MoeTensor.SCORE_CORRECTION_BIAS, bias);
            }
            if (names.fused() && layer.communicator().size() > 1) {
                exportFused(layer, dir, prefix, names, dtype, g, src);
                return;
            }
            tensors = LayerCheckpoint.exportTensors(prefix, names, g, src, dtype, first, true);
            writeSharded(layer, dir, "model", HfCheckpoint.INDEX, tensors, Map.of("format", "pt", "producer", "moe4j"),
                    Map.of());
        } finally {
            tensors.values().forEach(HostBuffer::close);
        }
    }

    /**
     * Fused-expert families at W &gt; 1: one shard that every rank fills in place. Rank 0 lays it out
     * and creates it at full size under a temporary name; each rank writes its experts' contiguous
     * slices of the fused tensors (rank 0 also the replicated tensors) and fsyncs; then rank 0 renames
     * it into place and writes the index. A status all-reduce after each phase makes a failure on any
     * rank fail every rank, with no index written.
     */
    private static void exportFused(MoeLayer layer, Path dir, String prefix, MoeNameMap names, DType dtype,
                                    LayerCheckpoint.Geometry g, Map<MoeTensor, HostBuffer> src) {
        int rank = layer.communicator().rank();
        int world = layer.communicator().size();
        Map<MoeTensor, HostBuffer> routed = new EnumMap<>(MoeTensor.class);
        src.forEach((slot, b) -> {
            if (slot.routed()) {
                routed.put(slot, b);
            }
        });
        LayerCheckpoint.Geometry localOnly = new LayerCheckpoint.Geometry(g.localExperts(), 0, g.localExperts(),
                g.hidden(), g.ffn());
        Map<String, HostBuffer> rep = LayerCheckpoint.exportTensors(prefix, names, g, src, dtype, true, false);
        Map<String, HostBuffer> local = Map.of();
        try {
            local = LayerCheckpoint.exportTensors(prefix, names, localOnly, routed, dtype, false, true);
            Map<String, SafetensorsWriter.TensorSpec> specs = new LinkedHashMap<>();
            org.moe4j.checkpoint.SafetensorsDtype fd = org.moe4j.checkpoint.SafetensorsDtype.of(dtype);
            rep.forEach((n, b) -> specs.put(n, new SafetensorsWriter.TensorSpec(fd, b.shape())));
            local.forEach((n, b) -> {
                long[] dims = b.shape().dims();
                dims[0] = g.experts();
                specs.put(n, new SafetensorsWriter.TensorSpec(fd, org.moe4j.core.Shape.of(dims)));
            });
            SafetensorsWriter.Layout layout = SafetensorsWriter.layout(specs, Map.of("format", "pt", "producer", "moe4j"));
            removeLeftovers(layer, dir);
            long nonce = layer.sumOverRanks(new long[] {rank == 0 ? new java.security.SecureRandom().nextLong() >>> 1 : 0})[0];
            Path tmp = dir.resolve(SafetensorsWriter.TEMP_PREFIX + "shared-" + Long.toHexString(nonce) + ".tmp");
            String shard = shardName("model", nonce, 0, 1);
            RuntimeException failure = null;
            if (rank == 0) {
                try {
                    Files.createDirectories(dir);
                    SafetensorsWriter.createSized(tmp, layout);
                } catch (IOException e) {
                    failure = new CheckpointException(dir + ": cannot create the checkpoint directory: " + e, e);
                } catch (RuntimeException e) {
                    failure = e;
                }
            }
            phase(layer, failure, dir, "create the shared shard", null);
            try {
                if (rank == 0) {
                    for (Map.Entry<String, HostBuffer> e : rep.entrySet()) {
                        SafetensorsWriter.writeAt(tmp, layout.start().get(e.getKey()), e.getValue().segment());
                    }
                }
                for (Map.Entry<String, HostBuffer> e : local.entrySet()) {
                    long slice = e.getValue().byteSize();
                    SafetensorsWriter.writeAt(tmp, layout.start().get(e.getKey()) + rank * slice, e.getValue().segment());
                }
            } catch (RuntimeException e) {
                failure = e;
            }
            phase(layer, failure, dir, "write their experts", rank == 0 ? tmp : null);
            if (rank == 0) {
                try {
                    SafetensorsWriter.publish(tmp, dir.resolve(shard));
                    writeIndex(dir, List.of(shard), HfCheckpoint.INDEX, Map.of());
                    removeStaleShards(dir, "model", List.of(shard));
                } catch (RuntimeException e) {
                    failure = e;
                }
            }
            phase(layer, failure, dir, "publish the shard and index", null);
        } finally {
            rep.values().forEach(HostBuffer::close);
            local.values().forEach(HostBuffer::close);
        }
    }

    /** Every rank learns whether all succeeded; on failure every rank throws (after removing {@code cleanup}). */
    private static void phase(MoeLayer layer, RuntimeException failure, Path dir, String what, Path cleanup) {
        int world = layer.communicator().size();
        long ok = layer.sumOverRanks(new long[] {failure == null ? 1 : 0})[0];
        if (ok == world) {
            return;
        }
        if (cleanup != null) {
            try {
                Files.deleteIfExists(cleanup);
            } catch (IOException ignored) {
                // the leftover is reported by SafetensorsWriter.removeLeftovers
            }
        }
        if (failure != null) {
            throw failure;
        }
        throw new CheckpointException(dir + ": " + (world - ok) + " of " + world + " ranks failed to " + what
                + "; no index was written");
    }

    static void saveState(MoeLayer layer, Path dir, AdamW optimizer, long step) {
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(optimizer, "optimizer");
        if (step < 0) {
            throw new IllegalArgumentException("MoeLayer.saveTrainingState: step=" + step + " must be >= 0");
        }
        LayerCheckpoint.Geometry g = geometry(layer);
        MoeNameMap stateNames = stateNames(layer);
        Map<MoeTensor, Buffer> params = params(layer);
        for (Buffer p : params.values()) {
            optimizer.firstMoment(p); // throws before anything is written if the optimiser is not this layer's
        }
        int world = layer.communicator().size();
        int rank = layer.communicator().rank();
        int e = layer.config().experts();
        long[] mine = new long[world * (e + 1)];
        long[] load = layer.expertBias().load();
        System.arraycopy(load, 0, mine, rank * (e + 1), e);
        mine[rank * (e + 1) + e] = layer.expertBias().microBatches();
        long[] all = layer.sumOverRanks(mine);
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("moe4j.step", Long.toString(step));
        meta.put("moe4j.adamw.steps", Long.toString(optimizer.steps()));
        meta.put(SKIPPED_STEPS, Long.toString(optimizer.skippedSteps()));
        meta.put(LOAD_SUMMED, Boolean.toString(world == 1 || layer.syncReplicated()));
        AdamW.Options o = optimizer.options();
        meta.put("moe4j.adamw.options", o.lr() + "," + o.beta1() + "," + o.beta2() + "," + o.eps() + "," + o.weightDecay());
        meta.put("moe4j.world", Integer.toString(world));
        meta.put("moe4j.config", MoeConfigJson.write(layer.config()));
        ArrayNode loads = JSON.createArrayNode();
        for (int r = 0; r < world; r++) {
            ArrayNode row = loads.addArray();
            for (int i = 0; i <= e; i++) {
                row.add(all[r * (e + 1) + i]);
            }
        }
        meta.put("moe4j.bias.load_and_microbatches_per_rank", loads.toString());
        boolean first = rank == 0;
        Map<String, HostBuffer> tensors = new LinkedHashMap<>();
        try (Staging st = new Staging();
             HostBuffer bias = HostBuffer.ofFloats(layer.expertBias().values(), e)) {
            Map<MoeTensor, HostBuffer> w = new EnumMap<>(MoeTensor.class);
            Map<MoeTensor, HostBuffer> m1 = new EnumMap<>(MoeTensor.class);
            Map<MoeTensor, HostBuffer> m2 = new EnumMap<>(MoeTensor.class);
            params.forEach((slot, b) -> {
                w.put(slot, view(slot, st.download(b)));
                m1.put(slot, view(slot, st.download(optimizer.firstMoment(b))));
                m2.put(slot, view(slot, st.download(optimizer.secondMoment(b))));
            });
            w.put(MoeTensor.SCORE_CORRECTION_BIAS, bias);
            tensors.putAll(LayerCheckpoint.exportTensors("", stateNames, g, w, DType.F32, first, true));
            tensors.putAll(LayerCheckpoint.exportTensors("", stateNames.suffixed(".exp_avg"), g, m1, DType.F32, first, true));
            tensors.putAll(LayerCheckpoint.exportTensors("", stateNames.suffixed(".exp_avg_sq"), g, m2, DType.F32, first,
                    true));
            writeSharded(layer, dir, "moe4j-state", STATE_INDEX, tensors, Map.of("producer", "moe4j"), meta);
        } finally {
            tensors.values().forEach(HostBuffer::close);
        }
    }

    static long loadState(MoeLayer layer, Path dir, AdamW optimizer) {
        Objects.requireNonNull(dir, "dir");
        Objects.requireNonNull(optimizer, "optimizer");
        LayerCheckpoint.Geometry g = geometry(layer);
        MoeNameMap stateNames = stateNames(layer);
        Map<MoeTensor, Buffer> params = params(layer);
        Path index = dir.resolve(STATE_INDEX);
        int e = layer.config().experts();
        int world = layer.communicator().size();
        int rank = layer.communicator().rank();
        try (Staging st = new Staging();
             HostBuffer bias = HostBuffer.allocate(DType.F32, e)) {
            RuntimeException failure = null;
            long step = 0;
            long adamSteps = 0;
            long skippedSteps = 0;
            AdamW.Options options = null;
            long[] load = new long[e];
            int micro = 0;
            float[] b = null;
            try {
                for (Buffer p : params.values()) {
                    optimizer.firstMoment(p); // this layer's optimiser, open (checked before the files)
                }
            } catch (RuntimeException bad) {
                failure = bad;
            }
            if (failure == null) {
                try (HfCheckpoint ckpt = HfCheckpoint.open(index)) {
                    Map<String, String> meta = ckpt.metadata();
                    step = longField(index, meta, "moe4j.step");
                    adamSteps = longField(index, meta, "moe4j.adamw.steps");
                    skippedSteps = meta.containsKey(SKIPPED_STEPS) ? longField(index, meta, SKIPPED_STEPS) : 0;
                    int savedWorld = (int) longField(index, meta, "moe4j.world");
                    MoeConfig saved;
                    try {
                        saved = MoeConfigJson.read(field(index, meta, "moe4j.config"));
                    } catch (RuntimeException bad) {
                        throw new CheckpointException(index + ": bad moe4j.config: " + bad.getMessage(), bad);
                    }
                    MoeConfig mine = layer.config();
                    if (!saved.toBuilder().expertParallel(1).build().equals(mine.toBuilder().expertParallel(1).build())) {
                        throw new CheckpointException(index + ": the state was saved for config\n" + MoeConfigJson.write(saved)
                                + "but this layer has\n" + MoeConfigJson.write(mine) + "(only expertParallel may differ)");
                    }
                    options = options(index, field(index, meta, "moe4j.adamw.options"));
                    boolean summed = (savedWorld == 1 || "true".equals(meta.get(LOAD_SUMMED)))
                            && (world == 1 || layer.syncReplicated());
                    micro = loads(index, field(index, meta, "moe4j.bias.load_and_microbatches_per_rank"), savedWorld, e,
                            savedWorld == world ? rank : -1, summed ? rank == 0 : null, load);
                    Map<MoeTensor, HostBuffer> w = new EnumMap<>(MoeTensor.class);
                    Map<MoeTensor, HostBuffer> m1 = new EnumMap<>(MoeTensor.class);
                    Map<MoeTensor, HostBuffer> m2 = new EnumMap<>(MoeTensor.class);
                    params.forEach((slot, buf) -> {
                        w.put(slot, view(slot, st.fresh(buf)));
                        m1.put(slot, view(slot, st.fresh(optimizer.firstMoment(buf))));
                        m2.put(slot, view(slot, st.fresh(optimizer.secondMoment(buf))));
                    });
                    w.put(MoeTensor.SCORE_CORRECTION_BIAS, bias);
                    LayerCheckpoint.Options strict = LayerCheckpoint.Options.strict();
                    LayerCheckpoint.load(ckpt, "", stateNames, g, w, strict);
                    LayerCheckpoint.load(ckpt, "", stateNames.suffixed(".exp_avg"), g, m1, strict);
                    LayerCheckpoint.load(ckpt, "", stateNames.suffixed(".exp_avg_sq"), g, m2, strict);
                    b = bias.toFloatArray();
                } catch (RuntimeException bad) {
                    failure = bad;
                }
            }
            if (failure != null) {
                agree(layer, failure, index + ": loadTrainingState");
            }
            // the optimiser is held (open, not in use elsewhere) from the status exchange to the commit
            boolean[] agreed = {false};
            float[] values = b;
            int microBatches = micro;
            try {
                optimizer.restore(adamSteps, skippedSteps, options, () -> {
                    agreed[0] = true;
                    agree(layer, null, index + ": loadTrainingState");
                    st.commit();
                    layer.expertBias().setValues(values);
                    layer.expertBias().restoreLoad(load, microBatches);
                });
            } catch (RuntimeException bad) {
                if (!agreed[0]) {
                    agree(layer, bad, index + ": loadTrainingState");
                }
                throw bad;
            }
            return step;
        }
    }

    private static String field(Path index, Map<String, String> meta, String key) {
        String v = meta.get(key);
        if (v == null) {
            throw new CheckpointException(index + ": metadata lacks " + key + " (not a moe4j training state?)");
        }
        return v;
    }

    private static long longField(Path index, Map<String, String> meta, String key) {
        String v = field(index, meta, key);
        try {
            long x = Long.parseLong(v);
            if (x < 0) {
                throw new NumberFormatException("negative");
            }
            return x;
        } catch (NumberFormatException bad) {
            throw new CheckpointException(index + ": metadata " + key + "='" + v + "' is not a count >= 0");
        }
    }

    private static AdamW.Options options(Path index, String v) {
        String[] p = v.split(",");
        try {
            if (p.length != 5) {
                throw new IllegalArgumentException("expected lr,beta1,beta2,eps,weightDecay");
            }
            return new AdamW.Options(Double.parseDouble(p[0]), Double.parseDouble(p[1]), Double.parseDouble(p[2]),
                    Double.parseDouble(p[3]), Double.parseDouble(p[4]));
        } catch (IllegalArgumentException bad) {
            throw new CheckpointException(index + ": metadata moe4j.adamw.options='" + v + "': " + bad.getMessage(), bad);
        }
    }

    /**
     * Parses the per-rank loads; fills {@code out} with rank {@code rank}'s load (same W). At another W
     * ({@code rank < 0}) the loads can be regrouped only when they are summed over the ranks both when saved
     * and when resumed ({@code takeSum} non-null): the rank with {@code takeSum} true gets the sum over the
     * saved ranks, the others nothing, so the next update sees the same global load; otherwise every saved
     * load must be empty.
     *
     * @return the micro-batch count to restore
     */
    private static int loads(Path index, String v, int savedWorld, int experts, int rank, Boolean takeSum,
                             long[] out) {
        List<long[]> rows = new ArrayList<>();
        try {
            var node = JSON.readTree(v);
            if (!node.isArray() || node.size() != savedWorld) {
                throw new IllegalArgumentException("expected " + savedWorld + " rows");
            }
            for (var row : node) {
                if (!row.isArray() || row.size() != experts + 1) {
                    throw new IllegalArgumentException("expected rows of " + (experts + 1) + " counts");
                }
                long[] r = new long[experts + 1];
                for (int i = 0; i <= experts; i++) {
                    if (!row.get(i).canConvertToLong() || row.get(i).asLong() < 0 || row.get(i).asLong() > Integer.MAX_VALUE
                            && i == experts) {
                        throw new IllegalArgumentException("bad count " + row.get(i));
                    }
                    r[i] = row.get(i).asLong();
                }
                rows.add(r);
            }
        } catch (IOException | IllegalArgumentException bad) {
            throw new CheckpointException(index + ": bad moe4j.bias.load_and_microbatches_per_rank: " + bad.getMessage());
        }
        if (rank >= 0) {
            System.arraycopy(rows.get(rank), 0, out, 0, experts);
            return (int) rows.get(rank)[experts];
        }
        if (takeSum != null) {
            long micro = 0;
            for (long[] row : rows) {
                for (int i = 0; takeSum && i < experts; i++) {
                    out[i] = Math.addExact(out[i], row[i]);
                }
                micro = Math.max(micro, row[experts]); // every rank counts the same forwards
            }
            return (int) micro;
        }
        for (int r = 0; r < rows.size(); r++) {
            for (long x : rows.get(r)) {
                if (x != 0) {
                    throw new CheckpointException(index + ": saved at W=" + savedWorld + " between expert-bias updates"
                            + " (rank " + r + " has accumulated load) by ranks that do not both sum the load over the"
                            + " ranks (syncReplicated, saved and resumed); resume it at the same W, or save right after"
                            + " updateExpertBias()");
                }
            }
        }
        return 0;
    }
}
