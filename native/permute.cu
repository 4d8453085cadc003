// moe4j permute / combine kernels: dispatch layout on the device, row gather into dispatch
// order, regrouping after the all-to-all, un-permute, weighted combine and its backward.
//
// Contract (DESIGN.md section 2; must match the CPU DispatchKernels of moe-dispatch):
//   topkIdx     [tokens, topK] int32 global expert ids, -1 = no expert (skipped everywhere)
//   topkWeights [tokens, topK] fp32
//   Dispatch order: expert-major (hence destination-rank-major, ranks own contiguous experts),
//   token order stable inside an expert (flat index t*topK + k ascending). Optional padding:
//   each expert's group is rounded up to a multiple of `align` rows; padding rows are zero.
//   dstRow [tokens*topK] int32: row of entry (t,k) in the permuted buffer, or -1.
//   rowSrc [paddedRows]  int32: flat entry t*topK+k feeding each permuted row, or -1 (padding).
//   Layout, positions and offsets are computed with integer arithmetic only: per-chunk counts,
//   then a per-expert scan over chunks in chunk order, then an in-chunk rank by warp match.
//   Results are exact and independent of scheduling (the integer atomics in moe_chunk_counts
//   only count).
//   Combine: out[t] = sum_k w[t,k] * y[dstRow[t,k]] in k order, fp32 accumulation with
//   separately rounded multiply and add (no FMA contraction, same as Java's `acc += w * y`),
//   starting from acc = first contribution; entries with -1 are skipped; tokens with no
//   contribution get +0. Optional shared-expert rows are added last. No atomics.
//   Combine backward: dY[row] = w[t,k] * dOut[t] (padding rows 0);
//   dTopkWeights[t,k] = <dOut[t], y[dstRow[t,k]]> with a fixed-order in-block reduction.
//
// Launch shapes and limits:
//   moe_fill_i32          any 1-D grid.
//   moe_chunk_counts      block 256, grid numChunks = ceil(n / chunk), chunk = 256 * j,
//                         dynamic smem experts*4; writes chunkCounts [numChunks, experts].
//   moe_layout            block 1024, grid 1, dynamic smem experts*4; experts <= 65536.
//   moe_dispatch_rows     block 32 (one warp walks its chunk in order), grid numChunks.
//   moe_regroup_layout    block 1, thread 1 (W * localExperts entries, small).
//   moe_regroup_rows      block 256, grid W * localExperts.
//   moe_permute_rows      block 128, grid min(rows, 65535) (grid-stride over rows);
//                         16-byte vector path when rowBytes % 16 == 0 and both bases are
//                         16-byte aligned, 4-byte path when rowBytes % 4 == 0, else bytes.
//   moe_combine           block 128, grid min(tokens, 65535) (grid-stride); hidden any;
//                         vector path when hidden % 4 == 0 (fp32 16 B / bf16 8 B loads).
//   moe_combine_bwd_dy    block 128, grid min(rows, 65535).
//   moe_combine_bwd_dw    block 256 (reduction tree fixed for 256), grid min(tokens, 65535).

#include <cuda_bf16.h>
#include <stdint.h>

namespace {

__device__ __forceinline__ float ld(const void* p, long i, int bf16) {
    if (bf16) return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
    return reinterpret_cast<const float*>(p)[i];
}

__device__ __forceinline__ void st(void* p, long i, int bf16, float v) {
    if (bf16) reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else reinterpret_cast<float*>(p)[i] = v;
}

__device__ __forceinline__ void ld4(const void* p, long i, int bf16, float v[4]) {
    if (bf16) {
        uint2 u = *reinterpret_cast<const uint2*>(reinterpret_cast<const __nv_bfloat16*>(p) + i);
        __nv_bfloat162 a = *reinterpret_cast<__nv_bfloat162*>(&u.x);
        __nv_bfloat162 b = *reinterpret_cast<__nv_bfloat162*>(&u.y);
        v[0] = __low2float(a); v[1] = __high2float(a);
        v[2] = __low2float(b); v[3] = __high2float(b);
    } else {
        float4 f = *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(p) + i);
        v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
    }
}

__device__ __forceinline__ void st4(void* p, long i, int bf16, const float v[4]) {
    if (bf16) {
        __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]);
        __nv_bfloat162 b = __floats2bfloat162_rn(v[2], v[3]);
        uint2 u;
        u.x = *reinterpret_cast<uint32_t*>(&a);
        u.y = *reinterpret_cast<uint32_t*>(&b);
        *reinterpret_cast<uint2*>(reinterpret_cast<__nv_bfloat16*>(p) + i) = u;
    } else {
        *reinterpret_cast<float4*>(reinterpret_cast<float*>(p) + i) = make_float4(v[0], v[1], v[2], v[3]);
    }
}

}  // namespace

