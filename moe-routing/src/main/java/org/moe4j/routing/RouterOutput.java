package org.moe4j.routing;

import java.util.List;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

/**
 * Result of one {@link Router} forward call and the context its {@link Router#backward} needs.
 * Owns the buffers it allocated (not the caller's {@code x}, {@code gateWeight} or logits);
 * close it after backward.
 *
 * <p>On a sync-free device route (see {@link Router}) the counts stay in device memory until asked
 * for: {@link #tokensPerExpert()}, {@link #selectedPerExpert()} and {@link #validTokens()} then make
 * one host read (the first of them; the copy is kept), and first raise a pending non-finite-logits
 * error of the router.
 */
public final class RouterOutput implements AutoCloseable {
    private final Router router;
    private final int tokens;
    private final Buffer x; // [tokens, hidden] or null (caller's)
    private final Buffer gateWeight; // [experts, hidden] or null (caller's)
    private final Buffer logits; // [tokens, experts], owned when x != null
    private final Buffer scores; // [tokens, experts]
    private final Buffer selected; // [tokens, topK], before capacity drops
    private final Buffer topkIdx; // [tokens, topK], after drops (same buffer as selected when dropless)
    private final Buffer topkWeights; // [tokens, topK]
    private final Buffer lse; // [tokens] or null
    private final Buffer tokensPerExpert; // [experts], after drops: host memory, or device counts read on request
    private HostBuffer hostCounts; // tokensPerExpert in host memory (itself when it is a host buffer)
    private int[] selectedPerExpert; // [experts], before drops (null until read from device counts)
    private int validTokens; // -1 until read from device counts
    private final long dropped;
    private final AuxLosses auxLosses;
    private final HostBuffer auxGrad; // [segments, experts] dLoss/dp, or null
    private final int auxSegmentLength;
    private final float zGrad;
    private final List<Buffer> leases; // the router's scratch buffers among the ones above
    private boolean closed;

    RouterOutput(Router router, int tokens, Buffer x, Buffer gateWeight, Buffer logits, Buffer scores,
            Buffer selected, Buffer topkIdx, Buffer topkWeights, Buffer lse, Buffer tokensPerExpert,
            HostBuffer hostCounts, int[] selectedPerExpert, int validTokens, long dropped, AuxLosses auxLosses, HostBuffer auxGrad,
            int auxSegmentLength, float zGrad, List<Buffer> leases) {
        this.router = router;
        this.tokens = tokens;
        this.x = x;
        this.gateWeight = gateWeight;
        this.logits = logits;
        this.scores = scores;
        this.selected = selected;
        this.topkIdx = topkIdx;
        this.topkWeights = topkWeights;
        this.lse = lse;
        this.tokensPerExpert = tokensPerExpert;
        this.hostCounts = hostCounts; // tokensPerExpert itself when the router counted on the host, else null
        this.selectedPerExpert = selectedPerExpert;
        this.validTokens = validTokens;
        this.dropped = dropped;
        this.auxLosses = auxLosses;
        this.auxGrad = auxGrad;
        this.auxSegmentLength = auxSegmentLength;
        this.zGrad = zGrad;
        this.leases = List.copyOf(leases);
    }

    /**
     * Returns tokens in the batch (padding included).
     * @return tokens in the batch (padding included)
     */
    public int tokens() {
        return tokens;
    }

    /**
     * Returns tokens not masked as padding.
     * @return tokens not masked as padding
     */
    public synchronized int validTokens() {
        hostCounts();
        return validTokens;
    }

    /**
     * Returns F32 {@code [tokens, experts]} router logits (the caller's buffer for {@code forwardLogits}).
     * @return F32 {@code [tokens, experts]} router logits (the caller's buffer for {@code forwardLogits})
     */
    public Buffer logits() {
        return open(logits);
    }

    /**
     * Returns F32 {@code [tokens, experts]} scores (softmax or sigmoid of the logits; 0 for padding).
     * @return F32 {@code [tokens, experts]} scores (softmax or sigmoid of the logits; 0 for padding)
     */
    public Buffer scores() {
        return open(scores);
    }

    /**
     * Returns I32 {@code [tokens, topK]} chosen experts, slots by descending (biased) score, -1 for padding tokens and dropped assignments.
     * @return I32 {@code [tokens, topK]} chosen experts, slots by descending (biased) score, -1 for
     *         padding tokens and dropped assignments
     */
    public Buffer topkIdx() {
        return open(topkIdx);
    }

