package org.moe4j.dispatch;

import org.moe4j.core.buffer.Buffer;

/**
 * Gradients from {@link Dispatcher#combineBackward}; owned by the caller.
 *
 * @param dExpertOutput {@code [rows, hidden]}: {@code w[t,k] * dOut[t]} on the row of slot (t, k), zero on padding
 * @param dTopkWeights  F32 {@code [tokens, topK]}: {@code <dOut[t], y[t,k]>}, zero for empty slots
 */
public record CombineGrads(Buffer dExpertOutput, Buffer dTopkWeights) implements AutoCloseable {
    @Override
    public void close() {
        dExpertOutput.close();
        dTopkWeights.close();
    }
}
