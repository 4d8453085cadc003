package org.moe4j.core.buffer;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Owns the buffers made while it is active, and frees them when it closes, in the manner of DJL's
 * {@code NDManager}: a training step cannot leak.
 *
 * <pre>{@code
 * try (BufferScope step = layer.newScope()) {
 *     MoeLayer.Forward f = layer.forward(x);   // f.output(), the context, dX ... belong to the scope
 *     Buffer kept = step.keep(f.output());     // moved to the enclosing scope (or to the caller)
 * }                                            // everything else is freed here
 * }</pre>
 *
 * <p>A scope opened with {@link #open} is <em>active</em> on the opening thread until it closes:
 * every owning buffer allocated on that thread meanwhile (host buffers, and device buffers of
 * backends that register with a {@link BufferAllocator}) is owned by it. Scopes nest: an inner
 * scope is active until it closes, then its enclosing scope is again. {@link #keep} moves a buffer
 * to the enclosing scope, {@link #detach} hands it to the caller (who closes it), {@link #own}
 * adopts a buffer made elsewhere. Closing a buffer explicitly before the scope closes is harmless
 * (closing is idempotent), so the explicit {@code close()} style keeps working inside scopes.
 *
 * <p>A scope made with {@link #detached} is not active anywhere; it owns long-lived state (a
 * layer's weights, gradients and optimiser moments) and is made active for a while with
 * {@link #enter()}. A scope may carry a {@link BufferAllocator}: host buffers made while it is the
 * innermost scope with an allocator are counted there.
 *
 * <p>A scope is used by one thread at a time; {@link #close()} of an active scope must happen on
 * the thread that opened it.
 */
public final class BufferScope implements AutoCloseable {
    private static final ThreadLocal<Frame> ACTIVE = new ThreadLocal<>();
    /** Owned lists are pruned of closed buffers when they grow past this many entries. */
    private static final int PRUNE_MIN = 64;

    /**
     * One activation on a thread's stack: a scope (which owns and may count), or an allocator alone
     * (counts, owns nothing: {@link BufferAllocator#use()}).
     */
    private record Frame(BufferScope scope, BufferAllocator allocator, Frame below) {
        BufferAllocator counting() {
            return scope != null ? scope.allocator : allocator;
        }
    }

    private final String name;
    private final BufferScope parent; // receives kept buffers; null: the caller receives them
    private final BufferAllocator allocator; // null: inherit
    private final List<Buffer> owned = new ArrayList<>();
    private int pruneAt = PRUNE_MIN;
    private Thread openedOn; // non-null while opened with open()
    private boolean closed;

    private BufferScope(String name, BufferScope parent, BufferAllocator allocator) {
        this.name = name;
        this.parent = parent;
        this.allocator = allocator;
    }

    /**
     * Opens a scope and makes it the active one on this thread.
     *
     * @return the open scope; close it with try-with-resources
     */
    public static BufferScope open() {
        return open("scope", null);
    }

    /**
     * Returns the open, active scope.
     * @param name name used in messages
     * @return the open, active scope
     * @throws NullPointerException if {@code name} is null
     */
    public static BufferScope open(String name) {
        return open(name, null);
    }

    /**
     * Returns the open, active scope.
     * @param name      name used in messages
     * @param allocator counts the host buffers made while this scope is active, or null to inherit
     *                  the enclosing scope's (or {@link BufferAllocator#root()})
     * @return the open, active scope
     * @throws NullPointerException  if {@code name} is null
     * @throws BufferClosedException if {@code allocator} is closed
     */
    public static BufferScope open(String name, BufferAllocator allocator) {
        Objects.requireNonNull(name, "name");
        if (allocator != null && allocator.isClosed()) {
            throw new BufferClosedException(allocator.toString());
        }
        Frame top = ACTIVE.get();
        BufferScope s = new BufferScope(name, owner(top), allocator);
        s.openedOn = Thread.currentThread();
        ACTIVE.set(new Frame(s, null, top));
        return s;
    }

    /**
     * A scope that is not active: it owns what is made while it is {@linkplain #enter() entered} and
     * what it {@linkplain #own adopts}. {@link #keep} on it is the same as {@link #detach}.
     *
     * @param name      name used in messages
     * @param allocator counts the host buffers made while entered, or null to inherit
     * @return the scope
     * @throws NullPointerException if {@code name} is null
     */
    public static BufferScope detached(String name, BufferAllocator allocator) {
        Objects.requireNonNull(name, "name");
        return new BufferScope(name, null, allocator);
    }

    /**
     * Returns the innermost active scope on this thread, or null when none is.
     * @return the innermost active scope on this thread, or null when none is
     */
    public static BufferScope current() {
        return owner(ACTIVE.get());
    }

    private static BufferScope owner(Frame top) {
        for (Frame f = top; f != null; f = f.below) {
            if (f.scope != null) {
                return f.scope;
            }
        }
        return null;
    }

    static BufferAllocator currentAllocator() {
        for (Frame f = ACTIVE.get(); f != null; f = f.below) {
            BufferAllocator a = f.counting();
            if (a != null) {
                return a;
            }
        }
        return null;
    }

    /** Pushes an allocator-only frame: see {@link BufferAllocator#use()}. */
    static Activation use(BufferAllocator allocator) {
        Frame f = new Frame(null, allocator, ACTIVE.get());
        ACTIVE.set(f);
        return new Activation(f);
    }

    /**
     * Hands a newly allocated buffer to the innermost active scope of this thread, if any. Called by
     * {@link BufferAllocator#register}; backends whose buffers do not register with an allocator
     * call it themselves for every owning buffer they create.
     *
     * @param buffer the new owning buffer
     */
    public static void track(Buffer buffer) {
        BufferScope s = current();
        if (s != null && buffer != null) {
            s.add(buffer);
        }
    }

    /**
     * Makes this scope the active one on this thread until the returned handle closes (nesting like
     * {@link #open}).
     *
     * @return the activation; close it to return to the previous scope
     * @throws BufferClosedException if this scope is closed
     */
    public Activation enter() {
        check();
        Frame top = ACTIVE.get();
        Frame f = new Frame(this, null, top);
        ACTIVE.set(f);
        return new Activation(f);
    }

    /** An {@link #enter()} of a scope; closing it makes the previous scope active again. */
    public static final class Activation implements AutoCloseable {
        private final Frame frame;
        private boolean done;

        private Activation(Frame frame) {
            this.frame = frame;
        }

        /**
         * Leaves the scope (the scope stays open).
         *
         * @throws IllegalStateException if called on another thread or out of nesting order
         */
        @Override
        public void close() {
            if (done) {
                return;
            }
            if (ACTIVE.get() != frame) {
                throw new IllegalStateException((frame.scope != null ? "BufferScope " + frame.scope.name
                        : frame.allocator.toString()) + ": activations must be closed on their thread, innermost first");
            }
            done = true;
            ACTIVE.set(frame.below);
        }
    }

    /**
     * Returns the name.
     * @return the name
     */
    public String name() {
        return name;
    }

    /**
     * Returns the allocator this scope counts its new host buffers in, or null when it inherits.
     * @return the allocator this scope counts its new host buffers in, or null when it inherits
     */
    public BufferAllocator allocator() {
        return allocator;
    }

    /**
     * Adopts a buffer: it is freed when this scope closes (unless kept or detached first).
     *
     * @param buffer the buffer
     * @param <B>    its type
     * @return {@code buffer}
     * @throws NullPointerException  if {@code buffer} is null
     * @throws BufferClosedException if this scope is closed
     */
    public <B extends Buffer> B own(B buffer) {
        Objects.requireNonNull(buffer, "buffer");
        check();
        if (!owns(buffer)) {
            add(buffer);
        }
        return buffer;
    }

    /**
     * Moves a buffer out of this scope to the enclosing scope (the scope active when this one was
     * opened); with no enclosing scope the caller owns it.
     *
     * @param buffer a buffer this scope owns
     * @param <B>    its type
     * @return {@code buffer}
     * @throws IllegalArgumentException if this scope does not own {@code buffer}
     * @throws BufferClosedException    if this scope is closed
     */
    public <B extends Buffer> B keep(B buffer) {
        detach(buffer);
        if (parent != null && !parent.closed) {
            parent.add(buffer);
        }
        return buffer;
    }

    /**
     * Removes a buffer from this scope: the caller owns it and closes it.
     *
     * @param buffer a buffer this scope owns
     * @param <B>    its type
     * @return {@code buffer}
     * @throws IllegalArgumentException if this scope does not own {@code buffer}
     * @throws BufferClosedException    if this scope is closed
     */
    public <B extends Buffer> B detach(B buffer) {
        Objects.requireNonNull(buffer, "buffer");
        check();
        for (int i = owned.size() - 1; i >= 0; i--) {
            if (owned.get(i) == buffer) {
                owned.remove(i);
                return buffer;
            }
        }
        throw new IllegalArgumentException("BufferScope " + name + " does not own " + buffer);
    }

    /**
     * Returns whether this scope owns it.
     * @param buffer a buffer
     * @return whether this scope owns it
     */
    public boolean owns(Buffer buffer) {
        for (Buffer b : owned) {
            if (b == buffer) {
                return true;
            }
        }
        return false;
    }

    /**
     * Returns number of owned buffers that are still open.
     * @return number of owned buffers that are still open
     */
    public int liveCount() {
        int n = 0;
        for (Buffer b : owned) {
            if (!b.isClosed()) {
                n++;
            }
        }
        return n;
    }

    /**
     * Returns true after {@link #close()}.
     * @return true after {@link #close()}
     */
    public boolean isClosed() {
        return closed;
    }

    private void add(Buffer b) {
        if (closed) {
            return; // a kept buffer whose enclosing scope is gone belongs to the caller
        }
        owned.add(b);
        if (owned.size() >= pruneAt) {
            owned.removeIf(Buffer::isClosed);
            pruneAt = Math.max(PRUNE_MIN, 2 * owned.size());
        }
    }

    private void check() {
        if (closed) {
            throw new BufferClosedException("BufferScope " + name);
        }
    }

    /**
     * Frees every buffer this scope still owns, newest first. An active scope stops being active
     * (scopes opened inside it and still open are closed first). The first failure is thrown after
     * every buffer was tried, later ones attached as suppressed. Idempotent.
     *
     * @throws IllegalStateException if this scope is active on another thread
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        if (openedOn != null) {
            if (openedOn != Thread.currentThread()) {
                throw new IllegalStateException("BufferScope " + name + " was opened on " + openedOn.getName()
                        + " and must be closed there, not on " + Thread.currentThread().getName());
            }
            Frame f = ACTIVE.get();
            while (f != null && f.scope != this) {
                f = f.below;
            }
            if (f != null) {
                for (Frame g = ACTIVE.get(); g != f; g = g.below) {
                    if (g.scope != null && g.scope.openedOn != null) {
                        g.scope.close();
                    }
                }
                ACTIVE.set(f.below);
            }
        }
        closed = true;
        RuntimeException first = null;
        for (int i = owned.size() - 1; i >= 0; i--) {
            try {
                owned.get(i).close();
            } catch (RuntimeException e) {
                if (first == null) {
                    first = e;
                } else {
                    first.addSuppressed(e);
                }
            }
        }
        owned.clear();
        if (first != null) {
            throw first;
        }
    }

    @Override
    public String toString() {
        return "BufferScope[" + name + ", " + owned.size() + " owned" + (closed ? ", closed" : "") + "]";
    }
}
