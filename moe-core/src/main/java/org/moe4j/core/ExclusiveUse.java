package org.moe4j.core;

import java.util.Objects;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Detects concurrent use of an object that is not thread-safe: the object calls {@link #enter}
 * at the start of each public call and {@link #exit} in a {@code finally} block. A call from a
 * second thread while another thread is inside a call throws {@link ConcurrentUseException} naming
 * both calls and both threads; the object is left untouched by the refused call.
 *
 * <p>Re-entrant on the owning thread (a guarded call may call another guarded method of the same
 * object). Sequential use from different threads is allowed: only overlap is refused. The cost is
 * one compare-and-set and one volatile write per call; nothing is allocated.
 *
 * <pre>{@code
 * use.enter("forward");
 * try {
 *     ...
 * } finally {
 *     use.exit();
 * }
 * }</pre>
 */
public final class ExclusiveUse {
    private final String owner;
    private final AtomicReference<Thread> holder = new AtomicReference<>();
    private volatile String call;
    private int depth; // touched only by the holder

    /**
     * Creates a new {@code ExclusiveUse}.
     * @param owner how messages name the guarded object, e.g. {@code "MoeLayer"}
     * @throws NullPointerException if {@code owner} is null
     */
    public ExclusiveUse(String owner) {
        this.owner = Objects.requireNonNull(owner, "owner");
    }

    /**
     * Marks the calling thread as inside {@code method}.
     *
     * @param method the public method being entered, e.g. {@code "forward"}
     * @throws ConcurrentUseException if another thread is inside a call of the same object
     */
    public void enter(String method) {
        Thread me = Thread.currentThread();
        if (holder.get() == me) {
            depth++;
            return;
        }
        if (!holder.compareAndSet(null, me)) {
            Thread other = holder.get();
            String running = call;
            throw new ConcurrentUseException(owner + "." + method + " called on thread '" + me.getName() + "' while "
                    + owner + "." + (running != null ? running : "(a call)") + " is running on thread '"
                    + (other != null ? other.getName() : "?") + "': one " + owner
                    + " must not be used by two threads at once (see docs/architecture.md, threading contract)");
        }
        call = method;
        depth = 1;
    }

    /** Leaves the call entered last by this thread; a no-op on any thread that holds no call. */
    public void exit() {
        if (holder.get() != Thread.currentThread()) {
            return;
        }
        if (--depth == 0) {
            call = null;
            holder.set(null);
        }
    }

    /**
     * Returns the method a thread is inside now, or null when the object is idle.
     * @return the method a thread is inside now, or null when the object is idle
     */
    public String current() {
        return holder.get() == null ? null : call;
    }
}
