package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.backend.Backend;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.backend.PooledBackend;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.buffer.HostView;

/**
 * {@link Backend#hostReadCount()} on the CUDA backend counts every device-to-host read exactly once
 * (copyTo, toHost, a reading host view), and nothing else: uploads, device copies, zeroing and
 * writing host views leave it unchanged; the CPU backend always reports 0.
 */
@Tag("gpu")
class HostReadCountGpuTest {
    @BeforeEach
    void gpu() {
        GpuTestSupport.assumeGpu();
    }

    @Test
    void countsEveryDeviceToHostReadAndNothingElse() {
        CudaBackend cuda = new CudaBackend();
        try (PooledBackend pooled = cuda.newPool("HostReadCountGpuTest");
                HostBuffer h = HostBuffer.allocate(DType.F32, Shape.of(4, 8));
                Buffer d = pooled.upload(h);
                Buffer e = pooled.allocate(DType.F32, Shape.of(4, 8))) {
            long before = cuda.hostReadCount();
            ((DeviceBuffer) e).copyFrom((DeviceBuffer) d);
            e.zero();
            try (HostView w = d.hostView(HostView.Mode.WRITE)) {
                w.host().setFloat(0, 1f);
            }
            assertEquals(before, cuda.hostReadCount(), "uploads, device copies, zeroing, write views read nothing back");

            d.copyTo(h);
            assertEquals(before + 1, cuda.hostReadCount(), "copyTo");
            try (HostBuffer t = d.toHost()) {
                assertEquals(1f, t.getFloat(0));
            }
            assertEquals(before + 2, cuda.hostReadCount(), "toHost");
            try (HostView r = d.hostView(HostView.Mode.READ)) {
                assertEquals(1f, r.host().getFloat(0));
            }
            try (HostView rw = d.hostView(HostView.Mode.READ_WRITE)) {
                rw.host().setFloat(1, 2f);
            }
            assertEquals(before + 4, cuda.hostReadCount(), "READ and READ_WRITE views");
            assertEquals(cuda.hostReadCount(), pooled.hostReadCount(), "a pool reports its device's count");
            assertEquals(cuda.hostReadCount(), new CudaBackend().hostReadCount(), "every instance shares the count");
        }
        assertEquals(0L, new CpuBackend().hostReadCount(), "host backends read no device memory");
    }
}
