package org.moe4j.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigDecimal;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * bf16 and fp16 conversions, checked over every 16-bit pattern and against an independent
 * reference: exact decimal arithmetic ({@link BigDecimal}) over the list of representable values.
 */
class DTypeTest {
    private static final long SEED = 0x5EED_0B16L;

    /** Exact value of every non-negative finite pattern, plus the value overflow rounds past. */
    private record Grid(BigDecimal[] values, int infPattern) {
        /**
         * Rounds a finite, non-negative value to nearest, ties to the even pattern; the value past
         * the largest finite one stands for infinity (IEEE rounds as if the exponent were unbounded).
         */
        int round(BigDecimal v) {
            int idx = Arrays.binarySearch(values, v);
            if (idx >= 0) {
                return idx;
            }
            int hi = -idx - 1; // first value > v
            if (hi == values.length) {
                return infPattern; // beyond 2^(emax+1): impossible for a float input, kept for safety
            }
            int lo = hi - 1;
            int cmp = v.subtract(values[lo]).compareTo(values[hi].subtract(v));
            if (cmp < 0) {
                return lo;
            }
            if (cmp > 0) {
                return hi;
            }
            return (lo & 1) == 0 ? lo : hi; // tie: even significand; the infinity slot counts as even
        }
    }

    /** bf16: value of pattern p (0 <= p < 0x7F80) = widened fp32, computed from the bit fields. */
    private static final Grid BF16 = grid(0x7F80, p -> {
        int e = p >>> 7;
        int m = p & 0x7F;
        return e == 0 ? Math.scalb((double) m, -133) : Math.scalb((double) (128 + m), e - 134);
    });

    /** fp16: value of pattern p (0 <= p < 0x7C00) from the bit fields. */
    private static final Grid F16 = grid(0x7C00, p -> {
        int e = p >>> 10;
        int m = p & 0x3FF;
        return e == 0 ? Math.scalb((double) m, -24) : Math.scalb((double) (1024 + m), e - 25);
    });

    private static Grid grid(int infPattern, java.util.function.IntToDoubleFunction value) {
        BigDecimal[] v = new BigDecimal[infPattern + 1];
        for (int p = 0; p < infPattern; p++) {
            v[p] = new BigDecimal(value.applyAsDouble(p));
        }
        // the value one step past the largest finite one, where the infinity pattern would sit
        v[infPattern] = new BigDecimal(value.applyAsDouble(infPattern - 1))
                .add(new BigDecimal(value.applyAsDouble(infPattern - 1))
                        .subtract(new BigDecimal(value.applyAsDouble(infPattern - 2))));
        return new Grid(v, infPattern);
    }

    private static short reference(Grid g, float f) {
        int sign = Float.floatToRawIntBits(f) < 0 ? 0x8000 : 0;
        int p = g.round(new BigDecimal(Math.abs((double) f)));
        return (short) (sign | p);
    }

    private static boolean isBf16NaN(int bits) {
        return (bits & 0x7F80) == 0x7F80 && (bits & 0x7F) != 0;
    }

    private static boolean isF16NaN(int bits) {
        return (bits & 0x7C00) == 0x7C00 && (bits & 0x3FF) != 0;
    }

    @Test
    void bf16WidenMatchesBitFieldsAndNarrowInvertsItForAll65536Patterns() {
        for (int p = 0; p < 0x10000; p++) {
            float f = DType.bf16ToF32((short) p);
            if (isBf16NaN(p)) {
                assertTrue(Float.isNaN(f), "pattern " + Integer.toHexString(p));
                short back = DType.f32ToBf16(f);
                assertTrue(isBf16NaN(back & 0xFFFF), "NaN pattern " + Integer.toHexString(p) + " narrowed to "
                        + Integer.toHexString(back & 0xFFFF));
                assertEquals(p & 0x8000, back & 0x8000, "NaN sign of " + Integer.toHexString(p));
                continue;
            }
            int mag = p & 0x7FFF;
            double expected = mag == 0x7F80 ? Double.POSITIVE_INFINITY
                    : BF16.values()[mag].doubleValue();
            assertEquals((p & 0x8000) != 0 ? -expected : expected, (double) f, 0.0,
                    "value of pattern " + Integer.toHexString(p));
            assertEquals(Float.floatToRawIntBits(f) >>> 16, p, "sign of zero kept for " + Integer.toHexString(p));
            assertEquals(p, DType.f32ToBf16(f) & 0xFFFF, "round trip of pattern " + Integer.toHexString(p));
        }
    }

