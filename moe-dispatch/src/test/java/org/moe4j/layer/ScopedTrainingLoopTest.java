package org.moe4j.layer;

import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.management.JMException;
import javax.management.ObjectName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
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
 * The README training loop, run as written with a step scope: native memory stays flat (run in a
 * child JVM with a fixed heap, so its resident set is measurable); without scopes and closes the same
 * loop is reported as a leak, with allocation sites.
 */
class ScopedTrainingLoopTest {
    static final int WORLD = 2;
    static final int TOKENS = 16;
    static final int STEPS = 1000;
    static final int WARM_UP = 100;
    /**
     * Allowed growth of the child JVM's resident set (and of its natively allocated memory) between the
     * end of warm-up and the last step.
     */
    static final double RSS_GROWTH = 0.05;
    static final Path STATUS = Path.of("/proc/self/status");
    static final long CHILD_TIMEOUT_S = 300;
    /**
     * The child's heap is fixed and touched at start-up ({@code -Xms} = {@code -Xmx}, serial GC, which
     * never uncommits at a fixed size) and its metaspace and code cache are bounded; only the C1 compiler
     * runs, whose compilations are done by the end of warm-up (C2 keeps compiling for hundreds of steps,
     * its code cache and compiler arenas added 15% to the resident set after step 100). So the resident
     * set moves with native memory only; native memory tracking gives the malloc'd figure beside it.
     */
    static final List<String> CHILD_JVM_FLAGS = List.of("-Xms128m", "-Xmx128m", "-XX:+AlwaysPreTouch",
            "-XX:+UseSerialGC", "-XX:MaxMetaspaceSize=96m", "-XX:ReservedCodeCacheSize=64m",
            "-XX:TieredStopAtLevel=1", "-XX:NativeMemoryTracking=summary");

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