// p[i] = value for i < n.
extern "C" __global__ void moe_fill_i32(int* __restrict__ p, long n, int value) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        p[i] = value;
}

// chunkCounts[c, e] = number of entries i in [c*chunk, min(n, (c+1)*chunk)) with topkIdx[i] == e.
extern "C" __global__ void __launch_bounds__(256)
moe_chunk_counts(const int* __restrict__ topkIdx, long n, int experts, int chunk,
                 int* __restrict__ chunkCounts) {
    extern __shared__ int sCount[];
    for (int e = threadIdx.x; e < experts; e += blockDim.x) sCount[e] = 0;
    __syncthreads();
    const long begin = (long)blockIdx.x * chunk;
    const long end = min(n, begin + chunk);
    for (long i = begin + threadIdx.x; i < end; i += blockDim.x) {
        int e = topkIdx[i];
        if (e >= 0 && e < experts) atomicAdd(&sCount[e], 1);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
        chunkCounts[(long)blockIdx.x * experts + e] = sCount[e];
}

// From chunkCounts [numChunks, experts]:
//   tokensPerExpert [experts]   total entries per expert (unpadded)
//   expertOffsets  [experts+1]  exclusive scan of counts rounded up to `align` (>= 1)
//   chunkBase [numChunks, experts] (in place over chunkCounts): first row of chunk c's
//                               entries for expert e = expertOffsets[e] + entries in earlier chunks
//   rankCounts (nullable) [worldSize]  unpadded entries per destination rank
//                               (rank r owns experts [r*E/W, (r+1)*E/W))
extern "C" __global__ void __launch_bounds__(1024)
moe_layout(int* __restrict__ chunkCounts, int numChunks, int experts, int align,
           int* __restrict__ tokensPerExpert, int* __restrict__ expertOffsets,
           int worldSize, int* __restrict__ rankCounts) {
    extern __shared__ int sPadded[];  // [experts]
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        int run = 0;
        for (int c = 0; c < numChunks; ++c) {
            long o = (long)c * experts + e;
            int v = chunkCounts[o];
            chunkCounts[o] = run;
            run += v;
        }
        tokensPerExpert[e] = run;
        sPadded[e] = align > 1 ? (run + align - 1) / align * align : run;
    }
    __syncthreads();
    // serial exclusive scan by one thread: experts is small next to the chunk loops
    if (threadIdx.x == 0) {
        int run = 0;
        for (int e = 0; e < experts; ++e) {
            int v = sPadded[e];
            sPadded[e] = run;
            expertOffsets[e] = run;
            run += v;
        }
        expertOffsets[experts] = run;
        if (rankCounts) {
            const int per = experts / worldSize;
            for (int r = 0; r < worldSize; ++r) {
                int s = 0;
                for (int e = r * per; e < (r + 1) * per; ++e) s += tokensPerExpert[e];
                rankCounts[r] = s;
            }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        const int off = sPadded[e];
        for (int c = 0; c < numChunks; ++c) chunkCounts[(long)c * experts + e] += off;
    }
}

// One warp per chunk walks its entries in order; with chunkBase from moe_layout it writes
//   dstRow[i] (row of entry i, or -1) and rowSrc[dstRow[i]] = i.
// rowSrc must be pre-filled with -1 (moe_fill_i32) so that padding rows read as -1.
extern "C" __global__ void __launch_bounds__(32)
moe_dispatch_rows(const int* __restrict__ topkIdx, long n, int experts, int chunk,
                  const int* __restrict__ chunkBase, int* __restrict__ dstRow, int* __restrict__ rowSrc) {
    extern __shared__ int sRun[];  // [experts]
    const int lane = threadIdx.x;
    for (int e = lane; e < experts; e += 32) sRun[e] = chunkBase[(long)blockIdx.x * experts + e];
    __syncwarp();
    const long begin = (long)blockIdx.x * chunk;
    const long end = min(n, begin + chunk);
    for (long base = begin; base < end; base += 32) {
        const long i = base + lane;
        int e = i < end ? topkIdx[i] : -1;
        if (e >= experts) e = -1;
        const unsigned same = __match_any_sync(0xffffffffu, e);
        const int rank = __popc(same & ((1u << lane) - 1u));
        int row = -1;
        if (e >= 0) row = sRun[e] + rank;
        __syncwarp();
        if (e >= 0 && rank == 0) sRun[e] += __popc(same);
        __syncwarp();
        if (i < end) {
            dstRow[i] = row;
            if (row >= 0) rowSrc[row] = (int)i;
        }
    }
}

// Regrouping after the all-to-all. The received buffer is source-rank-major, local-expert-major
// inside: block (r, e) has counts[r * L + e] rows. The grouped buffer is local-expert-major,
// source-rank-major inside, each group padded to a multiple of `align`.
//   groupOffsets [L+1], recvOffsets [W*L], groupBase [W*L] (first grouped row of block (r,e)).
extern "C" __global__ void moe_regroup_layout(const int* __restrict__ counts, int worldSize, int localExperts,
                                              int align, int* __restrict__ groupOffsets,
                                              int* __restrict__ recvOffsets, int* __restrict__ groupBase) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const int L = localExperts, W = worldSize;
    int run = 0;
    for (int i = 0; i < W * L; ++i) { recvOffsets[i] = run; run += counts[i]; }
    run = 0;
    for (int e = 0; e < L; ++e) {
        groupOffsets[e] = run;
        int g = 0;
        for (int r = 0; r < W; ++r) { groupBase[r * L + e] = run + g; g += counts[r * L + e]; }
        run += align > 1 ? (g + align - 1) / align * align : g;
    }
    groupOffsets[L] = run;
}

