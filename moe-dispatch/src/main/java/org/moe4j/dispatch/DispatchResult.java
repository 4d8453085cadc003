package org.moe4j.dispatch;

import org.moe4j.core.buffer.Buffer;

/**
 * The output of {@link Dispatcher#dispatch} and the context that combine and both backward passes
 * consume. It owns its buffers: {@link #close()} frees them (after the backward pass).
 *
 * <p>Rows of {@link #expertInput()} are grouped local-expert-major; inside one local expert, by
 * source rank, then source token order (then top-k slot). Group {@code l} occupies rows
 * {@code [groupOffsets[l], groupOffsets[l+1])}; its first {@code tokensPerLocalExpert[l]} rows are
 * real, the rest (up to the alignment multiple) are zero padding.
 */
public interface DispatchResult extends AutoCloseable {
    /**
     * Returns the routed rows, {@code [rows, hidden]}, dtype of {@code x}.
     * @return the routed rows, {@code [rows, hidden]}, dtype of {@code x}
     */
    Buffer expertInput();

    /**
     * Returns {@code localExperts + 1} padded row offsets into {@link #expertInput()}.
     * @return {@code localExperts + 1} padded row offsets into {@link #expertInput()}
     */
    int[] groupOffsets();

    /**
     * Returns real (unpadded) rows per local expert: this rank's load statistics.
     * @return real (unpadded) rows per local expert: this rank's load statistics
     */
    int[] tokensPerLocalExpert();

    /**
     * Returns global id of local expert 0.
     * @return global id of local expert 0
     */
    int firstExpert();

    /**
     * Returns number of local experts {@code L = E / W}.
     * @return number of local experts {@code L = E / W}
     */
    default int localExperts() {
        return groupOffsets().length - 1;
    }

    /**
     * Returns rows of {@link #expertInput()} including padding.
     * @return rows of {@link #expertInput()} including padding
     */
    default int rows() {
        return groupOffsets()[groupOffsets().length - 1];
    }

    /**
     * The group offsets where the expert kernels read them: I32 {@code [localExperts + 1]} in the
     * dispatcher's backend memory, the same values as {@link #groupOffsets()}, owned by this context
     * (valid until {@link #close()}). The built-in strategies always keep them there, so the experts
     * read the dispatcher's upload instead of a second one.
     *
     * @return the offsets buffer, or null when the strategy reports the offsets on the host only
     *         ({@link #groupOffsets()})
     */
    default Buffer groupOffsetsBuffer() {
        return null;
    }

    /**
     * Routed slots of this rank's tokens that did not fit a static-shape chunk and were dropped (by the
     * configured drop policy); always 0 for strategies without a static capacity. On a static-shape
     * context this reads a device counter (a device→host read), so call it outside captured steps.
     *
     * @return dropped slots, summed over destination ranks
     */
    default long overflow() {
        return 0;
    }

    /**
     * Returns I32 {@code [rows]}: source rank of each expert-input row, -1 for padding.
     * @return I32 {@code [rows]}: source rank of each expert-input row, -1 for padding
     */
    Buffer srcRank();

    /**
     * Returns I32 {@code [rows]}: token index on its source rank, -1 for padding.
     * @return I32 {@code [rows]}: token index on its source rank, -1 for padding
     */
    Buffer srcIndex();

    /**
     * Returns I32 {@code [rows]}: top-k slot of each row, -1 for padding.
     * @return I32 {@code [rows]}: top-k slot of each row, -1 for padding
     */
    Buffer topkSlot();

    /** Frees every buffer this context owns. Idempotent. */
    @Override
    void close();
}