    /**
     * The README loop on {@link #WORLD} ranks for {@link #STEPS} steps; after steps {@link #WARM_UP}
     * and {@link #STEPS} each rank notes its layer allocator's live bytes and buffers, and rank 0 then
     * takes a {@link Sample} and hands the {@link Probe} to {@code out} while the other ranks wait.
     */
    static void runReadmeLoop(Consumer<Probe> out) {
        MoeConfig config = config();
        long[] live = new long[WORLD];    // layer allocator live bytes after the probed step
        long[] count = new long[WORLD];   // live buffers then
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
                        live[comm.rank()] = layer.allocator().liveBytes();
                        count[comm.rank()] = layer.allocator().liveCount();
                        comm.barrier();
                        if (comm.rank() == 0) {
                            out.accept(new Probe(step, Sample.take(), live.clone(), count.clone()));
                        }
                        comm.barrier();
                    }
                }
            }
            return null;
        });
    }

    /** What the child JVM reports after one step: memory sample, and per rank live bytes and buffers. */
    record Probe(int step, Sample mem, long[] liveBytes, long[] liveCount) {
        private static final String TAG = "moe4j-probe";

        String line() {
            StringBuilder b = new StringBuilder(TAG).append(' ').append(step).append(' ').append(mem.rss()).append(' ')
                    .append(mem.nativeBytes());
            for (int r = 0; r < WORLD; r++) {
                b.append(' ').append(liveBytes[r]).append(' ').append(liveCount[r]);
            }
            return b.toString();
        }

        /** @return the probes in {@code output}, in order */
        static List<Probe> parse(String output) {
            List<Probe> out = new ArrayList<>();
            for (String line : output.split("\\R")) {
                String[] f = line.trim().split(" ");
                if (f.length != 4 + 2 * WORLD || !f[0].equals(TAG)) {
                    continue;
                }
                long[] live = new long[WORLD];
                long[] count = new long[WORLD];
                for (int r = 0; r < WORLD; r++) {
                    live[r] = Long.parseLong(f[4 + 2 * r]);
                    count[r] = Long.parseLong(f[5 + 2 * r]);
                }
                out.add(new Probe(Integer.parseInt(f[1]), new Sample(Long.parseLong(f[2]), Long.parseLong(f[3])),
                        live, count));
            }
            return out;
        }
    }

    /** @return the resident set ({@code VmRSS} of {@code /proc/self/status}) in bytes */
    static long rssBytes() {
        try {
            for (String line : Files.readAllLines(STATUS)) {
                if (line.startsWith("VmRSS:")) {
                    String[] f = line.substring("VmRSS:".length()).trim().split("\\s+");
                    if (f.length == 2 && f[1].equals("kB")) {
                        return Long.parseLong(f[0]) * 1024;
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        throw new IllegalStateException(STATUS + " has no VmRSS line in kB");
    }

    /**
     * Runs a diagnostic command of this JVM (as {@code jcmd} would).
     *
     * @return its output, or null when the JVM does not offer it
     */
    static String diagnosticCommand(String operation, String... args) {
        try {
            return (String) ManagementFactory.getPlatformMBeanServer().invoke(
                    new ObjectName("com.sun.management:type=DiagnosticCommand"), operation,
                    new Object[] {args}, new String[] {String[].class.getName()});
        } catch (JMException e) {
            return null;
        }
    }

    /**
     * @return the JVM's native memory tracking figure for "Other" (committed): memory from
     *         {@code Unsafe.allocateMemory}, which is where memory segments of arenas live; -1 when
     *         tracking is off (the child JVM runs with {@code -XX:NativeMemoryTracking=summary})
     */
    static long nativeOtherBytes() {
        String summary = diagnosticCommand("vmNativeMemory", "summary");
        Matcher mm = Pattern.compile("-\\s+Other \\(reserved=\\d+KB, committed=(\\d+)KB")
                .matcher(summary == null ? "" : summary);
        return mm.find() ? Long.parseLong(mm.group(1)) * 1024 : -1;
    }

    /**
     * One memory sample after two full GCs and a trim of the C heap ({@code jcmd System.trim_native_heap}:
     * memory {@code free}d but cached by the C allocator goes back to the system, so the resident set
     * counts what is live): resident set, and the natively allocated memory where memory segments live.
     *
     * @param rss         resident set in bytes
     * @param nativeBytes native memory tracking's "Other" in bytes (-1 when off)
     */
    record Sample(long rss, long nativeBytes) {
        static Sample take() {
            System.gc();
            System.gc();
            diagnosticCommand("systemTrimNativeHeap");
            return new Sample(rssBytes(), nativeOtherBytes());
        }
    }

    /**
     * The child JVM's entry point: runs the loop and prints one {@link Probe#line()} per probe as it is
     * taken (so a failure at the end still leaves them in the output).
     *
     * @param args none
     */
    public static void main(String[] args) {
        long rootBefore = BufferAllocator.root().liveBytes();
        runReadmeLoop(p -> {
            System.out.println(p.line());
            System.out.flush();
        });
        if (BufferAllocator.root().liveBytes() != rootBefore) {
            throw new IllegalStateException("live bytes outlive the layers: " + BufferAllocator.root().liveBytes()
                    + " (before: " + rootBefore + ")");
        }
    }

    /**
     * The child's command line: this JVM's binary, class path and module/access flags, and a fixed,
     * pre-touched heap (serial GC, {@code -Xms} = {@code -Xmx}) with a bounded metaspace and code cache,
     * so the JVM's own memory cannot grow or shrink between the probes.
     */
    static List<String> childCommand() {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (a.startsWith("--enable-native-access") || a.startsWith("--add-") || a.startsWith("-Xss")
                    || a.startsWith("--sun-misc-unsafe-memory-access")) {
                cmd.add(a);
            }
        }
        cmd.addAll(CHILD_JVM_FLAGS);
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(ScopedTrainingLoopTest.class.getName());
        return cmd;
    }

    @Test
    void theReadmeLoopWithScopesKeepsNativeMemoryFlatFor1000StepsAtW2(@TempDir Path tmp)
            throws IOException, InterruptedException {
        assumeTrue(Files.isReadable(STATUS), "the resident set is read from " + STATUS + " (Linux only); os.name="
                + System.getProperty("os.name"));
        Path log = tmp.resolve("child.log");
        ProcessBuilder pb = new ProcessBuilder(childCommand()).redirectErrorStream(true).redirectOutput(log.toFile());
        Process child = pb.start();
        boolean done = child.waitFor(CHILD_TIMEOUT_S, TimeUnit.SECONDS);
        if (!done) {
            child.destroyForcibly().waitFor();
        }
        String output = Files.readString(log, StandardCharsets.UTF_8);
        assertTrue(done, "the child JVM did not finish in " + CHILD_TIMEOUT_S + " s:\n" + output);
        List<Probe> probes = Probe.parse(output);
        assertEquals(List.of(WARM_UP, STEPS), probes.stream().map(Probe::step).toList(), "probes in:\n" + output);
        Probe a = probes.get(0);
        Probe b = probes.get(1);
        double rssGrowth = (double) (b.mem().rss() - a.mem().rss()) / a.mem().rss();
        double nativeGrowth = (double) (b.mem().nativeBytes() - a.mem().nativeBytes()) / Math.max(1, a.mem().nativeBytes());
        System.out.printf("after step %d: %s%nafter step %d: %s%nRSS growth: %+.2f%%, native segment memory growth:"
                + " %+.2f%%%n", WARM_UP, a.mem(), STEPS, b.mem(), 100 * rssGrowth, 100 * nativeGrowth);
        assertAll(
                () -> assertEquals(0, child.exitValue(), "child JVM " + pb.command() + " failed:\n" + output),
                () -> assertTrue(rssGrowth < RSS_GROWTH, "the resident set grew " + 100 * rssGrowth + "% between step "
                        + WARM_UP + " (" + a.mem().rss() + " B) and " + STEPS + " (" + b.mem().rss() + " B)"),
                () -> assertTrue(a.mem().nativeBytes() >= 0, "native memory tracking is on in the child"),
                () -> assertTrue(nativeGrowth < RSS_GROWTH, "natively allocated memory (segments) grew "
                        + 100 * nativeGrowth + "% between step " + WARM_UP + " and " + STEPS),
                () -> {
                    for (int r = 0; r < WORLD; r++) {
                        assertEquals(a.liveBytes()[r], b.liveBytes()[r], "rank " + r + ": live bytes at step " + WARM_UP
                                + " and " + STEPS);
                        assertEquals(a.liveCount()[r], b.liveCount()[r], "rank " + r + ": live buffers at step "
                                + WARM_UP + " and " + STEPS);
                        assertTrue(a.liveBytes()[r] > 0, "the layer's state is counted in its allocator");
                    }
                });
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
