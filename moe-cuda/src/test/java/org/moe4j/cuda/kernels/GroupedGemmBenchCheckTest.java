package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;
import org.moe4j.cuda.GpuTestSupport;

/** The grouped-GEMM benchmark's output check: poison every byte, find the elements a path never wrote. */
class GroupedGemmBenchCheckTest {
    @Test
    void anElementStillHoldingThePoisonIsReportedWithItsIndex() {
        try (HostBuffer h = HostBuffer.allocate(DType.F32, 4, 5)) {
            assertNull(GroupedGemmGpuBench.unwritten(h), "zeros are written values");
            h.segment().setAtIndex(ValueLayout.JAVA_INT_UNALIGNED, 7, GroupedGemmGpuBench.POISON_BITS);
            h.segment().setAtIndex(ValueLayout.JAVA_INT_UNALIGNED, 19, GroupedGemmGpuBench.POISON_BITS);
            assertEquals("2 of 20 elements never written (first: element 7)", GroupedGemmGpuBench.unwritten(h));
            assertTrue(Float.isNaN(h.getFloat(7)), "the poison is a NaN, so the relative error is infinite too");
        }
    }

    @Test
    @Tag("gpu")
    void poisonFillsEveryByteOfTheDeviceBufferOnTheBackendStream() {
        GpuTestSupport.assumeGpu();
        CudaBackend backend = new CudaBackend();
        try (DeviceBuffer out = backend.pool().allocate(DType.F32, Shape.of(3, 33))) {
            GroupedGemmGpuBench.poison(backend, out);
            try (HostBuffer got = out.toHost()) {
                assertEquals("99 of 99 elements never written (first: element 0)", GroupedGemmGpuBench.unwritten(got));
            }
            out.zero();
            try (HostBuffer got = out.toHost()) {
                assertNull(GroupedGemmGpuBench.unwritten(got));
            }
        }
    }
}
