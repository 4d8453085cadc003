package org.moe4j.optim;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.moe4j.core.ConcurrentUseException;
import org.moe4j.core.backend.CpuBackend;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.optim.internal.CpuOptimizerKernels;

/** Options, arguments and non-finite gradients: refused or skipped at the call, never half applied. */
class AdamWValidationTest {

    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', value = {
        "NaN lr        | NaN   | 0.9 | 0.999 | 1e-8     | 0.01 | AdamW lr=NaN: must be finite and >= 0",
        "infinite lr   | Infinity | 0.9 | 0.999 | 1e-8  | 0.01 | AdamW lr=Infinity: must be finite and >= 0",
        "negative lr   | -0.1  | 0.9 | 0.999 | 1e-8     | 0.01 | AdamW lr=-0.1: must be finite and >= 0",
        "fp32 lr       | 1e300 | 0.9 | 0.999 | 1e-8     | 0    | AdamW lr=1.0E300: overflows fp32",
        "beta1 = 1     | 0.1   | 1.0 | 0.999 | 1e-8     | 0.01 | AdamW beta1=1.0: must be in [0, 1)",
        "beta1 NaN     | 0.1   | NaN | 0.999 | 1e-8     | 0.01 | AdamW beta1=NaN: must be in [0, 1)",
        "beta2 < 0     | 0.1   | 0.9 | -0.5  | 1e-8     | 0.01 | AdamW beta2=-0.5: must be in [0, 1)",
        "eps = 0       | 0.1   | 0.9 | 0.999 | 0        | 0.01 | AdamW eps=0.0: must be finite and > 0 (in fp32)",
        "eps infinite  | 0.1   | 0.9 | 0.999 | Infinity | 0.01 | AdamW eps=Infinity: must be finite and > 0 (in fp32)",
        "eps NaN       | 0.1   | 0.9 | 0.999 | NaN      | 0.01 | AdamW eps=NaN: must be finite and > 0 (in fp32)",
        "eps 0 in fp32 | 0.1   | 0.9 | 0.999 | 1e-50    | 0.01 | AdamW eps=1.0E-50: must be finite and > 0 (in fp32)",
        "wd infinite   | 0.1   | 0.9 | 0.999 | 1e-8     | Infinity | AdamW weightDecay=Infinity: must be finite and >= 0",
        "wd NaN        | 0.1   | 0.9 | 0.999 | 1e-8     | NaN  | AdamW weightDecay=NaN: must be finite and >= 0",
        "wd negative   | 0.1   | 0.9 | 0.999 | 1e-8     | -1   | AdamW weightDecay=-1.0: must be finite and >= 0",
        "lr*wd > 1     | 2     | 0.9 | 0.999 | 1e-8     | 0.75 | AdamW lr=2.0 x weightDecay=0.75 = 1.5: must be <= 1 (the decay factor 1 - lr*weightDecay would be negative)",
    })
    void everyOutOfRangeOptionIsRefusedNamingIt(String rule, double lr, double b1, double b2, double eps, double wd,
            String message) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new AdamW.Options(lr, b1, b2, eps, wd));
        assertEquals(message, e.getMessage(), rule);
    }

    @Test
    void nullAndBadArgumentsAreRefusedAtTheCallThatPassesThem() {
        try (HostBuffer w = HostBuffer.ofFloats(new float[] {1, 2}, 2); HostBuffer g = HostBuffer.ofFloats(new float[2], 2);
             HostBuffer g2 = HostBuffer.ofFloats(new float[2], 2)) {
            Parameter p = new Parameter("w", w, g);
            AdamW.Options o = AdamW.Options.defaults(0.1);
            assertEquals("AdamW: params", assertThrows(NullPointerException.class, () -> new AdamW(null, o)).getMessage());
            assertEquals("AdamW: options",
                    assertThrows(NullPointerException.class, () -> new AdamW(List.of(p), null)).getMessage());
            assertEquals("AdamW: params[1] is null", assertThrows(NullPointerException.class,
                    () -> new AdamW(Arrays.asList(p, null), o)).getMessage());
            assertEquals("AdamW: backend", assertThrows(NullPointerException.class,
                    () -> new AdamW(List.of(p), o, null, new CpuOptimizerKernels())).getMessage());
            IllegalArgumentException dup = assertThrows(IllegalArgumentException.class,
                    () -> new AdamW(List.of(p, new Parameter("w again", w, g2)), o));
            assertEquals("AdamW: parameter w again (params[1]) shares a buffer with parameter w; each tensor may be listed once",
                    dup.getMessage());
            try (AdamW opt = new AdamW(List.of(p), o)) {
                assertEquals("AdamW.options: options",
                        assertThrows(NullPointerException.class, () -> opt.options(null)).getMessage());
                assertSame(o, opt.options(), "the refused call kept the old options");
            }
            HostBuffer closed = HostBuffer.ofFloats(new float[2], 2);
            closed.close();
            IllegalArgumentException c = assertThrows(IllegalArgumentException.class,
                    () -> new AdamW(List.of(p, new Parameter("dead", closed, g2)), o));
            assertEquals("AdamW: parameter dead (params[1]) is closed", c.getMessage());
        }
    }

    @Test
    void aStepWithANonFiniteGradientIsSkippedWholeAndReported() {
        float[] w0 = {0.5f, -1f, 2f, 0.25f};
        float[] b0 = {0.1f, -0.2f};
        try (HostBuffer w = HostBuffer.ofFloats(w0, 2, 2); HostBuffer wg = HostBuffer.ofFloats(new float[] {1, 2, 3, 4}, 2, 2);
             HostBuffer b = HostBuffer.ofFloats(b0, 2); HostBuffer bg = HostBuffer.ofFloats(new float[] {0.5f, 0.5f}, 2);
             AdamW opt = new AdamW(List.of(new Parameter("w", w, wg), new Parameter("b", b, bg)),
                     new AdamW.Options(0.1, 0.9, 0.99, 1e-8, 0.1))) {
            for (float bad : new float[] {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY}) {
                bg.setFloat(1, bad); // the second parameter: the first must not have been updated either
                AdamW.StepReport r = opt.step();
                assertFalse(r.applied());
                assertEquals("b", r.nonFiniteParameter());
                assertEquals(1, r.nonFiniteIndex());
                assertEquals(0, r.step());
                assertArrayEquals(w0, w.toFloatArray(), "w unchanged by a skipped step");
                assertArrayEquals(b0, b.toFloatArray(), "b unchanged by a skipped step");
            }
            assertEquals(3, opt.skippedSteps());
            assertEquals(0, opt.steps());
            bg.setFloat(1, 0.5f);
            AdamW.StepReport ok = opt.step();
            assertTrue(ok.applied());
            assertNull(ok.nonFiniteParameter());
            assertEquals(-1, ok.nonFiniteIndex());
            assertEquals(1, ok.step());
            // the moments were untouched by the skipped steps: the result equals a fresh optimiser's first step
            try (HostBuffer w2 = HostBuffer.ofFloats(w0, 2, 2); HostBuffer wg2 = HostBuffer.ofFloats(new float[] {1, 2, 3, 4}, 2, 2);
                 HostBuffer b2 = HostBuffer.ofFloats(b0, 2); HostBuffer bg2 = HostBuffer.ofFloats(new float[] {0.5f, 0.5f}, 2);
                 AdamW fresh = new AdamW(List.of(new Parameter("w", w2, wg2), new Parameter("b", b2, bg2)),
                         new AdamW.Options(0.1, 0.9, 0.99, 1e-8, 0.1))) {
                fresh.step();
                assertArrayEquals(w2.toFloatArray(), w.toFloatArray());
                assertArrayEquals(b2.toFloatArray(), b.toFloatArray());
            }
        }
    }

    @Test
    void theCpuScanFindsTheFirstNonFiniteElementAcrossChunks() {
        CpuOptimizerKernels k = new CpuOptimizerKernels();
        float[] v = new float[100_000];
        try (HostBuffer b = HostBuffer.ofFloats(v, v.length)) {
            assertEquals(-1, k.firstNonFinite(b));
            b.setFloat(70_001, Float.NaN);
            b.setFloat(90_000, Float.POSITIVE_INFINITY);
            assertEquals(70_001, k.firstNonFinite(b));
            b.setFloat(3, Float.NEGATIVE_INFINITY);
            assertEquals(3, k.firstNonFinite(b));
            b.setFloat(3, Float.MAX_VALUE);
            b.setFloat(70_001, -Float.MAX_VALUE);
            assertEquals(90_000, k.firstNonFinite(b));
        }
    }

    @Test
    void theDeviceStepCallsRefuseHostKernelsAndTheTableSizeIsChecked() {
        try (HostBuffer w = HostBuffer.ofFloats(new float[] {1, 2}, 2); HostBuffer g = HostBuffer.ofFloats(new float[2], 2)) {
            Parameter p = new Parameter("w", w, g);
            AdamW opt = new AdamW(List.of(p), AdamW.Options.defaults(0.1));
            assertEquals(List.of(p), opt.parameters());
            assertEquals(AdamW.DEVICE_TABLE_STEPS, opt.deviceTableSteps());
            for (int bad : new int[] {0, -1, AdamW.MAX_DEVICE_TABLE_STEPS + 1}) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> opt.deviceTableSteps(bad));
                assertTrue(e.getMessage().contains("rows=" + bad), e.getMessage());
            }
            assertEquals(AdamW.DEVICE_TABLE_STEPS, opt.deviceTableSteps(), "a refused size changes nothing");
            opt.deviceTableSteps(3);
            assertEquals(3, opt.deviceTableSteps());
            // the CPU kernels decide the skip on the host: there is no device step to prepare or count
            IllegalStateException prepare = assertThrows(IllegalStateException.class, opt::prepareDeviceStep);
            assertTrue(prepare.getMessage().contains("skipsOnDevice() is false"), prepare.getMessage());
            assertThrows(IllegalStateException.class, opt::recordReplayedStep);
            assertEquals(0, opt.steps(), "the refused calls counted no step");
            assertFalse(opt.isClosed());
            opt.close();
            assertTrue(opt.isClosed());
            assertThrows(IllegalStateException.class, () -> opt.deviceTableSteps(4));
        }
    }

    @Test
    void aStepAfterCloseOrOnAClosedParameterIsRefusedWithNothingUpdated() {
        HostBuffer w = HostBuffer.ofFloats(new float[] {1, 2}, 2);
        try (HostBuffer g = HostBuffer.ofFloats(new float[] {1, 1}, 2); HostBuffer v = HostBuffer.ofFloats(new float[] {3, 4}, 2);
             HostBuffer vg = HostBuffer.ofFloats(new float[] {1, 1}, 2)) {
            AdamW opt = new AdamW(List.of(new Parameter("v", v, vg), new Parameter("w", w, g)), AdamW.Options.defaults(0.1));
            w.close();
            IllegalStateException e = assertThrows(IllegalStateException.class, opt::step);
            assertEquals("AdamW.step: parameter w was closed; nothing was updated", e.getMessage());
            assertArrayEquals(new float[] {3, 4}, v.toFloatArray());
            opt.close();
            assertEquals("AdamW.step: the optimiser is closed", assertThrows(IllegalStateException.class, opt::step).getMessage());
        }
    }

    @Test
    void aSecondThreadIsRefusedWhileAStepRuns() throws Exception {
        CountDownLatch inside = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        OptimizerKernels cpu = new CpuOptimizerKernels();
        OptimizerKernels blocking = (OptimizerKernels) Proxy.newProxyInstance(OptimizerKernels.class.getClassLoader(),
                new Class<?>[] {OptimizerKernels.class}, (proxy, method, args) -> {
                    if (method.getName().equals("adamW") && Thread.currentThread().getName().equals("opt-A")) {
                        inside.countDown();
                        release.await(10, TimeUnit.SECONDS);
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        try (HostBuffer w = HostBuffer.ofFloats(new float[] {1, 2}, 2); HostBuffer g = HostBuffer.ofFloats(new float[] {1, 1}, 2);
             AdamW opt = new AdamW(List.of(new Parameter("w", w, g)), AdamW.Options.defaults(0.1), new CpuBackend(),
                     blocking)) {
            AtomicReference<Throwable> error = new AtomicReference<>();
            Thread a = new Thread(() -> {
                try {
                    opt.step();
                } catch (Throwable t) {
                    error.set(t);
                }
            }, "opt-A");
            a.start();
            assertTrue(inside.await(10, TimeUnit.SECONDS));
            try {
                ConcurrentUseException e = assertThrows(ConcurrentUseException.class, opt::zeroGrad);
                assertTrue(e.getMessage().startsWith("AdamW.zeroGrad called on thread '" + Thread.currentThread().getName()
                        + "' while AdamW.step is running on thread 'opt-A'"), e.getMessage());
                assertThrows(ConcurrentUseException.class, opt::step);
            } finally {
                release.countDown();
            }
            a.join(10_000);
            assertNull(error.get());
            assertEquals(1, opt.steps(), "exactly thread A's step was applied");
            assertArrayEquals(new float[] {1, 1}, g.toFloatArray(), "the refused zeroGrad changed nothing");
        }
    }
}
