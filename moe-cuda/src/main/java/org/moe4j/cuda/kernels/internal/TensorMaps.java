package org.moe4j.cuda.kernels.internal;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import org.moe4j.cuda.CudaException;
import org.moe4j.cuda.internal.ffi.cuda.cuda_h;

/**
 * Binding of {@code cuTensorMapEncodeTiled} (CUDA 12+ driver), in the jextract shape, plus the
 * tensor-map layouts the Hopper grouped GEMM uses: bf16, 2-D or 3-D, inner box 64 elements
 * (128 bytes), 128-byte swizzle, out-of-bounds elements read as zero.
 *
 * <pre>{@code
 * CUresult cuTensorMapEncodeTiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType,
 *     cuuint32_t tensorRank, void* globalAddress, const cuuint64_t* globalDim,
 *     const cuuint64_t* globalStrides, const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
 *     CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
 *     CUtensorMapL2promotion l2Promotion, CUtensorMapFloatOOBfill oobFill);
 * }</pre>
 */
public final class TensorMaps {
    /** {@code sizeof(CUtensorMap)}: 16 quad words. */
    public static final int BYTES = 128;
    /** {@code CU_TENSOR_MAP_DATA_TYPE_BFLOAT16}. */
    public static final int DATA_TYPE_BFLOAT16 = 9;
    /** {@code CU_TENSOR_MAP_INTERLEAVE_NONE}. */
    public static final int INTERLEAVE_NONE = 0;
    /** {@code CU_TENSOR_MAP_SWIZZLE_128B}. */
    public static final int SWIZZLE_128B = 3;
    /** {@code CU_TENSOR_MAP_L2_PROMOTION_L2_128B}. */
    public static final int L2_PROMOTION_L2_128B = 2;
    /** {@code CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE} (out-of-bounds elements read as zero). */
    public static final int OOB_FILL_NONE = 0;

    private TensorMaps() {
    }

    private static final class Holder {
        static final MethodHandle HANDLE = Linker.nativeLinker().downcallHandle(
                cuda_h.symbolLookup().find("cuTensorMapEncodeTiled").orElseThrow(() ->
                        new UnsatisfiedLinkError("libcuda: symbol cuTensorMapEncodeTiled not found (driver older than CUDA 12?)")),
                FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                        ValueLayout.JAVA_LONG, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                        ValueLayout.JAVA_INT));
    }

    /** The raw call; see the C prototype in the class comment. @return the CUresult */
    public static int cuTensorMapEncodeTiled(MemorySegment tensorMap, int dataType, int rank, long globalAddress,
            MemorySegment globalDim, MemorySegment globalStrides, MemorySegment boxDim, MemorySegment elementStrides,
            int interleave, int swizzle, int l2Promotion, int oobFill) {
        try {
            return (int) Holder.HANDLE.invokeExact(tensorMap, dataType, rank, globalAddress, globalDim, globalStrides,
                    boxDim, elementStrides, interleave, swizzle, l2Promotion, oobFill);
        } catch (Throwable t) {
            if (t instanceof RuntimeException r) {
                throw r;
            }
            if (t instanceof Error e) {
                throw e;
            }
            throw new IllegalStateException(t);
        }
    }

    /**
     * Encodes a row-major bf16 matrix {@code [rows, cols]} (leading dimension {@code ld} elements)
     * for boxes of {@code boxCols x boxRows} with 128-byte swizzle ({@code boxCols * 2 == 128}).
     *
     * @param address device address, 16-byte aligned
     * @return the 128-byte {@code CUtensorMap}, in {@code arena}
     * @throws CudaException when the driver refuses the layout
     */
    public static MemorySegment bf16RowMajor(Arena arena, long address, long rows, long cols, long ld, int boxCols,
            int boxRows) {
        return bf16(arena, address, new long[] {cols, rows}, new long[] {ld * 2}, new int[] {boxCols, boxRows});
    }

    /**
     * Encodes a bf16 tensor of rank {@code dims.length} (2 to 5), innermost dimension first, for
     * boxes {@code box} with 128-byte swizzle.
     *
     * @param address     device address, 16-byte aligned
     * @param dims        extents, innermost (contiguous) first
     * @param strideBytes byte strides of dimensions 1.. (multiples of 16)
     * @param box         box extents; {@code box[0] * 2} at most 128
     * @return the 128-byte {@code CUtensorMap}, in {@code arena}
     * @throws IllegalArgumentException on inconsistent arguments (checked before the driver call)
     * @throws CudaException when the driver refuses the layout
     */
    public static MemorySegment bf16(Arena arena, long address, long[] dims, long[] strideBytes, int[] box) {
        int rank = dims.length;
        if (rank < 2 || rank > 5 || strideBytes.length != rank - 1 || box.length != rank) {
            throw new IllegalArgumentException("tensor map: rank " + rank + " needs " + (rank - 1) + " strides and "
                    + rank + " box extents");
        }
        if (address % 16 != 0) {
            throw new IllegalArgumentException("tensor map: address 0x" + Long.toHexString(address) + " is not 16-byte aligned");
        }
        for (long st : strideBytes) {
            if (st % 16 != 0) {
                throw new IllegalArgumentException("tensor map: stride " + st + " bytes is not a multiple of 16");
            }
        }
        if (box[0] * 2 > 128) {
            throw new IllegalArgumentException("tensor map: inner box " + box[0] + " elements exceeds the 128-byte swizzle");
        }
        MemorySegment map = arena.allocate(BYTES, 64);
        MemorySegment d = arena.allocateFrom(ValueLayout.JAVA_LONG, dims);
        MemorySegment st = arena.allocateFrom(ValueLayout.JAVA_LONG, strideBytes);
        MemorySegment b = arena.allocateFrom(ValueLayout.JAVA_INT, box);
        int[] ones = new int[rank];
        java.util.Arrays.fill(ones, 1);
        MemorySegment elem = arena.allocateFrom(ValueLayout.JAVA_INT, ones);
        int rc = cuTensorMapEncodeTiled(map, DATA_TYPE_BFLOAT16, rank, address, d, st, b, elem, INTERLEAVE_NONE,
                SWIZZLE_128B, L2_PROMOTION_L2_128B, OOB_FILL_NONE);
        CudaException.check(rc, "cuTensorMapEncodeTiled(bf16 dims " + java.util.Arrays.toString(dims) + ", strides "
                + java.util.Arrays.toString(strideBytes) + " bytes, box " + java.util.Arrays.toString(box) + ")");
        return map;
    }
}