    @Test
    void f16WidenMatchesBitFieldsAndNarrowInvertsItForAll65536Patterns() {
        for (int p = 0; p < 0x10000; p++) {
            float f = DType.f16ToF32((short) p);
            if (isF16NaN(p)) {
                assertTrue(Float.isNaN(f), "pattern " + Integer.toHexString(p));
                assertTrue(isF16NaN(DType.f32ToF16(f) & 0xFFFF), "NaN pattern " + Integer.toHexString(p));
                continue;
            }
            int mag = p & 0x7FFF;
            double expected = mag == 0x7C00 ? Double.POSITIVE_INFINITY : F16.values()[mag].doubleValue();
            assertEquals((p & 0x8000) != 0 ? -expected : expected, (double) f, 0.0,
                    "value of pattern " + Integer.toHexString(p));
            assertEquals(p, DType.f32ToF16(f) & 0xFFFF, "round trip of pattern " + Integer.toHexString(p));
        }
    }

    @Test
    void bf16NarrowingRoundsToNearestTiesToEvenAtEveryMidpoint() {
        // Every fp32 value halfway between two adjacent bf16 values has low half 0x8000; check it and
        // both fp32 neighbours, for every bf16 pattern and both signs.
        for (int hi = 0; hi < 0x7F80; hi++) {
            for (int sign : new int[] {0, 0x8000_0000}) {
                float mid = Float.intBitsToFloat(sign | (hi << 16) | 0x8000);
                for (float f : new float[] {mid, Math.nextDown(mid), Math.nextUp(mid)}) {
                    assertEquals(reference(BF16, f), DType.f32ToBf16(f),
                            () -> "bf16 of " + f + " (bits " + Integer.toHexString(Float.floatToRawIntBits(f)) + ")");
                }
            }
        }
    }

    @Test
    void bf16NarrowingMatchesExactReferenceOnRandomFloats() {
        SplittableRandom rnd = new SplittableRandom(SEED);
        System.out.println("bf16 random seed " + SEED);
        for (int i = 0; i < 200_000; i++) {
            float f = Float.intBitsToFloat(rnd.nextInt());
            if (Float.isNaN(f) || Float.isInfinite(f)) {
                continue;
            }
            assertEquals(reference(BF16, f), DType.f32ToBf16(f), "bf16 of bits " + Integer.toHexString(
                    Float.floatToRawIntBits(f)));
        }
    }

    @Test
    void f16NarrowingRoundsToNearestTiesToEvenAtEveryMidpointIncludingSubnormals() {
        for (int p = 0; p < 0x7C00; p++) {
            double a = F16.values()[p].doubleValue();
            double b = F16.values()[p + 1].doubleValue(); // p + 1 == 0x7C00: the overflow threshold step
            float mid = (float) ((a + b) / 2); // exact: needs 12 significant bits
            assertEquals((a + b) / 2, (double) mid, 0.0, "midpoint is exact in fp32");
            for (float m : new float[] {mid, -mid}) {
                for (float f : new float[] {m, Math.nextDown(m), Math.nextUp(m)}) {
                    assertEquals(reference(F16, f), DType.f32ToF16(f),
                            () -> "fp16 of " + f + " (bits " + Integer.toHexString(Float.floatToRawIntBits(f)) + ")");
                }
            }
        }
    }

    @Test
    void f16NarrowingMatchesExactReferenceOnRandomFloatsNearItsRange() {
        SplittableRandom rnd = new SplittableRandom(SEED + 1);
        System.out.println("f16 random seed " + (SEED + 1));
        for (int i = 0; i < 200_000; i++) {
            // exponents 2^-30 .. 2^17: underflow, subnormal, normal and overflow ranges
            float f = (float) (Math.scalb(1.0 + rnd.nextDouble(), rnd.nextInt(-30, 18)) * (rnd.nextBoolean() ? 1 : -1));
            assertEquals(reference(F16, f), DType.f32ToF16(f), "fp16 of " + f);
        }
    }

