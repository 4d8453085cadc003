package org.moe4j.cuda.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.ValueLayout;
import java.util.Random;
import org.moe4j.core.DType;
import org.moe4j.core.Shape;
import org.moe4j.core.buffer.Buffer;
import org.moe4j.core.buffer.HostBuffer;
import org.moe4j.cuda.CudaBackend;
import org.moe4j.cuda.DeviceBuffer;

/** Helpers of the GPU parity tests: uploads, poisoned outputs, bitwise and relative comparisons. */
final class GpuParity {
    /** Bit pattern written into every output before a run (a quiet NaN for F32). */
    static final int POISON = 0x7FC0DEAD;
    /** bf16 poison (a NaN). */
    static final short POISON16 = (short) 0x7FC1;

    /** Smaller problem sizes (set by the bundle's compute-sanitizer runs: -Dmoe4j.gpu.small=true). */
    static final boolean SMALL = Boolean.getBoolean("moe4j.gpu.small");

    private GpuParity() {
    }

    static CudaBackend backend() {
        return new CudaBackend();
    }

    static DeviceBuffer up(HostBuffer h) {
        return backend().pool().copyOf(h);
    }

    static HostBuffer down(Buffer d) {
        return ((DeviceBuffer) d).toHost();
    }

    /** A host buffer filled with the poison pattern. */
    static HostBuffer poisoned(DType dtype, long... dims) {
        HostBuffer h = HostBuffer.allocate(dtype, dims);
        if (dtype.byteSize() == 2) {
            for (long i = 0; i < h.numel(); i++) {
                h.segment().setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, POISON16);
            }
        } else {
            for (long i = 0; i < h.byteSize() / 4; i++) {
                h.segment().setAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i, POISON);
            }
        }
        return h;
    }

    /** Device copy of a poisoned buffer. */
    static DeviceBuffer poisonedDevice(DType dtype, long... dims) {
        try (HostBuffer h = poisoned(dtype, dims)) {
            return up(h);
        }
    }

    static HostBuffer gaussian(Random rnd, DType dtype, long... dims) {
        HostBuffer h = HostBuffer.allocate(dtype, dims);
        for (long i = 0; i < h.numel(); i++) {
            h.setFloat(i, (float) rnd.nextGaussian());
        }
        return h;
    }

    /** Asserts identical bytes, naming the first differing element. */
    static void assertBitEqual(String what, HostBuffer expected, HostBuffer actual) {
        assertEquals(expected.byteSize(), actual.byteSize(), what + ": size");
        long at = expected.segment().mismatch(actual.segment());
        if (at >= 0) {
            long elem = at / expected.dtype().byteSize();
            throw new AssertionError(what + ": first difference at element " + elem + " (expected "
                    + describe(expected, elem) + ", got " + describe(actual, elem) + ")");
        }
    }

    private static String describe(HostBuffer h, long i) {
        return switch (h.dtype()) {
            case I32 -> Integer.toString(h.getInt(i));
            default -> h.getFloat(i) + " bits 0x" + Integer.toHexString(
                    h.dtype().byteSize() == 4 ? h.segment().getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i)
                            : h.segment().getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) & 0xFFFF);
        };
    }

    /** Asserts that no element still holds the poison pattern. */
    static void assertFullyWritten(String what, HostBuffer h) {
        for (long i = 0; i < h.numel(); i++) {
            boolean p = h.dtype().byteSize() == 2
                    ? h.segment().getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i) == POISON16
                    : h.segment().getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i) == POISON;
            assertTrue(!p, what + ": element " + i + " was never written");
        }
    }

    /** ‖a − b‖ / ‖b‖ in fp64; NaN anywhere gives +inf. */
    static double relError(HostBuffer actual, HostBuffer expected) {
        double num = 0;
        double den = 0;
        for (long i = 0; i < expected.numel(); i++) {
            double a = actual.getFloat(i);
            double e = expected.getFloat(i);
            if (Double.isNaN(a) || Double.isNaN(e)) {
                return Double.POSITIVE_INFINITY;
            }
            num += (a - e) * (a - e);
            den += e * e;
        }
        return den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    }

    static Shape shape(long... dims) {
        return Shape.of(dims);
    }
}
