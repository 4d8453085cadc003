package org.moe4j.checkpoint;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Pattern;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.cpu.CpuParallel;

/**
 * Reads and writes one MoE layer's tensors in a family's Hugging Face layout, for one
 * expert-parallel rank.
 *
 * <p>Decoding ({@link #decodeInto}) runs in two phases: (1) every tensor the targets need is
 * resolved through the checkpoint's index and its header entry checked (present, dtype, shape,
 * block scales, MXFP4 blocks and scales) before any value is read; (2) the values are decoded in
 * parallel into the targets, each checked for NaN/infinity unless {@link Options#allowNonFinite()}
 * (the first bad element is named: tensor and index). {@link #load} does the same into staging
 * buffers and copies them into the targets only on success, so it is all or nothing. A rank reads only the bytes of its own experts:
 * per-expert tensors of other experts are never opened, and rows of other experts inside fused
 * tensors are never touched (the files are memory-mapped).
 *
 * <p>Encodings: F32/BF16/F16; {@code F8_E4M3} with {@value #FP8_BLOCK}×{@value #FP8_BLOCK} block
 * scales ({@code weight_scale_inv}, value = fp8 · scale); MXFP4 fused weights ({@code _blocks}
 * {@code [E, out, in/32, 16]} U8 and {@code _scales} {@code [E, out, in/32]} U8 E8M0, value =
 * E2M1(nibble) · 2^(scale−127), low nibble first). Any mix of dtypes in one shard. Values are
 * converted to the target's dtype (exact for F32 targets; nearest even for BF16).
 */
public final class LayerCheckpoint {
    /** Rows and columns per FP8 scale block. */
    public static final int FP8_BLOCK = 128;
    private static final int TASK_ELEMENTS = 1 << 15;

    private LayerCheckpoint() {
    }

    /**
     * Load options.
     *
     * @param allowNonFinite accept NaN and infinite values (refused by default, naming the element)
     * @param ignoreUnused   accept a checkpoint that holds tensors of the family's layout under the
     *                       layer prefix that the layer does not read (e.g. a router bias for a layer
     *                       without one, a fused {@code experts.gate_up_proj} for targets without
     *                       routed experts, a weight in both plain and MXFP4 form, a per-expert tensor
     *                       of an expert index beyond {@code E}); refused by default, naming the tensor,
     *                       because dropping them would silently change the model. A fused tensor
     *                       counts as read when this rank reads any slice of it; per-expert tensors of
     *                       other ranks' experts count as read for the slots the targets hold; names
     *                       outside the family's layout are not checked
     */
    public record Options(boolean allowNonFinite, boolean ignoreUnused) {
        /**
         * Returns strict defaults: no non-finite values, no unused family tensors.
         *
         * @return strict defaults: no non-finite values, no unused family tensors
         */
        public static Options strict() {
            return new Options(false, false);
        }
    }

    /**
     * The layer's sizes on one rank.
     *
     * @param experts      global routed experts {@code E}
     * @param firstExpert  global index of this rank's first expert
     * @param localExperts experts on this rank {@code El}
     * @param hidden       hidden size
     * @param ffn          routed expert intermediate size
     */
    public record Geometry(int experts, int firstExpert, int localExperts, int hidden, int ffn) {
        /**
         * Checks the components.
         *
         * @throws IllegalArgumentException naming the bad value
         */
        public Geometry {
            if (experts < 1 || localExperts < 1 || hidden < 1 || ffn < 1 || firstExpert < 0
                    || (long) firstExpert + localExperts > experts) {
                throw new IllegalArgumentException("LayerCheckpoint.Geometry: experts=" + experts + " firstExpert="
                        + firstExpert + " localExperts=" + localExperts + " hidden=" + hidden + " ffn=" + ffn
                        + ": need sizes >= 1 and firstExpert + localExperts <= experts");
            }
        }
    }

    /** Fills one row of a target matrix with fp32 values. */
    @FunctionalInterface
    private interface RowReader {
        void row(int r, float[] out);
    }

    /** A 2-D region of a target: rows × cols starting at element {@code first}. */
    private record Target(HostBuffer buf, long first, int rows, int cols) {
    }

    /**
     * One tensor (or one expert's part of a fused tensor) to decode into one target region.
     *
     * @param tensors the checkpoint tensors it reads (a weight, its block scales, MXFP4 blocks and scales)
     */
    private record Job(String what, Target target, RowReader reader, List<String> tensors) {
        /** A job reading the one tensor named {@code what}. */
        Job(String what, Target target, RowReader reader) {
            this(what, target, reader, List.of(what));
        }
    }

