package org.moe4j.cuda.kernels;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.CudaEvent;
import org.moe4j.cuda.CudaStream;

/**
 * Timing for the GPU benchmark mains: CUDA events on the backend's stream around a batch of
 * {@link #RUNS_PER_EVENT} back-to-back runs (so that the host cost of one launch, and the event
 * resolution, do not fall inside a window around a single kernel), warm-up first, the median over
 * {@link #REPS} batches of the per-run time. The run callback receives a running index so that
 * callers can rotate among input sets (no timing of a warm L2 on one buffer).
 */
final class GpuTiming {
    /** Warm-up runs before timing. */
    static final int WARMUP = 5;
    /** Timed batches (event pairs); the median is reported. */
    static final int REPS = 20;
    /**
     * Runs queued between one event pair; the batch time is divided by it. REPS x RUNS_PER_EVENT = 100
     * timed runs, twice the former 50 single-run pairs: the bundle's bench step has a fixed time limit.
     */
    static final int RUNS_PER_EVENT = 5;

    private GpuTiming() {
    }

    interface Run {
        void run(int rep);
    }

    /**
     * @return milliseconds per run of {@code run}: the median over {@link #REPS} event pairs, each
     *         around {@link #RUNS_PER_EVENT} runs, of the pair's time divided by the runs
     */
    static double medianMillis(CudaBackend backend, Run run) {
        return medianMillis(backend, run, REPS, RUNS_PER_EVENT);
    }

    static double medianMillis(CudaBackend backend, Run run, int reps, int runsPerEvent) {
        if (reps < 1 || runsPerEvent < 1) {
            throw new IllegalArgumentException("reps and runsPerEvent must be positive: " + reps + ", " + runsPerEvent);
        }
        CudaStream s = backend.stream();
        int index = 0;
        for (int i = 0; i < WARMUP; i++) {
            run.run(index++);
        }
        s.synchronize();
        double[] ms = new double[reps];
        try (CudaEvent start = backend.context().createEvent(true); CudaEvent end = backend.context().createEvent(true)) {
            for (int i = 0; i < reps; i++) {
                start.record(s);
                for (int j = 0; j < runsPerEvent; j++) {
                    run.run(index++);
                }
                end.record(s);
                end.synchronize();
                ms[i] = end.elapsedMillis(start) / runsPerEvent;
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    private static final List<Map<String, Object>> ROWS = new ArrayList<>();

    /**
     * Prints one result line (machine-greppable: name, params, value with unit) and keeps it for
     * {@link #printJson}. {@code params}: an optional leading shape name, then {@code key=value} words.
     */
    static void report(String name, String params, double ms, String extra) {
        System.out.println(String.format(Locale.ROOT, "%-28s %-48s %9.4f ms  %s", name, params, ms, extra));
        Map<String, Object> p = new LinkedHashMap<>();
        for (String word : params.trim().split("\\s+")) {
            int eq = word.indexOf('=');
            if (eq < 0) {
                p.merge("shape", word, (a, b) -> a + " " + b);
            } else {
                String v = word.substring(eq + 1);
                p.put(word.substring(0, eq), v.matches("-?\\d+") ? (Object) Long.parseLong(v) : v);
            }
        }
        Map<String, Object> row = new LinkedHashMap<>();
        row.put("stage", name);
        row.put("params", p);
        row.put("ms", ms);
        String[] metric = extra.trim().split("\\s+");
        if (metric.length == 2 && metric[0].matches("[0-9.]+")) {
            row.put(metric[1].replace("/", ""), Double.parseDouble(metric[0]));
        }
        ROWS.add(row);
    }

    /** @return the rows reported so far (for tests) */
    static List<Map<String, Object>> rows() {
        return List.copyOf(ROWS);
    }

    /**
     * Prints every reported row as one JSON list ({@code [{stage, params, ms, ...}]}), the form that
     * scripts/bench/compare.py lists in the GPU section of docs/benchmarks.md.
     */
    static void printJson() {
        try {
            System.out.println(new ObjectMapper().writeValueAsString(ROWS));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    static void header(CudaBackend backend) {
        System.out.println("# " + backend.context().device().describe() + ", " + java.time.Instant.now());
    }
}
