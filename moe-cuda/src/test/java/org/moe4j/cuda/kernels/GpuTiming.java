package org.moe4j.cuda.kernels;

import java.util.Arrays;
import java.util.Locale;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.CudaEvent;
import org.moe4j.cuda.CudaStream;

/**
 * Timing for the GPU benchmark mains: CUDA events on the backend's stream around each run,
 * warm-up first, the median of many runs. The run callback receives the repetition index so that
 * callers can rotate among input sets (no timing of a warm L2 on one buffer).
 */
final class GpuTiming {
    /** Warm-up runs before timing. */
    static final int WARMUP = 5;
    /** Timed runs; the median is reported. */
    static final int REPS = 50;

    private GpuTiming() {
    }

    interface Run {
        void run(int rep);
    }

    /** @return median milliseconds of {@code run} over {@link #REPS} event-timed repetitions */
    static double medianMillis(CudaBackend backend, Run run) {
        CudaStream s = backend.stream();
        for (int i = 0; i < WARMUP; i++) {
            run.run(i);
        }
        s.synchronize();
        double[] ms = new double[REPS];
        try (CudaEvent start = backend.context().createEvent(true); CudaEvent end = backend.context().createEvent(true)) {
            for (int i = 0; i < REPS; i++) {
                start.record(s);
                run.run(i);
                end.record(s);
                end.synchronize();
                ms[i] = end.elapsedMillis(start);
            }
        }
        Arrays.sort(ms);
        return ms[REPS / 2];
    }

    /** Prints one result line (machine-greppable: name, params, value with unit). */
    static void report(String name, String params, double ms, String extra) {
        System.out.println(String.format(Locale.ROOT, "%-28s %-48s %9.4f ms  %s", name, params, ms, extra));
    }

    static void header(CudaBackend backend) {
        System.out.println("# " + backend.context().device().describe() + ", " + java.time.Instant.now());
    }
}
