package org.moe4j.core.buffer;

import java.util.Objects;

/**
 * Host access to any buffer's values, the one way model code reads or writes a buffer from the
 * host: for host memory the view is the buffer's own memory (no copy); for device memory it is a
 * staged host copy, downloaded on open when reading and uploaded on {@link #close()} when writing.
 *
 * <pre>{@code
 * try (HostView v = counts.hostView(HostView.Mode.READ)) {
 *     int[] c = v.host().toIntArray();
 * }
 * }</pre>
 */
public final class HostView implements AutoCloseable {
    /** What the caller does with {@link #host()}. */
    public enum Mode {
        /** Reads only: a staged copy is downloaded and not written back. */
        READ,
        /** Overwrites every element: a staged copy is not downloaded, and is uploaded on close. */
        WRITE,
        /** Reads and writes: downloaded on open, uploaded on close. */
        READ_WRITE;

        boolean reads() {
            return this != WRITE;
        }

        boolean writes() {
            return this != READ;
        }
    }

    private final Buffer target;
    private final HostBuffer host;
    private final Mode mode;
    private final boolean staged;
    private boolean closed;

    private HostView(Buffer target, HostBuffer host, Mode mode, boolean staged) {
        this.target = target;
        this.host = host;
        this.mode = mode;
        this.staged = staged;
    }

    /**
     * A view straight over host memory (no copy); what {@link HostBuffer#hostView} returns.
     *
     * @param buffer host memory
     * @param mode   the access
     * @return the view; {@link #host()} is a non-owning view of {@code buffer}
     * @throws NullPointerException  if an argument is null
     * @throws BufferClosedException if {@code buffer} is closed
     */
    public static HostView direct(HostBuffer buffer, Mode mode) {
        Objects.requireNonNull(buffer, "buffer");
        Objects.requireNonNull(mode, "mode");
        return new HostView(buffer, HostBuffer.wrap(buffer.dtype(), buffer.shape(), buffer.segment()), mode, false);
    }

    /**
     * A staged host copy of a buffer that is not host memory; what {@link Buffer#hostView} does by
     * default.
     *
     * @param buffer any buffer supporting {@link Buffer#copyTo} / {@link Buffer#copyFrom}
     * @param mode   the access
     * @return the view; its staged copy is freed by {@link #close()}
     * @throws NullPointerException  if an argument is null
     * @throws BufferClosedException if {@code buffer} is closed
     */
    public static HostView staged(Buffer buffer, Mode mode) {
        Objects.requireNonNull(buffer, "buffer");
        Objects.requireNonNull(mode, "mode");
        if (buffer.isClosed()) {
            throw new BufferClosedException(buffer.toString());
        }
        HostBuffer h = HostBuffer.allocate(buffer.dtype(), buffer.shape());
        try {
            if (mode.reads()) {
                buffer.copyTo(h);
            }
        } catch (RuntimeException e) {
            h.close();
            throw e;
        }
        return new HostView(buffer, h, mode, true);
    }

    /**
     * Returns the host values: valid until {@link #close()}.
     * @return the host values: valid until {@link #close()}
     * @throws BufferClosedException after close
     */
    public HostBuffer host() {
        if (closed) {
            throw new BufferClosedException("HostView of " + target);
        }
        return host;
    }

    /**
     * Returns whether the values were copied (the buffer is not host memory).
     * @return whether the values were copied (the buffer is not host memory)
     */
    public boolean isStaged() {
        return staged;
    }

    /**
     * Ends the access: a staged copy is uploaded (modes that write) and freed. A direct view's
     * {@link #host()} stays usable as long as the buffer itself (it is the buffer's memory).
     * Idempotent.
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (!staged) {
            return;
        }
        try {
            if (mode.writes()) {
                target.copyFrom(host);
            }
        } finally {
            host.close();
        }
    }

    /**
     * Ends the access without writing anything back (e.g. after a failed load, so the buffer stays
     * unchanged when staged). Writes already made through a direct view stay. Idempotent.
     */
    public void abandon() {
        if (closed) {
            return;
        }
        closed = true;
        if (staged) {
            host.close();
        }
    }
}
