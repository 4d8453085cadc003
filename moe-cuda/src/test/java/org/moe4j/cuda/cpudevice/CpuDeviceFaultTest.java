package org.moe4j.cuda.cpudevice;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.moe4j.cuda.CudaContext;
import org.moe4j.cuda.CudaException;
import org.moe4j.cuda.CudaModule;
import org.moe4j.cuda.Launch;

/**
 * Planted kernel bugs (native/cpudevice/test/planted.cu) that the CPU device must catch: an
 * out-of-bounds write (memcheck), a missing {@code __syncthreads} (racecheck) and an mbarrier phase
 * nobody completes (deadlock detection, not a hang). Each fault must name the kernel and what went
 * wrong, and must be sticky for the context, as on the driver, until the primary context is released
 * by all its users; then a new retain works again.
 *
 * <p>Each test retains the primary context itself and releases it. That clears the fault only when
 * nothing else in the JVM holds a retain (e.g. {@code CudaBackend}'s process-wide context), so this
 * class must run in a JVM of its own: the Maven execution {@code gpu-tests-on-cpu-device} runs each
 * test class in a new JVM ({@code reuseForks=false}).
 */
@Tag("cpudevice")
class CpuDeviceFaultTest {
    private static final int ILLEGAL_ADDRESS = 700;
    private static final int LAUNCH_FAILED = 719;

    @BeforeEach
    void cpuDevice() {
        CpuDevice.assumeCpuDevice();
    }

    @Test
    void memcheckNamesKernelBlockThreadAndAddressOfAnOutOfBoundsWrite() {
        int n = 100;
        String[] address = new String[1];
        CudaException e = fault("moe4jtest_tail_off_by_one", (ctx, module, buffers) -> {
            long out = CpuDevice.alloc(ctx, n * 4L);
            buffers.add(out);
            address[0] = String.format("0x%x", out + n * 4L);
            return Launch.of(module.function("moe4jtest_tail_off_by_one")).grid(1).block(128)
                    .argPointer(out).arg(n);
        });
        assertEquals(ILLEGAL_ADDRESS, e.code(), e.getMessage());
        String m = e.getMessage();
        assertTrue(m.contains("memcheck"), m);
        assertTrue(m.contains("kernel moe4jtest_tail_off_by_one, block (0,0,0), thread (100,0,0)"), m);
        assertTrue(m.contains("invalid global write of 4 bytes at " + address[0]), m);
        assertTrue(m.contains("past the end of the 400-byte allocation"), m);
    }

    @Test
    void racecheckCatchesTheMissingSyncthreads() {
        CudaException e = fault("moe4jtest_block_sum_nosync", (ctx, module, buffers) -> {
            long in = CpuDevice.alloc(ctx, 64 * 4);
            long out = CpuDevice.alloc(ctx, 4);
            buffers.add(in);
            buffers.add(out);
            CpuDevice.upload(ctx, in, new float[64]);
            return Launch.of(module.function("moe4jtest_block_sum_nosync")).grid(1).block(64).argPointer(in).argPointer(out);
        });
        assertEquals(LAUNCH_FAILED, e.code(), e.getMessage());
        String m = e.getMessage();
        assertTrue(m.contains("kernel moe4jtest_block_sum_nosync, block (0,0,0), thread ("), m);
        assertTrue(m.contains("racecheck:") && m.contains("hazard on shared memory"), m);
        assertTrue(m.contains("(static)"), "scratch is a static __shared__ array: " + m);
    }

    @Test
    void anMbarrierPhaseNobodyCompletesIsADeadlockNotAHang() {
        CudaException e = assertTimeoutPreemptively(Duration.ofSeconds(120), () -> fault("moe4jtest_mbar_never",
                (ctx, module, buffers) -> {
                    long out = CpuDevice.alloc(ctx, 4);
                    buffers.add(out);
                    return Launch.of(module.function("moe4jtest_mbar_never")).grid(1).block(32).argPointer(out);
                }));
        assertEquals(LAUNCH_FAILED, e.code(), e.getMessage());
        String m = e.getMessage();
        assertTrue(m.contains("kernel moe4jtest_mbar_never, block (0,0,0), thread ("), m);
        assertTrue(m.contains("deadlock"), m);
        assertTrue(m.contains("waits on the mbarrier at shared 0x") && m.contains("phase of parity 0"), m);
        assertTrue(m.contains("1 of 2 arrivals missing"), m);
    }

    /** Sets up one planted launch in a context of its own. */
    interface Setup {
        Launch prepare(CudaContext ctx, CudaModule module, List<Long> buffers);
    }

    /**
     * Retains the primary context, runs the planted launch, checks that the fault is sticky, releases
     * the context and checks that a new retain works (a correct kernel runs and is right).
     *
     * @return the launch's exception
     */
    private static CudaException fault(String kernel, Setup setup) {
        List<Long> buffers = new ArrayList<>();
        CudaException e;
        CudaContext ctx = CudaContext.open(0);
        try {
            CudaModule module = CpuDevice.loadPlanted(ctx);
            Launch l = setup.prepare(ctx, module, buffers);
            e = assertThrows(CudaException.class, l::launch, kernel + " must fault");
            // sticky: the context refuses everything else with the same error
            CudaException again = assertThrows(CudaException.class, ctx::synchronize);
            assertEquals(e.code(), again.code(), again.getMessage());
            CudaException alloc = assertThrows(CudaException.class, () -> CpuDevice.alloc(ctx, 16));
            assertEquals(e.code(), alloc.code(), alloc.getMessage());
            module.close(); // cuModuleUnload works on a faulted context, as on the driver
        } finally {
            ctx.close();
        }
        // released by its only user: a new retain starts clean
        try (CudaContext fresh = CudaContext.open(0)) {
            try {
                fresh.synchronize();
            } catch (CudaException stillSticky) {
                throw new AssertionError("the fault survived the release of the primary context: another user in this JVM "
                        + "still retains it (run this class in a JVM of its own, e.g. surefire reuseForks=false)", stillSticky);
            }
            for (long b : buffers) { // device memory outlives the context on the CPU device; free it now
                CpuDevice.free(fresh, b);
            }
            checkBlockSum(fresh);
        }
        return e;
    }

    private static void checkBlockSum(CudaContext ctx) {
        CudaModule m = CpuDevice.loadPlanted(ctx);
        long in = CpuDevice.alloc(ctx, 128 * 4);
        long out = CpuDevice.alloc(ctx, 4);
        try {
            float[] v = new float[128];
            for (int i = 0; i < v.length; i++) {
                v[i] = i;
            }
            CpuDevice.upload(ctx, in, v);
            Launch.of(m.function("moe4jtest_block_sum_ok")).grid(1).block(128).argPointer(in).argPointer(out).launch();
            assertArrayEquals(new float[] {127 * 128 / 2f}, CpuDevice.download(ctx, out, 1));
        } finally {
            CpuDevice.free(ctx, in);
            CpuDevice.free(ctx, out);
            m.close();
        }
    }
}
