package org.moe4j.core.backend;

import java.util.concurrent.atomic.AtomicBoolean;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

/**
 * Test backend registered through src/test/resources: priority above cpu, available only while a
 * test switches it on (so other tests in this module still select cpu automatically).
 */
public final class FakeAccelBackend implements Backend {
    /** Name used by {@code moe4j.backend=fake-accel}. */
    public static final String NAME = "fake-accel";
    /** Whether {@link #probe()} reports the backend available. */
    static final AtomicBoolean ENABLED = new AtomicBoolean();

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public int priority() {
        return 100;
    }

    @Override
    public Availability probe() {
        return ENABLED.get() ? Availability.yes("fake accelerator") : Availability.no("fake-accel switched off");
    }

    @Override
    public Buffer allocate(DType dtype, Shape shape) {
        return HostBuffer.allocate(dtype, shape);
    }
}
