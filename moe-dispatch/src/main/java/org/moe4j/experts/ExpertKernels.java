package org.moe4j.experts;

import org.moe4j.core.buffer.Buffer;

/**
 * Device kernels of the expert computation: grouped GEMMs over contiguous, variable-size token
 * groups (one group per local expert) and the SwiGLU element-wise epilogue.
 *
 * <p>Groups are described by {@code groupOffsets}, an I32 buffer {@code [groups + 1]} of
 * non-decreasing row offsets: group {@code g} owns rows {@code [off[g], off[g+1])} of the row
 * operands. Empty groups are allowed; rows outside every group are left untouched.
 *
 * <p>Every floating operand may be F32 or BF16; products accumulate in fp32 and outputs are F32.
 * When {@link GemmSpec#bf16Operands()} is set, F32 operands are rounded to bf16 (nearest-even) as
 * they are read, so an fp32 master weight behaves exactly as its bf16 copy would.
 *
 * <p>Determinism contract (all backends): each output element is produced by one task, and the
 * reduction over the inner dimension runs in a fixed order (ascending, in fixed-size blocks). The
 * results therefore do not depend on thread count or scheduling.
 */
public interface ExpertKernels {

    /**
     * Options of one GEMM call.
     *
     * @param accumulate   add into the output instead of overwriting it
     * @param bf16Operands round F32 operands to bf16 on load (bf16 compute, fp32 accumulation)
     */
    record GemmSpec(boolean accumulate, boolean bf16Operands) {
        /** Overwrite, fp32 operands. */
        public static final GemmSpec OVERWRITE = new GemmSpec(false, false);
        /** Accumulate, fp32 operands. */
        public static final GemmSpec ACCUMULATE = new GemmSpec(true, false);
    }

    /**
     * Grouped {@code out = a · b}: for every group {@code g} and row {@code r} of it,
     * {@code out[r, :] (+)= a[r, :] · b[g]}.
     *
     * @param a            row operand {@code [rows, K]}
     * @param b            per-group matrices {@code [groups, K, N]}
     * @param groupOffsets I32 {@code [groups + 1]}
     * @param out          F32 {@code [rows, N]}
     * @param spec         accumulate / bf16 options
     * @throws IllegalArgumentException on shape, dtype or offset errors (before anything is written)
     */
    void groupedMatmul(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec);

    /**
     * These kernels with the group-offset check made on the device instead of on the host: where
     * checking offsets held in device memory would read them back (a device→host read that
     * synchronises the step and blocks CUDA-graph capture), the returned kernels instead clamp them
     * on the device into a valid layout (each offset within {@code [previous, rows]}, the first at
     * least 0) and run on that. Valid offsets are unchanged, so results are bitwise those of these
     * kernels; invalid ones are never refused, only made memory-safe. Meant for offsets a
     * dispatcher built for the same rows (valid by construction), as {@link org.moe4j.layer.MoeLayer}
     * passes them; callers with untrusted offsets keep these kernels, which refuse bad offsets with
     * an {@link IllegalArgumentException}. Host-memory offsets are checked as before (no sync).
     *
     * <p>The default returns this: host kernels check without any device synchronisation.
     *
     * @return kernels that never read group offsets back to the host
     */
    default ExpertKernels offsetsCheckedOnDevice() {
        return this;
    }

    /**
     * Whether {@link #groupedMatmulTransposedB} is implemented. Callers that get {@code false} fall
     * back to {@link #transpose} + {@link #groupedMatmul}.
     *
     * @return true when this backend multiplies by transposed per-group matrices directly
     */
    default boolean supportsTransposedB() {
        return false;
    }

    /**
     * Grouped {@code out = a · b[g]ᵀ}: for every group {@code g} and row {@code r} of it,
     * {@code out[r, :] (+)= a[r, :] · b[g]ᵀ}, with {@code b} stored as {@code [groups, N, K]} (e.g. a
     * weight {@code [out_features, in_features]}). Same results, bit for bit, as
     * {@code transpose(b, bT)} followed by {@code groupedMatmul(a, bT, ...)}; no transposed copy is made.
     *
     * @param a            row operand {@code [rows, K]}
     * @param b            per-group matrices {@code [groups, N, K]}
     * @param groupOffsets I32 {@code [groups + 1]}
     * @param out          F32 {@code [rows, N]}
     * @param spec         accumulate / bf16 options
     * @throws IllegalArgumentException on shape, dtype or offset errors (before anything is written)
     * @throws UnsupportedOperationException where {@link #supportsTransposedB()} is false
     */
    default void groupedMatmulTransposedB(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
        throw new UnsupportedOperationException(getClass().getSimpleName()
                + " does not implement groupedMatmulTransposedB; use transpose + groupedMatmul");
    }

