package org.moe4j.core.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;

/**
 * Backend selection with two fake backends registered in src/test/resources: fake-broken (priority
 * 200, never available) and fake-accel (priority 100, available only while a test enables it).
 */
class BackendsTest {
    @AfterEach
    void restore() {
        System.clearProperty(Backends.PROPERTY);
        FakeAccelBackend.ENABLED.set(false);
    }

    @Test
    void registeredBackendsAreListedHighestPriorityFirst() {
        List<String> names = Backends.all().stream().map(Backend::name).toList();
        assertEquals(List.of("fake-broken", "fake-accel", "cpu"), names);
    }

    @Test
    void autoPicksTheHighestPriorityAvailableBackend() {
        assertEquals("cpu", Backends.choose("auto").name(), "fake-accel off, fake-broken never available");
        FakeAccelBackend.ENABLED.set(true);
        assertEquals("fake-accel", Backends.choose("auto").name());
    }

    @Test
    void propertyOverridePicksTheNamedBackend() {
        FakeAccelBackend.ENABLED.set(true);
        System.setProperty(Backends.PROPERTY, " CPU ");
        assertEquals("cpu", Backends.requested());
        assertEquals("cpu", Backends.selected().name(), "named cpu wins over a higher-priority available backend");
        System.setProperty(Backends.PROPERTY, "fake-accel");
        assertEquals("fake-accel", Backends.selected().name());
    }

    @Test
    void unknownNameIsAnErrorListingTheRegisteredBackends() {
        System.setProperty(Backends.PROPERTY, "tpu");
        IllegalStateException e = assertThrows(IllegalStateException.class, Backends::selected);
        assertEquals("moe4j.backend=tpu: no such backend; registered: fake-broken, fake-accel, cpu", e.getMessage());
    }

    @Test
    void namedButUnavailableBackendIsAnErrorWithItsReasonNeverAFallback() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> Backends.choose("fake-broken"));
        assertEquals("moe4j.backend=fake-broken requested but unavailable: no fake device (driver missing)",
                e.getMessage());
        e = assertThrows(IllegalStateException.class, () -> Backends.choose("fake-accel"));
        assertEquals("moe4j.backend=fake-accel requested but unavailable: fake-accel switched off", e.getMessage());
    }

    @Test
    void kernelsComeFromTheBackendsOwnProviderElseFromCpu() {
        FakeAccelBackend accel = new FakeAccelBackend();
        assertEquals("accel kernels on fake-accel", Backends.kernels(EchoKernels.class, accel).who());
        assertEquals("cpu kernels on cpu", Backends.kernels(EchoKernels.class, new CpuBackend()).who());
        // fake-broken ships no EchoKernels: the cpu provider is used, on a cpu backend instance
        assertEquals("cpu kernels on cpu", Backends.kernels(EchoKernels.class, new FakeBrokenBackend()).who());
        // the same instance is returned on later calls (providers are created once per backend and family)
        assertTrue(Backends.kernels(EchoKernels.class, accel) == Backends.kernels(EchoKernels.class, accel));
    }

    @Test
    void aProviderMayLookUpAnotherFamilyWhileBeingCreated() {
        assertEquals("cpu kernels on cpu", Backends.kernels(NestedKernels.class, new CpuBackend()).inner());
    }

    @Test
    void aFamilyWithoutAnyProviderIsAnErrorNamingIt() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> Backends.kernels(Runnable.class, new CpuBackend()));
        assertTrue(e.getMessage().startsWith("no kernel provider for java.lang.Runnable"), e.getMessage());
    }

    @Test
    void cpuBackendIsAlwaysAvailableAndAllocatesHostBuffers() {
        CpuBackend cpu = new CpuBackend();
        assertTrue(cpu.probe().available());
        try (Buffer b = cpu.allocate(DType.BF16, Shape.of(2, 3))) {
            assertTrue(b instanceof HostBuffer);
            assertEquals(12, b.byteSize());
        }
    }

    @Test
    void backendForKeepsABackendThatProvidesEveryFamilyElseFallsBackToCpu() {
        FakeAccelBackend accel = new FakeAccelBackend();
        assertEquals(FakeAccelBackend.NAME, Backends.backendFor(accel, EchoKernels.class).name());
        // NestedKernels has only a cpu provider: allocating on fake-accel would hand its buffers to cpu kernels
        assertEquals(CpuBackend.NAME, Backends.backendFor(accel, EchoKernels.class, NestedKernels.class).name());
        assertEquals(CpuBackend.NAME, Backends.backendFor(new CpuBackend(), EchoKernels.class).name());
        FakeAccelBackend.ENABLED.set(true);
        System.setProperty(Backends.PROPERTY, FakeAccelBackend.NAME);
        assertEquals(FakeAccelBackend.NAME, Backends.backendFor(EchoKernels.class).name());
        assertEquals(CpuBackend.NAME, Backends.backendFor(NestedKernels.class).name());
    }

    @Test
    void uploadCopiesHostDataIntoANewBufferOfTheBackend() {
        try (HostBuffer src = HostBuffer.ofFloats(new float[] {1.5f, -2f, 3.25f}, 3);
             Buffer up = new CpuBackend().upload(src)) {
            src.setFloat(0, 9f); // the upload is a copy, not a view
            assertEquals(Shape.of(3), up.shape());
            assertEquals(1.5f, ((HostBuffer) up).getFloat(0));
            assertEquals(3.25f, ((HostBuffer) up).getFloat(2));
        }
    }
}
