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
    /** @return the routed rows, {@code [rows, hidden]}, dtype of {@code x} */
    Buffer expertInput();

    /** @return {@code localExperts + 1} padded row offsets into {@link #expertInput()} */
    int[] groupOffsets();

    /**
     * The group offsets where the expert kernels read them: I32 {@code [localExperts + 1]} in the
     * dispatcher's backend memory, the same values as {@link #groupOffsets()}. Owned by this result
     * (valid until {@link #close()}); pass it to the experts instead of uploading the offsets again.
     *
     * @return the offsets buffer
     * @throws UnsupportedOperationException if this implementation keeps its offsets on the host only
     * @throws IllegalStateException         after {@link #close()}
     */
    default Buffer groupOffsetsBuffer() {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " keeps no group-offsets buffer");
    }

    /** @return real (unpadded) rows per local expert: this rank's load statistics */
    int[] tokensPerLocalExpert();

    /** @return global id of local expert 0 */
    int firstExpert();

    /** @return number of local experts {@code L = E / W} */
    default int localExperts() {
        return groupOffsets().length - 1;
    }

    /** @return rows of {@link #expertInput()} including padding */
    default int rows() {
        return groupOffsets()[groupOffsets().length - 1];
    }

    /** @return I32 {@code [rows]}: source rank of each expert-input row, -1 for padding */
    Buffer srcRank();

    /** @return I32 {@code [rows]}: token index on its source rank, -1 for padding */
    Buffer srcIndex();

    /** @return I32 {@code [rows]}: top-k slot of each row, -1 for padding */
    Buffer topkSlot();

    /** Frees every buffer this context owns. Idempotent. */
    @Override
    void close();
}