    /**
     * Loads the targets from a checkpoint, all or nothing: decodes into fresh staging buffers with
     * {@link #decodeInto} and copies them into the targets only when every tensor was found, checked
     * and decoded. Costs one extra copy of the targets; callers that stage anyway (as
     * {@code MoeLayer} does) call {@link #decodeInto} directly.
     *
     * @param ckpt    the checkpoint
     * @param prefix  the MoE block's prefix, e.g. {@code model.layers.3.mlp.}
     * @param names   the family's name map
     * @param g       this rank's sizes
     * @param targets slot → host buffer of the slot's shape (see {@link MoeTensor}), F32, BF16 or F16
     * @param options what to accept
     * @throws IllegalArgumentException on a null argument, a target of the wrong shape or dtype, or a
     *                                  slot the family has no tensor for; targets unchanged
     * @throws CheckpointException      naming the file and tensor that is missing, mis-shaped, of an
     *                                  unsupported dtype, unread (see {@link Options#ignoreUnused()}), or
     *                                  holds a non-finite value; targets unchanged
     */
    public static void load(HfCheckpoint ckpt, String prefix, MoeNameMap names, Geometry g,
                            Map<MoeTensor, HostBuffer> targets, Options options) {
        Objects.requireNonNull(targets, "targets");
        Map<MoeTensor, HostBuffer> staging = new EnumMap<>(MoeTensor.class);
        try {
            for (Map.Entry<MoeTensor, HostBuffer> e : targets.entrySet()) {
                HostBuffer t = e.getValue();
                if (t == null || t.isClosed()) {
                    throw new IllegalArgumentException("LayerCheckpoint: target " + e.getKey() + " is "
                            + (t == null ? "null" : "closed"));
                }
                staging.put(e.getKey(), HostBuffer.allocate(t.dtype(), t.shape()));
            }
            decodeInto(ckpt, prefix, names, g, staging, options);
            for (Map.Entry<MoeTensor, HostBuffer> e : targets.entrySet()) {
                e.getValue().copyFrom(staging.get(e.getKey()));
            }
        } finally {
            staging.values().forEach(HostBuffer::close);
        }
    }

    /**
     * Decodes the targets from a checkpoint in place (see the class comment): every tensor is found
     * and checked before any value is read, but a non-finite value found while decoding leaves the
     * targets partly written, so pass staging buffers (or use {@link #load}).
     *
     * @param ckpt    the checkpoint
     * @param prefix  the MoE block's prefix, e.g. {@code model.layers.3.mlp.}
     * @param names   the family's name map
     * @param g       this rank's sizes
     * @param targets slot → host buffer of the slot's shape (see {@link MoeTensor}), F32, BF16 or F16
     * @param options what to accept
     * @throws IllegalArgumentException on a null argument, a target of the wrong shape or dtype, or a
     *                                  slot the family has no tensor for; targets unchanged
     * @throws CheckpointException      naming the file and tensor that is missing, mis-shaped, of an
     *                                  unsupported dtype or unread (see {@link Options#ignoreUnused()})
     *                                  (targets unchanged), or holds a non-finite value (targets partly
     *                                  written)
     */
    public static void decodeInto(HfCheckpoint ckpt, String prefix, MoeNameMap names, Geometry g,
                                  Map<MoeTensor, HostBuffer> targets, Options options) {
        Objects.requireNonNull(ckpt, "ckpt");
        Objects.requireNonNull(prefix, "prefix");
        Objects.requireNonNull(names, "names");
        Objects.requireNonNull(g, "geometry");
        Objects.requireNonNull(targets, "targets");
        Objects.requireNonNull(options, "options");
        Map<MoeTensor, HostBuffer> t = new EnumMap<>(MoeTensor.class);
        t.putAll(targets);
        for (Map.Entry<MoeTensor, HostBuffer> e : t.entrySet()) {
            requireTarget(e.getKey(), e.getValue(), g, names);
        }
        if (!options.ignoreUnused()) {
            for (Map.Entry<MoeTensor, String> e : familyNames(names).entrySet()) {
                if (!t.containsKey(e.getKey()) && ckpt.contains(prefix + e.getValue())) {
                    throw new CheckpointException(ckpt.origin() + ": holds " + prefix + e.getValue() + " (" + e.getKey()
                            + ") but the layer has no such tensor; pass ignoreUnused to load without it");
                }
            }
        }
        List<Job> jobs = new ArrayList<>();
        for (Map.Entry<MoeTensor, HostBuffer> e : t.entrySet()) {
            plan(ckpt, prefix, names, g, e.getKey(), e.getValue(), jobs);
        }
        if (!options.ignoreUnused()) {
            refuseUnread(ckpt, prefix, names, g, t.keySet(), jobs);
        }
        run(jobs, options.allowNonFinite());
    }