    /**
     * Returns I32 {@code [tokens, topK]} the selection before capacity drops (-1 only for padding).
     * @return I32 {@code [tokens, topK]} the selection before capacity drops (-1 only for padding)
     */
    public Buffer selected() {
        return open(selected);
    }

    /**
     * Returns F32 {@code [tokens, topK]} gate weights (0 where {@code topkIdx} is -1).
     * @return F32 {@code [tokens, topK]} gate weights (0 where {@code topkIdx} is -1)
     */
    public Buffer topkWeights() {
        return open(topkWeights);
    }

    /**
     * Returns host I32 {@code [experts]} assignments per expert after drops.
     * @return host I32 {@code [experts]} assignments per expert after drops
     */
    public synchronized HostBuffer tokensPerExpert() {
        return open(hostCounts());
    }

    /**
     * Returns assignments per expert before drops (the load the expert bias balances).
     * @return assignments per expert before drops (the load the expert bias balances)
     */
    public synchronized int[] selectedPerExpert() {
        hostCounts();
        return selectedPerExpert.clone();
    }

    /**
     * The counts in host memory: the first call on a sync-free device route raises the router's
     * pending error, then reads the device counts once (dropless there, so the selection counts equal
     * them).
     */
    private HostBuffer hostCounts() {
        open(tokensPerExpert);
        if (hostCounts == null) {
            router.raisePendingError("RouterOutput.tokensPerExpert");
            HostBuffer h = tokensPerExpert.toHost();
            int[] counts = h.toIntArray();
            long assignments = 0;
            for (int c : counts) {
                assignments += c;
            }
            selectedPerExpert = counts;
            validTokens = (int) (assignments / router.config().topK());
            hostCounts = h;
        }
        return hostCounts;
    }

    /**
     * Returns I32 {@code [experts]} assignments per expert after drops where they were counted (host
     * memory, or the device on a sync-free route), without a host read.
     * @return I32 {@code [experts]} assignments per expert after drops, where they were counted
     */
    public Buffer tokensPerExpertBuffer() {
        return open(tokensPerExpert);
    }

    /**
     * Returns assignments dropped by the capacity limit (0 when dropless).
     * @return assignments dropped by the capacity limit (0 when dropless)
     */
    public long dropped() {
        return dropped;
    }

    /**
     * Returns the auxiliary losses (scaled by their coefficients).
     * @return the auxiliary losses (scaled by their coefficients)
     */
    public AuxLosses auxLosses() {
        return auxLosses;
    }

    /**
     * Returns true when the forward started from hidden states (backward then yields dX and dGate).
     * @return true when the forward started from hidden states (backward then yields dX and dGate)
     */
    public boolean fromHidden() {
        return x != null;
    }

    Router router() {
        return router;
    }

    Buffer x() {
        return x;
    }

    Buffer gateWeight() {
        return gateWeight;
    }

    Buffer lse() {
        return lse;
    }

    HostBuffer auxGrad() {
        return auxGrad;
    }

    int auxSegmentLength() {
        return auxSegmentLength;
    }

    float zGrad() {
        return zGrad;
    }

    /**
     * Returns true after {@link #close()}.
     * @return true after {@link #close()}
     */
    public synchronized boolean isClosed() {
        return closed;
    }

    private <B> B open(B b) {
        if (isClosed()) {
            throw new IllegalStateException("RouterOutput is closed");
        }
        return b;
    }

    /**
     * Frees the buffers this output owns, or gives their memory back to the router for reuse by a
     * later forward. Every buffer obtained from this output is closed afterwards (including views
     * made from them with {@code HostBuffer.reshape}, which must not be used after this call).
     * Idempotent.
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        router.releaseAll(new java.util.ArrayList<>(leases)); // closes the buffers, hands the memory back to the router
        if (x != null) {
            logits.close();
        }
        scores.close();
        selected.close();
        topkIdx.close();
        topkWeights.close();
        if (lse != null) {
            lse.close();
        }
        tokensPerExpert.close();
        if (hostCounts != null && hostCounts != tokensPerExpert) {
            hostCounts.close();
        }
        if (auxGrad != null) {
            auxGrad.close();
        }
    }
}
