package org.moe4j.checkpoint;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;
import org.moe4j.core.DType;

/**
 * Row decoders from file encodings to fp32: plain F32/BF16/F16, FP8 E4M3 with a per-block scale, and
 * MXFP4 (E2M1 nibbles with an E8M0 scale per 32 values). Every result is the exact value the
 * PyTorch reference computes ({@code fp8.float() * scale}, {@code ldexp(lut[nibble], e8m0 - 127)}).
 */
final class Dequant {
    private Dequant() {
    }

    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final VectorSpecies<Float> FS = FloatVector.SPECIES_PREFERRED;
    /** Int lanes of {@link #FS}'s shape; constants, so the JIT intrinsifies the conversions (a species looked up per call is not). */
    private static final VectorSpecies<Integer> IS = VectorSpecies.of(int.class, FS.vectorShape());
    /** Short lanes of half {@link #FS}'s width (one bf16 per float lane). */
    private static final VectorSpecies<Short> SS = VectorSpecies.of(short.class,
            jdk.incubator.vector.VectorShape.forBitSize(Math.max(64, FS.vectorBitSize() / 2)));
    /** Byte lanes of a quarter of {@link #FS}'s width (one fp8 per float lane). */
    private static final VectorSpecies<Byte> BS = VectorSpecies.of(byte.class,
            jdk.incubator.vector.VectorShape.forBitSize(Math.max(64, FS.vectorBitSize() / 4)));
    /**
     * The widening loads need byte and short vectors of a quarter and a half of the float width;
     * the smallest vector shape is 64 bits, so float vectors narrower than 256 bits (e.g. 128-bit
     * NEON) take the scalar loops.
     */
    /** {@code Float.NaN}'s bits (the scalar table's NaN). */
    private static final int FLOAT_NAN_BITS = Float.floatToRawIntBits(Float.NaN);
    private static final boolean VECTOR = FS.vectorBitSize() >= 256;

