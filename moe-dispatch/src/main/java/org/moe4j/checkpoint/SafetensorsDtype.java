package org.moe4j.checkpoint;

import org.moe4j.core.DType;

/**
 * The element types a safetensors header may name, with their sizes. Only some are tensor dtypes of
 * moe4j ({@link #core()}); the others are read through dequantisation ({@code F8_E4M3} weights,
 * {@code U8} MXFP4 blocks and E8M0 scales) or refused by the layer loader by name.
 */
public enum SafetensorsDtype {
    /** Boolean, one byte. */
    BOOL(1, null),
    /** Unsigned 8-bit integer (MXFP4 blocks and scales are stored as U8). */
    U8(1, null),
    /** Signed 8-bit integer. */
    I8(1, null),
    /** FP8 E4M3 ("fn": no infinities, one NaN pattern per sign). */
    F8_E4M3(1, null),
    /** FP8 E5M2. */
    F8_E5M2(1, null),
    /** FP8 E8M0: an unsigned power-of-two exponent (MX scales). */
    F8_E8M0(1, null),
    /** Signed 16-bit integer. */
    I16(2, null),
    /** Unsigned 16-bit integer. */
    U16(2, null),
    /** IEEE binary16. */
    F16(2, DType.F16),
    /** bfloat16. */
    BF16(2, DType.BF16),
    /** Signed 32-bit integer. */
    I32(4, DType.I32),
    /** Unsigned 32-bit integer. */
    U32(4, null),
    /** IEEE binary32. */
    F32(4, DType.F32),
    /** IEEE binary64. */
    F64(8, null),
    /** Signed 64-bit integer. */
    I64(8, DType.I64),
    /** Unsigned 64-bit integer. */
    U64(8, null);

    private final int byteSize;
    private final DType core;

    SafetensorsDtype(int byteSize, DType core) {
        this.byteSize = byteSize;
        this.core = core;
    }

    /**
     * Returns bytes per element.
     *
     * @return bytes per element
     */
    public int byteSize() {
        return byteSize;
    }

    /**
     * Returns the moe4j dtype with the same encoding, or null when moe4j has none.
     *
     * @return the moe4j dtype with the same encoding, or null when moe4j has none
     */
    public DType core() {
        return core;
    }

    /**
     * Returns true for F32, BF16 and F16: element types copied into a layer with plain conversion.
     *
     * @return true for F32, BF16 and F16: element types copied into a layer with plain conversion
     */
    public boolean isPlainFloat() {
        return this == F32 || this == BF16 || this == F16;
    }

    /**
     * Parses a header dtype code.
     *
     * @param code the header's dtype string (exact, upper case as the format writes it)
     * @return the dtype
     * @throws IllegalArgumentException for a code the format does not define
     */
    public static SafetensorsDtype parse(String code) {
        for (SafetensorsDtype d : values()) {
            if (d.name().equals(code)) {
                return d;
            }
        }
        throw new IllegalArgumentException("unknown safetensors dtype '" + code + "'");
    }

    /**
     * Returns the safetensors dtype with the same encoding.
     *
     * @param d a moe4j dtype
     * @return the safetensors dtype with the same encoding
     */
    public static SafetensorsDtype of(DType d) {
        return switch (d) {
            case F32 -> F32;
            case BF16 -> BF16;
            case F16 -> F16;
            case I32 -> I32;
            case I64 -> I64;
        };
    }
}
