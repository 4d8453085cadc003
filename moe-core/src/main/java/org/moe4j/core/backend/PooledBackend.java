package org.moe4j.core.backend;

/**
 * A backend with its own memory pool ({@link Backend#newPool(String)}): it allocates and runs like
 * the backend it came from, counts its allocations separately, and {@link #close()} fails loudly
 * ({@code memory leaked}, listing the live buffers) when some are still live. A layer holds one for
 * its lifetime, so device memory it forgot to free is reported when the layer closes.
 */
public interface PooledBackend extends Backend, AutoCloseable {
    /**
     * Closes the pool. Buffers still live are freed and reported.
     *
     * @throws IllegalStateException {@code memory leaked ...} if buffers of this pool were still live
     */
    @Override
    void close();

    /**
     * The pool of a backend whose memory is already accounted elsewhere (host memory: the
     * {@link org.moe4j.core.buffer.BufferAllocator} tree): the same backend, and {@link #close()}
     * does nothing.
     *
     * @param backend the backend
     * @return a pooled view of it
     */
    static PooledBackend unpooled(Backend backend) {
        java.util.Objects.requireNonNull(backend, "backend");
        return new PooledBackend() {
            @Override
            public String name() {
                return backend.name();
            }

            @Override
            public int priority() {
                return backend.priority();
            }

            @Override
            public Availability probe() {
                return backend.probe();
            }

            @Override
            public org.moe4j.core.buffer.Buffer allocate(org.moe4j.core.DType dtype, org.moe4j.core.Shape shape) {
                return backend.allocate(dtype, shape);
            }

            @Override
            public org.moe4j.core.buffer.Buffer upload(org.moe4j.core.buffer.HostBuffer src) {
                return backend.upload(src);
            }

            @Override
            public Scratch newScratch() {
                return backend.newScratch();
            }

            @Override
            public PooledBackend newPool(String name) {
                return backend.newPool(name);
            }

            @Override
            public String describe() {
                return backend.describe();
            }

            @Override
            public long hostReadCount() {
                return backend.hostReadCount();
            }

            @Override
            public void close() {
            }
        };
    }
}
