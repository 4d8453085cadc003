package org.moe4j.dispatch;

import java.util.concurrent.atomic.AtomicInteger;
import org.moe4j.core.backend.Backend;
import org.moe4j.dispatch.internal.AllToAllDispatcher;

/**
 * A strategy from outside moe-dispatch's own registry (registered in the test resources'
 * META-INF/services): the all-to-all dispatcher, counting how many dispatchers it created. Proves a
 * third-party strategy is found by name and used by the layer.
 */
public final class CountingDispatcherProvider implements DispatcherProvider {
    /** The id the tests configure. */
    public static final String ID = "test-counting";
    /** Dispatchers created so far. */
    public static final AtomicInteger CREATED = new AtomicInteger();

    /** Creates the provider (ServiceLoader). */
    public CountingDispatcherProvider() {
    }

    @Override
    public String id() {
        return ID;
    }

    @Override
    public Dispatcher create(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
        CREATED.incrementAndGet();
        return new AllToAllDispatcher(config, comm, backend, kernels);
    }
}