    /**
     * Refuses a tensor of the family's layout under the layer prefix (any name or per-expert pattern of
     * the map, with its FP8 scale or MXFP4 blocks/scales) that the layer does not read: one this rank's
     * jobs do not read (a fused tensor counts as read when any of its slices is) and that is not another
     * rank's per-expert tensor of a slot the layer loads (global expert index below {@code E}). Other
     * tensors under the prefix (not of the family's layout) are left alone.
     */
    private static void refuseUnread(HfCheckpoint ckpt, String prefix, MoeNameMap n, Geometry g, Set<MoeTensor> slots,
                                     List<Job> jobs) {
        Set<String> read = new HashSet<>();
        jobs.forEach(j -> read.addAll(j.tensors()));
        if (!n.fused()) {
            for (int e = 0; e < g.experts(); e++) {
                if (e >= g.firstExpert() && e < g.firstExpert() + g.localExperts()) {
                    continue;
                }
                for (MoeTensor slot : slots) {
                    for (String name : perExpertNames(n, slot, e)) {
                        read.add(prefix + name);
                    }
                }
            }
        }
        Pattern family = familyLayout(n);
        for (String name : new TreeSet<>(ckpt.names())) {
            if (name.startsWith(prefix) && !read.contains(name) && family.matcher(name.substring(prefix.length())).matches()) {
                throw new CheckpointException(ckpt.origin() + ": holds " + name + " under the layer prefix '" + prefix
                        + "' but the layer (family " + n.family() + ", slots " + slots + ") does not read it;"
                        + " pass ignoreUnused to load without it");
            }
        }
    }

    /** Every tensor name the family's layout may use (relative to the prefix), as one pattern. */
    private static Pattern familyLayout(MoeNameMap n) {
        List<String> names = new ArrayList<>();
        for (String w : new String[] {n.routerWeight(), n.sharedGateProj(), n.sharedUpProj(), n.sharedDownProj(),
                n.sharedExpertGate(), n.gateProj(), n.upProj(), n.downProj()}) {
            if (w != null) {
                names.addAll(List.of(w, n.fp8Scale(w), n.mxfp4Blocks(w), n.mxfp4Scales(w)));
            }
        }
        for (String v : new String[] {n.routerBias(), n.scoreCorrectionBias(), n.gateUpBias(), n.downBias()}) {
            if (v != null) {
                names.add(v);
            }
        }
        StringBuilder re = new StringBuilder();
        for (String name : names) {
            re.append(re.isEmpty() ? "" : "|").append(Pattern.quote(name).replace(MoeNameMap.EXPERT, "\\E\\d+\\Q"));
        }
        return Pattern.compile(re.toString());
    }

    /** The tensors a per-expert family may store for one expert of a routed slot (none for other slots). */
    private static List<String> perExpertNames(MoeNameMap n, MoeTensor slot, int expert) {
        return switch (slot) {
            case EXPERT_GATE -> withScale(n, n.expertGate(expert));
            case EXPERT_UP -> withScale(n, n.expertUp(expert));
            case EXPERT_DOWN -> withScale(n, n.expertDown(expert));
            case EXPERT_GATE_BIAS, EXPERT_UP_BIAS -> List.of(MoeNameMap.expert(n.gateUpBias(), expert));
            case EXPERT_DOWN_BIAS -> List.of(MoeNameMap.expert(n.downBias(), expert));
            default -> List.of();
        };
    }

    private static List<String> withScale(MoeNameMap n, String weight) {
        return List.of(weight, n.fp8Scale(weight));
    }

    /**
     * The family's name of each non-routed slot it has (router, biases, shared experts, fused expert
     * biases), for the first unused-tensor check (before anything is resolved, naming the slot); every
     * other unread tensor under the prefix is found by {@code refuseUnread}.
     */
    private static Map<MoeTensor, String> familyNames(MoeNameMap n) {
        Map<MoeTensor, String> m = new EnumMap<>(MoeTensor.class);
        m.put(MoeTensor.ROUTER_WEIGHT, n.routerWeight());
        putIf(m, MoeTensor.ROUTER_BIAS, n.routerBias());
        putIf(m, MoeTensor.SCORE_CORRECTION_BIAS, n.scoreCorrectionBias());
        putIf(m, MoeTensor.SHARED_GATE, n.sharedGateProj());
        putIf(m, MoeTensor.SHARED_UP, n.sharedUpProj());
        putIf(m, MoeTensor.SHARED_DOWN, n.sharedDownProj());
        putIf(m, MoeTensor.SHARED_EXPERT_GATE, n.sharedExpertGate());
        putIf(m, MoeTensor.EXPERT_GATE_BIAS, n.gateUpBias());
        putIf(m, MoeTensor.EXPERT_DOWN_BIAS, n.downBias());
        return m;
    }

