package org.moe4j.cuda;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.moe4j.core.backend.Availability;
import org.moe4j.core.buffer.HostBuffer;

/** Shared helpers of the {@code @Tag("gpu")} tests: skip with the probe's reason where no GPU can run them. */
public final class GpuTestSupport {
    private GpuTestSupport() {
    }

    /** @return the primary context of the backend's device when a usable GPU is here, else null (tests then skip) */
    public static CudaContext openIfAvailable() {
        return new CudaBackend().probe().available() ? CudaContext.open(CudaBackend.deviceOrdinal()) : null;
    }

    /** @param ctx a context from {@link #openIfAvailable()}, or null */
    public static void closeIfOpen(CudaContext ctx) {
        if (ctx != null) {
            ctx.close();
        }
    }

    /** Skips the calling test (JUnit assumption) with the CUDA probe's reason when no usable GPU is here. */
    public static void assumeGpu() {
        Availability a = new CudaBackend().probe();
        assumeTrue(a.available(), () -> "no usable GPU: " + a.reason());
    }

    /**
     * @param actual   result
     * @param expected reference
     * @return ‖actual − expected‖ / ‖expected‖ over all elements (fp64)
     */
    public static double relativeError(HostBuffer actual, HostBuffer expected) {
        double num = 0;
        double den = 0;
        for (long i = 0; i < expected.numel(); i++) {
            double d = actual.getFloat(i) - (double) expected.getFloat(i);
            num += d * d;
            den += (double) expected.getFloat(i) * expected.getFloat(i);
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }
}