    @Test
    void specialValuesKeepTheirMeaning() {
        // infinities and signed zeros
        assertEquals((short) 0x7F80, DType.f32ToBf16(Float.POSITIVE_INFINITY));
        assertEquals((short) 0xFF80, DType.f32ToBf16(Float.NEGATIVE_INFINITY));
        assertEquals((short) 0x0000, DType.f32ToBf16(0.0f));
        assertEquals((short) 0x8000, DType.f32ToBf16(-0.0f));
        assertEquals((short) 0x7C00, DType.f32ToF16(Float.POSITIVE_INFINITY));
        assertEquals((short) 0x8000, DType.f32ToF16(-0.0f));
        // overflow: Float.MAX_VALUE rounds past the largest bf16 (0x7F7F) to infinity
        assertEquals((short) 0x7F80, DType.f32ToBf16(Float.MAX_VALUE));
        assertEquals((short) 0xFF80, DType.f32ToBf16(-Float.MAX_VALUE));
        // the largest fp32 value that still rounds down to the largest bf16: 0x7F7F7FFF
        assertEquals((short) 0x7F7F, DType.f32ToBf16(Float.intBitsToFloat(0x7F7F7FFF)));
        // fp16 max is 65504; 65520 is the tie with the (virtual) next step and goes to infinity
        assertEquals((short) 0x7BFF, DType.f32ToF16(65504f));
        assertEquals((short) 0x7BFF, DType.f32ToF16(Math.nextDown(65520f)));
        assertEquals((short) 0x7C00, DType.f32ToF16(65520f));
        // subnormals: the smallest fp32 subnormal survives in bf16, fp16 flushes values below 2^-25
        assertEquals((short) 0x0001, DType.f32ToBf16(Float.intBitsToFloat(0x0001_0000)));
        assertEquals(Float.intBitsToFloat(0x0001_0000), DType.bf16ToF32((short) 1));
        assertEquals((short) 0x0000, DType.f32ToBf16(Float.MIN_VALUE));
        assertEquals((short) 0x0001, DType.f32ToF16(0x1p-24f));
        assertEquals((short) 0x0000, DType.f32ToF16(0x1p-25f)); // tie between 0 and 2^-24: even is 0
        assertEquals((short) 0x0001, DType.f32ToF16(Math.nextUp(0x1p-25f)));
        // NaN: quiet, sign kept, never turns into an infinity (payload only in the low bits)
        short nan = DType.f32ToBf16(Float.intBitsToFloat(0xFF80_0001));
        assertTrue(isBf16NaN(nan & 0xFFFF));
        assertEquals(0x8000, nan & 0x8000);
        assertTrue(Float.isNaN(DType.bf16ToF32(DType.f32ToBf16(Float.NaN))));
        assertTrue(Float.isNaN(DType.f16ToF32(DType.f32ToF16(Float.intBitsToFloat(0x7F80_0001)))));
    }

    @Test
    void parseAcceptsCommonSpellingsAndNamesTheAcceptedOnes() {
        assertEquals(DType.BF16, DType.parse(" BFloat16 "));
        assertEquals(DType.F32, DType.parse("float32"));
        assertEquals(DType.F16, DType.parse("half"));
        assertEquals(DType.I64, DType.parse("int64"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DType.parse("fp8"));
        assertTrue(e.getMessage().startsWith("unknown dtype 'fp8'; expected one of F32, BF16, F16, I32, I64"),
                e.getMessage());
    }

    @Test
    void byteSizesMatchTheFormats() {
        assertEquals(4, DType.F32.byteSize());
        assertEquals(2, DType.BF16.byteSize());
        assertEquals(2, DType.F16.byteSize());
        assertEquals(4, DType.I32.byteSize());
        assertEquals(8, DType.I64.byteSize());
        assertTrue(DType.BF16.isFloatingPoint());
        assertTrue(!DType.I32.isFloatingPoint());
    }
}