    private static void putIf(Map<MoeTensor, String> m, MoeTensor k, String v) {
        if (v != null) {
            m.put(k, v);
        }
    }

    /**
     * Whether a family stores a slot.
     *
     * @param slot  a slot
     * @param names the family's map
     * @return whether the family stores this slot
     */
    public static boolean familyHas(MoeTensor slot, MoeNameMap names) {
        return switch (slot) {
            case ROUTER_WEIGHT, EXPERT_GATE, EXPERT_UP, EXPERT_DOWN -> true;
            case ROUTER_BIAS -> names.routerBias() != null;
            case SCORE_CORRECTION_BIAS -> names.scoreCorrectionBias() != null;
            case EXPERT_GATE_BIAS, EXPERT_UP_BIAS -> names.gateUpBias() != null;
            case EXPERT_DOWN_BIAS -> names.downBias() != null;
            case SHARED_GATE, SHARED_UP, SHARED_DOWN -> names.hasSharedExperts();
            case SHARED_EXPERT_GATE -> names.sharedExpertGate() != null;
        };
    }

    /**
     * The shape of a slot in moe4j's orientation.
     *
     * @param slot a slot
     * @param buf  a buffer of that slot (for shared experts its first dimension gives {@code Fs})
     * @param g    the sizes
     * @return the slot's shape in moe4j's orientation
     */
    static Shape shapeOf(MoeTensor slot, HostBuffer buf, Geometry g) {
        long el = g.localExperts();
        long h = g.hidden();
        long f = g.ffn();
        long fs = buf.shape().rank() == 2 ? buf.shape().dim(slot == MoeTensor.SHARED_DOWN ? 1 : 0) : -1;
        return switch (slot) {
            case ROUTER_WEIGHT -> Shape.of(g.experts(), h);
            case ROUTER_BIAS, SCORE_CORRECTION_BIAS -> Shape.of(g.experts());
            case EXPERT_GATE, EXPERT_UP -> Shape.of(el, f, h);
            case EXPERT_DOWN -> Shape.of(el, h, f);
            case EXPERT_GATE_BIAS, EXPERT_UP_BIAS -> Shape.of(el, f);
            case EXPERT_DOWN_BIAS -> Shape.of(el, h);
            case SHARED_GATE, SHARED_UP -> Shape.of(Math.max(fs, 1), h);
            case SHARED_DOWN -> Shape.of(h, Math.max(fs, 1));
            case SHARED_EXPERT_GATE -> Shape.of(1, h);
        };
    }

    private static void requireTarget(MoeTensor slot, HostBuffer buf, Geometry g, MoeNameMap names) {
        if (buf == null || buf.isClosed()) {
            throw new IllegalArgumentException("LayerCheckpoint: target " + slot + " is " + (buf == null ? "null" : "closed"));
        }
        if (!buf.dtype().isFloatingPoint()) {
            throw new IllegalArgumentException("LayerCheckpoint: target " + slot + " is " + buf.dtype()
                    + "; expected F32, BF16 or F16");
        }
        Shape want = shapeOf(slot, buf, g);
        if (!buf.shape().equals(want)) {
            throw new IllegalArgumentException("LayerCheckpoint: target " + slot + " has shape " + buf.shape()
                    + "; the layer geometry " + g + " needs " + want);
        }
        if (!familyHas(slot, names)) {
            throw new IllegalArgumentException("LayerCheckpoint: family " + names.family() + " has no tensor for " + slot);
        }
    }

