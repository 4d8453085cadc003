package org.moe4j.experts;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.io.TempDir;
import org.moe4j.optim.Parameter;
import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.core.config.MoeConfig;
import org.moe4j.dispatch.LocalGroup;
import org.moe4j.experts.internal.CpuExpertKernels;
import org.moe4j.layer.MoeLayer;

/**
 * The family-variant kernels of {@link ExpertKernels} on the CPU: values against a direct restatement,
 * refusal of bad input before anything is written, and layers refusing kernels without the support.
 */
class LayerFeatureKernelsTest {
    final CpuExpertKernels k = new CpuExpertKernels();
    final Random rnd = new Random(7);

    HostBuffer random(long... dims) {
        HostBuffer h = HostBuffer.allocate(DType.F32, dims);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) rnd.nextGaussian());
        }
        return h;
    }

    static float sig(float v) {
        return (float) (1.0 / (1.0 + Math.exp(-v)));
    }

    @Test
    void clampedSwigluFollowsGptOssAndClampsPassGradientsInsideTheInterval() {
        float limit = 0.5f;
        float alpha = 1.702f;
        try (HostBuffer g = random(4, 9); HostBuffer u = random(4, 9); HostBuffer dy = random(4, 9);
             HostBuffer out = HostBuffer.allocate(DType.F32, 4, 9); HostBuffer dg = HostBuffer.allocate(DType.F32, 4, 9);
             HostBuffer du = HostBuffer.allocate(DType.F32, 4, 9)) {
            k.clampedSwigluForward(g, u, out, limit, alpha);
            k.clampedSwigluBackward(g, u, dy, dg, du, limit, alpha);
            int clampedGate = 0;
            int clampedUp = 0;
            for (int i = 0; i < 36; i++) {
                float gv = g.getFloat(i);
                float uv = u.getFloat(i);
                float gc = Math.min(gv, limit);
                float uc = Math.max(-limit, Math.min(uv, limit));
                assertEquals((uc + 1) * gc * sig(alpha * gc), out.getFloat(i), 1e-6);
                if (gv > limit) {
                    assertEquals(0f, dg.getFloat(i), "clamped gate: no gradient");
                    clampedGate++;
                }
                if (Math.abs(uv) > limit) {
                    assertEquals(0f, du.getFloat(i), "clamped up: no gradient");
                    clampedUp++;
                } else {
                    assertEquals(dy.getFloat(i) * gc * sig(alpha * gc), du.getFloat(i), 1e-6);
                }
            }
            assertTrue(clampedGate > 0 && clampedUp > 0, "the draw exercises both clamps");
        }
    }

    @Test
    void groupBiasAddsPerGroupSkipsRowsOutsideAndItsGradientSumsTheRows() {
        try (HostBuffer out = HostBuffer.allocate(DType.F32, 7, 3); HostBuffer bias = random(2, 3);
             HostBuffer off = HostBuffer.ofInts(new int[] {1, 3, 6}, 3); HostBuffer dOut = random(7, 3);
             HostBuffer dBias = HostBuffer.allocate(DType.F32, 2, 3)) {
            k.addGroupBias(out, bias, off);
            for (int r = 0; r < 7; r++) {
                for (int c = 0; c < 3; c++) {
                    float want = r < 1 || r >= 6 ? 0f : bias.getFloat((r < 3 ? 0 : 1) * 3 + c);
                    assertEquals(want, out.getFloat(r * 3 + c), 0f, "row " + r);
                }
            }
            k.groupBiasGrad(dOut, off, dBias);
            for (int c = 0; c < 3; c++) {
                float g0 = 0f + dOut.getFloat(3 + c) + dOut.getFloat(6 + c);
                float g1 = 0f + dOut.getFloat(9 + c) + dOut.getFloat(12 + c) + dOut.getFloat(15 + c);
                assertEquals(g0, dBias.getFloat(c), 0f);
                assertEquals(g1, dBias.getFloat(3 + c), 0f);
            }
        }
    }

    @Test
    void slotExpansionAndSumAreExactAndTheirBackwardIsTheTranspose() {
        int t = 5;
        int kk = 3;
        int n = 4;
        try (HostBuffer x = random(t, n); HostBuffer w = random(t, kk); HostBuffer ex = HostBuffer.allocate(DType.F32, t * kk, n);
             HostBuffer sum = HostBuffer.allocate(DType.F32, t, n); HostBuffer dOut = random(t * kk, n);
             HostBuffer dx = HostBuffer.allocate(DType.F32, t, n); HostBuffer dw = HostBuffer.allocate(DType.F32, t, kk)) {
            k.scaleExpand(x, w, ex);
            k.sumSlots(ex, kk, sum);
            k.scaleExpandBackward(x, w, dOut, dx, dw);
            for (int i = 0; i < t; i++) {
                for (int c = 0; c < n; c++) {
                    float s = 0f;
                    float d = 0f;
                    for (int j = 0; j < kk; j++) {
                        assertEquals(w.getFloat(i * kk + j) * x.getFloat(i * n + c), ex.getFloat((i * kk + j) * n + c), 0f);
                        s += ex.getFloat((i * kk + j) * n + c);
                        d += w.getFloat(i * kk + j) * dOut.getFloat((i * kk + j) * n + c);
                    }
                    assertEquals(s, sum.getFloat(i * n + c), 0f);
                    assertEquals(d, dx.getFloat(i * n + c), 0f);
                }
                for (int j = 0; j < kk; j++) {
                    float dot = 0f;
                    for (int c = 0; c < n; c++) {
                        dot += dOut.getFloat((i * kk + j) * n + c) * x.getFloat(i * n + c);
                    }
                    assertEquals(dot, dw.getFloat(i * kk + j), 0f);
                }
            }
        }
    }

    @Test
    void badInputIsRefusedBeforeAnythingIsWritten() {
        try (HostBuffer out = HostBuffer.allocate(DType.F32, 4, 3); HostBuffer bias = random(2, 3);
             HostBuffer badOff = HostBuffer.ofInts(new int[] {0, 3, 2}, 3); HostBuffer pastEnd = HostBuffer.ofInts(new int[] {0, 2, 5}, 3);
             HostBuffer g = random(4, 3); HostBuffer u = random(4, 5); HostBuffer scale = random(3)) {
            float[] before = out.toFloatArray();
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> k.addGroupBias(out, bias, badOff));
            assertTrue(e.getMessage().contains("must not decrease"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.addGroupBias(out, bias, pastEnd));
            assertTrue(e.getMessage().contains("exceeds the 4 rows"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.clampedSwigluForward(g, u, out, 7f, 1.702f));
            assertTrue(e.getMessage().contains("shape"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.clampedSwigluForward(g, g, out, 0f, 1.702f));
            assertTrue(e.getMessage().contains("limit=0.0"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.clampedSwigluForward(g, g, out, 7f, Float.NaN));
            assertTrue(e.getMessage().contains("alpha=NaN"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.rowScaleForward(scale, true, g, out, false));
            assertTrue(e.getMessage().contains("expected 4 elements"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.sumSlots(g, 3, out));
            assertTrue(e.getMessage().startsWith("sumSlots"), e.getMessage());
            e = assertThrows(IllegalArgumentException.class, () -> k.scaleExpand(g, scale, out));
            assertTrue(e.getMessage().contains("expected 4 elements"), e.getMessage());
            assertArrayEquals(before, out.toFloatArray(), "nothing written");
        }
    }

    /** CPU kernels that claim no family-variant support. */
    static final class PlainKernels implements ExpertKernels {
        final CpuExpertKernels cpu = new CpuExpertKernels();

        @Override
        public void groupedMatmul(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
            cpu.groupedMatmul(a, b, groupOffsets, out, spec);
        }

        @Override
        public void groupedWeightGrad(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
            cpu.groupedWeightGrad(a, b, groupOffsets, out, spec);
        }

        @Override
        public boolean supportsTransposedB() {
            return true;
        }

        @Override
        public void groupedMatmulTransposedB(Buffer a, Buffer b, Buffer groupOffsets, Buffer out, GemmSpec spec) {
            cpu.groupedMatmulTransposedB(a, b, groupOffsets, out, spec);
        }

        @Override
        public void transpose(Buffer src, Buffer dst) {
            cpu.transpose(src, dst);
        }

        @Override
        public void swigluForward(Buffer gate, Buffer up, Buffer out) {
            cpu.swigluForward(gate, up, out);
        }

        @Override
        public void swigluBackward(Buffer gate, Buffer up, Buffer dOut, Buffer dGate, Buffer dUp) {
            cpu.swigluBackward(gate, up, dOut, dGate, dUp);
        }
    }

    @Test
    void aLayerNeedingFeaturesRefusesKernelsWithoutThem() {
        PlainKernels plain = new PlainKernels();
        assertFalse(plain.supportsLayerFeatures());
        UnsupportedOperationException u = assertThrows(UnsupportedOperationException.class, () -> plain.sumSlots(null, 1, null));
        assertTrue(u.getMessage().contains("PlainKernels does not implement sumSlots"), u.getMessage());
        MoeConfig gptOss = MoeConfig.builder().hidden(8).experts(4).topK(2).ffn(8).routeNorm(true).routerBias(true)
                .expertLinearBias(true).clampedSwiglu(7, 1.702).build();
        RuntimeException e = assertThrows(RuntimeException.class, () -> LocalGroup.run(1, comm -> {
            try (MoeLayer l = MoeLayer.builder(gptOss, comm).expertKernels(plain).build()) {
                return l;
            }
        }));
        Throwable root = e;
        while (!(root instanceof IllegalArgumentException) && root.getCause() != null) {
            root = root.getCause();
        }
        assertTrue(root instanceof IllegalArgumentException, "cause: " + e);
        assertTrue(root.getMessage().contains("need expert kernels with layer-feature support; PlainKernels"), root.getMessage());
        // the plain layer still builds on them
        MoeConfig plainCfg = gptOss.toBuilder().features(org.moe4j.core.config.LayerFeatures.NONE).build();
        LocalGroup.run(1, comm -> {
            try (MoeLayer l = MoeLayer.builder(plainCfg, comm).expertKernels(plain).build()) {
                return l.config();
            }
        });
    }

    @Test
    void saveThenLoadRoundTripsEveryVariantParameter(@TempDir Path dir) {
        roundTrip(MoeConfig.builder().hidden(8).experts(4).topK(2).ffn(8).routeNorm(true).routerBias(true)
                .sharedExperts(1, 8).sharedExpertGate(true).build(), dir.resolve("ds"), null);
        // expert linear biases travel in gpt-oss's fused, interleaved layout (export/load with its map)
        roundTrip(MoeConfig.builder().hidden(8).experts(4).topK(2).ffn(8).routeNorm(true).routerBias(true)
                .expertLinearBias(true).clampedSwiglu(7, 1.702).build(), dir.resolve("oss"),
                org.moe4j.checkpoint.MoeNameMap.forModelType("gpt_oss"));
        MoeConfig oss = MoeConfig.builder().hidden(8).experts(4).topK(2).ffn(8).expertLinearBias(true).build();
        RuntimeException e = assertThrows(RuntimeException.class, () -> LocalGroup.run(1, comm -> {
            try (MoeLayer l = MoeLayer.builder(oss, comm).build()) {
                l.save(dir.resolve("x.safetensors"), "");
                return l;
            }
        }));
        assertTrue(String.valueOf(e.getCause()).contains("expert linear biases"), String.valueOf(e.getCause()));
        assertFalse(java.nio.file.Files.exists(dir.resolve("x.safetensors")), "nothing written");
    }

    private void roundTrip(MoeConfig cfg, Path dir, org.moe4j.checkpoint.MoeNameMap names) {
        Path file = names == null ? dir.resolve("layer.safetensors") : dir;
        List<float[]> saved = LocalGroup.run(1, comm -> {
            try (MoeLayer a = MoeLayer.builder(cfg, comm).seed(1).build(); HostBuffer x = random(6, 8); HostBuffer dy = random(6, 8)) {
                for (Parameter p : a.parameters()) { // make every parameter, biases included, non-trivial
                    HostBuffer v = (HostBuffer) p.value();
                    for (long i = 0; i < v.numel(); i++) {
                        v.setFloat(i, v.getFloat(i) + 0.01f * (float) rnd.nextGaussian());
                    }
                }
                MoeLayer.Forward f = a.forward(x);
                f.output().close();
                a.backward(f.context(), dy).close();
                if (names == null) {
                    java.nio.file.Files.createDirectories(dir);
                    a.save(file, "mlp.");
                } else {
                    a.export(file, "mlp.", names, DType.F32);
                }
                List<float[]> values = new java.util.ArrayList<>();
                for (Parameter p : a.parameters()) {
                    values.add(((HostBuffer) p.value()).toFloatArray());
                }
                return values;
            }
        }).get(0);
        List<float[]> loaded = LocalGroup.run(1, comm -> {
            try (MoeLayer b = MoeLayer.builder(cfg, comm).seed(2).build()) {
                if (names == null) {
                    b.load(file, "mlp.");
                } else {
                    b.load(file, "mlp.", names, org.moe4j.checkpoint.LayerCheckpoint.Options.strict());
                }
                List<float[]> values = new java.util.ArrayList<>();
                for (Parameter p : b.parameters()) {
                    values.add(((HostBuffer) p.value()).toFloatArray());
                }
                return values;
            }
        }).get(0);
        assertEquals(saved.size(), loaded.size());
        assertTrue(saved.size() >= 6, "gate, gate.bias, 3 experts and the variant's tensors: " + saved.size());
        for (int i = 0; i < saved.size(); i++) {
            assertArrayEquals(saved.get(i), loaded.get(i), "parameter " + i);
        }
    }
}
