package org.moe4j.core.init;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;
import org.moe4j.core.DType;
import org.moe4j.core.buffer.HostBuffer;

/**
 * Golden values were computed by an independent Python implementation of the algorithm written in
 * {@link ParamInit}'s Javadoc (arbitrary-precision integers masked to 64 bits), so a GPU port that
 * follows the Javadoc must reproduce these bits.
 */
class ParamInitTest {
    private static void assertBits(int expected, float actual, String what) {
        assertEquals(Integer.toHexString(expected), Integer.toHexString(Float.floatToRawIntBits(actual)), what);
    }

    @Test
    void goldenValuesArePinned() {
        assertBits(0x3E9C1B74, ParamInit.symmetric(0, 0, 0), "symmetric(0,0,0)");
        assertBits(0xBEA07818, ParamInit.symmetric(42, 0, 0), "symmetric(42,0,0)");
        assertBits(0x3F6957A2, ParamInit.symmetric(42, 0, 1), "symmetric(42,0,1)");
        assertBits(0x3EFDC180, ParamInit.symmetric(42, 3, 1000), "symmetric(42,3,1000)");
        assertBits(0xBEB18408, ParamInit.symmetric(-1, 7, 123456789), "symmetric(-1,7,123456789)");
        assertBits(0x3D1C1B74, ParamInit.uniform(0, 0, 0, ParamInit.linearBound(64)), "uniform bound 1/8");
        assertBits(0x3E13CD3A, ParamInit.linearBound(48), "linearBound(48)");
        float b = ParamInit.linearBound(48);
        assertBits(0x3D03B939, ParamInit.uniform(7, 2, 0, b), "uniform(7,2,0)");
        assertBits(0xBE0616CB, ParamInit.uniform(7, 2, 5, b), "uniform(7,2,5)");
        assertBits(0xBE087F9F, ParamInit.uniform(7, 2, 99, b), "uniform(7,2,99)");
    }

    @Test
    void aSliceFilledWithAnOffsetEqualsThatSliceOfTheWhole() {
        try (HostBuffer whole = HostBuffer.allocate(DType.F32, 8, 16);
                HostBuffer slice = HostBuffer.allocate(DType.F32, 3, 16)) {
            ParamInit.fillUniform(whole, 5, 11, 0, 0.3f);
            ParamInit.fillUniform(slice, 5, 11, 2 * 16, 0.3f); // rows 2..4, as rank 1 of a row split would
            float[] w = whole.toFloatArray();
            float[] expected = new float[3 * 16];
            System.arraycopy(w, 2 * 16, expected, 0, expected.length);
            assertArrayEquals(expected, slice.toFloatArray());
        }
    }

    @Test
    void valuesStayInsideTheBoundAndStreamsDiffer() {
        float bound = 0.05f;
        double sum = 0;
        int n = 20_000;
        for (int i = 0; i < n; i++) {
            float v = ParamInit.uniform(3, 1, i, bound);
            assertTrue(v >= -bound && v < bound, "value " + v + " at " + i);
            sum += v;
        }
        // mean of U(-b, b) over n draws has standard deviation b/sqrt(3n) ~ 2e-4; 6 sigma
        assertEquals(0.0, sum / n, 6 * bound / Math.sqrt(3.0 * n));
        assertNotEquals(ParamInit.symmetric(3, 1, 0), ParamInit.symmetric(3, 2, 0));
        assertNotEquals(ParamInit.symmetric(3, 1, 0), ParamInit.symmetric(4, 1, 0));
    }

    @Test
    void bf16TargetsGetTheRoundedFp32Value() {
        try (HostBuffer b = HostBuffer.allocate(DType.BF16, 32)) {
            ParamInit.fillUniform(b, 9, 0, 0, 1f);
            for (int i = 0; i < 32; i++) {
                float exact = ParamInit.uniform(9, 0, i, 1f);
                assertEquals(DType.bf16ToF32(DType.f32ToBf16(exact)), b.getFloat(i), "element " + i);
            }
        }
    }

    /** A buffer outside host memory: reachable only through copyFrom/copyTo, like a device buffer. */
    private static final class StagedOnly implements org.moe4j.core.buffer.Buffer {
        final org.moe4j.core.buffer.HostBuffer inner;
        int uploads;

        StagedOnly(org.moe4j.core.DType dtype, long... dims) {
            inner = org.moe4j.core.buffer.HostBuffer.allocate(dtype, dims);
        }

        @Override
        public org.moe4j.core.DType dtype() {
            return inner.dtype();
        }

        @Override
        public org.moe4j.core.Shape shape() {
            return inner.shape();
        }

        @Override
        public org.moe4j.core.Device device() {
            return org.moe4j.core.Device.cuda(0);
        }

        @Override
        public boolean isClosed() {
            return inner.isClosed();
        }

        @Override
        public void close() {
            inner.close();
        }

        @Override
        public void copyFrom(org.moe4j.core.buffer.HostBuffer src) {
            uploads++;
            inner.copyFrom(src);
        }
    }

    @Test
    void fillUniformOfANonHostBufferUploadsTheSameBitsOnce() {
        for (org.moe4j.core.DType dtype : new org.moe4j.core.DType[] {org.moe4j.core.DType.F32, org.moe4j.core.DType.BF16}) {
            try (org.moe4j.core.buffer.HostBuffer host = org.moe4j.core.buffer.HostBuffer.allocate(dtype, 3, 7);
                 StagedOnly staged = new StagedOnly(dtype, 3, 7)) {
                ParamInit.fillUniform(host, 5, 100, 21, 0.125f);
                ParamInit.fillUniform((org.moe4j.core.buffer.Buffer) staged, 5, 100, 21, 0.125f);
                assertEquals(1, staged.uploads);
                assertArrayEquals(
                        host.segment().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE),
                        staged.inner.segment().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE), dtype.toString());
            }
        }
    }
}
