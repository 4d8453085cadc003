package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.GpuTestSupport;
import org.moe4j.optim.AdamW;
import org.moe4j.optim.Parameter;

/**
 * {@link AdamW#stepOnDevice()} on the CUDA backend: over steps with finite, NaN and infinite
 * gradients, parameters and moments are bitwise those of {@link AdamW#step()} (skipped steps change
 * nothing), no step reads device memory back ({@link CudaBackend#hostReadCount()} unchanged), and the
 * step and skip counts read back on request equal the host-decided ones; a host step after device
 * steps continues from the device counts.
 */
@Tag("gpu")
class AdamWOnDeviceGpuTest {
    static final long[][] SHAPES = {{6, 5}, {7}};
    /** Steps whose gradient of parameter 0 (resp. 1) holds a NaN (resp. an infinity): skipped. */
    static final int NAN_STEP = 2;
    static final int INF_STEP = 4;
    static final int STEPS = 7;

    CudaBackend cuda;
    long seed;

    @BeforeEach
    void setUp() {
        GpuTestSupport.assumeGpu();
        cuda = GpuParity.backend();
        seed = System.nanoTime();
        System.out.println("AdamWOnDeviceGpuTest seed=" + seed);
    }

    private List<Parameter> params(Random g) {
        List<Parameter> ps = new ArrayList<>();
        for (int i = 0; i < SHAPES.length; i++) {
            try (HostBuffer h = HostBuffer.allocate(DType.F32, SHAPES[i])) {
                for (long j = 0; j < h.numel(); j++) {
                    h.setFloat(j, (float) g.nextGaussian());
                }
                ps.add(new Parameter("p" + i, cuda.upload(h), cuda.allocate(DType.F32, h.shape())));
            }
        }
        return ps;
    }

    /** Writes step {@code s}'s gradients (the same values for both optimisers). */
    private static void gradients(List<Parameter> ps, int s, long seed) {
        Random g = new Random(seed * 7 + s);
        for (int i = 0; i < ps.size(); i++) {
            Buffer grad = ps.get(i).grad();
            try (HostBuffer h = HostBuffer.allocate(DType.F32, grad.shape())) {
                for (long j = 0; j < h.numel(); j++) {
                    h.setFloat(j, (float) g.nextGaussian());
                }
                if (s == NAN_STEP && i == 0) {
                    h.setFloat(3, Float.NaN);
                }
                if (s == INF_STEP && i == 1) {
                    h.setFloat(6, Float.NEGATIVE_INFINITY);
                }
                grad.copyFrom(h);
            }
        }
    }

    private static byte[] bytes(Buffer b) {
        try (HostBuffer h = b.toHost()) {
            return h.segment().toArray(ValueLayout.JAVA_BYTE);
        }
    }

    @Test
    void deviceDecidedStepsAreBitwiseTheHostStepsAndReadNothingBack() {
        List<Parameter> host = params(new Random(seed));
        List<Parameter> dev = params(new Random(seed));
        AdamW.Options o = new AdamW.Options(1e-2, 0.9, 0.95, 1e-8, 0.1);
        try (AdamW a = new AdamW(host, o, cuda); AdamW b = new AdamW(dev, o, cuda)) {
            int applied = 0;
            for (int s = 0; s < STEPS; s++) {
                gradients(host, s, seed);
                gradients(dev, s, seed);
                AdamW.StepReport r = a.step();
                long before = cuda.hostReadCount();
                b.stepOnDevice();
                assertEquals(before, cuda.hostReadCount(), "step " + s + ": stepOnDevice read device memory back");
                assertEquals(s != NAN_STEP && s != INF_STEP, r.applied(), "host decision at step " + s);
                applied += r.applied() ? 1 : 0;
                for (int i = 0; i < host.size(); i++) {
                    String at = "step " + s + " parameter " + i + " seed " + seed;
                    assertArrayEquals(bytes(host.get(i).value()), bytes(dev.get(i).value()), at + ": value");
                    assertArrayEquals(bytes(a.firstMoment(host.get(i).value())), bytes(b.firstMoment(dev.get(i).value())),
                            at + ": first moment");
                    assertArrayEquals(bytes(a.secondMoment(host.get(i).value())),
                            bytes(b.secondMoment(dev.get(i).value())), at + ": second moment");
                }
            }
            long before = cuda.hostReadCount();
            assertEquals(a.steps(), b.steps(), "applied steps");
            assertEquals(applied, b.steps(), "applied steps");
            assertEquals(2, b.skippedSteps(), "skipped steps");
            assertTrue(cuda.hostReadCount() > before, "the counts are read back when asked for");
            // a host step continues from the device counts (bias corrections of step applied + 1)
            gradients(host, STEPS, seed);
            gradients(dev, STEPS, seed);
            a.step();
            b.step();
            assertEquals(a.steps(), b.steps());
            for (int i = 0; i < host.size(); i++) {
                assertArrayEquals(bytes(host.get(i).value()), bytes(dev.get(i).value()), "host step after device steps");
            }
            b.stepOnDevice();
            a.step();
            assertEquals(a.steps(), b.steps(), "a device step after a host step starts from the host counts");
            assertArrayEquals(bytes(host.get(0).value()), bytes(dev.get(0).value()), "device step after a host step");
        } finally {
            for (Parameter p : host) {
                p.value().close();
                p.grad().close();
            }
            for (Parameter p : dev) {
                p.value().close();
                p.grad().close();
            }
        }
    }
}