// rowSrc [groupedRows] (pre-filled -1): received row feeding each grouped row;
// groupedRow [recvRows]: grouped row of each received row (for the return trip).
extern "C" __global__ void __launch_bounds__(256)
moe_regroup_rows(const int* __restrict__ counts, const int* __restrict__ recvOffsets,
                 const int* __restrict__ groupBase, int* __restrict__ rowSrc, int* __restrict__ groupedRow) {
    const int b = blockIdx.x;
    const int c = counts[b], src = recvOffsets[b], dst = groupBase[b];
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        rowSrc[dst + i] = src + i;
        groupedRow[src + i] = dst + i;
    }
}

// dst[r, :] = src[map[r] / srcDiv, :] for map[r] >= 0, else zeros. Rows are opaque bytes
// (any dtype). Permute: map = rowSrc, srcDiv = topK. Regroup: map = rowSrc, srcDiv = 1.
// Un-permute into [tokens*topK] slots: map = dstRow, srcDiv = 1.
extern "C" __global__ void __launch_bounds__(128)
moe_permute_rows(const void* __restrict__ src, long rowBytes, const int* __restrict__ map,
                 int rows, int srcDiv, void* __restrict__ dst) {
    const bool v16 = (rowBytes & 15) == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 15) == 0;
    const bool v4 = (rowBytes & 3) == 0 && ((uintptr_t)src & 3) == 0 && ((uintptr_t)dst & 3) == 0;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const int m = map[r];
        const char* s = m >= 0 ? reinterpret_cast<const char*>(src) + (long)(m / srcDiv) * rowBytes : nullptr;
        char* d = reinterpret_cast<char*>(dst) + (long)r * rowBytes;
        if (v16) {
            const long nv = rowBytes >> 4;
            const uint4* s4 = reinterpret_cast<const uint4*>(s);
            uint4* d4 = reinterpret_cast<uint4*>(d);
            long j = threadIdx.x;
            // four independent 16-byte loads in flight per thread
            for (; j + 3 * blockDim.x < nv; j += 4 * blockDim.x) {
                uint4 a = s ? s4[j] : make_uint4(0, 0, 0, 0);
                uint4 b = s ? s4[j + blockDim.x] : make_uint4(0, 0, 0, 0);
                uint4 c = s ? s4[j + 2 * blockDim.x] : make_uint4(0, 0, 0, 0);
                uint4 e = s ? s4[j + 3 * blockDim.x] : make_uint4(0, 0, 0, 0);
                d4[j] = a; d4[j + blockDim.x] = b; d4[j + 2 * blockDim.x] = c; d4[j + 3 * blockDim.x] = e;
            }
            for (; j < nv; j += blockDim.x) d4[j] = s ? s4[j] : make_uint4(0, 0, 0, 0);
        } else if (v4) {
            const long nv = rowBytes >> 2;
            for (long j = threadIdx.x; j < nv; j += blockDim.x)
                reinterpret_cast<uint32_t*>(d)[j] = s ? reinterpret_cast<const uint32_t*>(s)[j] : 0u;
        } else {
            for (long j = threadIdx.x; j < rowBytes; j += blockDim.x) d[j] = s ? s[j] : (char)0;
        }
    }
}

