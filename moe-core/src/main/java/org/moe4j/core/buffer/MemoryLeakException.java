package org.moe4j.core.buffer;

import java.util.List;

/**
 * Thrown when an allocator or a leak check finds buffers that nobody closed: the message says
 * {@code memory leaked} and lists each live buffer, with its allocation site when
 * {@value BufferAllocator#DEBUG_PROPERTY}{@code =true}.
 */
public final class MemoryLeakException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /** One line per leaked buffer. */
    private final transient List<String> leaked;
    /** Total size of the leaked buffers. */
    private final long bytes;

    /**
     * Creates the exception.
     * @param where  the allocator or check that found the leak
     * @param leaked one line per live buffer
     * @param bytes  their total size
     */
    public MemoryLeakException(String where, List<String> leaked, long bytes) {
        super(where + ": memory leaked: " + leaked.size() + " live buffer(s), " + bytes + " bytes:\n  "
                + String.join("\n  ", leaked));
        this.leaked = List.copyOf(leaked);
        this.bytes = bytes;
    }

    /**
     * Returns one line per leaked buffer, oldest first.
     * @return one line per leaked buffer, oldest first
     */
    public List<String> leakedBuffers() {
        return leaked;
    }

    /**
     * Returns total size of the leaked buffers.
     * @return total size of the leaked buffers
     */
    public long leakedBytes() {
        return bytes;
    }
}