    private static void plan(HfCheckpoint ckpt, String prefix, MoeNameMap n, Geometry g, MoeTensor slot, HostBuffer buf,
                             List<Job> jobs) {
        int h = g.hidden();
        int f = g.ffn();
        int e = g.experts();
        switch (slot) {
            case ROUTER_WEIGHT -> jobs.add(matrix(ckpt, n, prefix + n.routerWeight(), e, h, whole(buf, e, h), false));
            case ROUTER_BIAS -> jobs.add(vector(ckpt, prefix + n.routerBias(), e, whole(buf, 1, e)));
            case SCORE_CORRECTION_BIAS -> jobs.add(vector(ckpt, prefix + n.scoreCorrectionBias(), e, whole(buf, 1, e)));
            case SHARED_GATE, SHARED_UP, SHARED_DOWN -> {
                int rows = (int) buf.shape().dim(0);
                int cols = (int) buf.shape().dim(1);
                String name = slot == MoeTensor.SHARED_GATE ? n.sharedGateProj()
                        : slot == MoeTensor.SHARED_UP ? n.sharedUpProj() : n.sharedDownProj();
                jobs.add(matrix(ckpt, n, prefix + name, rows, cols, whole(buf, rows, cols), true));
            }
            case SHARED_EXPERT_GATE -> jobs.add(matrix(ckpt, n, prefix + n.sharedExpertGate(), 1, h, whole(buf, 1, h), false));
            case EXPERT_GATE, EXPERT_UP, EXPERT_DOWN -> {
                boolean down = slot == MoeTensor.EXPERT_DOWN;
                int rows = down ? h : f;
                int cols = down ? f : h;
                for (int le = 0; le < g.localExperts(); le++) {
                    int ge = g.firstExpert() + le;
                    Target tg = new Target(buf, (long) le * rows * cols, rows, cols);
                    if (!n.fused()) {
                        String name = slot == MoeTensor.EXPERT_GATE ? n.expertGate(ge)
                                : slot == MoeTensor.EXPERT_UP ? n.expertUp(ge) : n.expertDown(ge);
                        jobs.add(matrix(ckpt, n, prefix + name, rows, cols, tg, true));
                    } else {
                        jobs.add(fused(ckpt, prefix, n, g, slot, ge, tg));
                    }
                }
            }
            case EXPERT_GATE_BIAS, EXPERT_UP_BIAS, EXPERT_DOWN_BIAS -> {
                boolean down = slot == MoeTensor.EXPERT_DOWN_BIAS;
                int cols = down ? h : f;
                int width = down ? h : 2 * f;
                long off = down || slot == MoeTensor.EXPERT_GATE_BIAS ? 0 : upOffset(n, f);
                long stride = down ? 1 : colStride(n);
                for (int le = 0; le < g.localExperts(); le++) {
                    int ge = g.firstExpert() + le;
                    BiasRow row = biasRow(n, down, ge, e, width);
                    String name = prefix + row.name();
                    TensorInfo info = require(ckpt, name, row.shape());
                    MemorySegment seg = ckpt.shardOf(name).segment(name);
                    long first = row.first() + off;
                    jobs.add(new Job(name + (n.fused() ? "[expert " + ge + "]" : ""),
                            new Target(buf, (long) le * cols, 1, cols),
                            (r, out) -> Dequant.plainRow(seg, info.dtype(), first, stride, out, cols), List.of(name)));
                }
            }
        }
    }

    /**
     * Where one expert's bias lives: a row of the fused {@code [experts, width]} tensor, or its own
     * per-expert {@code [width]} tensor.
     *
     * @param name  tensor name (without the layer prefix)
     * @param shape the tensor's shape
     * @param first element where the expert's row starts
     */
    private record BiasRow(String name, Shape shape, long first) {
    }

    private static BiasRow biasRow(MoeNameMap n, boolean down, int expert, int experts, int width) {
        String pattern = down ? n.downBias() : n.gateUpBias();
        if (n.fused()) {
            return new BiasRow(pattern, Shape.of(experts, width), (long) expert * width);
        }
        return new BiasRow(MoeNameMap.expert(pattern, expert), Shape.of(width), 0);
    }

    /** Column of the first up value in a fused gate_up tensor (the gate's first is column 0). */
    private static long upOffset(MoeNameMap n, long ffn) {
        return n.expertLayout() == MoeNameMap.ExpertLayout.FUSED_INTERLEAVED ? 1 : ffn;
    }

    private static long colStride(MoeNameMap n) {
        return n.expertLayout() == MoeNameMap.ExpertLayout.FUSED_INTERLEAVED ? 2 : 1;
    }

    private static Target whole(HostBuffer buf, int rows, int cols) {
        return new Target(buf, 0, rows, cols);
    }

    private static TensorInfo require(HfCheckpoint ckpt, String name, Shape shape) {
        TensorInfo info = ckpt.info(name);
        SafetensorsFile file = ckpt.shardOf(name);
        if (!info.dtype().isPlainFloat()) {
            throw new CheckpointException(file.path() + ": tensor " + name + " has dtype " + info.dtype()
                    + "; expected F32, BF16 or F16");
        }
        if (!info.shape().equals(shape)) {
            throw new CheckpointException(file.path() + ": tensor " + name + " has shape " + info.shape()
                    + " but the layer needs " + shape);
        }
        return info;
    }

    private static Job vector(HfCheckpoint ckpt, String name, int n, Target tg) {
        TensorInfo info = require(ckpt, name, Shape.of(n));
        MemorySegment seg = ckpt.shardOf(name).segment(name);
        return new Job(name, tg, (r, out) -> Dequant.plainRow(seg, info.dtype(), 0, 1, out, n));
    }

