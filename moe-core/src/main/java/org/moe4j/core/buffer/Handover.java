package org.moe4j.core.buffer;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * Ownership handover in one place: resources made while building a result are {@link #own owned}
 * here, the ones that become the result are {@link #release released} to the caller, and
 * {@link #close()} closes the rest, newest first, so a failure half-way leaks nothing.
 *
 * <pre>{@code
 * try (Handover h = new Handover()) {
 *     Buffer a = h.own(backend.allocate(...));
 *     Buffer out = h.own(backend.allocate(...));
 *     kernels.run(a, out);                 // may throw: a and out are closed
 *     return h.release(out);               // out goes to the caller; a is closed
 * }
 * }</pre>
 *
 * <p>Failures while closing do not hide the failure that got us there: when {@code close()} runs
 * because of an exception, try-with-resources attaches close failures to it as suppressed; when it
 * runs normally the first close failure is thrown with later ones attached. Not thread-safe.
 */
public final class Handover implements AutoCloseable {
    /** An owned resource and how to dispose of it. */
    private record Entry(Object resource, AutoCloseable closer) {
    }

    private final List<Entry> owned = new ArrayList<>();

    /** An empty handover. */
    public Handover() {
    }

    /**
     * Returns {@code resource}.
     * @param resource a resource to close unless released (null is ignored)
     * @param <T>      its type
     * @return {@code resource}
     */
    public <T extends AutoCloseable> T own(T resource) {
        if (resource != null) {
            owned.add(new Entry(resource, resource));
        }
        return resource;
    }

    /**
     * Owns a resource that is disposed of another way than {@code close()} (e.g. scratch memory given
     * back to its pool).
     *
     * @param resource the resource (null is ignored)
     * @param dispose  called with {@code resource} unless it is released
     * @param <T>      its type
     * @return {@code resource}
     * @throws NullPointerException if {@code dispose} is null
     */
    public <T> T own(T resource, Consumer<? super T> dispose) {
        Objects.requireNonNull(dispose, "dispose");
        if (resource != null) {
            owned.add(new Entry(resource, () -> dispose.accept(resource)));
        }
        return resource;
    }

    /**
     * Stops owning a resource: the caller (or the result that holds it) now owns it.
     *
     * @param resource a resource owned here (null is returned as is)
     * @param <T>      its type
     * @return {@code resource}
     * @throws IllegalArgumentException if {@code resource} is not owned here
     */
    public <T> T release(T resource) {
        if (resource == null) {
            return null;
        }
        for (int i = owned.size() - 1; i >= 0; i--) {
            if (owned.get(i).resource() == resource) {
                owned.remove(i);
                return resource;
            }
        }
        throw new IllegalArgumentException("Handover does not own " + resource);
    }

    /**
     * Releases everything owned here (the caller now owns all of it).
     */
    public void releaseAll() {
        owned.clear();
    }

    /**
     * Closes every resource still owned, newest first; all are tried.
     *
     * @throws RuntimeException the first close failure (checked ones wrapped in
     *                          {@link IllegalStateException}), later failures attached as suppressed
     */
    @Override
    public void close() {
        List<Entry> rest = new ArrayList<>(owned);
        owned.clear();
        RuntimeException first = null;
        for (int i = rest.size() - 1; i >= 0; i--) {
            first = closeOne(rest.get(i).closer(), first);
        }
        if (first != null) {
            throw first;
        }
    }

    /**
     * Closes each resource (nulls skipped), last first; all are tried.
     *
     * @param resources the resources
     * @throws RuntimeException the first close failure, later ones attached as suppressed
     */
    public static void closeAll(AutoCloseable... resources) {
        Objects.requireNonNull(resources, "resources");
        RuntimeException first = null;
        for (int i = resources.length - 1; i >= 0; i--) {
            if (resources[i] != null) {
                first = closeOne(resources[i], first);
            }
        }
        if (first != null) {
            throw first;
        }
    }

    private static RuntimeException closeOne(AutoCloseable c, RuntimeException first) {
        try {
            c.close();
            return first;
        } catch (Exception e) {
            RuntimeException r = e instanceof RuntimeException re ? re
                    : new IllegalStateException("closing " + c + " failed", e);
            if (first == null) {
                return r;
            }
            first.addSuppressed(r);
            return first;
        }
    }
}
