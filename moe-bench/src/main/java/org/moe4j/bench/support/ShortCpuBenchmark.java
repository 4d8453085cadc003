package org.moe4j.bench.support;

import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The JMH settings every moe4j CPU benchmark shares: average time in milliseconds, one fork with the
 * Vector API module and native access, 2 warm-up and 3 measured iterations of one second. A benchmark
 * class extends this instead of repeating the annotations (JMH reads them from superclasses); a
 * subclass may still override any of them with its own annotation.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 1)
public abstract class ShortCpuBenchmark {
    /** For subclasses. */
    protected ShortCpuBenchmark() {
    }
}
