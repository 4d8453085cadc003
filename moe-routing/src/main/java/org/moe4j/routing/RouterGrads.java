package org.moe4j.routing;

import org.moe4j.core.buffer.Buffer;

/**
 * Gradients from {@link Router#backward}. Owns its buffers; close it when done.
 *
 * @param dLogits     F32 {@code [tokens, experts]}
 * @param dX          F32 {@code [tokens, hidden]}, or null when the forward started from logits
 * @param dGateWeight F32 {@code [experts, hidden]}, or null when the forward started from logits or it
 *                    was not asked for
 */
public record RouterGrads(Buffer dLogits, Buffer dX, Buffer dGateWeight) implements AutoCloseable {
    @Override
    public void close() {
        dLogits.close();
        if (dX != null) {
            dX.close();
        }
        if (dGateWeight != null) {
            dGateWeight.close();
        }
    }
}
