package org.moe4j.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;

/**
 * CUDA graphs: capture records the work instead of running it, replay re-issues it with the current
 * contents of the fixed input buffers, update swaps parameters, and a host synchronisation inside the
 * capture is refused with a clear message. Runs on a GPU or on the CPU device.
 */
@Tag("gpu")
class CudaGraphGpuTest {
    static final int N = 4099;
    static CudaContext ctx;
    Random rnd;

    @BeforeAll
    static void open() {
        ctx = GpuTestSupport.openIfAvailable();
    }

    @AfterAll
    static void close() {
        GpuTestSupport.closeIfOpen(ctx);
    }

    @BeforeEach
    void seed() {
        GpuTestSupport.assumeGpu();
        long seed = System.nanoTime();
        System.out.println("seed=" + seed);
        rnd = new Random(seed);
    }

    private void fill(HostBuffer h) {
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) rnd.nextGaussian());
        }
    }

    /** One step: x in from the host, y += alpha * x, y back to the host. */
    private static void step(CudaFunction saxpy, float alpha, HostBuffer hx, DeviceBuffer dx, DeviceBuffer dy,
            HostBuffer out, CudaStream s) {
        dx.copyFromAsync(hx, s);
        Launch.of(saxpy).grid((N + 255) / 256).block(256).stream(s).arg((long) N).arg(alpha).arg(dx).arg(dy).launch();
        dy.copyToAsync(out, s);
    }

    /**
     * The copies between host memory and the capturing stream are listed (each one touches its host
     * memory at every replay: LayerStepGraph refuses a step that makes one); copies on another stream
     * and copies after the capture are not.
     */
    @Test
    void theHostCopiesQueuedOnTheCapturingStreamAreListed() {
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke"); CudaStream s = ctx.createStream();
                CudaStream other = ctx.createStream(); HostBuffer hx = HostBuffer.allocate(DType.F32, N);
                HostBuffer out = HostBuffer.allocate(DType.F32, N)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            fill(hx);
            try (DeviceBuffer dx = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DeviceBuffer dy = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N))) {
                java.util.List<String> copies = new java.util.ArrayList<>();
                try (CudaGraph g = CudaGraph.capture(s, () -> step(saxpy, 1f, hx, dx, dy, out, s), copies)) {
                    assertEquals(2, copies.size(), copies.toString());
                    assertTrue(copies.get(0).startsWith("host->device copy into DeviceBuffer"), copies.get(0));
                    assertTrue(copies.get(1).startsWith("device->host copy from DeviceBuffer"), copies.get(1));
                }
                java.util.List<String> none = new java.util.ArrayList<>();
                try (CudaGraph g = CudaGraph.capture(s, () -> Launch.of(saxpy).grid((N + 255) / 256).block(256).stream(s)
                        .arg((long) N).arg(1f).arg(dx).arg(dy).launch(), none)) {
                    assertTrue(none.isEmpty(), none.toString());
                }
                dx.copyFromAsync(hx, other); // not capturing: nothing is noted anywhere
                other.synchronize();
                assertTrue(none.isEmpty(), none.toString());
            }
        }
    }

    @Test
    void aCapturedStepRunsNothingUntilReplayedThenReadsTheFixedInputBuffersEachTime() {
        float alpha = (float) rnd.nextGaussian();
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke"); CudaStream s = ctx.createStream();
                HostBuffer hx = HostBuffer.allocate(DType.F32, N); HostBuffer hy = HostBuffer.allocate(DType.F32, N);
                HostBuffer out = HostBuffer.allocate(DType.F32, N)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            fill(hy);
            try (DeviceBuffer dx = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N)); DeviceBuffer dy = pool.copyOf(hy)) {
                boolean[] capturing = new boolean[1];
                try (CudaGraph g = CudaGraph.capture(s, () -> {
                    capturing[0] = CudaGraph.isCapturing(s);
                    step(saxpy, alpha, hx, dx, dy, out, s);
                })) {
                    assertTrue(capturing[0], "the stream captures inside the body");
                    assertFalse(CudaGraph.isCapturing(s));
                    s.synchronize();
                    for (int i = 0; i < N; i++) {
                        assertEquals(0f, out.getFloat(i), "capture executed nothing: out[" + i + "]");
                    }
                    float[] y = hy.toFloatArray();
                    for (int replay = 0; replay < 3; replay++) {
                        fill(hx); // new input, same buffer
                        g.launch();
                        s.synchronize();
                        for (int i = 0; i < N; i++) {
                            y[i] = Math.fma(alpha, hx.getFloat(i), y[i]);
                            assertEquals(y[i], out.getFloat(i), 0f, "replay " + replay + " element " + i);
                        }
                    }
                }
            }
        }
    }

    @Test
    void updateTakesNewParametersAndRefusesAChangedTopologyLeavingTheGraphAsItWas() {
        float alpha = 2f;
        float beta = -0.5f;
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke"); CudaStream s = ctx.createStream();
                HostBuffer hx = HostBuffer.allocate(DType.F32, N); HostBuffer out = HostBuffer.allocate(DType.F32, N)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            fill(hx);
            try (DeviceBuffer dx = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DeviceBuffer dy = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    CudaGraph g = CudaGraph.capture(s, () -> step(saxpy, alpha, hx, dx, dy, out, s))) {
                g.update(() -> step(saxpy, beta, hx, dx, dy, out, s));
                g.launch();
                s.synchronize();
                for (int i = 0; i < N; i++) {
                    assertEquals(Math.fma(beta, hx.getFloat(i), 0f), out.getFloat(i), 0f, "updated alpha, element " + i);
                }
                CudaException e = assertThrows(CudaException.class, () -> g.update(() -> {
                    step(saxpy, alpha, hx, dx, dy, out, s);
                    step(saxpy, alpha, hx, dx, dy, out, s);
                }));
                assertTrue(e.getMessage().contains("TOPOLOGY_CHANGED"), e.getMessage());
                assertEquals("CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE", e.errorName());
                g.launch(); // still the beta graph: y = beta*x + (beta*x)
                s.synchronize();
                for (int i = 0; i < N; i++) {
                    float once = Math.fma(beta, hx.getFloat(i), 0f);
                    assertEquals(Math.fma(beta, hx.getFloat(i), once), out.getFloat(i), 0f, "element " + i);
                }
            }
        }
    }

    @Test
    void ncclCallsInsideTheCaptureAreRecordedAndReplayed() {
        try {
            NcclComm.version();
        } catch (NativeLibraryException e) {
            org.junit.jupiter.api.Assumptions.assumeTrue(false, "libnccl not found: " + e.getMessage());
        }
        try (DevicePool pool = ctx.createPool(); CudaStream s = ctx.createStream();
                NcclComm comm = NcclComm.initRank(ctx, 1, NcclComm.uniqueId(), 0);
                HostBuffer hx = HostBuffer.allocate(DType.F32, N); HostBuffer out = HostBuffer.allocate(DType.F32, N);
                HostBuffer sum = HostBuffer.allocate(DType.F32, N)) {
            try (DeviceBuffer send = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DeviceBuffer self = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DeviceBuffer reduced = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    CudaGraph g = CudaGraph.capture(s, () -> {
                        send.copyFromAsync(hx, s);
                        NcclComm.groupStart();
                        comm.send(send, 0, s);
                        comm.recv(self, 0, s);
                        NcclComm.groupEnd();
                        comm.allReduce(send, reduced, NcclComm.ReduceOp.SUM, s);
                        self.copyToAsync(out, s);
                        reduced.copyToAsync(sum, s);
                    })) {
                for (int replay = 0; replay < 2; replay++) {
                    fill(hx);
                    g.launch();
                    s.synchronize();
                    comm.checkAsyncError();
                    for (int i = 0; i < N; i++) {
                        assertEquals(hx.getFloat(i), out.getFloat(i), 0f, "send/recv replay " + replay + " element " + i);
                        assertEquals(hx.getFloat(i), sum.getFloat(i), 0f, "all-reduce replay " + replay + " element " + i);
                    }
                }
            }
        }
    }

    @Test
    void aDispatchConfigurationThatSynchronisesWithTheHostIsRefusedBeforeCapture() {
        org.moe4j.dispatch.DispatchKernels cpu = new org.moe4j.dispatch.internal.CpuDispatchKernels();
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> CudaGraph.requireCapturable(org.moe4j.core.config.DispatchOptions.DEFAULT, cpu));
        assertTrue(e.getMessage().startsWith("CUDA graph capture refused: dispatch strategy 'all-to-all' reads its "
                + "per-rank counts back to the host every step"), e.getMessage());
        org.moe4j.core.config.DispatchOptions stat = org.moe4j.core.config.DispatchOptions.of("static-all-to-all");
        CudaGraph.requireCapturable(stat, cpu); // host-sync-free strategy, plans built where the buffers live
        org.moe4j.dispatch.DispatchKernels cuda = new org.moe4j.cuda.kernels.CudaDispatchKernels(org.moe4j.core.backend.Backends.choose("cuda"));
        CudaGraph.requireCapturable(stat, cuda); // the CUDA kernels build the static plans on the device
        org.moe4j.dispatch.DispatchKernels staged = new org.moe4j.cuda.kernels.HostStagedStaticPlans(cuda);
        e = assertThrows(IllegalStateException.class, () -> CudaGraph.requireCapturable(stat, staged));
        assertTrue(e.getMessage().contains("builds the static-shape dispatch plans through host staging"), e.getMessage());
    }

    @Test
    void aHostSynchronisationInsideTheCaptureIsRefusedClearlyAndTheStreamStaysUsable() {
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke"); CudaStream s = ctx.createStream();
                HostBuffer hx = HostBuffer.allocate(DType.F32, N); HostBuffer out = HostBuffer.allocate(DType.F32, N)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            fill(hx);
            try (DeviceBuffer dx = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DeviceBuffer dy = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N))) {
                CudaException e = assertThrows(CudaException.class, () -> CudaGraph.capture(s, () -> {
                    step(saxpy, 1f, hx, dx, dy, out, s);
                    s.synchronize(); // the host waits for a device→host read: not capturable
                }));
                assertTrue(e.getMessage().contains("CUDA graph capture refused: the captured code synchronised with the host"),
                        e.getMessage());
                assertEquals("CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", e.errorName());
                assertFalse(CudaGraph.isCapturing(s));
                step(saxpy, 1f, hx, dx, dy, out, s); // eager again
                s.synchronize();
                for (int i = 0; i < N; i++) {
                    assertEquals(hx.getFloat(i), out.getFloat(i), 0f, "element " + i);
                }
                assertThrows(IllegalArgumentException.class, () -> CudaGraph.capture(ctx.defaultStream(), () -> { }));
            }
        }
    }
    /**
     * As the driver does, an operation on the legacy default stream while a blocking stream captures
     * (here the zeroing of a buffer from a pool on the legacy stream) fails with
     * {@code CUDA_ERROR_STREAM_CAPTURE_IMPLICIT} without running and invalidates the capture; the capture
     * is refused naming it, and the stream captures again afterwards.
     */
    @Test
    void aLegacyStreamOperationDuringCaptureFailsAndInvalidatesTheCapture() {
        try (DevicePool legacy = ctx.createPool(); CudaModule m = ctx.loadModule("smoke"); CudaStream s = ctx.createStream();
                HostBuffer hx = HostBuffer.allocate(DType.F32, N); HostBuffer out = HostBuffer.allocate(DType.F32, N)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            fill(hx);
            try (DeviceBuffer dx = legacy.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DeviceBuffer dy = legacy.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DevicePool onStream = ctx.createPool(s)) {
                dy.copyFrom(hx); // non-zero, so a zeroing that ran would show
                CudaException[] inside = new CudaException[1];
                CudaException e = assertThrows(CudaException.class, () -> CudaGraph.capture(s, () -> {
                    step(saxpy, 1f, hx, dx, dy, out, s);
                    try {
                        dy.zeroAsync(ctx.defaultStream());
                    } catch (CudaException planted) {
                        inside[0] = planted;
                        throw planted;
                    }
                }));
                assertEquals("CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", inside[0] == null ? null : inside[0].errorName());
                assertEquals("CUDA_ERROR_STREAM_CAPTURE_IMPLICIT", e.errorName());
                assertTrue(e.getMessage().contains("CUDA graph capture refused: the captured code queued work on the "
                        + "context's legacy default stream"), e.getMessage());
                assertFalse(CudaGraph.isCapturing(s));
                try (HostBuffer back = HostBuffer.allocate(DType.F32, N)) {
                    dy.copyTo(back);
                    for (int i = 0; i < N; i++) {
                        assertEquals(hx.getFloat(i), back.getFloat(i), 0f, "the refused zeroing ran: element " + i);
                    }
                }
                // the same work with its memory from a pool on the capturing stream is captured
                try (CudaGraph g = CudaGraph.capture(s, () -> {
                    try (DeviceBuffer tmp = onStream.allocate(DType.F32, org.moe4j.core.Shape.of(N))) {
                        step(saxpy, 1f, hx, tmp, dy, out, s);
                    }
                })) {
                    assertEquals(0, onStream.liveCount(), "the buffer of the captured work was closed in it");
                    dy.zero();
                    g.launch();
                    s.synchronize();
                    for (int i = 0; i < N; i++) {
                        assertEquals(hx.getFloat(i), out.getFloat(i), 0f, "replay, element " + i);
                    }
                }
            }
        }
    }

    /**
     * An Error thrown by the captured body (here an AssertionError) must still end the capture: the
     * error comes out unchanged and the stream is no longer capturing, for capture and update alike.
     */
    @Test
    void anErrorInsideTheCaptureEndsTheCaptureAndIsRethrown() {
        try (DevicePool pool = ctx.createPool(); CudaModule m = ctx.loadModule("smoke"); CudaStream s = ctx.createStream();
                HostBuffer hx = HostBuffer.allocate(DType.F32, N); HostBuffer out = HostBuffer.allocate(DType.F32, N)) {
            CudaFunction saxpy = m.function("moe4j_saxpy");
            fill(hx);
            try (DeviceBuffer dx = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N));
                    DeviceBuffer dy = pool.allocate(DType.F32, org.moe4j.core.Shape.of(N))) {
                AssertionError planted = new AssertionError("planted");
                AssertionError e = assertThrows(AssertionError.class, () -> CudaGraph.capture(s, () -> {
                    step(saxpy, 1f, hx, dx, dy, out, s);
                    assertTrue(CudaGraph.isCapturing(s));
                    throw planted;
                }));
                assertSame(planted, e);
                assertFalse(CudaGraph.isCapturing(s));
                try (CudaGraph g = CudaGraph.capture(s, () -> step(saxpy, 1f, hx, dx, dy, out, s))) {
                    assertSame(planted, assertThrows(AssertionError.class, () -> g.update(() -> {
                        throw planted;
                    })));
                    assertFalse(CudaGraph.isCapturing(s));
                    g.launch();
                    s.synchronize();
                }
                for (int i = 0; i < N; i++) {
                    assertEquals(hx.getFloat(i), out.getFloat(i), 0f, "element " + i);
                }
            }
        }
    }
}
