package org.moe4j.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.junit.jupiter.api.Test;

/** The decoders give the exact values of the formats' definitions. */
class DequantTest {
    /** Fixed seed for the random rows; {@code -Dmoe4j.test.seed=N} overrides it (failure messages print it). */
    static final long SEED = Long.getLong("moe4j.test.seed", 20261203L);

    /**
     * The scalar path (null) and every float species the vector code supports (at least 256 bits),
     * whether or not this machine's preferred species is that wide: the Vector API runs any species.
     */
    static List<VectorSpecies<Float>> species() {
        List<VectorSpecies<Float>> out = new ArrayList<>(Arrays.asList(null, FloatVector.SPECIES_256, FloatVector.SPECIES_512));
        if (FloatVector.SPECIES_MAX.vectorBitSize() > 512) {
            out.add(FloatVector.SPECIES_MAX);
        }
        return out;
    }

    /** E4M3fn by its definition, in double: bias 7, subnormals m·2⁻⁹, S.1111.111 is NaN. */
    static double e4m3(int b) {
        int s = (b >>> 7) & 1;
        int e = (b >>> 3) & 0xF;
        int m = b & 7;
        if (e == 15 && m == 7) {
            return Double.NaN;
        }
        double v = e == 0 ? m * Math.pow(2, -9) : (1 + m / 8.0) * Math.pow(2, e - 7);
        return s == 1 ? -v : v;
    }

    @Test
    void fp8TableMatchesTheDefinitionForAll256Codes() {
        for (int b = 0; b < 256; b++) {
            double want = e4m3(b);
            float got = Dequant.FP8_E4M3[b];
            if (Double.isNaN(want)) {
                assertTrue(Float.isNaN(got), "code " + b);
            } else {
                assertEquals(Float.floatToRawIntBits((float) want), Float.floatToRawIntBits(got), "code " + b);
            }
        }
        assertEquals(448f, Dequant.FP8_E4M3[0x7E]);
        assertEquals(-0f, Dequant.FP8_E4M3[0x80]);
    }

