package org.moe4j.dispatch.internal;

import org.moe4j.core.backend.Backend;
import org.moe4j.core.config.DispatchOptions;
import org.moe4j.dispatch.Communicator;
import org.moe4j.dispatch.DispatchConfig;
import org.moe4j.dispatch.DispatchKernels;
import org.moe4j.dispatch.Dispatcher;
import org.moe4j.dispatch.DispatcherProvider;

/** The {@link DispatcherProvider}s of the built-in strategies, registered in META-INF/services. */
public final class BuiltinDispatchers {
    private BuiltinDispatchers() {
    }

    /** {@code all-to-all}: count exchange, then all-to-all-v. */
    public static final class AllToAll implements DispatcherProvider {
        /** Creates the provider (ServiceLoader). */
        public AllToAll() {
        }

        @Override
        public String id() {
            return DispatchOptions.ALL_TO_ALL;
        }

        @Override
        public Dispatcher create(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
            return new AllToAllDispatcher(config, comm, backend, kernels);
        }
    }

    /** {@code all-gather}: all-gather + reduce-scatter. */
    public static final class AllGather implements DispatcherProvider {
        /** Creates the provider (ServiceLoader). */
        public AllGather() {
        }

        @Override
        public String id() {
            return DispatchOptions.ALL_GATHER;
        }

        @Override
        public Dispatcher create(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
            return new AllGatherDispatcher(config, comm, backend, kernels);
        }
    }

    /** {@code static-all-to-all}: fixed splits, counts in-band, no device→host read. */
    public static final class StaticAllToAll implements DispatcherProvider {
        /** Creates the provider (ServiceLoader). */
        public StaticAllToAll() {
        }

        @Override
        public String id() {
            return DispatchOptions.STATIC_ALL_TO_ALL;
        }

        @Override
        public boolean hostSyncFree() {
            return true;
        }

        @Override
        public Dispatcher create(DispatchConfig config, Communicator comm, Backend backend, DispatchKernels kernels) {
            return new StaticAllToAllDispatcher(config, comm, backend, kernels);
        }
    }
}
