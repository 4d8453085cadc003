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

/** What both strategies share: validation, allocation, host read-back of counts, the context base. */
abstract class AbstractDispatcher implements Dispatcher {
    final DispatchConfig config;
    final Communicator comm;
    final Backend backend;
    final DispatchKernels kernels;
    final int world;
    final int rank;
    final int experts;
    final int localExperts;
    final int firstExpert;
    /** Recycled intermediates from the backend (contents undefined); see {@link Scratch}. */
    final Scratch ws;

    AbstractDispatcher(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
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

    /** Token count, hidden size and top-k of validated inputs. */
    record Dims(int tokens, int hidden, int topK) {
    }

    Dims validate(Buffer x, Buffer topkIdx, Buffer topkWeights) {
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
        long bad = kernels.firstNonFiniteWeight(topkIdx, topkWeights);
        if (bad >= 0) {
            throw new IllegalArgumentException("topkWeights[" + bad / topK + ", " + bad % topK + "] is not finite"
                    + " (NaN or Inf) for expert " + readSlot(topkIdx, bad) + "; refused before anything is sent");
        }
        return new Dims((int) tokens, x.shape().dimInt(1), (int) topK);
    }

    private int readSlot(Buffer topkIdx, long slot) {
        int[] all = readInts(topkIdx);
        return all[(int) slot];
    }

    static void requireOpen(String name, Buffer b) {
        if (b.isClosed()) {
            throw new IllegalArgumentException(name + " is closed (" + b.dtype() + " " + b.shape() + ")");
        }
    }

    Buffer alloc(DType dtype, long... dims) {
        return backend.allocate(dtype, Shape.of(dims));
    }

    /** A recycled buffer with undefined contents; every element must be written before use. */
    Buffer scratch(DType dtype, long... dims) {
        return ws.take(dtype, dims);
    }

    /** Reads an I32 buffer on the host (in place for host memory, a download otherwise). */
    static int[] readInts(Buffer b) {
        try (HostView v = b.hostView(HostView.Mode.READ)) {
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

    /** Padded group offsets from real counts. */
    int[] groupOffsets(int[] counts) {
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

    static int sumExact(String what, int[] counts, int from, int to, int stride) {
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

    static void requireRowsLike(String name, Buffer b, long rows, long hidden) {
        Objects.requireNonNull(b, name);
        requireOpen(name, b);
        if (b.shape().rank() != 2 || b.shape().dim(0) != rows || b.shape().dim(1) != hidden
                || !b.dtype().isFloatingPoint()) {
            throw new IllegalArgumentException(name + ": expected a floating-point [" + rows + ", " + hidden + "] buffer but got "
                    + b.dtype() + " " + b.shape());
        }
    }

    /** Base of both strategies' contexts: owns buffers, knows its dispatcher. */
    abstract static class Ctx implements DispatchResult {
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

        Ctx(AbstractDispatcher owner, Dims dims, DType xDtype, int[] groupOffsets, int[] tokensPerLocalExpert) {
            this.owner = owner;
            this.dims = dims;
            this.xDtype = xDtype;
            this.firstExpert = owner.firstExpert;
            this.groupOffsets = groupOffsets;
            this.tokensPerLocalExpert = tokensPerLocalExpert;
        }

        <B extends Buffer> B own(B b) {
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

        void check() {
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

    <C extends Ctx> C context(DispatchResult d, Class<C> type) {
        Objects.requireNonNull(d, "dispatch result");
        if (!type.isInstance(d) || ((Ctx) d).owner != this) {
            throw new IllegalArgumentException("this DispatchResult was produced by another dispatcher");
        }
        C c = type.cast(d);
        c.check();
        return c;
    }
}
