package org.moe4j.dispatch.internal;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Scratch;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.Handover;
import org.moe4j.core.buffer.HostView;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.DispatchResult;
import org.moe4j.dispatch.Dispatcher;

/**
 * The public base class of dispatch strategies (see {@link org.moe4j.dispatch.DispatcherProvider}): what
 * every strategy shares: input validation, allocation and recycled scratch memory, the host read-back of
 * counts (counted by {@link #hostReads()}), padded group offsets, and the context base class.
 */
public abstract class AbstractDispatcher implements Dispatcher {
    /** The settings. */
    protected final DispatchConfig config;
    /** The expert-parallel group. */
    protected final Communicator comm;
    /** Allocates outputs. */
    protected final Backend backend;
    /** The dispatch kernels of {@link #backend}. */
    protected final DispatchKernels kernels;
    /** Ranks {@code W}. */
    protected final int world;
    /** This rank. */
    protected final int rank;
    /** Routed experts {@code E}. */
    protected final int experts;
    /** Experts per rank {@code L = E / W}. */
    protected final int localExperts;
    /** Global id of this rank's local expert 0. */
    protected final int firstExpert;
    /** Recycled intermediates from the backend (contents undefined); see {@link Scratch}. */
    final Scratch ws;
    /** Device→host reads issued so far. */
    private final java.util.concurrent.atomic.AtomicLong hostReads = new java.util.concurrent.atomic.AtomicLong();

    /**
     * @param config  settings
     * @param comm    the expert-parallel group
     * @param backend allocates outputs
     * @param kernels the kernels
     * @throws IllegalArgumentException if the experts do not divide evenly over the ranks
     * @throws NullPointerException     if an argument is null
     */
    protected AbstractDispatcher(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
        this.config = Objects.requireNonNull(config, "config");
        this.comm = Objects.requireNonNull(comm, "comm");
        this.backend = Objects.requireNonNull(backend, "backend");
        this.kernels = Objects.requireNonNull(kernels, "kernels");
        this.world = comm.size();
        this.rank = comm.rank();
        this.experts = config.experts();
        if (experts % world != 0) {
            throw new IllegalArgumentException("experts (" + experts + ") must be divisible by the world size (" + world
                    + ")");
        }
        this.localExperts = experts / world;
        this.firstExpert = rank * localExperts;
        this.ws = backend.newScratch();
    }

    /**
     * Token count, hidden size and top-k of validated inputs.
     *
     * @param tokens tokens {@code T}
     * @param hidden row width {@code H}
     * @param topK   slots per token {@code K}
     */
    protected record Dims(int tokens, int hidden, int topK) {
    }

    /**
     * Checks the inputs of {@link #dispatch}: null or closed buffers, shapes and dtypes, and routing
     * weights that are NaN or infinite in a non-empty slot ({@link DispatchKernels#firstNonFiniteWeight},
     * counted as a host read when {@link DispatchKernels#nonFiniteWeightScanReadsBack()}); expert ids
     * are checked by the kernels.
     *
     * @param x           {@code [tokens, hidden]}
     * @param topkIdx     I32 {@code [tokens, topK]}
     * @param topkWeights F32 {@code [tokens, topK]}
     * @return the dimensions
     * @throws IllegalArgumentException naming the bad input
     */
    protected Dims validate(Buffer x, Buffer topkIdx, Buffer topkWeights) {
        Objects.requireNonNull(x, "x");
        Objects.requireNonNull(topkIdx, "topkIdx");
        Objects.requireNonNull(topkWeights, "topkWeights");
        requireOpen("x", x);
        requireOpen("topkIdx", topkIdx);
        requireOpen("topkWeights", topkWeights);
        if (x.shape().rank() != 2 || !x.dtype().isFloatingPoint()) {
            throw new IllegalArgumentException("x: expected a floating-point [tokens, hidden] buffer but got " + x.dtype()
                    + " " + x.shape());
        }
        if (topkIdx.dtype() != DType.I32 || topkIdx.shape().rank() != 2) {
            throw new IllegalArgumentException("topkIdx: expected I32 [tokens, topK] but got " + topkIdx.dtype() + " "
                    + topkIdx.shape());
        }
        long tokens = x.shape().dim(0);
        long topK = topkIdx.shape().dim(1);
        topkIdx.require("topkIdx", DType.I32, tokens, topK);
        topkWeights.require("topkWeights", DType.F32, tokens, topK);
        if (topK < 1) {
            throw new IllegalArgumentException("topkIdx: topK must be >= 1 but got shape " + topkIdx.shape());
        }
        if (tokens * topK > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("topkIdx: " + tokens + " tokens x " + topK + " slots = " + tokens * topK
                    + " overflows the I32 slot index");
        }
        if (weightsCheckedByPlan()) {
            return new Dims((int) tokens, x.shape().dimInt(1), (int) topK);
        }
        if (kernels.nonFiniteWeightScanReadsBack()) {
            countHostRead(); // the non-finite weight scan is host-staged on device backends today
        }
        long bad = kernels.firstNonFiniteWeight(topkIdx, topkWeights);
        if (bad >= 0) {
            throw new IllegalArgumentException("topkWeights[" + bad / topK + ", " + bad % topK + "] is not finite"
                    + " (NaN or Inf) for expert " + readSlot(topkIdx, bad) + "; refused before anything is sent");
        }
        return new Dims((int) tokens, x.shape().dimInt(1), (int) topK);
    }

