package org.moe4j.core.buffer;

import java.util.List;
import java.util.Objects;
import java.util.Set;

/**
 * A leak check over a stretch of code: every buffer registered with an allocator under
 * {@link BufferAllocator#root()} after {@link #start()} must be closed by the time of
 * {@link #verify}. Tests run under it (each module's JUnit extension); applications can use it
 * around a step.
 *
 * <pre>{@code
 * LeakCheck check = LeakCheck.start();
 * runStep();
 * check.verify("step 7");   // throws MemoryLeakException naming every buffer still live
 * }</pre>
 *
 * @param mark the {@link BufferAllocator#mark()} taken at the start
 */
public record LeakCheck(long mark) {
    /**
     * Returns a check of everything allocated from now on.
     * @return a check of everything allocated from now on
     */
    public static LeakCheck start() {
        return new LeakCheck(BufferAllocator.mark());
    }

    /**
     * Returns one line per buffer allocated since the start and still live.
     * @return one line per buffer allocated since the start and still live
     */
    public List<String> live() {
        return BufferAllocator.root().liveSince(mark);
    }

    /**
     * Fails if any buffer allocated since the start is still live.
     *
     * @param where names the checked code in the message
     * @throws MemoryLeakException if a buffer allocated since the start is still live
     */
    public void verify(String where) {
        verify(where, Set.of());
    }

    /**
     * Fails if any buffer allocated since the start is still live, except those already reported.
     *
     * @param where   names the checked code in the message
     * @param ignored lines of {@link #live()} already reported elsewhere
     * @throws MemoryLeakException if a buffer allocated since the start, and not in {@code ignored},
     *                             is still live
     */
    public void verify(String where, Set<String> ignored) {
        Objects.requireNonNull(where, "where");
        Objects.requireNonNull(ignored, "ignored");
        List<String> leaked = live().stream().filter(l -> !ignored.contains(l)).toList();
        if (!leaked.isEmpty()) {
            throw new MemoryLeakException(where, leaked, BufferAllocator.root().liveBytesSince(mark));
        }
    }
}