    /** A {@code [rows, cols]} tensor: plain float, or (when allowed) F8_E4M3 with block scales. */
    private static Job matrix(HfCheckpoint ckpt, MoeNameMap n, String name, int rows, int cols, Target tg, boolean fp8Allowed) {
        TensorInfo info = ckpt.info(name);
        SafetensorsFile file = ckpt.shardOf(name);
        Shape shape = Shape.of(rows, cols);
        if (info.dtype() == SafetensorsDtype.F8_E4M3 && fp8Allowed) {
            if (!info.shape().equals(shape)) {
                throw new CheckpointException(file.path() + ": tensor " + name + " has shape " + info.shape()
                        + " but the layer needs " + shape);
            }
            String scaleName = n.fp8Scale(name);
            if (!ckpt.contains(scaleName)) {
                throw new CheckpointException(file.path() + ": F8_E4M3 tensor " + name + " has no block scales "
                        + scaleName);
            }
            int sr = (rows + FP8_BLOCK - 1) / FP8_BLOCK;
            int sc = (cols + FP8_BLOCK - 1) / FP8_BLOCK;
            TensorInfo si = require(ckpt, scaleName, Shape.of(sr, sc));
            MemorySegment w = file.segment(name);
            MemorySegment s = ckpt.shardOf(scaleName).segment(scaleName);
            return new Job(name, tg, (r, out) -> {
                float[] blockScale = new float[sc];
                Dequant.plainRow(s, si.dtype(), (long) (r / FP8_BLOCK) * sc, 1, blockScale, sc);
                Dequant.fp8Row(w, (long) r * cols, cols, blockScale, out);
            }, List.of(name, scaleName));
        }
        if (!info.dtype().isPlainFloat()) {
            throw new CheckpointException(file.path() + ": tensor " + name + " has dtype " + info.dtype()
                    + "; expected F32, BF16 or F16" + (fp8Allowed ? " (or F8_E4M3 with block scales)" : ""));
        }
        require(ckpt, name, shape);
        MemorySegment seg = file.segment(name);
        return new Job(name, tg, (r, out) -> Dequant.plainRow(seg, info.dtype(), (long) r * cols, 1, out, cols));
    }

    /** One expert's gate, up or down matrix from a fused tensor (plain or MXFP4). */
    private static Job fused(HfCheckpoint ckpt, String prefix, MoeNameMap n, Geometry g, MoeTensor slot, int ge,
                             Target tg) {
        boolean down = slot == MoeTensor.EXPERT_DOWN;
        long h = g.hidden();
        long f = g.ffn();
        long e = g.experts();
        String name = prefix + (down ? n.downProj() : n.gateProj());
        boolean interleaved = n.expertLayout() == MoeNameMap.ExpertLayout.FUSED_INTERLEAVED;
        int rows = tg.rows();
        int cols = tg.cols();
        String what = name + "[expert " + ge + (down ? "" : slot == MoeTensor.EXPERT_GATE ? ", gate" : ", up") + "]";
        if (ckpt.contains(name)) {
            // stored as x·W: gate_up [E, hidden, 2F], down [E, F, hidden]; moe4j rows are columns there
            TensorInfo info = require(ckpt, name, down ? Shape.of(e, f, h) : Shape.of(e, h, 2 * f));
            MemorySegment seg = ckpt.shardOf(name).segment(name);
            long width = down ? h : 2 * f;
            long base = ge * (down ? f * h : h * 2 * f);
            long colOf0 = down ? 0 : slot == MoeTensor.EXPERT_GATE ? 0 : interleaved ? 1 : f;
            long rowStep = down || !interleaved ? 1 : 2;
            return new Job(what, tg, (r, out) -> Dequant.plainRow(seg, info.dtype(), base + colOf0 + r * rowStep, width,
                    out, cols), List.of(name));
        }
        String bn = n.mxfp4Blocks(name);
        String sn = n.mxfp4Scales(name);
        if (!ckpt.contains(bn)) {
            throw new CheckpointException(ckpt.origin() + ": missing tensor " + name + " (neither it nor its MXFP4 form "
                    + bn + " is listed)");
        }
        // MXFP4 is stored [E, out, in] (nn.Linear orientation): gate_up out = 2F rows, down out = hidden rows
        long out = down ? h : 2 * f;
        long in = down ? f : h;
        if (in % 32 != 0) {
            throw new CheckpointException(ckpt.origin() + ": MXFP4 tensor " + bn + " needs an input size divisible by"
                    + " 32, the layer has " + in);
        }
        TensorInfo bi = ckpt.info(bn);
        TensorInfo si = ckpt.info(sn);
        SafetensorsFile bf = ckpt.shardOf(bn);
        SafetensorsFile sf = ckpt.shardOf(sn);
        if (bi.dtype() != SafetensorsDtype.U8 || !bi.shape().equals(Shape.of(e, out, in / 32, 16))) {
            throw new CheckpointException(bf.path() + ": MXFP4 blocks " + bn + " are " + bi.dtype() + " " + bi.shape()
                    + "; the layer needs U8 " + Shape.of(e, out, in / 32, 16));
        }
        if ((si.dtype() != SafetensorsDtype.U8 && si.dtype() != SafetensorsDtype.F8_E8M0)
                || !si.shape().equals(Shape.of(e, out, in / 32))) {
            throw new CheckpointException(sf.path() + ": MXFP4 scales " + sn + " are " + si.dtype() + " " + si.shape()
                    + "; the layer needs U8 " + Shape.of(e, out, in / 32));
        }
        MemorySegment blocks = bf.segment(bn);
        MemorySegment scales = sf.segment(sn);
        long rowBase = ge * out + (down || slot == MoeTensor.EXPERT_GATE ? 0 : interleaved ? 1 : f);
        long rowStep = down || !interleaved ? 1 : 2;
        return new Job(what, tg, (r, o) -> {
            long src = rowBase + r * rowStep;
            Dequant.mxfp4Row(blocks, src * (in / 2), scales, src * (in / 32), cols, o);
        }, List.of(bn, sn));
    }