    /**
     * Whether this dispatcher's plan kernels check the routing weights themselves on the device
     * (deferred into a fault record, see {@link DispatchKernels#buildStaticSendPlanDeferred}), so
     * {@link #validate} skips its own non-finite scan, a device→host read on device backends.
     *
     * @return false by default
     */
    protected boolean weightsCheckedByPlan() {
        return false;
    }

    private int readSlot(Buffer topkIdx, long slot) {
        int[] all = readInts(topkIdx);
        return all[(int) slot];
    }

    /**
     * @param name names the buffer in a message
     * @param b    the buffer
     * @throws IllegalArgumentException if {@code b} is closed
     */
    protected static void requireOpen(String name, Buffer b) {
        if (b.isClosed()) {
            throw new IllegalArgumentException(name + " is closed (" + b.dtype() + " " + b.shape() + ")");
        }
    }

    /**
     * @param dtype element type
     * @param dims  dimensions
     * @return a zeroed buffer from the backend, owned by the caller
     */
    protected Buffer alloc(DType dtype, long... dims) {
        return backend.allocate(dtype, Shape.of(dims));
    }

    /**
     * A recycled buffer from the backend's scratch, with undefined contents; every element must be
     * written before use.
     *
     * @param dtype element type
     * @param dims  dimensions
     * @return the buffer; hand it back with {@link #release}
     */
    protected Buffer scratch(DType dtype, long... dims) {
        return ws.take(dtype, dims);
    }

    /**
     * Hands buffers from {@link #scratch} back for reuse (any other buffer is closed); nulls are skipped.
     *
     * @param buffers the buffers
     */
    protected void release(Buffer... buffers) {
        for (Buffer b : buffers) {
            ws.give(b);
        }
    }

    @Override
    public long hostReads() {
        return hostReads.get();
    }

    /** Counts one device→host read made outside {@link #readInts} (e.g. by host-staged kernels). */
    protected void countHostRead() {
        hostReads.incrementAndGet();
    }

    /**
     * Reads an I32 buffer into host memory: the one place a dispatcher synchronises with the device,
     * counted by {@link #hostReads()}.
     *
     * @param b an I32 buffer of the backend
     * @return its values
     */
    protected int[] readInts(Buffer b) {
        countHostRead();
        try (HostView v = b.hostView(HostView.Mode.READ)) { // in place for host memory, a download otherwise
            return v.host().toIntArray();
        }
    }

    private static void writeInts(Buffer b, int[] values) {
        try (HostView v = b.hostView(HostView.Mode.WRITE)) {
            MemorySegment.copy(values, 0, v.host().segment(), ValueLayout.JAVA_INT, 0, values.length);
        }
    }

    /** A scratch I32 buffer holding {@code values}; hand it back with {@code ws.give}. */
    Buffer scratchInts(int[] values) {
        Buffer b = scratch(DType.I32, values.length);
        try {
            writeInts(b, values);
        } catch (RuntimeException e) {
            ws.give(b);
            throw e;
        }
        return b;
    }

    Buffer uploadInts(int[] values) {
        try (Handover h = new Handover()) {
            Buffer b = h.own(alloc(DType.I32, values.length));
            writeInts(b, values);
            return h.release(b);
        }
    }

    /**
     * Padded group offsets from real counts.
     *
     * @param counts rows per local expert
     * @return {@code counts.length + 1} offsets, each group padded to the group alignment
     * @throws IllegalArgumentException if the rows overflow an I32 index
     */
    protected int[] groupOffsets(int[] counts) {
        int[] off = new int[counts.length + 1];
        int align = config.groupAlignment();
        for (int l = 0; l < counts.length; l++) {
            long padded = (counts[l] + (long) align - 1) / align * align;
            long next = off[l] + padded;
            if (next > Integer.MAX_VALUE) {
                throw new IllegalArgumentException("rank " + rank + ": expert input rows overflow an I32 index at local expert "
                        + l + " (" + next + " rows)");
            }
            off[l + 1] = (int) next;
        }
        return off;
    }

