package org.moe4j.core.backend;

import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;

/** Test backend with the highest priority that is never available (like cuda without a driver). */
public final class FakeBrokenBackend implements Backend {
    /** Name used by {@code moe4j.backend=fake-broken}. */
    public static final String NAME = "fake-broken";

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public int priority() {
        return 200;
    }

    @Override
    public Availability probe() {
        return Availability.no("no fake device (driver missing)");
    }

    @Override
    public Buffer allocate(DType dtype, Shape shape) {
        throw new IllegalStateException("fake-broken cannot allocate");
    }
}