    @Test
    void vectorisedFp8RowEqualsScalarDefinitionAcrossScaleBlocks() {
        Random rnd = new Random(SEED);
        for (int cols : new int[] {1, 7, 128, 136, 300, 1000}) {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment w = a.allocate(cols + 3);
                for (int i = 0; i < cols + 3; i++) {
                    w.set(ValueLayout.JAVA_BYTE, i, (byte) rnd.nextInt(256));
                }
                for (int i = 0; i < 256 && i < cols; i++) {
                    w.set(ValueLayout.JAVA_BYTE, 3 + i, (byte) i); // every code, NaNs and subnormals included
                }
                float[] scale = new float[(cols + 127) / 128];
                for (int i = 0; i < scale.length; i++) {
                    scale[i] = (float) ((rnd.nextDouble() + 0.5) * Math.pow(2, -8));
                }
                for (VectorSpecies<Float> fs : species()) {
                    float[] out = new float[cols];
                    Dequant.fp8Row(fs, w, 3, cols, scale, out);
                    for (int i = 0; i < cols; i++) {
                        float want = (float) e4m3(w.get(ValueLayout.JAVA_BYTE, 3 + i) & 0xFF) * scale[i / 128];
                        assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(out[i]), "species " + fs
                                + " cols=" + cols + " i=" + i + " byte=" + (w.get(ValueLayout.JAVA_BYTE, 3 + i) & 0xFF)
                                + " (seed " + SEED + ", -Dmoe4j.test.seed to rerun)");
                    }
                }
                float[] viaDefault = new float[cols];
                Dequant.fp8Row(w, 3, cols, scale, viaDefault);
                float[] scalar = new float[cols];
                Dequant.fp8Row(null, w, 3, cols, scale, scalar);
                assertEquals(Arrays.toString(scalar), Arrays.toString(viaDefault), "seed " + SEED);
            }
        }
    }

    @Test
    void vectorisedBf16RowEqualsTheScalarOneForEverySpecies() {
        Random rnd = new Random(SEED);
        try (Arena a = Arena.ofConfined()) {
            int n = 1000;
            MemorySegment s = a.allocate(2L * n + 2);
            for (int i = 0; i < n + 1; i++) {
                s.set(Dequant.I16, 2L * i, (short) rnd.nextInt(65536));
            }
            for (VectorSpecies<Float> fs : species()) {
                float[] out = new float[n];
                Dequant.bf16Row(fs, s, 1, out, n);
                for (int i = 0; i < n; i++) {
                    float want = org.moe4j.core.DType.bf16ToF32(s.get(Dequant.I16, 2L * (i + 1)));
                    assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(out[i]),
                            "species " + fs + " element " + i + " (seed " + SEED + ")");
                }
            }
        }
    }

    @Test
    void vectorisedBf16RowAndFiniteScanAreExact() {
        try (Arena a = Arena.ofConfined()) {
            int n = 1000;
            MemorySegment s = a.allocate(2L * n + 2);
            for (int i = 0; i < n + 1; i++) {
                s.set(Dequant.I16, 2L * i, (short) (i * 7919));
            }
            float[] out = new float[n];
            Dequant.plainRow(s, SafetensorsDtype.BF16, 1, 1, out, n);
            for (int i = 0; i < n; i++) {
                float want = org.moe4j.core.DType.bf16ToF32((short) ((i + 1) * 7919));
                assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(out[i]), "element " + i);
            }
            float[] row = new float[100];
            assertEquals(-1, Dequant.firstNonFinite(row, 100));
            row[77] = Float.NEGATIVE_INFINITY;
            row[90] = Float.NaN;
            assertEquals(77, Dequant.firstNonFinite(row, 100));
            assertEquals(-1, Dequant.firstNonFinite(row, 77));
        }
    }

    @Test
    void mxfp4RowFollowsTheOcpDefinition() {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment blocks = a.allocate(32);
            MemorySegment scales = a.allocate(2);
            for (int i = 0; i < 32; i++) {
                blocks.set(ValueLayout.JAVA_BYTE, i, (byte) (i * 37 + 11));
            }
            scales.set(ValueLayout.JAVA_BYTE, 0, (byte) 127);
            scales.set(ValueLayout.JAVA_BYTE, 1, (byte) 125);
            float[] out = new float[64];
            Dequant.mxfp4Row(blocks, 0, scales, 0, 64, out);
            double[] e2m1 = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
            for (int i = 0; i < 64; i++) {
                int v = blocks.get(ValueLayout.JAVA_BYTE, i / 2) & 0xFF;
                int nib = i % 2 == 0 ? v & 0xF : v >>> 4;
                double want = ((nib & 8) != 0 ? -1 : 1) * e2m1[nib & 7] * (i < 32 ? 1 : 0.25);
                assertEquals(Float.floatToRawIntBits((float) want), Float.floatToRawIntBits(out[i]), "element " + i);
            }
        }
    }

    @Test
    void mxfp4EdgeScalesFollowTheOcpDefinition() {
        // E8M0: 0 is 2^-127 (fp32 subnormal, exact), 254 is 2^127 (6 · 2^127 overflows fp32 to infinity,
        // as the reference's fp32 ldexp does), 255 is NaN for every element of the block
        try (Arena a = Arena.ofConfined()) {
            MemorySegment blocks = a.allocate(48);
            MemorySegment scales = a.allocate(3);
            for (int i = 0; i < 48; i++) {
                blocks.set(ValueLayout.JAVA_BYTE, i, (byte) (i * 0x11 + 0x10 * (i % 3)));
            }
            scales.set(ValueLayout.JAVA_BYTE, 0, (byte) 0);
            scales.set(ValueLayout.JAVA_BYTE, 1, (byte) 254);
            scales.set(ValueLayout.JAVA_BYTE, 2, (byte) 255);
            float[] out = new float[96];
            Dequant.mxfp4Row(blocks, 0, scales, 0, 96, out);
            double[] e2m1 = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
            double[] scale = {Math.pow(2, -127), Math.pow(2, 127), Double.NaN};
            for (int i = 0; i < 96; i++) {
                int v = blocks.get(ValueLayout.JAVA_BYTE, i / 2) & 0xFF;
                int nib = i % 2 == 0 ? v & 0xF : v >>> 4;
                float want = (float) (((nib & 8) != 0 ? -1 : 1) * e2m1[nib & 7] * scale[i / 32]);
                if (Float.isNaN(want)) {
                    assertTrue(Float.isNaN(out[i]), "element " + i);
                } else {
                    assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(out[i]), "element " + i + " nibble " + nib);
                }
            }
            assertEquals(Math.scalb(1f, -127), Dequant.e8m0(0));
            assertEquals(Math.scalb(1f, 127), Dequant.e8m0(254));
            assertTrue(Float.isNaN(Dequant.e8m0(255)));
        }
    }
}
