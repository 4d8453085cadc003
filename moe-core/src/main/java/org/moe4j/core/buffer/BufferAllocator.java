package org.moe4j.core.buffer;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Accounting of buffer memory: every owning {@link HostBuffer} is registered with one allocator,
 * which counts its live bytes and buffers and can list them, with their allocation sites when
 * {@value #DEBUG_PROPERTY}{@code =true} (off by default: recording a site costs a stack walk per
 * allocation). Device backends may register their buffers too (see {@link #register}).
 *
 * <p>Allocators form a tree under {@link #root()}: a layer makes a {@link #newChild child} for its
 * state and steps; the counts of a parent include its children's. {@link #close()} fails loudly
 * with {@link MemoryLeakException} ({@code memory leaked}) when buffers are still live, after
 * freeing them, in the manner of Arrow's {@code BufferAllocator}.
 *
 * <p>Which allocator a new host buffer belongs to: the allocator of the innermost active
 * {@link BufferScope} on the allocating thread that has one, else {@link #root()}
 * ({@link #current()}). Thread-safe.
 */
public final class BufferAllocator implements AutoCloseable {
    /** System property that records the allocation site of every buffer ({@code true}/{@code false}). */
    public static final String DEBUG_PROPERTY = "moe4j.memory.debug";

    private static final AtomicLong IDS = new AtomicLong();
    private static final BufferAllocator ROOT = new BufferAllocator("root", null);
    private static final StackWalker WALKER = StackWalker.getInstance();

    private final String name;
    private final BufferAllocator parent;
    private final Map<Long, Allocation> live = new ConcurrentHashMap<>();
    private final List<BufferAllocator> children = new CopyOnWriteArrayList<>();
    private final AtomicLong liveBytes = new AtomicLong();
    private final AtomicLong peakBytes = new AtomicLong();
    private final AtomicLong allocations = new AtomicLong();
    private volatile boolean closed;

    private BufferAllocator(String name, BufferAllocator parent) {
        this.name = name;
        this.parent = parent;
    }

    /**
     * Returns the process-wide root allocator (never closed).
     * @return the process-wide root allocator (never closed)
     */
    public static BufferAllocator root() {
        return ROOT;
    }

    /**
     * Returns the allocator of the innermost active {@link BufferScope} on this thread that has one, else {@link #root()}.
     * @return the allocator of the innermost active {@link BufferScope} on this thread that has one,
     *         else {@link #root()}
     */
    public static BufferAllocator current() {
        BufferAllocator a = BufferScope.currentAllocator();
        return a != null ? a : ROOT;
    }

    /**
     * Returns whether allocation sites are recorded now ({@value #DEBUG_PROPERTY}).
     * @return whether allocation sites are recorded now ({@value #DEBUG_PROPERTY})
     */
    public static boolean debugEnabled() {
        return Boolean.getBoolean(DEBUG_PROPERTY);
    }

    /**
     * Returns an id that is smaller than the id of every buffer registered after this call (see {@link #liveSince(long)}).
     * @return an id that is smaller than the id of every buffer registered after this call (see
     *         {@link #liveSince(long)})
     */
    public static long mark() {
        return IDS.get();
    }

    /**
     * A child allocator: its buffers count in this allocator too.
     *
     * @param childName name used in reports, e.g. {@code MoeLayer rank 0}
     * @return the open child
     * @throws NullPointerException  if {@code childName} is null
     * @throws IllegalStateException if this allocator is closed
     */
    public BufferAllocator newChild(String childName) {
        Objects.requireNonNull(childName, "childName");
        if (closed) {
            throw new BufferClosedException(describe());
        }
        BufferAllocator c = new BufferAllocator(childName, this);
        children.add(c);
        return c;
    }

    /**
     * Makes this allocator count the buffers allocated on this thread until the returned handle
     * closes, without owning them (they still belong to the active {@link BufferScope}, if any). A
     * layer wraps its calls in this, so what it hands out is counted, and reported on close, in the
     * layer's allocator.
     *
     * @return the activation; close it (on this thread, innermost first) to stop
     * @throws BufferClosedException if this allocator is closed
     */
    public BufferScope.Activation use() {
        if (closed) {
            throw new BufferClosedException(describe());
        }
        return BufferScope.use(this);
    }

    /**
     * Returns the name (a child's name is prefixed with its parent's, e.g. {@code root/MoeLayer rank 0}).
     * @return the name (a child's name is prefixed with its parent's, e.g. {@code root/MoeLayer rank 0})
     */
    public String name() {
        return parent == null ? name : parent.name() + "/" + name;
    }

    /**
     * Returns the parent, or null for the root.
     * @return the parent, or null for the root
     */
    public BufferAllocator parent() {
        return parent;
    }

    /**
     * Returns bytes of the live buffers of this allocator and its children.
     * @return bytes of the live buffers of this allocator and its children
     */
    public long liveBytes() {
        return liveBytes.get();
    }

    /**
     * Returns the most bytes live at once in this allocator and its children.
     * @return the most bytes live at once in this allocator and its children
     */
    public long peakBytes() {
        return peakBytes.get();
    }

    /**
     * Returns live buffers of this allocator and its open children.
     * @return live buffers of this allocator and its open children
     */
    public int liveCount() {
        int n = live.size();
        for (BufferAllocator c : children) {
            n += c.liveCount();
        }
        return n;
    }

    /**
     * Returns buffers ever registered with this allocator and its children.
     * @return buffers ever registered with this allocator and its children
     */
    public long allocationCount() {
        return allocations.get();
    }

    /**
     * Returns true after {@link #close()}.
     * @return true after {@link #close()}
     */
    public boolean isClosed() {
        return closed;
    }

    /**
     * Registers a newly allocated buffer: counts its bytes here and in every ancestor, and hands it
     * to the current {@link BufferScope} of this thread (if any). The owner of the memory calls
     * {@link Allocation#release()} exactly when it frees it.
     *
     * @param buffer the buffer (its {@link Buffer#byteSize()} is counted)
     * @return the registration to release on free
     * @throws NullPointerException  if {@code buffer} is null
     * @throws BufferClosedException if this allocator is closed
     */
    public Allocation register(Buffer buffer) {
        Objects.requireNonNull(buffer, "buffer");
        if (closed) {
            throw new BufferClosedException(describe());
        }
        String site = debugEnabled() ? callSite() : null;
        Allocation a = new Allocation(this, buffer, IDS.incrementAndGet(), buffer.byteSize(), site);
        live.put(a.id, a);
        for (BufferAllocator p = this; p != null; p = p.parent) {
            long now = p.liveBytes.addAndGet(a.bytes);
            p.peakBytes.accumulateAndGet(now, Math::max);
            p.allocations.incrementAndGet();
        }
        BufferScope.track(buffer);
        return a;
    }

    private void release(Allocation a) {
        if (live.remove(a.id) != null) {
            for (BufferAllocator p = this; p != null; p = p.parent) {
                p.liveBytes.addAndGet(-a.bytes);
            }
        }
    }

    /**
     * Returns one line per live buffer of this allocator and its children, oldest first, with its allocation site when it was recorded.
     * @return one line per live buffer of this allocator and its children, oldest first, with its
     *         allocation site when it was recorded
     */
    public List<String> liveBuffers() {
        return liveSince(0);
    }

    /**
     * Returns one line per live buffer registered after {@code mark} (this allocator and its children), oldest first.
     * @param mark a value of {@link #mark()}
     * @return one line per live buffer registered after {@code mark} (this allocator and its
     *         children), oldest first
     */
    public List<String> liveSince(long mark) {
        List<Allocation> all = new ArrayList<>();
        collect(all, mark);
        all.sort(Comparator.comparingLong(a -> a.id));
        return all.stream().map(Allocation::describe).toList();
    }

    /**
     * Returns bytes of the live buffers registered after {@code mark}.
     * @param mark a value of {@link #mark()}
     * @return bytes of the live buffers registered after {@code mark}
     */
    public long liveBytesSince(long mark) {
        List<Allocation> all = new ArrayList<>();
        collect(all, mark);
        return all.stream().mapToLong(a -> a.bytes).sum();
    }

    private void collect(List<Allocation> out, long mark) {
        for (Allocation a : live.values()) {
            if (a.id > mark) {
                out.add(a);
            }
        }
        for (BufferAllocator c : children) {
            c.collect(out, mark);
        }
    }

    /**
     * Closes this allocator and its children. Buffers still live are freed and reported.
     *
     * @throws MemoryLeakException listing every live buffer (with its site under
     *                             {@value #DEBUG_PROPERTY}) if any was live
     * @throws UnsupportedOperationException for the {@link #root()} allocator
     */
    @Override
    public void close() {
        if (parent == null) {
            throw new UnsupportedOperationException("the root allocator cannot be closed");
        }
        if (closed) {
            return;
        }
        List<Allocation> leaked = new ArrayList<>();
        collect(leaked, 0);
        leaked.sort(Comparator.comparingLong(a -> a.id));
        markClosed();
        parent.children.remove(this);
        if (leaked.isEmpty()) {
            return;
        }
        long bytes = 0;
        RuntimeException closing = null;
        for (Allocation a : leaked) {
            bytes += a.bytes;
            try {
                a.buffer.close();
            } catch (RuntimeException e) {
                closing = closing == null ? e : closing;
            }
        }
        MemoryLeakException leak = new MemoryLeakException(name(), leaked.stream().map(Allocation::describe).toList(),
                bytes);
        if (closing != null) {
            leak.addSuppressed(closing);
        }
        throw leak;
    }

    private void markClosed() {
        closed = true;
        for (BufferAllocator c : children) {
            c.markClosed();
        }
    }

    private String describe() {
        return "BufferAllocator[" + name() + "]";
    }

    @Override
    public String toString() {
        return describe() + "(" + liveCount() + " live, " + liveBytes() + " bytes" + (closed ? ", closed" : "") + ")";
    }

    private static String callSite() {
        return WALKER.walk(frames -> frames
                .filter(f -> !internalFrame(f.getClassName()))
                .limit(4)
                .map(f -> f.getClassName() + "." + f.getMethodName() + ":" + f.getLineNumber())
                .reduce((a, b) -> a + " < " + b)
                .orElse("?"));
    }

    private static boolean internalFrame(String cls) {
        for (String c : INTERNAL) {
            if (cls.equals(c) || cls.startsWith(c + "$")) {
                return true;
            }
        }
        return false;
    }

    /** Frames skipped in allocation sites: the allocation machinery itself. */
    private static final List<String> INTERNAL = List.of(BufferAllocator.class.getName(), HostBuffer.class.getName(),
            Buffer.class.getName(), BufferScope.class.getName(), "org.moe4j.core.backend.Backend",
            "org.moe4j.core.backend.CpuBackend", "org.moe4j.core.backend.Scratch");

    /** One registered buffer; released by the buffer's owner when the memory is freed. */
    public static final class Allocation {
        private final BufferAllocator allocator;
        private final Buffer buffer;
        private final long id;
        private final long bytes;
        private final String site;

        private Allocation(BufferAllocator allocator, Buffer buffer, long id, long bytes, String site) {
            this.allocator = allocator;
            this.buffer = buffer;
            this.id = id;
            this.bytes = bytes;
            this.site = site;
        }

        /**
         * Returns the allocator the buffer belongs to.
         * @return the allocator the buffer belongs to
         */
        public BufferAllocator allocator() {
            return allocator;
        }

        /**
         * Returns the allocation site, or null when {@value #DEBUG_PROPERTY} was off.
         * @return the allocation site, or null when {@value #DEBUG_PROPERTY} was off
         */
        public String site() {
            return site;
        }

        /** Uncounts the buffer (idempotent); call when its memory is freed. */
        public void release() {
            allocator.release(this);
        }

        String describe() {
            String d = "#" + id + " " + buffer.getClass().getSimpleName() + "[" + buffer.dtype() + " " + buffer.shape()
                    + " on " + buffer.device() + ", " + bytes + " bytes] in " + allocator.name();
            return d + (site != null ? " allocated at " + site
                    : " (allocation site: run with -D" + DEBUG_PROPERTY + "=true)");
        }
    }
}
