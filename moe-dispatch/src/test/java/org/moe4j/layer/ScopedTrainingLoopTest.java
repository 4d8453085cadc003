package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.management.JMException;
import javax.management.ObjectName;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.BufferAllocator;
import org.moe4j.core.buffer.BufferScope;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.buffer.HostView;
import org.moe4j.core.buffer.MemoryLeakException;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.core.config.ScoreFunction;
import org.moe4j.core.init.ParamInit;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.optim.AdamW;

/**
 * The README training loop, run as written with a step scope: native memory stays flat; without
 * scopes and closes the same loop is reported as a leak, with allocation sites.
 */
class ScopedTrainingLoopTest {
    static final int WORLD = 2;
    static final int TOKENS = 16;
    static final int STEPS = 1000;
    static final int WARM_UP = 100;
    /**
     * Allowed growth of the native memory of segments between the end of warm-up and the last step.
     * The resident set is printed, not asserted: on this JVM it moves by tens of percent between two
     * samples with the Java heap's own sizing (native memory tracking shows the heap committing and
     * uncommitting over 100 MB), which would hide or fake a buffer leak.
     */
    static final double NATIVE_GROWTH = 0.05;

    static MoeConfig config() {
        return MoeConfig.builder()
                .hidden(16).experts(4).topK(2).ffn(8)
                .scoreFunction(ScoreFunction.SIGMOID)
                .routeNorm(true)
                .expertBiasCoeff(1e-3)
                .sharedExperts(1, 8)
                .expertParallel(WORLD)
                .build();
    }

    /** This rank's batch of a step (made by the caller's code, so it belongs to the caller's scope). */
    static Buffer nextBatch(int rank, int step, int hidden) {
        HostBuffer x = HostBuffer.allocate(DType.F32, TOKENS, hidden);
        ParamInit.fillUniform(x, 7, 1000L * step + rank, 0, 1f);
        return x;
    }

    /** Mean-squared error against zero: {@code dY = 2 y / numel}. */
    static Buffer lossGradient(Buffer y) {
        HostBuffer dY = HostBuffer.allocate(DType.F32, y.shape());
        try (HostView v = y.hostView(HostView.Mode.READ)) {
            HostBuffer h = v.host();
            for (long i = 0; i < h.numel(); i++) {
                dY.setFloat(i, 2f * h.getFloat(i) / h.numel());
            }
        }
        return dY;
    }

    static long rssBytes() throws IOException {
        String[] statm = Files.readString(Path.of("/proc/self/statm")).trim().split("\\s+");
        return Long.parseLong(statm[1]) * 4096;
    }

    /**
     * @return the JVM's native memory tracking figure for "Other" (committed): memory from
     *         {@code Unsafe.allocateMemory}, which is where memory segments of arenas live; -1 when
     *         tracking is off ({@code -XX:NativeMemoryTracking=summary} is set for this module's tests)
     */
    static long nativeOtherBytes() {
        try {
            String summary = (String) ManagementFactory.getPlatformMBeanServer().invoke(
                    new ObjectName("com.sun.management:type=DiagnosticCommand"), "vmNativeMemory",
                    new Object[] {new String[] {"summary"}}, new String[] {String[].class.getName()});
            Matcher mm = Pattern.compile("-\\s+Other \\(reserved=\\d+KB, committed=(\\d+)KB").matcher(summary);
            return mm.find() ? Long.parseLong(mm.group(1)) * 1024 : -1;
        } catch (JMException e) {
            return -1;
        }
    }

    /**
     * One memory sample after two full GCs: resident set, the JVM's committed heap and non-heap (code
     * cache, metaspace), and the natively allocated memory where memory segments live.
     */
    record Sample(long rss, long heap, long nonHeap, long nativeBytes) {
        static Sample take() throws IOException {
            System.gc();
            System.gc();
            MemoryMXBean m = ManagementFactory.getMemoryMXBean();
            return new Sample(rssBytes(), m.getHeapMemoryUsage().getCommitted(),
                    m.getNonHeapMemoryUsage().getCommitted(), nativeOtherBytes());
        }

        /** @return resident-set growth from {@code before} not explained by the JVM growing its heap or code */
        double rssGrowthBeyondJvm(Sample before) {
            long jvm = (heap - before.heap) + (nonHeap - before.nonHeap);
            return (double) (rss - before.rss - Math.max(0, jvm)) / before.rss;
        }
    }