    /**
     * Grouped weight gradient {@code out[g] (+)= a[rows of g]ᵀ · b[rows of g]}, reduced over the
     * group's rows in ascending row order.
     *
     * @param a            row operand {@code [rows, M]} (e.g. the output gradient)
     * @param b            row operand {@code [rows, N]} (e.g. the layer input)
     * @param groupOffsets I32 {@code [groups + 1]}
     * @param out          F32 {@code [groups, M, N]}
     * @param spec         accumulate / bf16 options
     * @throws IllegalArgumentException on shape, dtype or offset errors
     */
    void groupedWeightGrad(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec);

    /**
     * Whether {@link #groupedWeightGradTree} and {@link #combineTreeNodes} are implemented, i.e.
     * whether gradients of replicated parameters can be reduced over the fixed
     * {@link TokenBlockTree} (bitwise independent of the world size). Callers that get {@code false}
     * reduce with {@link #groupedWeightGrad} and a rank-order all-reduce instead.
     *
     * @return true when this backend reduces weight gradients over token-block trees
     */
    default boolean supportsTokenBlockTree() {
        return false;
    }

    /**
     * Weight gradient of each row segment reduced over the fixed token-block tree: for every segment
     * {@code s}, whose rows {@code [off[s], off[s+1])} are cut into blocks of {@code blockRows} rows
     * starting at {@code off[s]} (the last may be shorter),
     * {@code out[s] (+)= tree-sum over blocks of a[block]ᵀ · b[block]}, where each block's partial is
     * reduced over its rows in ascending order from zero and the partials are combined as the nodes of
     * the aligned binary tree of {@link TokenBlockTree} (left-aligned at the segment's first block; a
     * segment of {@code c} blocks gives the value of a tree node of {@code c} blocks). The result
     * depends on the rows of each segment only, never on the thread count.
     *
     * @param a              row operand {@code [rows, M]} (e.g. the output gradient)
     * @param b              row operand {@code [rows, N]} (e.g. the layer input)
     * @param segmentOffsets I32 {@code [segments + 1]}, non-decreasing
     * @param blockRows      rows per block, {@code >= 1} (an implementation may cap it; the CPU allows up to 512)
     * @param out            F32 {@code [segments, M, N]}
     * @param spec           accumulate / bf16 options
     * @throws IllegalArgumentException on shape, dtype, offset or block-size errors (before anything is written)
     * @throws UnsupportedOperationException where {@link #supportsTokenBlockTree()} is false
     */
    default void groupedWeightGradTree(Buffer a, Buffer b, Buffer segmentOffsets, int blockRows, Buffer out,
            GemmSpec spec) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not implement groupedWeightGradTree");
    }

    /**
     * Whether {@link #groupedWeightGradTree(Buffer, Buffer, Buffer, int, Buffer, Buffer, GemmSpec)} reads
     * a leaf-bounds table the caller keeps (a device backend, which would otherwise upload it at every
     * call); callers that get {@code false} need not build one.
     *
     * @return true when a kept leaf-bounds table saves an upload per call
     */
    default boolean usesLeafBounds() {
        return false;
    }

    /**
     * {@link #groupedWeightGradTree(Buffer, Buffer, Buffer, int, Buffer, GemmSpec)} with the leaf bounds
     * lent by the caller: {@code leafBounds} holds {@link TokenBlockTree#leafBounds} of the segment
     * offsets and {@code blockRows}, in this backend's memory, and is kept by the caller (for example
     * one table per token count), so the call uploads nothing and can be captured in a CUDA graph. The
     * default ignores the table.
     *
     * @param a              row operand {@code [rows, M]}
     * @param b              row operand {@code [rows, N]}
     * @param segmentOffsets I32 {@code [segments + 1]}, non-decreasing
     * @param blockRows      rows per block, {@code >= 1}
     * @param leafBounds     I32 {@code [leaves + 1]}: {@code TokenBlockTree.leafBounds(segmentOffsets, blockRows)}
     *                       (its size is checked, its values are trusted), borrowed
     * @param out            F32 {@code [segments, M, N]}
     * @param spec           accumulate / bf16 options
     * @throws IllegalArgumentException on shape, dtype, offset or block-size errors, or a {@code leafBounds}
     *                                  that is not I32 of the leaf count plus one (before anything is written)
     * @throws UnsupportedOperationException where {@link #supportsTokenBlockTree()} is false
     */
    default void groupedWeightGradTree(Buffer a, Buffer b, Buffer segmentOffsets, int blockRows, Buffer leafBounds,
            Buffer out, GemmSpec spec) {
        java.util.Objects.requireNonNull(leafBounds, "leafBounds");
        groupedWeightGradTree(a, b, segmentOffsets, blockRows, out, spec);
    }

    /**
     * Evaluates a token-block tree from node values: runs {@code nodes[dst] += nodes[src]} for every
     * pair of {@code plan} in order (element-wise, fp32), then {@code out (+)= nodes[root]}, with
     * {@code plan = [dst0, src0, ..., root]} as made by {@link TokenBlockTree#combinePlan}. The rows of
     * {@code nodes} are scratch and are overwritten.
     *
     * @param nodes      F32 {@code [count, ...]}: one node value per row
     * @param plan       pairs of row indices, then the root's row index
     * @param out        F32 with as many elements as one row of {@code nodes}
     * @param accumulate add into {@code out} instead of overwriting it
     * @throws IllegalArgumentException on a dtype, size or plan error (before anything is written)
     * @throws UnsupportedOperationException where {@link #supportsTokenBlockTree()} is false
     */
    default void combineTreeNodes(Buffer nodes, int[] plan, Buffer out, boolean accumulate) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not implement combineTreeNodes");
    }

    /**
     * Batched transpose with dtype conversion: {@code dst[g] = src[g]ᵀ}.
     *
     * @param src {@code [groups, R, C]}
     * @param dst {@code [groups, C, R]}, F32 or BF16
     * @throws IllegalArgumentException on shape mismatch
     */
    void transpose(Buffer src, Buffer dst);

    /**
     * SwiGLU forward, element-wise: {@code out = silu(gate) ⊙ up}, {@code silu(h) = h·σ(h)}.
     *
     * @param gate F32, any shape
     * @param up   F32, same shape
     * @param out  F32, same shape
     * @throws IllegalArgumentException on shape or dtype mismatch
     */
    void swigluForward(Buffer gate, Buffer up, Buffer out);

    /**
     * SwiGLU backward, element-wise: {@code dGate = dOut ⊙ up ⊙ silu'(gate)},
     * {@code dUp = dOut ⊙ silu(gate)}.
     *
     * @param gate  F32 forward input
     * @param up    F32 forward input
     * @param dOut  F32 gradient of the output
     * @param dGate F32 output
     * @param dUp   F32 output
     * @throws IllegalArgumentException on shape or dtype mismatch
     */
    void swigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp);

    // ------------------------------------------------------------ model-family variants (LayerFeatures)

    /**
     * Whether the family-variant kernels below ({@link #clampedSwigluForward}, {@link #clampedSwigluBackward},
     * {@link #addGroupBias}, {@link #groupBiasGrad}, {@link #rowScaleForward}, {@link #rowScaleBackward},
     * {@link #scaleExpand}, {@link #scaleExpandBackward}, {@link #sumSlots}) are implemented. A layer whose config needs them refuses a backend that answers {@code false}.
     *
     * @return true when this backend implements them
     */
    default boolean supportsLayerFeatures() {
        return false;
    }

    /**
     * gpt-oss clamped SwiGLU forward, element-wise: {@code g = min(gate, limit)},
     * {@code u = clamp(up, -limit, limit)}, {@code out = (u + 1) · g · σ(alpha · g)}.
     *
     * @param gate  F32, any shape
     * @param up    F32, same shape
     * @param out   F32, same shape
     * @param limit clamp, finite and &gt; 0
     * @param alpha sigmoid gain, finite and &gt; 0
     * @throws IllegalArgumentException on shape, dtype or parameter errors
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void clampedSwigluForward(Buffer gate, Buffer up, Buffer out, float limit, float alpha) {
        throw unsupported("clampedSwigluForward");
    }

    /**
     * Backward of {@link #clampedSwigluForward}. A clamp passes the gradient where its input lies inside
     * the closed interval (PyTorch's convention): {@code dGate = dOut·(u+1)·(σ(αg) + αg·σ(αg)(1−σ(αg)))} where
     * {@code gate ≤ limit}, else 0; {@code dUp = dOut·g·σ(αg)} where {@code |up| ≤ limit}, else 0.
     *
     * @param gate  F32 forward input
     * @param up    F32 forward input
     * @param dOut  F32 gradient of the output
     * @param dGate F32 output
     * @param dUp   F32 output
     * @param limit clamp, as in forward
     * @param alpha sigmoid gain, as in forward
     * @throws IllegalArgumentException on shape, dtype or parameter errors
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void clampedSwigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp, float limit,
                                       float alpha) {
        throw unsupported("clampedSwigluBackward");
    }

    /**
     * Adds a per-group bias row: {@code out[r, :] += bias[g, :]} for every row {@code r} of group {@code g}.
     *
     * @param out          F32 {@code [rows, N]}
     * @param bias         F32 with {@code groups · N} elements ({@code [groups, N]}, or {@code [N]} for one group)
     * @param groupOffsets I32 {@code [groups + 1]}
     * @throws IllegalArgumentException on shape, dtype or offset errors (before anything is written)
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void addGroupBias(Buffer out, Buffer bias, Buffer groupOffsets) {
        throw unsupported("addGroupBias");
    }

    /**
     * Bias gradient: {@code dBias[g, :] += Σ dOut[r, :]} over the rows of group {@code g}, summed in
     * ascending row order (deterministic).
     *
     * @param dOut         F32 {@code [rows, N]}
     * @param groupOffsets I32 {@code [groups + 1]}
     * @param dBias        F32 with {@code groups · N} elements, accumulated into
     * @throws IllegalArgumentException on shape, dtype or offset errors (before anything is written)
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void groupBiasGrad(Buffer dOut, Buffer groupOffsets, Buffer dBias) {
        throw unsupported("groupBiasGrad");
    }

    /**
     * Row scaling: {@code out[r, :] (+)= f(scale[r]) · x[r, :]}, with {@code f = σ} or the identity.
     *
     * @param scale      F32 with {@code rows} elements ({@code [rows]} or {@code [rows, 1]})
     * @param sigmoid    apply {@code σ} to the scale
     * @param x          F32 {@code [rows, N]}
     * @param out        F32 {@code [rows, N]} (may be {@code x} when not accumulating)
     * @param accumulate add into {@code out} instead of overwriting it
     * @throws IllegalArgumentException on shape or dtype errors
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void rowScaleForward(Buffer scale, boolean sigmoid, Buffer x, Buffer out, boolean accumulate) {
        throw unsupported("rowScaleForward");
    }

    /**
     * Backward of {@link #rowScaleForward}: {@code dX[r, :] = f(scale[r]) · dOut[r, :]} (overwritten) and
     * {@code dScale[r] = f'(scale[r]) · Σ_c dOut[r, c] · x[r, c]} (overwritten; {@code c} ascending).
     *
     * @param scale   F32 with {@code rows} elements
     * @param sigmoid whether forward applied {@code σ}
     * @param x       F32 {@code [rows, N]}, the forward input
     * @param dOut    F32 {@code [rows, N]}
     * @param dX      F32 {@code [rows, N]}
     * @param dScale  F32 with {@code rows} elements
     * @throws IllegalArgumentException on shape or dtype errors
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void rowScaleBackward(Buffer scale, boolean sigmoid, Buffer x, Buffer dOut, Buffer dX, Buffer dScale) {
        throw unsupported("rowScaleBackward");
    }

    /**
     * Slot expansion with scaling (score before experts): {@code out[t·K + k, :] = w[t, k] · x[t, :]}
     * with {@code K = rows(out) / rows(x)}.
     *
     * @param x   F32 {@code [tokens, N]}
     * @param w   F32 with {@code tokens · K} elements ({@code [tokens, K]})
     * @param out F32 {@code [tokens · K, N]}
     * @throws IllegalArgumentException on shape or dtype errors
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void scaleExpand(Buffer x, Buffer w, Buffer out) {
        throw unsupported("scaleExpand");
    }

    /**
     * Backward of {@link #scaleExpand}: {@code dX[t, :] = Σ_k w[t, k] · dOut[t·K + k, :]} (k ascending,
     * from +0) and {@code dW[t, k] = Σ_c dOut[t·K + k, c] · x[t, c]} (c ascending); both overwritten.
     *
     * @param x    F32 {@code [tokens, N]}
     * @param w    F32 with {@code tokens · K} elements
     * @param dOut F32 {@code [tokens · K, N]}
     * @param dX   F32 {@code [tokens, N]}
     * @param dW   F32 with {@code tokens · K} elements
     * @throws IllegalArgumentException on shape or dtype errors
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void scaleExpandBackward(Buffer x, Buffer w, Buffer dOut, Buffer dX, Buffer dW) {
        throw unsupported("scaleExpandBackward");
    }

    /**
     * Sum of each token's slot rows: {@code out[t, :] = Σ_k y[t·K + k, :]}, k ascending, from +0.
     *
     * @param y    F32 {@code [tokens · K, N]}
     * @param topK {@code K}, ≥ 1
     * @param out  F32 {@code [tokens, N]}
     * @throws IllegalArgumentException on shape or dtype errors
     * @throws UnsupportedOperationException where {@link #supportsLayerFeatures()} is false
     */
    default void sumSlots(Buffer y, int topK, Buffer out) {
        throw unsupported("sumSlots");
    }

    private UnsupportedOperationException unsupported(String op) {
        return new UnsupportedOperationException(getClass().getSimpleName() + " does not implement " + op
                + " (supportsLayerFeatures() is false)");
    }
}
