package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** The GPU benchmarks' result rows (what compare.py reads from the bundle's bench.log); no GPU needed. */
class GpuTimingReportTest {
    @Test
    void reportKeepsShapeNumbersAndTheMetricAsJsonFields() {
        int before = GpuTiming.rows().size();
        GpuTiming.report("fwd_gate_up_wgmma", "deepseek-v3 rows=4096 H=7168 F=2048 E=8", 1.25, "  601.5 TFLOP/s");
        Map<String, Object> row = GpuTiming.rows().get(before);
        assertEquals("fwd_gate_up_wgmma", row.get("stage"));
        assertEquals(1.25, row.get("ms"));
        assertEquals(601.5, row.get("TFLOPs"));
        @SuppressWarnings("unchecked")
        Map<String, Object> params = (Map<String, Object>) row.get("params");
        assertEquals("deepseek-v3", params.get("shape"));
        assertEquals(4096L, params.get("rows"));
        assertEquals(2048L, params.get("F"));
        GpuTiming.report("router_fwd", "tokens=4096 E=256 g8/4 top8 sigmoid", 0.5, "12.0 GB/s (logits in)");
        Map<String, Object> r2 = GpuTiming.rows().get(before + 1);
        assertEquals("g8/4 top8 sigmoid", ((Map<?, ?>) r2.get("params")).get("shape"));
        assertEquals(false, r2.containsKey("GBs"), "a metric followed by words is kept only in the text line");
    }
}
