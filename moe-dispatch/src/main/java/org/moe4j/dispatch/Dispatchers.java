package org.moe4j.dispatch;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.ServiceLoader;

/** The registry of {@link DispatcherProvider}s found on the class path or module path. */
public final class Dispatchers {
    private static volatile Map<String, DispatcherProvider> providers;

    private Dispatchers() {
    }

    private static Map<String, DispatcherProvider> all() {
        Map<String, DispatcherProvider> m = providers;
        if (m == null) {
            synchronized (Dispatchers.class) {
                m = providers;
                if (m == null) {
                    Map<String, DispatcherProvider> found = new LinkedHashMap<>();
                    for (DispatcherProvider p : ServiceLoader.load(DispatcherProvider.class,
                            Dispatchers.class.getClassLoader())) {
                        DispatcherProvider old = found.putIfAbsent(p.id(), p);
                        if (old != null && old.getClass() != p.getClass()) {
                            throw new IllegalStateException("two dispatch strategies are registered as '" + p.id() + "': "
                                    + old.getClass().getName() + " and " + p.getClass().getName());
                        }
                    }
                    m = Collections.unmodifiableMap(found);
                    providers = m;
                }
            }
        }
        return m;
    }

    /**
     * Returns the ids of every registered strategy, in discovery order.
     * @return the ids of every registered strategy, in discovery order
     */
    public static List<String> ids() {
        return new ArrayList<>(all().keySet());
    }

    /**
     * Returns its provider.
     * @param id a strategy name
     * @return its provider
     * @throws IllegalArgumentException naming the id and the registered ones if none answers to it
     */
    public static DispatcherProvider provider(String id) {
        Objects.requireNonNull(id, "dispatch strategy id");
        DispatcherProvider p = all().get(id);
        if (p == null) {
            throw new IllegalArgumentException("no dispatch strategy '" + id + "' is registered; known: " + ids());
        }
        return p;
    }
}