    @Test
    void theReadmeLoopWithScopesKeepsNativeMemoryFlatFor1000StepsAtW2() throws IOException {
        assumeTrue(Files.isReadable(Path.of("/proc/self/statm")), "resident set size needs /proc/self/statm");
        assumeTrue(nativeOtherBytes() >= 0, "native memory needs -XX:NativeMemoryTracking=summary (set in the pom)");
        MoeConfig config = config();
        long[][] live = new long[WORLD][2];    // layer allocator live bytes after step 100, step 1000
        long[][] count = new long[WORLD][2];   // live buffers then
        Sample[] mem = new Sample[2];
        long rootBefore = BufferAllocator.root().liveBytes();
        LocalGroup.run(WORLD, comm -> {
            try (MoeLayer layer = MoeLayer.builder(config, comm).seed(42).build();
                 AdamW optimiser = new AdamW(layer.parameters(), AdamW.Options.defaults(3e-4))) {
                for (int step = 1; step <= STEPS; step++) {
                    try (BufferScope _ = layer.newScope()) {
                        Buffer x = nextBatch(comm.rank(), step, config.hidden());
                        MoeLayer.Forward f = layer.forward(x);
                        Buffer dY = lossGradient(f.output());
                        layer.backward(f.context(), dY);
                        layer.reduceGradients();
                        optimiser.step();
                        optimiser.zeroGrad();
                        layer.updateExpertBias();
                    }
                    if (step == WARM_UP || step == STEPS) {
                        int i = step == WARM_UP ? 0 : 1;
                        live[comm.rank()][i] = layer.allocator().liveBytes();
                        count[comm.rank()][i] = layer.allocator().liveCount();
                        comm.barrier();
                        if (comm.rank() == 0) {
                            mem[i] = Sample.take();
                        }
                        comm.barrier();
                    }
                }
            }
            return null;
        });
        for (int r = 0; r < WORLD; r++) {
            assertEquals(live[r][0], live[r][1], "rank " + r + ": live bytes at step " + WARM_UP + " and " + STEPS);
            assertEquals(count[r][0], count[r][1], "rank " + r + ": live buffers at step " + WARM_UP + " and " + STEPS);
            assertTrue(live[r][0] > 0, "the layer's state is counted in its allocator");
        }
        double growth = mem[1].rssGrowthBeyondJvm(mem[0]);
        double nativeGrowth = (double) (mem[1].nativeBytes() - mem[0].nativeBytes()) / Math.max(1, mem[0].nativeBytes());
        System.out.printf("after step %d: %s%nafter step %d: %s%nRSS growth beyond the JVM's heap and code: %+.2f%%, "
                + "native segment memory growth: %+.2f%%%n", WARM_UP, mem[0], STEPS, mem[1], 100 * growth,
                100 * nativeGrowth);
        assertTrue(nativeGrowth < NATIVE_GROWTH, "natively allocated memory (segments) grew " + 100 * nativeGrowth + "% between step "
                + WARM_UP + " and " + STEPS);
        assertEquals(rootBefore, BufferAllocator.root().liveBytes(), "nothing outlives the layers");
    }

    @Test
    void theSameLoopWithoutScopesOrClosesIsReportedAsALeakWithAllocationSites() {
        String before = System.getProperty(BufferAllocator.DEBUG_PROPERTY);
        System.setProperty(BufferAllocator.DEBUG_PROPERTY, "true");
        MoeConfig config = config();
        try {
            List<MemoryLeakException> reports = LocalGroup.run(WORLD, comm -> {
                // the caller's own allocations (batch, loss gradient) are counted in a child allocator here
                BufferAllocator data = BufferAllocator.root().newChild("training data rank " + comm.rank());
                MoeLayer layer = MoeLayer.builder(config, comm).seed(42).build();
                AdamW optimiser = new AdamW(layer.parameters(), AdamW.Options.defaults(3e-4));
                try {
                    for (int step = 1; step <= 3; step++) {
                        Buffer x;
                        Buffer dY;
                        MoeLayer.Forward f;
                        try (BufferScope.Activation _ = data.use()) {
                            x = nextBatch(comm.rank(), step, config.hidden());
                        }
                        f = layer.forward(x);
                        try (BufferScope.Activation _ = data.use()) {
                            dY = lossGradient(f.output());
                        }
                        layer.backward(f.context(), dY); // dX, f.output(), x and dY are never closed
                        layer.reduceGradients();
                        optimiser.step();
                        optimiser.zeroGrad();
                        layer.updateExpertBias();
                    }
                } finally {
                    optimiser.close();
                }
                MemoryLeakException layerLeak = assertThrows(MemoryLeakException.class, layer::close);
                MemoryLeakException dataLeak = assertThrows(MemoryLeakException.class, data::close);
                layerLeak.addSuppressed(dataLeak);
                return layerLeak;
            });
            for (MemoryLeakException e : reports) {
                String m = e.getMessage();
                assertTrue(m.contains("memory leaked: 6 live buffer(s)"), "forward output and dX of 3 steps: " + m);
                assertTrue(m.contains("allocated at org.moe4j."), m);
                assertTrue(m.contains("MoeLayer"), "the report names the layer's allocator: " + m);
                String data = e.getSuppressed()[0].getMessage();
                assertTrue(data.contains("memory leaked: 6 live buffer(s)"), "batch and dY of 3 steps: " + data);
                assertTrue(data.contains("allocated at org.moe4j.layer.ScopedTrainingLoopTest.nextBatch:"), data);
                assertTrue(data.contains("allocated at org.moe4j.layer.ScopedTrainingLoopTest.lossGradient:"), data);
                assertFalse(e.leakedBuffers().isEmpty());
            }
        } finally {
            if (before == null) {
                System.clearProperty(BufferAllocator.DEBUG_PROPERTY);
            } else {
                System.setProperty(BufferAllocator.DEBUG_PROPERTY, before);
            }
        }
    }
}
