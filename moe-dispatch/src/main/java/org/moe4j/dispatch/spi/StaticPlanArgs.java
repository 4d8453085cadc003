package org.moe4j.dispatch.spi;

import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.dispatch.DispatchKernels;

/**
 * The argument checks and the fault record of the static-shape (equal-split) plans
 * ({@link DispatchKernels#buildStaticSendPlan}, {@link DispatchKernels#buildStaticSendPlanDeferred},
 * {@link DispatchKernels#buildStaticRecvPlan}), shared by every backend so that each refuses the same
 * outputs with the same messages and reports a deferred refusal in the same words.
 */
public final class StaticPlanArgs {
    private static final int META = DispatchKernels.META_FIXED;

    private StaticPlanArgs() {
    }

    /**
     * Checks the output sizes of {@link DispatchKernels#buildStaticSendPlan}.
     *
     * @param tokens   {@code T >= 0}
     * @param topK     {@code K >= 1}
     * @param world    {@code W >= 1}
     * @param capacity {@code C >= 1}
     * @param plan     the outputs
     * @throws NullPointerException     if {@code plan} or one of its buffers is null
     * @throws IllegalArgumentException naming the first bad size or mis-sized output
     */
    public static void requireSendPlan(int tokens, int topK, int world, int capacity, DispatchKernels.StaticSendPlan plan) {
        Objects.requireNonNull(plan, "plan");
        if (tokens < 0 || topK < 1 || world < 1 || capacity < 1) {
            throw new IllegalArgumentException("static send plan: T=" + tokens + ", K=" + topK + ", W=" + world + ", C="
                    + capacity + " (need T >= 0 and K, W, C >= 1)");
        }
        long n = (long) world * capacity;
        requireShape("plan.sendToken", plan.sendToken(), DType.I32, n);
        requireShape("plan.sendMeta", plan.sendMeta(), DType.I32, n * (META + 2L * topK));
        requireShape("plan.returnSlot", plan.returnSlot(), DType.I32, n);
        requireShape("plan.slotReturnRow", plan.slotReturnRow(), DType.I32, (long) tokens * topK);
        requireShape("plan.dropped", plan.dropped(), DType.I32, world);
    }

    /**
     * Checks the output sizes of {@link DispatchKernels#buildStaticRecvPlan}.
     *
     * @param units                received rows {@code W*C >= 0}
     * @param groupOffsets         I32 {@code [L+1]}
     * @param tokensPerLocalExpert I32 {@code [L]}
     * @param plan                 slot arrays {@code [W*C]}, row arrays of one length {@code P}
     * @throws NullPointerException     if an argument or a plan buffer is null
     * @throws IllegalArgumentException naming the first mis-sized output
     */
    public static void requireRecvPlan(int units, Buffer groupOffsets, Buffer tokensPerLocalExpert,
            DispatchKernels.RecvPlan plan) {
        Objects.requireNonNull(groupOffsets, "groupOffsets");
        Objects.requireNonNull(tokensPerLocalExpert, "tokensPerLocalExpert");
        Objects.requireNonNull(plan, "plan");
        if (units < 0) {
            throw new IllegalArgumentException("static receive plan: units=" + units + " must be >= 0");
        }
        if (tokensPerLocalExpert.dtype() != DType.I32 || tokensPerLocalExpert.shape().rank() != 1) {
            throw new IllegalArgumentException("tokensPerLocalExpert: expected I32 [L] but got "
                    + tokensPerLocalExpert.dtype() + " " + tokensPerLocalExpert.shape());
        }
        requireShape("groupOffsets", groupOffsets, DType.I32, tokensPerLocalExpert.numel() + 1);
        long rowsMax = Objects.requireNonNull(plan.rowSrcRank(), "plan.rowSrcRank").numel();
        requireShape("plan.slotUnit", plan.slotUnit(), DType.I32, units);
        requireShape("plan.slotUnitSlot", plan.slotUnitSlot(), DType.I32, units);
        requireShape("plan.slotExpertRow", plan.slotExpertRow(), DType.I32, units);
        requireShape("plan.slotWeight", plan.slotWeight(), DType.F32, units);
        requireShape("plan.rowSrcRank", plan.rowSrcRank(), DType.I32, rowsMax);
        requireShape("plan.rowSrcIndex", plan.rowSrcIndex(), DType.I32, rowsMax);
        requireShape("plan.rowTopkSlot", plan.rowTopkSlot(), DType.I32, rowsMax);
    }

    /**
     * The refusal a fault record of {@link DispatchKernels#buildStaticSendPlanDeferred} stands for.
     *
     * @param fault   the record {@code {slot, expert id, weight bits}}; {@code slot == Integer.MAX_VALUE}
     *                when the input was accepted
     * @param topK    {@code K >= 1}
     * @param experts {@code E >= 1}
     * @return the exception to throw (naming the slot and its value), or null when the input was accepted
     * @throws NullPointerException     if {@code fault} is null
     * @throws IllegalArgumentException if {@code fault} does not have {@value DispatchKernels#STATIC_FAULT_SIZE}
     *                                  entries, its slot is negative, or {@code topK}/{@code experts} is below 1
     */
    public static IllegalArgumentException refusal(int[] fault, int topK, int experts) {
        Objects.requireNonNull(fault, "fault");
        if (fault.length != DispatchKernels.STATIC_FAULT_SIZE || fault[0] < 0 || topK < 1 || experts < 1) {
            throw new IllegalArgumentException("fault record " + java.util.Arrays.toString(fault) + " with K=" + topK
                    + ", E=" + experts + ": expected " + DispatchKernels.STATIC_FAULT_SIZE
                    + " entries, a slot >= 0, and K, E >= 1");
        }
        int slot = fault[0];
        if (slot == Integer.MAX_VALUE) {
            return null;
        }
        int e = fault[1];
        String at = "[" + slot / topK + ", " + slot % topK + "]";
        if (e < 0 || e >= experts) {
            return new IllegalArgumentException("topkIdx" + at + " = " + e + " is outside [0, " + experts
                    + ") (use -1 for no expert)");
        }
        return new IllegalArgumentException("topkWeights" + at + " = " + Float.intBitsToFloat(fault[2])
                + " is not finite (NaN or Inf) for expert " + e + "; refused before anything was sent from this rank");
    }

    private static void requireShape(String name, Buffer b, DType dtype, long numel) {
        Objects.requireNonNull(b, name);
        if (b.dtype() != dtype || b.numel() != numel) {
            throw new IllegalArgumentException(name + ": expected " + dtype + " with " + numel + " elements but got "
                    + b.dtype() + " " + b.shape());
        }
    }
}