    private static void run(List<Job> jobs, boolean allowNonFinite) {
        record Task(Job job, int from, int to) {
        }
        List<Task> tasks = new ArrayList<>();
        for (Job j : jobs) {
            int step = Math.max(1, TASK_ELEMENTS / j.target().cols());
            for (int r = 0; r < j.target().rows(); r += step) {
                tasks.add(new Task(j, r, Math.min(j.target().rows(), r + step)));
            }
        }
        CpuParallel.common().forEachChunk(tasks.size(), 1, (c, from, to) -> {
            for (int i = from; i < to; i++) {
                Task task = tasks.get(i);
                Target tg = task.job().target();
                float[] row = new float[tg.cols()];
                MemorySegment dst = tg.buf().segment();
                for (int r = task.from(); r < task.to(); r++) {
                    task.job().reader().row(r, row);
                    int col = allowNonFinite ? -1 : Dequant.firstNonFinite(row, row.length);
                    if (col >= 0) {
                        throw new CheckpointException(task.job().what() + ": element [" + r + ", " + col
                                + "] (moe4j [out, in] order) is " + row[col]
                                + "; non-finite values are refused unless allowNonFinite is set");
                    }
                    Dequant.store(row, row.length, dst, tg.buf().dtype(), tg.first() + (long) r * tg.cols());
                }
            }
        });
    }

    /**
     * The tensors of one rank's part of an export, in the family's names and the given dtype.
     * Replicated tensors (router, biases, shared experts) are included when {@code replicated};
     * routed experts when {@code routed}. Fused layouts need every expert in {@code g} (for a rank's
     * slice of a fused tensor, pass a geometry of just its experts: the result is that slice).
     *
     * @param prefix     the MoE block's prefix
     * @param names      the family's name map
     * @param g          this rank's sizes
     * @param sources    slot → host buffer of the slot's shape (any float dtype)
     * @param dtype      F32, BF16 or F16
     * @param replicated include the replicated tensors
     * @param routed     include this rank's routed experts
     * @return name → new buffer (the caller closes them), in file order
     * @throws IllegalArgumentException on a bad source, a slot the family does not store, a fused
     *                                  layout split over ranks, or a non-float dtype
     */
    public static Map<String, HostBuffer> exportTensors(String prefix, MoeNameMap names, Geometry g,
                                                        Map<MoeTensor, HostBuffer> sources, DType dtype,
                                                        boolean replicated, boolean routed) {
        Objects.requireNonNull(prefix, "prefix");
        Objects.requireNonNull(names, "names");
        Objects.requireNonNull(g, "geometry");
        if (dtype == null || !dtype.isFloatingPoint()) {
            throw new IllegalArgumentException("LayerCheckpoint.exportTensors: dtype " + dtype + " is not F32, BF16 or F16");
        }
        Map<MoeTensor, HostBuffer> src = new EnumMap<>(MoeTensor.class);
        src.putAll(sources);
        for (Map.Entry<MoeTensor, HostBuffer> e : src.entrySet()) {
            requireTarget(e.getKey(), e.getValue(), g, names);
        }
        if (routed && names.fused() && g.localExperts() != g.experts()) {
            throw new IllegalArgumentException("LayerCheckpoint.exportTensors: family " + names.family() + " stores all"
                    + " experts in one tensor; export it from a layer holding every expert (W = 1), this rank holds "
                    + g.localExperts() + " of " + g.experts());
        }
        Map<String, HostBuffer> out = new LinkedHashMap<>();
        try {
            for (Map.Entry<MoeTensor, HostBuffer> e : src.entrySet()) {
                MoeTensor slot = e.getKey();
                if (slot.routed() ? !routed : !replicated) {
                    continue;
                }
                export(prefix, names, g, slot, e.getValue(), dtype, out);
            }
        } catch (RuntimeException ex) {
            out.values().forEach(HostBuffer::close);
            throw ex;
        }
        return out;
    }