    /** E2M1 values by nibble (sign in bit 3). */
    static final float[] FP4 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f};
    /** FP8 E4M3 (fn) values by byte. */
    static final float[] FP8_E4M3 = new float[256];

    static {
        for (int b = 0; b < 256; b++) {
            FP8_E4M3[b] = fp8e4m3(b);
        }
    }

    /**
     * @param b the byte (0..255)
     * @return its E4M3fn value: bias 7, subnormals, no infinities, {@code S.1111.111} is NaN
     */
    static float fp8e4m3(int b) {
        int e = (b >>> 3) & 0xF;
        int m = b & 7;
        float sign = (b & 0x80) != 0 ? -1f : 1f;
        if (e == 15 && m == 7) {
            return Float.NaN;
        }
        if (e == 0) {
            return sign * Math.scalb((float) m, -9);
        }
        return sign * Math.scalb(1f + m / 8f, e - 7);
    }

    /**
     * @param s E8M0 byte
     * @return {@code 2^(s − 127)} (exact; 255 is NaN as in the OCP MX spec)
     */
    static float e8m0(int s) {
        return s == 255 ? Float.NaN : Math.scalb(1f, s - 127);
    }

    /**
     * Reads {@code n} plain float elements at a stride.
     *
     * @param src    the tensor bytes
     * @param dtype  F32, BF16 or F16
     * @param first  element index of the first value
     * @param stride elements between values
     * @param out    receives the values
     * @param n      how many
     */
    static void plainRow(MemorySegment src, SafetensorsDtype dtype, long first, long stride, float[] out, int n) {
        switch (dtype) {
            case F32 -> {
                if (stride == 1) {
                    MemorySegment.copy(src, F32, first * 4, out, 0, n);
                } else {
                    for (int i = 0; i < n; i++) {
                        out[i] = src.get(F32, (first + i * stride) * 4);
                    }
                }
            }
            case BF16 -> {
                if (stride == 1) {
                    bf16Row(VECTOR ? FS : null, src, first, out, n);
                } else {
                    for (int i = 0; i < n; i++) {
                        out[i] = DType.bf16ToF32(src.get(I16, (first + i * stride) * 2));
                    }
                }
            }
            case F16 -> {
                for (int i = 0; i < n; i++) {
                    out[i] = Float.float16ToFloat(src.get(I16, (first + i * stride) * 2));
                }
            }
            default -> throw new IllegalStateException("plainRow: " + dtype);
        }
    }

    /**
     * Decodes one row of an FP8 E4M3 weight with its 128-column block scales.
     *
     * @param w          the weight bytes
     * @param rowByte    byte offset of the row
     * @param cols       row length
     * @param blockScale scale of each 128-column block of this row ({@code ceil(cols/128)} values)
     * @param out        receives {@code fp8 · scale} per element
     */
    static void fp8Row(MemorySegment w, long rowByte, int cols, float[] blockScale, float[] out) {
        fp8Row(VECTOR ? FS : null, w, rowByte, cols, blockScale, out);
    }

    /**
     * {@link #fp8Row(MemorySegment, long, int, float[], float[])} with the float species to vectorise
     * with (tests pass each species so the vector code is checked on every machine).
     *
     * @param fs a float species of at least 256 bits, or null for the scalar loop only
     */
    static void fp8Row(VectorSpecies<Float> fs, MemorySegment w, long rowByte, int cols, float[] blockScale, float[] out) {
        int i = 0;
        if (fs == FS) { // the constant species: the JIT compiles the conversions as vector instructions
            i = fp8VectorsPreferred(w, rowByte, cols, blockScale, out);
        } else if (fs != null) { // another width (tests): species looked up per call
            i = fp8Vectors(fs, VectorSpecies.of(int.class, fs.vectorShape()), VectorSpecies.of(byte.class,
                    jdk.incubator.vector.VectorShape.forBitSize(fs.vectorBitSize() / 4)), w, rowByte, cols, blockScale, out);
        }
        for (; i < cols; i++) {
            out[i] = FP8_E4M3[w.get(ValueLayout.JAVA_BYTE, rowByte + i) & 0xFF] * blockScale[i >>> 7];
        }
    }

    /**
     * The vector part of {@link #fp8Row} at the preferred width, with the species as constants so the JIT
     * compiles the widening load as one instruction (a species passed as an argument is only constant
     * where the JIT inlines the call, which it may refuse for a loop it already compiled on its own).
     */
    private static int fp8VectorsPreferred(MemorySegment w, long rowByte, int cols, float[] blockScale, float[] out) {
        int i = 0;
        int lanes = FS.length();
        for (; i + lanes <= cols && (i >>> 7) == ((i + lanes - 1) >>> 7); i += lanes) {
            IntVector b = (IntVector) ByteVector.fromMemorySegment(BS, w, rowByte + i, ByteOrder.LITTLE_ENDIAN)
                    .convertShape(VectorOperators.B2I, IS, 0);
            fp8Values(b, blockScale[i >>> 7]).intoArray(out, i);
        }
        return i;
    }

    /** {@link #fp8VectorsPreferred} at any width (tests check every species): returns the first column left. */
    private static int fp8Vectors(VectorSpecies<Float> fs, VectorSpecies<Integer> is, VectorSpecies<Byte> bs,
            MemorySegment w, long rowByte, int cols, float[] blockScale, float[] out) {
        int i = 0;
        int lanes = fs.length();
        for (; i + lanes <= cols && (i >>> 7) == ((i + lanes - 1) >>> 7); i += lanes) { // one scale block per vector
            IntVector b = (IntVector) ByteVector.fromMemorySegment(bs, w, rowByte + i, ByteOrder.LITTLE_ENDIAN)
                    .convertShape(VectorOperators.B2I, is, 0);
            fp8Values(b, blockScale[i >>> 7]).intoArray(out, i);
        }
        return i;
    }

    /**
     * E4M3 bytes (one per int lane) times their block scale: the 7 magnitude bits moved into an fp32
     * exponent/mantissa are exact fp32 (sub)normals, 2^120 rebiases E4M3's exponent (bias 7) to fp32's
     * (bias 127); magnitude 0x7F is NaN (set in the int domain: NaN stays NaN through the products).
     */
    private static FloatVector fp8Values(IntVector b, float scale) {
        IntVector mag = b.and(0x7F);
        IntVector bits = mag.lanewise(VectorOperators.LSHL, 20).or(b.and(0x80).lanewise(VectorOperators.LSHL, 24))
                .blend(FLOAT_NAN_BITS, mag.eq(0x7F));
        return bits.reinterpretAsFloats().mul(0x1p120f).mul(scale);
    }

    /**
     * Decodes {@code n} contiguous BF16 values.
     *
     * @param fs    a float species of at least 256 bits, or null for the scalar loop only
     * @param src   the tensor bytes
     * @param first element index of the first value
     * @param out   receives the values
     * @param n     how many
     */
    static void bf16Row(VectorSpecies<Float> fs, MemorySegment src, long first, float[] out, int n) {
        int i = 0;
        if (fs == FS) { // the constant species: the JIT compiles the conversion as vector instructions
            i = bf16Vectors(FS, IS, SS, src, first, out, n);
        } else if (fs != null) { // another width (tests): species looked up per call
            i = bf16Vectors(fs, VectorSpecies.of(int.class, fs.vectorShape()), VectorSpecies.of(short.class,
                    jdk.incubator.vector.VectorShape.forBitSize(fs.vectorBitSize() / 2)), src, first, out, n);
        }
        for (; i < n; i++) {
            out[i] = DType.bf16ToF32(src.get(I16, (first + i) * 2));
        }
    }

    /** The vector part of {@link #bf16Row} (bf16 bits are the top half of the fp32 bits): returns the first value left. */
    private static int bf16Vectors(VectorSpecies<Float> fs, VectorSpecies<Integer> is, VectorSpecies<Short> ss,
            MemorySegment src, long first, float[] out, int n) {
        int i = 0;
        for (int lanes = fs.length(); i + lanes <= n; i += lanes) {
            ShortVector.fromMemorySegment(ss, src, (first + i) * 2, ByteOrder.LITTLE_ENDIAN)
                    .convertShape(VectorOperators.S2I, is, 0).reinterpretAsInts()
                    .lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().intoArray(out, i);
        }
        return i;
    }

    /**
     * Decodes one row of an MXFP4 weight: {@code cols/2} packed bytes (low nibble first) and
     * {@code cols/32} E8M0 scales.
     *
     * @param blocks   packed nibbles
     * @param rowByte  byte offset of the row in {@code blocks}
     * @param scales   E8M0 scales
     * @param scaleAt  byte offset of the row's first scale
     * @param cols     row length (a multiple of 32)
     * @param out      receives the values
     */
    static void mxfp4Row(MemorySegment blocks, long rowByte, MemorySegment scales, long scaleAt, int cols, float[] out) {
        for (int g = 0; g < cols / 32; g++) {
            float s = e8m0(scales.get(ValueLayout.JAVA_BYTE, scaleAt + g) & 0xFF);
            long at = rowByte + g * 16L;
            int o = g * 32;
            for (int j = 0; j < 16; j++) {
                int v = blocks.get(ValueLayout.JAVA_BYTE, at + j) & 0xFF;
                out[o + 2 * j] = FP4[v & 0xF] * s;
                out[o + 2 * j + 1] = FP4[v >>> 4] * s;
            }
        }
    }

    /**
     * @param row values
     * @param n   count
     * @return index of the first NaN or infinity, or -1
     */
    static int firstNonFinite(float[] row, int n) {
        int i = 0;
        for (int lanes = FS.length(); i + lanes <= n; i += lanes) {
            if (!FloatVector.fromArray(FS, row, i).abs().compare(VectorOperators.LE, Float.MAX_VALUE).allTrue()) {
                break;
            }
        }
        for (; i < n; i++) {
            if (!Float.isFinite(row[i])) {
                return i;
            }
        }
        return -1;
    }

    /**
     * Writes fp32 values into a destination of F32 or BF16 (nearest even) or F16.
     *
     * @param row   values
     * @param n     count
     * @param dst   destination segment
     * @param dtype destination dtype
     * @param first first element index in {@code dst}
     */
    static void store(float[] row, int n, MemorySegment dst, DType dtype, long first) {
        switch (dtype) {
            case F32 -> MemorySegment.copy(row, 0, dst, F32, first * 4, n);
            case BF16 -> {
                for (int i = 0; i < n; i++) {
                    dst.set(I16, (first + i) * 2, DType.f32ToBf16(row[i]));
                }
            }
            case F16 -> {
                for (int i = 0; i < n; i++) {
                    dst.set(I16, (first + i) * 2, Float.floatToFloat16(row[i]));
                }
            }
            default -> throw new IllegalStateException("store: " + dtype);
        }
    }
}
