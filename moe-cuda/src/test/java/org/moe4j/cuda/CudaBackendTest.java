package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Availability;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.Backends;

/** The backend's registration and its probe on this host (with or without a GPU). */
class CudaBackendTest {
    @Test
    void cudaBackendIsRegisteredThroughServiceLoaderWithPriority100() {
        Backend cuda = Backends.all().stream().filter(b -> b.name().equals("cuda")).findFirst().orElseThrow();
        assertTrue(cuda instanceof CudaBackend);
        assertEquals(100, cuda.priority());
        assertTrue(Backends.all().stream().anyMatch(b -> b.name().equals("cpu")));
    }

    @Test
    void probeNeverThrowsAndAlwaysExplains() {
        Availability a = new CudaBackend().probe();
        System.out.println("cuda probe: " + a);
        assertFalse(a.reason() == null || a.reason().isBlank());
        if (a.available()) {
            assertTrue(a.reason().startsWith("cuda:"), a.reason());
            assertTrue(a.reason().contains("compute capability"), a.reason());
        } else {
            String r = a.reason();
            assertTrue(r.startsWith("no CUDA driver: libcuda") || r.startsWith("no CUDA device visible")
                    || r.startsWith(KernelsNotBuiltException.REASON) || r.startsWith("the CUDA driver failed")
                    || r.contains("compute capability"), r);
        }
    }

    @Test
    void withoutAGpuAllocateAndNamedSelectionRefuseWithTheProbeReason() {
        CudaBackend backend = new CudaBackend();
        Availability a = backend.probe();
        assumeFalse(a.available(), "this host has a usable GPU; the refusal path is not reachable here");
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> backend.allocate(DType.F32, Shape.of(4)));
        assertEquals("CUDA backend unavailable: " + a.reason(), e.getMessage());
        IllegalStateException sel = assertThrows(IllegalStateException.class, () -> Backends.choose("cuda"));
        assertEquals("moe4j.backend=cuda requested but unavailable: " + a.reason(), sel.getMessage());
        assertEquals("cpu", Backends.choose("auto").name(), "auto falls back to the CPU, logging why");
        assertTrue(backend.describe().startsWith("cuda (unavailable: "), backend.describe());
    }

    @Test
    void deviceOrdinalComesFromThePropertyAndBadValuesAreRefused() {
        String old = System.getProperty(CudaBackend.DEVICE_PROPERTY);
        try {
            System.setProperty(CudaBackend.DEVICE_PROPERTY, "3");
            assertEquals(3, CudaBackend.deviceOrdinal());
            System.setProperty(CudaBackend.DEVICE_PROPERTY, "gpu3");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, CudaBackend::deviceOrdinal);
            assertEquals("system property moe4j.cuda.device='gpu3' is not an integer (allowed: 0 to 2147483647)",
                    e.getMessage());
            System.setProperty(CudaBackend.DEVICE_PROPERTY, "-1");
            e = assertThrows(IllegalArgumentException.class, CudaBackend::deviceOrdinal);
            assertEquals("system property moe4j.cuda.device='-1' is out of range (allowed: 0 to 2147483647)",
                    e.getMessage());
        } finally {
            if (old == null) {
                System.clearProperty(CudaBackend.DEVICE_PROPERTY);
            } else {
                System.setProperty(CudaBackend.DEVICE_PROPERTY, old);
            }
        }
    }
}
