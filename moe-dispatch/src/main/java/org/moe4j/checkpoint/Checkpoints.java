package org.moe4j.checkpoint;

import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.buffer.HostView;
import org.moe4j.experts.GroupedExperts;
import org.moe4j.experts.SharedExperts;

/**
 * Saving and loading named tensors in safetensors files, with Hugging Face DeepSeek-V3 names.
 *
 * <p>Loading is all-or-nothing: every target is checked against the file (present, shape, a
 * floating dtype) before the first byte is copied, so a bad file leaves the targets unchanged.
 * Files may hold F32, BF16 or F16 tensors; values are converted to the target's dtype (widening is
 * exact; narrowing rounds to nearest even).
 */
public final class Checkpoints {
    private Checkpoints() {
    }

    /**
     * Names of one routed expert's tensors, e.g. {@code model.layers.3.mlp.experts.17.gate_proj.weight}.
     *
     * @param prefix       e.g. {@code mlp.} or {@code model.layers.3.mlp.}
     * @param globalExpert global expert index
     * @param proj         {@code gate_proj}, {@code up_proj} or {@code down_proj}
     * @return the tensor name
     */
    public static String expertName(String prefix, int globalExpert, String proj) {
        return prefix + "experts." + globalExpert + "." + proj + ".weight";
    }

    /**
     * The HF-named 2-D views of every local expert's weights: {@code experts.{i}.gate_proj.weight}
     * {@code [ffn, hidden]}, {@code up_proj} {@code [ffn, hidden]}, {@code down_proj}
     * {@code [hidden, ffn]}, with {@code i} the global expert index.
     *
     * @param experts the experts (host memory)
     * @param prefix  name prefix, e.g. {@code mlp.}
     * @return name → view, in expert order
     */
    public static Map<String, HostBuffer> expertTensors(GroupedExperts experts, String prefix) {
        return expertTensors(experts, prefix, Checkpoints::requireHost);
    }

    /**
     * As {@link #expertTensors(GroupedExperts, String)}, slicing host mirrors of the weights: the way
     * to stage device-resident experts through the host.
     *
     * @param experts the experts (any backend)
     * @param prefix  name prefix, e.g. {@code mlp.}
     * @param host    maps each weight buffer ({@code w1}, {@code w3}, {@code w2}) to a host buffer of
     *                the same dtype and shape (the buffer itself when it is in host memory)
     * @return name → view of the host buffers, in expert order
     */
    public static Map<String, HostBuffer> expertTensors(GroupedExperts experts, String prefix,
            Function<Buffer, HostBuffer> host) {
        HostBuffer w1 = host.apply(experts.w1());
        HostBuffer w3 = host.apply(experts.w3());
        HostBuffer w2 = host.apply(experts.w2());
        Map<String, HostBuffer> out = new LinkedHashMap<>();
        int f = experts.ffn();
        int h = experts.hidden();
        for (int e = 0; e < experts.localExperts(); e++) {
            int g = experts.firstExpert() + e;
            out.put(expertName(prefix, g, "gate_proj"), slice(w1, e, f, h));
            out.put(expertName(prefix, g, "up_proj"), slice(w3, e, f, h));
            out.put(expertName(prefix, g, "down_proj"), slice(w2, e, h, f));
        }
        return out;
    }

    /**
     * Returns {@code shared_experts.gate_proj/up_proj/down_proj.weight} views.
     * @param shared the shared experts
     * @param prefix name prefix, e.g. {@code mlp.}
     * @return {@code shared_experts.gate_proj/up_proj/down_proj.weight} views
     */
    public static Map<String, HostBuffer> sharedTensors(SharedExperts shared, String prefix) {
        return sharedTensors(shared, prefix, Checkpoints::requireHost);
    }

    /**
     * Returns {@code shared_experts.gate_proj/up_proj/down_proj.weight} views of the host buffers.
     * @param shared the shared experts (any backend)
     * @param prefix name prefix, e.g. {@code mlp.}
     * @param host   maps each weight buffer to a host buffer of the same dtype and shape
     * @return {@code shared_experts.gate_proj/up_proj/down_proj.weight} views of the host buffers
     */
    public static Map<String, HostBuffer> sharedTensors(SharedExperts shared, String prefix,
            Function<Buffer, HostBuffer> host) {
        GroupedExperts m = shared.mlp();
        Map<String, HostBuffer> out = new LinkedHashMap<>();
        out.put(prefix + "shared_experts.gate_proj.weight", slice(host.apply(m.w1()), 0, m.ffn(), m.hidden()));
        out.put(prefix + "shared_experts.up_proj.weight", slice(host.apply(m.w3()), 0, m.ffn(), m.hidden()));
        out.put(prefix + "shared_experts.down_proj.weight", slice(host.apply(m.w2()), 0, m.hidden(), m.ffn()));
        return out;
    }