    private static void export(String prefix, MoeNameMap n, Geometry g, MoeTensor slot, HostBuffer b, DType dtype,
                               Map<String, HostBuffer> out) {
        int h = g.hidden();
        int f = g.ffn();
        switch (slot) {
            case ROUTER_WEIGHT -> out.put(prefix + n.routerWeight(), convert(b, dtype));
            case ROUTER_BIAS -> out.put(prefix + n.routerBias(), convert(b, dtype));
            case SCORE_CORRECTION_BIAS -> out.put(prefix + n.scoreCorrectionBias(), convert(b, dtype));
            case SHARED_GATE -> out.put(prefix + n.sharedGateProj(), convert(b, dtype));
            case SHARED_UP -> out.put(prefix + n.sharedUpProj(), convert(b, dtype));
            case SHARED_DOWN -> out.put(prefix + n.sharedDownProj(), convert(b, dtype));
            case SHARED_EXPERT_GATE -> out.put(prefix + n.sharedExpertGate(), convert(b, dtype));
            case EXPERT_GATE, EXPERT_UP, EXPERT_DOWN -> {
                boolean down = slot == MoeTensor.EXPERT_DOWN;
                int rows = down ? h : f;
                int cols = down ? f : h;
                if (!n.fused()) {
                    for (int le = 0; le < g.localExperts(); le++) {
                        int ge = g.firstExpert() + le;
                        String name = slot == MoeTensor.EXPERT_GATE ? n.expertGate(ge)
                                : slot == MoeTensor.EXPERT_UP ? n.expertUp(ge) : n.expertDown(ge);
                        HostBuffer t = HostBuffer.allocate(dtype, rows, cols);
                        out.put(prefix + name, t);
                        for (long i = 0, base = (long) le * rows * cols; i < (long) rows * cols; i++) {
                            t.setFloat(i, b.getFloat(base + i));
                        }
                    }
                    return;
                }
                boolean interleaved = n.expertLayout() == MoeNameMap.ExpertLayout.FUSED_INTERLEAVED;
                String name = prefix + (down ? n.downProj() : n.gateProj());
                int width = down ? h : 2 * f;
                HostBuffer t = out.get(name);
                if (t == null) {
                    t = down ? HostBuffer.allocate(dtype, g.experts(), f, h) : HostBuffer.allocate(dtype, g.experts(), h, 2L * f);
                    out.put(name, t);
                }
                long colOf0 = down ? 0 : slot == MoeTensor.EXPERT_GATE ? 0 : interleaved ? 1 : f;
                long rowStep = down || !interleaved ? 1 : 2;
                long perExpert = (long) (down ? f : h) * width;
                for (int e = 0; e < g.experts(); e++) {
                    for (int r = 0; r < rows; r++) {
                        for (int c = 0; c < cols; c++) {
                            t.setFloat(e * perExpert + colOf0 + r * rowStep + (long) c * width,
                                    b.getFloat(((long) e * rows + r) * cols + c));
                        }
                    }
                }
            }
            case EXPERT_GATE_BIAS, EXPERT_UP_BIAS, EXPERT_DOWN_BIAS -> {
                boolean down = slot == MoeTensor.EXPERT_DOWN_BIAS;
                int width = down ? h : 2 * f;
                int cols = down ? h : f;
                long off = down || slot == MoeTensor.EXPERT_GATE_BIAS ? 0 : upOffset(n, f);
                long stride = down ? 1 : colStride(n);
                for (int le = 0; le < g.localExperts(); le++) {
                    BiasRow row = biasRow(n, down, g.firstExpert() + le, g.experts(), width);
                    HostBuffer t = out.computeIfAbsent(prefix + row.name(), k -> HostBuffer.allocate(dtype, row.shape()));
                    for (int c = 0; c < cols; c++) {
                        t.setFloat(row.first() + off + c * stride, b.getFloat((long) le * cols + c));
                    }
                }
            }
        }
    }

    private static HostBuffer convert(HostBuffer b, DType dtype) {
        HostBuffer t = HostBuffer.allocate(dtype, b.shape());
        if (b.dtype() == dtype) {
            MemorySegment.copy(b.segment(), 0, t.segment(), 0, b.byteSize());
        } else {
            for (long i = 0; i < b.numel(); i++) {
                t.setFloat(i, b.getFloat(i));
            }
        }
        return t;
    }
}