    /**
     * @param what   names the counts in a message
     * @param counts the counts
     * @param from   first index
     * @param to     end index (exclusive)
     * @param stride index step
     * @return the sum of {@code counts[from], counts[from + stride], ...}
     * @throws IllegalArgumentException on a negative count or an I32 overflow
     */
    protected static int sumExact(String what, int[] counts, int from, int to, int stride) {
        long s = 0;
        for (int i = from; i < to; i += stride) {
            if (counts[i] < 0) {
                throw new IllegalArgumentException(what + ": negative count " + counts[i] + " at index " + i);
            }
            s += counts[i];
        }
        if (s > Integer.MAX_VALUE) {
            throw new IllegalArgumentException(what + ": " + s + " rows overflow an I32 index");
        }
        return (int) s;
    }

    /**
     * @param name   names the buffer in a message
     * @param b      the buffer
     * @param rows   expected rows
     * @param hidden expected row width
     * @throws IllegalArgumentException unless {@code b} is a floating-point {@code [rows, hidden]} buffer
     */
    protected static void requireRowsLike(String name, Buffer b, long rows, long hidden) {
        Objects.requireNonNull(b, name);
        requireOpen(name, b);
        if (b.shape().rank() != 2 || b.shape().dim(0) != rows || b.shape().dim(1) != hidden
                || !b.dtype().isFloatingPoint()) {
            throw new IllegalArgumentException(name + ": expected a floating-point [" + rows + ", " + hidden + "] buffer but got "
                    + b.dtype() + " " + b.shape());
        }
    }

    /** Base of every strategy's context: owns buffers, knows its dispatcher. */
    protected abstract static class Ctx implements DispatchResult {
        final AbstractDispatcher owner;
        final Dims dims;
        final DType xDtype;
        final int firstExpert;
        final int[] groupOffsets;
        final int[] tokensPerLocalExpert;
        final List<Buffer> owned = new ArrayList<>();
        Buffer expertInput;
        Buffer groupOffsetsBuffer; // I32 [localExperts + 1], what the expert kernels read
        DispatchKernels.RecvPlan recv;
        DType yDtype; // set by combine
        boolean closed;

        /**
         * @param owner                the dispatcher
         * @param dims                 input dimensions
         * @param xDtype               dtype of {@code x}
         * @param groupOffsets         padded group offsets (null when the strategy keeps them on the device)
         * @param tokensPerLocalExpert real rows per local expert (null when kept on the device)
         */
        protected Ctx(AbstractDispatcher owner, Dims dims, DType xDtype, int[] groupOffsets, int[] tokensPerLocalExpert) {
            this.owner = owner;
            this.dims = dims;
            this.xDtype = xDtype;
            this.firstExpert = owner.firstExpert;
            this.groupOffsets = groupOffsets;
            this.tokensPerLocalExpert = tokensPerLocalExpert;
        }

        /**
         * Takes ownership of a buffer: it is released when the context closes.
         *
         * @param <B> the buffer type
         * @param b   the buffer
         * @return {@code b}
         */
        protected <B extends Buffer> B own(B b) {
            owned.add(b);
            return b;
        }

        @Override
        public Buffer expertInput() {
            check();
            return expertInput;
        }

        @Override
        public int[] groupOffsets() {
            return groupOffsets.clone();
        }

        @Override
        public Buffer groupOffsetsBuffer() {
            check();
            return groupOffsetsBuffer;
        }

        @Override
        public int[] tokensPerLocalExpert() {
            return tokensPerLocalExpert.clone();
        }

        @Override
        public int firstExpert() {
            return firstExpert;
        }

        @Override
        public Buffer srcRank() {
            check();
            return recv.rowSrcRank();
        }

        @Override
        public Buffer srcIndex() {
            check();
            return recv.rowSrcIndex();
        }

        @Override
        public Buffer topkSlot() {
            check();
            return recv.rowTopkSlot();
        }

        /** @throws IllegalStateException if the context is closed */
        protected void check() {
            if (closed) {
                throw new IllegalStateException("DispatchResult is closed");
            }
        }

        @Override
        public void close() {
            if (closed) {
                return;
            }
            closed = true;
            List<Buffer> all = new ArrayList<>(owned);
            owned.clear();
            try (Handover h = new Handover()) {
                for (Buffer b : all) {
                    h.own(() -> owner.ws.give(b)); // every buffer is given back even if one fails
                }
            }
        }
    }

    /**
     * @param <C>  the context type
     * @param d    a dispatch result
     * @param type the context class of this strategy
     * @return {@code d} as this dispatcher's open context
     * @throws IllegalArgumentException if another dispatcher produced it
     * @throws IllegalStateException    if it is closed
     */
    protected <C extends Ctx> C context(DispatchResult d, Class<C> type) {
        Objects.requireNonNull(d, "dispatch result");
        if (!type.isInstance(d) || ((Ctx) d).owner != this) {
            throw new IllegalArgumentException("this DispatchResult was produced by another dispatcher");
        }
        C c = type.cast(d);
        c.check();
        return c;
    }
}