// out[t, :] = sum_k topkWeights[t,k] * y[dstRow[t,k], :] (+ shared[t, :]); see contract above.
//   y [rows, hidden] fp32/bf16 (yBf16); shared (nullable) [tokens, hidden] in the out dtype.
extern "C" __global__ void __launch_bounds__(128)
moe_combine(const void* __restrict__ y, int yBf16, const int* __restrict__ dstRow,
            const float* __restrict__ topkWeights, const void* __restrict__ shared,
            int tokens, int topK, int hidden, void* __restrict__ out, int outBf16) {
    const bool vec = (hidden & 3) == 0;
    for (int t = blockIdx.x; t < tokens; t += gridDim.x) {
        const long o = (long)t * hidden;
        if (vec) {
            for (int h = threadIdx.x * 4; h < hidden; h += blockDim.x * 4) {
                float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                bool any = false;
                for (int k = 0; k < topK; ++k) {
                    const int r = dstRow[(long)t * topK + k];
                    if (r < 0) continue;
                    const float w = topkWeights[(long)t * topK + k];
                    float v[4];
                    ld4(y, (long)r * hidden + h, yBf16, v);
#pragma unroll
                    for (int q = 0; q < 4; ++q) {
                        const float p = __fmul_rn(w, v[q]);
                        acc[q] = any ? __fadd_rn(acc[q], p) : p;
                    }
                    any = true;
                }
                if (shared) {
                    float s[4];
                    ld4(shared, o + h, outBf16, s);
#pragma unroll
                    for (int q = 0; q < 4; ++q) acc[q] = __fadd_rn(acc[q], s[q]);
                }
                st4(out, o + h, outBf16, acc);
            }
        } else {
            for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
                float acc = 0.0f;
                bool any = false;
                for (int k = 0; k < topK; ++k) {
                    const int r = dstRow[(long)t * topK + k];
                    if (r < 0) continue;
                    const float p = __fmul_rn(topkWeights[(long)t * topK + k], ld(y, (long)r * hidden + h, yBf16));
                    acc = any ? __fadd_rn(acc, p) : p;
                    any = true;
                }
                if (shared) acc = __fadd_rn(acc, ld(shared, o + h, outBf16));
                st(out, o + h, outBf16, acc);
            }
        }
    }
}

// dY[r, :] = topkWeights[i] * dOut[i / topK, :] with i = rowSrc[r]; padding rows (i < 0) = 0.
extern "C" __global__ void __launch_bounds__(128)
moe_combine_bwd_dy(const void* __restrict__ dOut, int dOutBf16, const float* __restrict__ topkWeights,
                   const int* __restrict__ rowSrc, int rows, int topK, int hidden,
                   void* __restrict__ dY, int dyBf16) {
    const bool vec = (hidden & 3) == 0;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const int i = rowSrc[r];
        const float w = i >= 0 ? topkWeights[i] : 0.0f;
        const long src = i >= 0 ? (long)(i / topK) * hidden : 0;
        const long dst = (long)r * hidden;
        if (vec) {
            for (int h = threadIdx.x * 4; h < hidden; h += blockDim.x * 4) {
                float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                if (i >= 0) {
                    ld4(dOut, src + h, dOutBf16, v);
#pragma unroll
                    for (int q = 0; q < 4; ++q) v[q] = __fmul_rn(w, v[q]);
                }
                st4(dY, dst + h, dyBf16, v);
            }
        } else {
            for (int h = threadIdx.x; h < hidden; h += blockDim.x)
                st(dY, dst + h, dyBf16, i >= 0 ? __fmul_rn(w, ld(dOut, src + h, dOutBf16)) : 0.0f);
        }
    }
}

// dTopkWeights[t, k] = <dOut[t, :], y[dstRow[t,k], :]> (0 for -1). Each thread sums its strided
// elements in order, then a fixed shared-memory tree over 256 threads: deterministic.
extern "C" __global__ void __launch_bounds__(256)
moe_combine_bwd_dw(const void* __restrict__ dOut, int dOutBf16, const void* __restrict__ y, int yBf16,
                   const int* __restrict__ dstRow, int tokens, int topK, int hidden,
                   float* __restrict__ dTopkWeights) {
    __shared__ float sRed[256];
    for (int t = blockIdx.x; t < tokens; t += gridDim.x) {
        for (int k = 0; k < topK; ++k) {
            const int r = dstRow[(long)t * topK + k];  // uniform across the block
            if (r < 0) {
                if (threadIdx.x == 0) dTopkWeights[(long)t * topK + k] = 0.0f;
                continue;
            }
            float s = 0.0f;
            for (int h = threadIdx.x; h < hidden; h += blockDim.x)
                s = fmaf(ld(dOut, (long)t * hidden + h, dOutBf16), ld(y, (long)r * hidden + h, yBf16), s);
            sRed[threadIdx.x] = s;
            __syncthreads();
            for (int w = 128; w > 0; w >>= 1) {
                if (threadIdx.x < w) sRed[threadIdx.x] = __fadd_rn(sRed[threadIdx.x], sRed[threadIdx.x + w]);
                __syncthreads();
            }
            if (threadIdx.x == 0) dTopkWeights[(long)t * topK + k] = sRed[0];
            __syncthreads();
        }
    }
}
