package org.moe4j.core;

/**
 * Element types of moe4j buffers.
 *
 * <p>Floating-point storage is {@link #F32}, {@link #BF16} or {@link #F16}; arithmetic always
 * accumulates in fp32. The conversions below are exact in the fp32 direction and round to nearest,
 * ties to even, in the narrowing direction; NaN stays NaN (quiet) and infinities stay infinities.
 */
public enum DType {
    /** IEEE-754 binary32. */
    F32(4, true),
    /** bfloat16: the upper 16 bits of a binary32. */
    BF16(2, true),
    /** IEEE-754 binary16. */
    F16(2, true),
    /** Signed 32-bit integer. */
    I32(4, false),
    /** Signed 64-bit integer. */
    I64(8, false);

    private final int byteSize;
    private final boolean floatingPoint;

    DType(int byteSize, boolean floatingPoint) {
        this.byteSize = byteSize;
        this.floatingPoint = floatingPoint;
    }

    /**
     * Returns bytes per element.
     * @return bytes per element
     */
    public int byteSize() {
        return byteSize;
    }

    /**
     * Returns true for F32, BF16 and F16.
     * @return true for F32, BF16 and F16
     */
    public boolean isFloatingPoint() {
        return floatingPoint;
    }

    /**
     * Parses a dtype name as written in configs and safetensors headers ("F32", "bf16", "float32", ...).
     *
     * @param name the name, case-insensitive
     * @return the dtype
     * @throws IllegalArgumentException naming the accepted spellings
     */
    public static DType parse(String name) {
        return switch (name.trim().toLowerCase(java.util.Locale.ROOT)) {
            case "f32", "float32", "float", "fp32" -> F32;
            case "bf16", "bfloat16" -> BF16;
            case "f16", "float16", "half", "fp16" -> F16;
            case "i32", "int32", "int" -> I32;
            case "i64", "int64", "long" -> I64;
            default -> throw new IllegalArgumentException("unknown dtype '" + name
                    + "'; expected one of F32, BF16, F16, I32, I64 (or float32, bfloat16, float16, int32, int64)");
        };
    }

    /**
     * Widens a bfloat16 bit pattern to fp32 (exact).
     *
     * @param bits the 16 bf16 bits in the low half of a short
     * @return the same value as fp32
     */
    public static float bf16ToF32(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /**
     * Narrows fp32 to bfloat16, rounding to nearest with ties to even. NaN becomes a quiet NaN with
     * the same sign; infinities and signed zeros are preserved; overflow rounds to infinity.
     *
     * @param value the fp32 value
     * @return the bf16 bit pattern
     */
    public static short f32ToBf16(float value) {
        int bits = Float.floatToRawIntBits(value);
        if ((bits & 0x7FFFFFFF) > 0x7F800000) {
            // NaN: keep sign and the top payload bits, force the quiet bit so truncation can't make Inf.
            return (short) ((bits >>> 16) | 0x0040);
        }
        int lsb = (bits >>> 16) & 1;
        int rounded = bits + 0x7FFF + lsb;
        return (short) (rounded >>> 16);
    }

    /**
     * Widens an IEEE binary16 bit pattern to fp32 (exact, subnormals included).
     *
     * @param bits the 16 fp16 bits
     * @return the same value as fp32
     */
    public static float f16ToF32(short bits) {
        return Float.float16ToFloat(bits);
    }

    /**
     * Narrows fp32 to IEEE binary16 with round to nearest, ties to even (subnormals and overflow to
     * infinity handled), NaN preserved.
     *
     * @param value the fp32 value
     * @return the fp16 bit pattern
     */
    public static short f32ToF16(float value) {
        return Float.floatToFloat16(value);
    }
}