    private static HostBuffer requireHost(Buffer b) {
        HostView v = b.hostView(HostView.Mode.READ_WRITE);
        if (v.isStaged()) {
            v.abandon();
            throw new IllegalArgumentException("Checkpoints: " + b + " is not in host memory; pass a host mirror"
                    + " (see expertTensors(experts, prefix, host))");
        }
        return v.host(); // the buffer's own memory: stays valid with it
    }

    /**
     * Returns a non-owning {@code [rows, cols]} view of slice {@code i}.
     * @param b    a host buffer {@code [n, rows, cols]}
     * @param i    index in the first dimension
     * @param rows second dimension
     * @param cols third dimension
     * @return a non-owning {@code [rows, cols]} view of slice {@code i}
     */
    public static HostBuffer slice(Buffer b, int i, int rows, int cols) {
        HostBuffer h = requireHost(b);
        long bytes = (long) rows * cols * h.dtype().byteSize();
        return HostBuffer.wrap(h.dtype(), Shape.of(rows, cols), h.segment().asSlice(i * bytes, bytes));
    }

    /**
     * Writes tensors to a safetensors file (in their own dtype).
     *
     * @param path     destination
     * @param tensors  name → buffer, in file order
     * @param metadata {@code __metadata__} entries
     * @throws CheckpointException on I/O errors
     */
    public static void save(Path path, Map<String, HostBuffer> tensors, Map<String, String> metadata) {
        SafetensorsWriter.write(path, tensors, metadata);
    }

    /**
     * Loads every target from the file, or nothing.
     *
     * @param path    a safetensors file
     * @param targets name → destination (F32 or BF16 host buffers of the expected shape)
     * @throws CheckpointException naming the file and the first tensor that is missing, of the wrong
     *                             shape or dtype, or a bad/truncated file; targets are then unchanged
     */
    public static void load(Path path, Map<String, HostBuffer> targets) {
        try (SafetensorsFile f = SafetensorsFile.open(path)) {
            load(f, targets);
        }
    }

    /**
     * Loads named tensors from an open file into existing buffers.
     *
     * @param file    an open file
     * @param targets name → destination
     * @throws CheckpointException as {@link #load(Path, Map)}
     */
    public static void load(SafetensorsFile file, Map<String, HostBuffer> targets) {
        load(file, targets, false);
    }

    /**
     * Loads every target from the file, or nothing: names, dtypes, shapes and every value are
     * checked before the first target is written.
     *
     * @param file           an open file
     * @param targets        name → destination (float host buffers of the expected shape)
     * @param allowNonFinite accept NaN and infinite values (refused by default, naming tensor and index)
     * @throws CheckpointException as {@link #load(Path, Map)}, or naming the first non-finite value
     */
    public static void load(SafetensorsFile file, Map<String, HostBuffer> targets, boolean allowNonFinite) {
        List<Map.Entry<String, HostBuffer>> plan = List.copyOf(targets.entrySet());
        for (Map.Entry<String, HostBuffer> e : plan) {
            TensorInfo t = file.tensors().get(e.getKey());
            if (t == null) {
                throw new CheckpointException(file.path() + ": missing tensor " + e.getKey());
            }
            HostBuffer dst = e.getValue();
            if (!t.dtype().isPlainFloat()) {
                throw new CheckpointException(file.path() + ": tensor " + t.name() + " has dtype " + t.dtype()
                        + "; expected a floating dtype (F32, BF16 or F16)");
            }
            if (!t.shape().equals(dst.shape())) {
                throw new CheckpointException(file.path() + ": tensor " + t.name() + " has shape " + t.shape()
                        + " but the layer needs " + dst.shape());
            }
        }
        if (!allowNonFinite) {
            for (Map.Entry<String, HostBuffer> e : plan) {
                HostBuffer src = file.view(e.getKey());
                for (long i = 0, n = src.numel(); i < n; i++) {
                    float v = src.getFloat(i);
                    if (!Float.isFinite(v)) {
                        throw new CheckpointException(file.path() + ": tensor " + e.getKey() + " element " + i + " is " + v
                                + "; non-finite values are refused unless allowNonFinite is set");
                    }
                }
            }
        }
        for (Map.Entry<String, HostBuffer> e : plan) {
            copy(file.view(e.getKey()), e.getValue());
        }
    }

    private static void copy(HostBuffer src, HostBuffer dst) {
        if (src.dtype() == dst.dtype()) {
            MemorySegment.copy(src.segment(), 0, dst.segment(), 0, src.byteSize());
            return;
        }
        long n = src.numel(); // converting copy: exact widening, nearest-even narrowing
        for (long i = 0; i < n; i++) {
            dst.setFloat(i, src.getFloat(i));
        }
    }
}
