// moe4j dispatch / combine kernels: the device side of org.moe4j.dispatch.DispatchKernels
// (countRoutes, buildSendPlan, packUnits, countLocal, buildRecvPlan, validSlots, copyRows,
// weightedSum, rowDots, scatterValues). Read DispatchKernels' Javadoc for the vocabulary
// (slot, unit, meta row, slot row); this file follows CpuDispatchKernels operation by operation.
//
// Ordering without atomics on positions. Every plan ordering is "stable by key": entries of a flat
// sequence (slots t*K+k, or meta entries u*K+k) carry a key in [0, numKeys) or -1; an entry's
// position is base[key] + (number of earlier entries with the same key). It is computed exactly:
//   1. moe_key_chunk_counts: per chunk of `chunk` entries, counts per key (shared-memory integer
//      atomics: counting only);
//   2. moe_key_layout (one block): per-key scan over chunks in chunk order -> chunk bases, totals,
//      and key bases (an exclusive scan of the totals, or caller-given bases);
//   3. moe_key_positions: one warp walks each chunk in order; the rank among equal keys inside a
//      32-entry slice comes from __match_any_sync + popc.
// Results are integers, exact and independent of scheduling.
//
// Row kernels: rows are F32, BF16 or F16 (dtype code 0, 1, 2). Conversions and products are fp32,
// rounded once to the destination (round to nearest even). weightedSum accumulates from +0 in k
// order with a separately rounded multiply and add (no FMA contraction, as Java's
// `acc = acc + row * w`), so fp32 results are bit-identical to the CPU. rowDots reduces with a fixed
// 256-thread tree (deterministic; within rounding of the CPU's lane-order sum). No float atomics.
//
// Launch shapes and limits:
//   moe_fill_i32            any 1-D grid
//   moe_count_routes        block 256 (thread per token), grid ceil(T/256), dynamic smem
//                           W*(L+1)*4 bytes; routeCounts zeroed, firstBad = INT_MAX by the caller
//   moe_send_keys           block 256 (thread per token), grid ceil(T/256)
//   moe_key_chunk_counts    block 256, grid numChunks = ceil(n/chunk), dynamic smem numKeys*4
//   moe_key_layout          block 1024, grid 1, dynamic smem numKeys*4
//   moe_key_positions       block 32, grid numChunks, dynamic smem numKeys*4
//   moe_send_meta           block 256 (thread per token), grid ceil(T/256)
//   moe_exclusive_scan      block 1024, grid 1 (n <= 2^31)
//   moe_send_return         block 256 (thread per token), grid ceil(T/256)
//   moe_pack_units          block 256 (thread per token)
//   moe_count_local         block 256, grid ceil(units*K/256), dynamic smem L*4; counts zeroed
//   moe_recv_keys, moe_recv_write, moe_valid_slots, moe_compose_index, moe_scatter_values: block 256, 1-D grid
//   moe_copy_rows           block 128, grid min(M, 65535) (grid-stride over rows); 16-byte path
//                           when dtypes match, no weights, and row bytes / bases are 16-aligned
//   moe_weighted_sum        block 128, grid min(T, 65535) (grid-stride over tokens)
//   moe_row_dots            block 256 (fixed tree), grid min(M, 65535)
//   moe_static_check, moe_static_send_keys, moe_static_send_write, moe_static_send_pad,
//   moe_static_recv_write   block 256, 1-D grid over slots / rows / entries
//   moe_static_threshold    block 256, grid W (one block per destination rank)
//   moe_static_group_offsets block 1, grid 1 (L serial steps)

#include <cuda_bf16.h>
#include "common.cuh"
#include <cuda_fp16.h>
#include <stdint.h>

#define MOE_META_FIXED 2

namespace {

__device__ __forceinline__ float ld_any(const void* p, long i, int dt) {
    if (dt == 1) return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
    if (dt == 2) return __half2float(reinterpret_cast<const __half*>(p)[i]);
    return reinterpret_cast<const float*>(p)[i];
}

__device__ __forceinline__ void st_any(void* p, long i, int dt, float v) {
    if (dt == 1) reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else if (dt == 2) reinterpret_cast<__half*>(p)[i] = __float2half_rn(v);
    else reinterpret_cast<float*>(p)[i] = v;
}

__device__ __forceinline__ int elem_bytes(int dt) { return dt == 0 ? 4 : 2; }

}  // namespace

// p[i] = value for i < n.
extern "C" __global__ void moe_fill_i32(int* __restrict__ p, long n, int value) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        p[i] = value;
}

// ---------------------------------------------------------------------------------------------
// countRoutes: routeCounts [W, L+1]: [d, l] slots for local expert l of rank d, [d, L] units sent
// to rank d (slots, or distinct (token, rank) pairs with dedup). firstBad receives the lowest flat
// index of an entry outside [0, E) other than -1 (integer atomicMin); such entries are not counted.
extern "C" __global__ void __launch_bounds__(256)
moe_count_routes(const int* __restrict__ topkIdx, int tokens, int topK, int experts, int world, int dedup,
                 int* __restrict__ routeCounts, int* __restrict__ firstBad) {
    MOE4J_DYNAMIC_SHARED(16, int, sCounts);  // [W * (L+1)]
    const int local = experts / world;
    const int width = local + 1;
    for (int i = threadIdx.x; i < world * width; i += blockDim.x) sCounts[i] = 0;
    __syncthreads();
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < tokens) {
        for (int j = 0; j < topK; ++j) {
            const int e = topkIdx[(long)t * topK + j];
            if (e == -1) continue;
            if (e < 0 || e >= experts) {
                atomicMin(firstBad, t * topK + j);
                continue;
            }
            const int d = e / local;
            atomicAdd(&sCounts[d * width + e % local], 1);
            bool first = true;
            if (dedup) {
                for (int q = 0; q < j; ++q) {
                    const int e2 = topkIdx[(long)t * topK + q];
                    if (e2 >= 0 && e2 < experts && e2 / local == d) { first = false; break; }
                }
            }
            if (first) atomicAdd(&sCounts[d * width + local], 1);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < world * width; i += blockDim.x)
        if (sCounts[i]) atomicAdd(&routeCounts[i], sCounts[i]);
}

// Send-plan keys per slot: without dedup key = expert (units expert-major, token order); with
// dedup key = destination rank for the first slot of a token going to that rank, else -1
// (units rank-major, token order). Empty slots: -1.
extern "C" __global__ void __launch_bounds__(256)
moe_send_keys(const int* __restrict__ topkIdx, int tokens, int topK, int experts, int world, int dedup,
              int* __restrict__ keys) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens) return;
    const int local = experts / world;
    for (int j = 0; j < topK; ++j) {
        const long s = (long)t * topK + j;
        const int e = topkIdx[s];
        int key = -1;
        if (e >= 0) {
            if (!dedup) {
                key = e;
            } else {
                const int d = e / local;
                key = d;
                for (int q = 0; q < j; ++q) {
                    const int e2 = topkIdx[(long)t * topK + q];
                    if (e2 >= 0 && e2 / local == d) { key = -1; break; }
                }
            }
        }
        keys[s] = key;
    }
}

// chunkCounts[c, key] = entries in [c*chunk, min(n, (c+1)*chunk)) with keys[i] == key.
extern "C" __global__ void __launch_bounds__(256)
moe_key_chunk_counts(const int* __restrict__ keys, long n, int numKeys, int chunk, int* __restrict__ chunkCounts) {
    MOE4J_DYNAMIC_SHARED(16, int, sCount);
    for (int e = threadIdx.x; e < numKeys; e += blockDim.x) sCount[e] = 0;
    __syncthreads();
    const long begin = (long)blockIdx.x * chunk;
    const long end = min(n, begin + chunk);
    for (long i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const int k = keys[i];
        if (k >= 0 && k < numKeys) atomicAdd(&sCount[k], 1);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < numKeys; e += blockDim.x) chunkCounts[(long)blockIdx.x * numKeys + e] = sCount[e];
}

// From chunkCounts [numChunks, numKeys] (rewritten in place into chunk bases):
//   totals [numKeys] (nullable)      entries per key
//   keyBase [numKeys + 1] (nullable) exclusive scan of totals (keyBase[numKeys] = all entries);
//                                    ignored when givenBase != null
//   givenBase [numKeys] (nullable)   caller-given first position of each key (e.g. padded offsets)
//   chunkBase = base(key) + entries of that key in earlier chunks
extern "C" __global__ void __launch_bounds__(1024)
moe_key_layout(int* __restrict__ chunkCounts, int numChunks, int numKeys, int* __restrict__ totals,
               int* __restrict__ keyBase, const int* __restrict__ givenBase) {
    MOE4J_DYNAMIC_SHARED(16, int, sBase);  // [numKeys]
    for (int e = threadIdx.x; e < numKeys; e += blockDim.x) {
        int run = 0;
        for (int c = 0; c < numChunks; ++c) {
            const long o = (long)c * numKeys + e;
            const int v = chunkCounts[o];
            chunkCounts[o] = run;
            run += v;
        }
        if (totals) totals[e] = run;
        sBase[e] = run;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (givenBase) {
            for (int e = 0; e < numKeys; ++e) sBase[e] = givenBase[e];
        } else {
            int run = 0;
            for (int e = 0; e < numKeys; ++e) {
                const int v = sBase[e];
                sBase[e] = run;
                if (keyBase) keyBase[e] = run;
                run += v;
            }
            if (keyBase) keyBase[numKeys] = run;
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < numKeys; e += blockDim.x) {
        const int off = sBase[e];
        for (int c = 0; c < numChunks; ++c) chunkCounts[(long)c * numKeys + e] += off;
    }
}

// pos[i] = chunkBase[chunk(i), key] + rank of i among equal keys earlier in its chunk; -1 for key -1.
// inverse (nullable): inverse[pos[i]] = i.
extern "C" __global__ void __launch_bounds__(32)
moe_key_positions(const int* __restrict__ keys, long n, int numKeys, int chunk, const int* __restrict__ chunkBase,
                  int* __restrict__ pos, int* __restrict__ inverse) {
    MOE4J_DYNAMIC_SHARED(16, int, sRun);  // [numKeys]
    const int lane = threadIdx.x;
    for (int e = lane; e < numKeys; e += 32) sRun[e] = chunkBase[(long)blockIdx.x * numKeys + e];
    __syncwarp();
    const long begin = (long)blockIdx.x * chunk;
    const long end = min(n, begin + chunk);
    for (long base = begin; base < end; base += 32) {
        const long i = base + lane;
        int k = i < end ? keys[i] : -1;
        if (k >= numKeys) k = -1;
        const unsigned same = __match_any_sync(0xffffffffu, k);
        const int rank = __popc(same & ((1u << lane) - 1u));
        const int p = k >= 0 ? sRun[k] + rank : -1;
        __syncwarp();
        if (k >= 0 && rank == 0) sRun[k] += __popc(same);
        __syncwarp();
        if (i < end) {
            pos[i] = p;
            if (inverse && p >= 0) inverse[p] = (int)i;
        }
    }
}

// buildSendPlan, meta and tokens. keyPos = moe_key_positions over moe_send_keys (the unit of each
// key slot). Thread per token, slots in k order: a slot that opens a unit writes its meta row
// (rank, t, experts -1, weight bits 0) and sendToken; every slot then sets its expert and weight
// bits in its unit's row. slotUnit [T*K] (unit of each slot, -1 if empty); unitSlots [U] (number of
// slots travelling with each unit, for the return-order scan).
extern "C" __global__ void __launch_bounds__(256)
moe_send_meta(const int* __restrict__ topkIdx, const float* __restrict__ topkWeights, int tokens, int topK,
              int experts, int world, int rank, int dedup, const int* __restrict__ keyPos,
              int* __restrict__ sendToken, int* __restrict__ sendMeta, int* __restrict__ slotUnit,
              int* __restrict__ unitSlots) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens) return;
    const int local = experts / world;
    const int width = MOE_META_FIXED + 2 * topK;
    for (int j = 0; j < topK; ++j) {
        const long s = (long)t * topK + j;
        const int e = topkIdx[s];
        if (e < 0) {
            slotUnit[s] = -1;
            continue;
        }
        int u = keyPos[s];
        bool opens = u >= 0;
        if (dedup && !opens) {
            const int d = e / local;
            for (int q = 0; q < j; ++q) {
                const int e2 = topkIdx[(long)t * topK + q];
                if (e2 >= 0 && e2 / local == d) { u = keyPos[(long)t * topK + q]; break; }
            }
        }
        int* row = sendMeta + (long)u * width;
        if (opens) {
            row[0] = rank;
            row[1] = t;
            for (int q = 0; q < topK; ++q) {
                row[MOE_META_FIXED + q] = -1;
                row[MOE_META_FIXED + topK + q] = 0;
            }
            sendToken[u] = t;
            unitSlots[u] = 0;
        }
        row[MOE_META_FIXED + j] = e;
        row[MOE_META_FIXED + topK + j] = __float_as_int(topkWeights[s]);
        unitSlots[u] += 1;
        slotUnit[s] = u;
    }
}

// out[i] = sum of in[0..i) (exclusive), out[n] = total. One block; serial chunks per thread
// then a shared-memory scan of the per-thread totals.
extern "C" __global__ void __launch_bounds__(1024)
moe_exclusive_scan(const int* __restrict__ in, int n, int* __restrict__ out) {
    MOE4J_SHARED(int, sTot, [1024]);
    const int per = (n + blockDim.x - 1) / blockDim.x;
    const int b = threadIdx.x * per, e = min(n, b + per);
    int s = 0;
    for (int i = b; i < e; ++i) s += in[i];
    sTot[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int i = 0; i < (int)blockDim.x; ++i) {
            const int v = sTot[i];
            sTot[i] = run;
            run += v;
        }
        out[n] = run;
    }
    __syncthreads();
    int run = sTot[threadIdx.x];
    for (int i = b; i < e; ++i) {
        const int v = in[i];
        out[i] = run;
        run += v;
    }
}

// buildSendPlan, return order: units in send order, k ascending inside. unitBase = exclusive scan
// of unitSlots. Thread per token: slot j of unit u gets r = unitBase[u] + (earlier slots of t in u).
// slotReturnRow [T*K] gets -1 for empty slots.
extern "C" __global__ void __launch_bounds__(256)
moe_send_return(const int* __restrict__ slotUnit, int tokens, int topK, const int* __restrict__ unitBase,
                int* __restrict__ returnToken, int* __restrict__ returnSlot, int* __restrict__ slotReturnRow) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens) return;
    for (int j = 0; j < topK; ++j) {
        const long s = (long)t * topK + j;
        const int u = slotUnit[s];
        if (u < 0) {
            slotReturnRow[s] = -1;
            continue;
        }
        int before = 0;
        for (int q = 0; q < j; ++q) before += slotUnit[(long)t * topK + q] == u ? 1 : 0;
        const int r = unitBase[u] + before;
        returnToken[r] = t;
        returnSlot[r] = (int)s;
        slotReturnRow[s] = r;
    }
}

// packUnits: meta [T, 2+2K] = (rank, t, topkIdx[t, :], bits(topkWeights[t, :])).
extern "C" __global__ void __launch_bounds__(256)
moe_pack_units(const int* __restrict__ topkIdx, const float* __restrict__ topkWeights, int tokens, int topK,
               int rank, int* __restrict__ meta) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= tokens) return;
    int* row = meta + (long)t * (MOE_META_FIXED + 2 * topK);
    row[0] = rank;
    row[1] = t;
    for (int j = 0; j < topK; ++j) {
        row[MOE_META_FIXED + j] = topkIdx[(long)t * topK + j];
        row[MOE_META_FIXED + topK + j] = __float_as_int(topkWeights[(long)t * topK + j]);
    }
}

// countLocal: counts[l] (zeroed by the caller) += meta experts equal to firstExpert + l.
extern "C" __global__ void __launch_bounds__(256)
moe_count_local(const int* __restrict__ meta, int units, int topK, int firstExpert, int localExperts,
                int* __restrict__ counts) {
    MOE4J_DYNAMIC_SHARED(16, int, sCount);
    for (int l = threadIdx.x; l < localExperts; l += blockDim.x) sCount[l] = 0;
    __syncthreads();
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (long)units * topK) {
        const long u = i / topK;
        const int j = (int)(i - u * topK);
        const int l = meta[u * (MOE_META_FIXED + 2 * topK) + MOE_META_FIXED + j] - firstExpert;
        if (l >= 0 && l < localExperts) atomicAdd(&sCount[l], 1);
    }
    __syncthreads();
    for (int l = threadIdx.x; l < localExperts; l += blockDim.x)
        if (sCount[l]) atomicAdd(&counts[l], sCount[l]);
}

// buildRecvPlan keys over entries i = u*K + j: groupKey = local expert (or -1), validKey = 0 for a
// local entry (or -1). Positions: row = moe_key_positions(groupKey, bases = groupOffsets),
// r = moe_key_positions(validKey, one key, base 0).
extern "C" __global__ void __launch_bounds__(256)
moe_recv_keys(const int* __restrict__ meta, int units, int topK, int firstExpert, int localExperts,
              int* __restrict__ groupKey, int* __restrict__ validKey) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)units * topK) return;
    const long u = i / topK;
    const int j = (int)(i - u * topK);
    const int l = meta[u * (MOE_META_FIXED + 2 * topK) + MOE_META_FIXED + j] - firstExpert;
    const bool ok = l >= 0 && l < localExperts;
    groupKey[i] = ok ? l : -1;
    validKey[i] = ok ? 0 : -1;
}

// buildRecvPlan outputs (rowSrcRank/rowSrcIndex/rowTopkSlot pre-filled with -1 for padding rows).
extern "C" __global__ void __launch_bounds__(256)
moe_recv_write(const int* __restrict__ meta, int units, int topK, const int* __restrict__ rowPos,
               const int* __restrict__ rPos, int* __restrict__ slotUnit, int* __restrict__ slotUnitSlot,
               int* __restrict__ slotExpertRow, float* __restrict__ slotWeight, int* __restrict__ rowSrcRank,
               int* __restrict__ rowSrcIndex, int* __restrict__ rowTopkSlot) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)units * topK) return;
    const int r = rPos[i];
    if (r < 0) return;
    const long u = i / topK;
    const int j = (int)(i - u * topK);
    const int* m = meta + u * (MOE_META_FIXED + 2 * topK);
    const int row = rowPos[i];
    slotUnit[r] = (int)u;
    slotUnitSlot[r] = (int)i;
    slotExpertRow[r] = row;
    slotWeight[r] = __int_as_float(m[MOE_META_FIXED + topK + j]);
    rowSrcRank[row] = m[0];
    rowSrcIndex[row] = m[1];
    rowTopkSlot[row] = j;
}

// validSlots: slotRow[s] = s, slotToken[s] = s / K for non-empty slots, else -1.
extern "C" __global__ void __launch_bounds__(256)
moe_valid_slots(const int* __restrict__ topkIdx, long n, int topK, int* __restrict__ slotRow, int* __restrict__ slotToken) {
    const long s = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n) return;
    const bool ok = topkIdx[s] >= 0;
    slotRow[s] = ok ? (int)s : -1;
    slotToken[s] = ok ? (int)(s / topK) : -1;
}

// composeIndex: out[j] = index[j] in [0, n) ? table[index[j]] : -1. The host-side contract refuses
// out-of-range entries; on the device they cannot throw, so they map to -1 (the indices come from
// plans this module built itself).
extern "C" __global__ void __launch_bounds__(256)
moe_compose_index(const int* __restrict__ table, long n, const int* __restrict__ index, long m, int* __restrict__ out) {
    const long j = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= m) return;
    const int i = index[j];
    out[j] = (i >= 0 && i < n) ? table[i] : -1;
}

// ---------------------------------------------------------------------------------------------
// copyRows: dst[dstIndex[j]] = weights[j] * src[srcIndex[j]] for j < M (null index = identity,
// srcIndex -1 = zero row, dstIndex -1 = nothing). Product in fp32, rounded once to dst's dtype.
extern "C" __global__ void __launch_bounds__(128)
moe_copy_rows(const void* __restrict__ src, int srcDt, const int* __restrict__ srcIndex,
              void* __restrict__ dst, int dstDt, const int* __restrict__ dstIndex,
              const float* __restrict__ weights, int M, int hidden) {
    const long srcRowBytes = (long)hidden * elem_bytes(srcDt);
    const bool bulk = srcDt == dstDt && weights == nullptr;
    const bool v16 = bulk && (srcRowBytes & 15) == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 15) == 0;
    for (int j = blockIdx.x; j < M; j += gridDim.x) {
        const int dr = dstIndex ? dstIndex[j] : j;
        if (dr < 0) continue;
        const int sr = srcIndex ? srcIndex[j] : j;
        if (v16) {
            const long nv = srcRowBytes >> 4;
            uint4* d4 = reinterpret_cast<uint4*>(reinterpret_cast<char*>(dst) + dr * srcRowBytes);
            if (sr < 0) {
                for (long v = threadIdx.x; v < nv; v += blockDim.x) d4[v] = make_uint4(0, 0, 0, 0);
            } else {
                const uint4* s4 = reinterpret_cast<const uint4*>(reinterpret_cast<const char*>(src) + sr * srcRowBytes);
                long v = threadIdx.x;
                // four independent 16-byte loads in flight per thread
                for (; v + 3 * (long)blockDim.x < nv; v += 4 * (long)blockDim.x) {
                    const uint4 a = s4[v], b = s4[v + blockDim.x], c = s4[v + 2 * blockDim.x], e = s4[v + 3 * blockDim.x];
                    d4[v] = a; d4[v + blockDim.x] = b; d4[v + 2 * blockDim.x] = c; d4[v + 3 * blockDim.x] = e;
                }
                for (; v < nv; v += blockDim.x) d4[v] = s4[v];
            }
        } else {
            const float w = weights ? weights[j] : 1.0f;
            for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
                float x = 0.0f;
                if (sr >= 0) {
                    x = ld_any(src, (long)sr * hidden + h, srcDt);
                    if (weights) x = __fmul_rn(x, w);
                }
                st_any(dst, (long)dr * hidden + h, dstDt, x);
            }
        }
    }
}

// weightedSum: out[t] = sum_k weights[t,k] * rows[slotRow[t*K+k]] (k ascending, from +0, skipping
// -1; without weights the plain sum), fp32 accumulation, rounded once to out's dtype.
extern "C" __global__ void __launch_bounds__(128)
moe_weighted_sum(const void* __restrict__ rows, int rowsDt, const int* __restrict__ slotRow,
                 const float* __restrict__ weights, int tokens, int topK, int hidden,
                 void* __restrict__ out, int outDt) {
    for (int t = blockIdx.x; t < tokens; t += gridDim.x) {
        for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
            float acc = 0.0f;
            for (int k = 0; k < topK; ++k) {
                const int r = slotRow[(long)t * topK + k];
                if (r < 0) continue;
                const float y = ld_any(rows, (long)r * hidden + h, rowsDt);
                acc = weights ? __fadd_rn(acc, __fmul_rn(y, weights[(long)t * topK + k])) : __fadd_rn(acc, y);
            }
            st_any(out, (long)t * hidden + h, outDt, acc);
        }
    }
}

// rowDots: out[outIndex[j]] = <a[aIndex[j]], b[bIndex[j]]> in fp32 (0 when either index is -1;
// outIndex -1 writes nothing). Thread partials in element order, then a fixed 256-thread tree.
extern "C" __global__ void __launch_bounds__(256)
moe_row_dots(const void* __restrict__ a, int aDt, const int* __restrict__ aIndex,
             const void* __restrict__ b, int bDt, const int* __restrict__ bIndex,
             float* __restrict__ out, const int* __restrict__ outIndex, int M, int hidden) {
    MOE4J_SHARED(float, sRed, [256]);
    for (int j = blockIdx.x; j < M; j += gridDim.x) {
        const int o = outIndex ? outIndex[j] : j;  // uniform across the block
        if (o < 0) continue;
        const int ar = aIndex ? aIndex[j] : j;
        const int br = bIndex ? bIndex[j] : j;
        float s = 0.0f;
        if (ar >= 0 && br >= 0)
            for (int h = threadIdx.x; h < hidden; h += blockDim.x)
                s = fmaf(ld_any(a, (long)ar * hidden + h, aDt), ld_any(b, (long)br * hidden + h, bDt), s);
        sRed[threadIdx.x] = s;
        __syncthreads();
        for (int w = 128; w > 0; w >>= 1) {
            if (threadIdx.x < w) sRed[threadIdx.x] = __fadd_rn(sRed[threadIdx.x], sRed[threadIdx.x + w]);
            __syncthreads();
        }
        if (threadIdx.x == 0) out[o] = sRed[0];
        __syncthreads();
    }
}

// scatterValues: dst[index[j]] = src[j] (F32), index -1 writes nothing.
extern "C" __global__ void __launch_bounds__(256)
moe_scatter_values(const float* __restrict__ src, const int* __restrict__ index, long M, float* __restrict__ dst) {
    const long j = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const int at = index[j];
    if (at >= 0) dst[at] = src[j];
}

// ---------------------------------------------------------------------------------------------
// Static-shape (equal-split) plans, built on the device without reading anything back to the host
// (DispatchKernels.buildStaticSendPlan / buildStaticRecvPlan; host reference: StaticPlans.java).
// Destination chunk d is rows [d*C, (d+1)*C). The kept slots of d, in the count-exchange send order
// (expert-major, then slot index), fill its first rows; padding rows follow. Sequence:
//   fault[0] = MOE_NO_FAULT (moe_fill_i32), moe_static_check,
//   moe_static_send_keys (thr = null) + moe_key_chunk_counts/moe_key_layout -> totals per expert,
//   moe_static_threshold -> per destination the C-th best priority key when it overflows, dropped,
//   moe_static_send_keys (thr) + key ordering with keyBase -> positions of the kept slots,
//   moe_static_send_write (kept slots) and moe_static_send_pad (rows past the kept ones).
// Priority keys are unique 64-bit integers, smaller = kept first: BY_POSITION (policy 0) the slot
// index s; BY_SCORE (policy 1) (descending order of the weight) << 32 | s, so ties go to the lower
// slot and -0.0 ranks below +0.0, as the host's Double.compare. The C-th smallest key of an
// over-full chunk is found exactly by a bitwise radix select (one block per destination, integer
// counts only), so the kept set is the host's, independent of scheduling.
// A refused step (fault set: an expert id outside [0, E) other than -1, or a non-finite weight on
// a non-empty slot) sends nothing: every key is -1, so the plan is all padding and nothing is
// dropped; fault = {lowest refused slot, its expert id, its weight bits} for the host to report.

#define MOE_NO_FAULT 0x7fffffff

namespace {

__device__ __forceinline__ unsigned long long static_priority(int policy, long s, float w) {
    if (policy == 0) return (unsigned long long)s;
    const unsigned b = __float_as_uint(w);
    const unsigned asc = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // ascending in w, -0 < +0
    return ((unsigned long long)(~asc) << 32) | (unsigned long long)s;
}

}  // namespace

// fault[0] = min(fault[0], s) for every refused slot s (integer atomicMin; fault[0] = MOE_NO_FAULT before).
extern "C" __global__ void __launch_bounds__(256)
moe_static_check(const int* __restrict__ topkIdx, const float* __restrict__ topkWeights, long n, int experts,
                 int* __restrict__ fault) {
    const long s = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n) return;
    const int e = topkIdx[s];
    if (e == -1) return;
    if (e < 0 || e >= experts || !isfinite(topkWeights[s])) atomicMin(&fault[0], (int)s);
}

// keys[s] = expert of slot s, -1 for an empty slot, for every slot when the step is refused, and
// (thr != null) for a slot whose priority is past its destination's threshold thr[d].
extern "C" __global__ void __launch_bounds__(256)
moe_static_send_keys(const int* __restrict__ topkIdx, const float* __restrict__ topkWeights, long n, int experts,
                     int world, int policy, const int* __restrict__ fault,
                     const unsigned long long* __restrict__ thr, int* __restrict__ keys) {
    const long s = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n) return;
    const int e = topkIdx[s];
    int key = (e >= 0 && e < experts && fault[0] == MOE_NO_FAULT) ? e : -1;
    if (key >= 0 && thr && static_priority(policy, s, topkWeights[s]) > thr[e / (experts / world)]) key = -1;
    keys[s] = key;
}

// One block per destination d: total = slots routed to d (totals [E] per expert); dropped[d] =
// max(0, total - C); thr[d] = the C-th smallest priority key among d's slots when total > C, else
// all ones (keep every slot). Block 0 also completes the fault record.
extern "C" __global__ void __launch_bounds__(256)
moe_static_threshold(const int* __restrict__ topkIdx, const float* __restrict__ topkWeights, long n, int experts,
                     int world, int capacity, int policy, int* __restrict__ fault, const int* __restrict__ totals,
                     unsigned long long* __restrict__ thr, int* __restrict__ dropped) {
    MOE4J_SHARED(int, sCount, [1]);
    const int d = blockIdx.x;
    const int local = experts / world;
    if (d == 0 && threadIdx.x == 0) {
        const int bad = fault[0];
        fault[1] = bad == MOE_NO_FAULT ? 0 : topkIdx[bad];
        fault[2] = bad == MOE_NO_FAULT ? 0 : __float_as_int(topkWeights[bad]);
    }
    int total = 0;
    for (int e = d * local; e < (d + 1) * local; ++e) total += totals[e];
    if (threadIdx.x == 0) dropped[d] = total > capacity ? total - capacity : 0;
    if (total <= capacity) {
        if (threadIdx.x == 0) thr[d] = ~0ull;
        return;
    }
    unsigned long long prefix = 0;
    int want = capacity;  // 1-based rank of the key searched among those matching prefix so far
    for (int bit = policy == 0 ? 31 : 63; bit >= 0; --bit) {
        if (threadIdx.x == 0) sCount[0] = 0;
        __syncthreads();
        int mine = 0;
        for (long s = threadIdx.x; s < n; s += blockDim.x) {
            const int e = topkIdx[s];
            if (e < d * local || e >= (d + 1) * local) continue;
            const unsigned long long key = static_priority(policy, s, topkWeights[s]);
            const bool samePrefix = bit == 63 || (key >> (bit + 1)) == (prefix >> (bit + 1));
            if (samePrefix && ((key >> bit) & 1ull) == 0ull) ++mine;
        }
        if (mine) atomicAdd(&sCount[0], mine);
        __syncthreads();
        const int zeros = sCount[0];
        __syncthreads();
        if (want > zeros) {
            want -= zeros;
            prefix |= 1ull << bit;
        }
    }
    if (threadIdx.x == 0) thr[d] = prefix;
}

// Kept slot s (keys[s] = e >= 0) of destination d = e / L goes to row r = d*C + pos[s] - keyBase[d*L]
// with its meta row (rank, t, expert e at k, weight bits at k, -1 / 0 elsewhere); slotReturnRow[s] =
// r, -1 for an empty, dropped or refused slot.
extern "C" __global__ void __launch_bounds__(256)
moe_static_send_write(const int* __restrict__ keys, const float* __restrict__ topkWeights, long n, int topK,
                      int experts, int world, int rank, int capacity, const int* __restrict__ pos,
                      const int* __restrict__ keyBase, int* __restrict__ sendToken, int* __restrict__ sendMeta,
                      int* __restrict__ returnSlot, int* __restrict__ slotReturnRow) {
    const long s = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n) return;
    const int e = keys[s];
    if (e < 0) {
        slotReturnRow[s] = -1;
        return;
    }
    const int local = experts / world;
    const int d = e / local;
    const int t = (int)(s / topK);
    const int j = (int)(s - (long)t * topK);
    const long r = (long)d * capacity + (pos[s] - keyBase[d * local]);
    int* row = sendMeta + r * (MOE_META_FIXED + 2 * topK);
    row[0] = rank;
    row[1] = t;
    for (int q = 0; q < topK; ++q) {
        row[MOE_META_FIXED + q] = q == j ? e : -1;
        row[MOE_META_FIXED + topK + q] = q == j ? __float_as_int(topkWeights[s]) : 0;
    }
    sendToken[r] = t;
    returnSlot[r] = (int)s;
    slotReturnRow[s] = (int)r;
}

// Rows r = d*C + p past the kept slots of d (p >= keyBase[(d+1)*L] - keyBase[d*L]) are padding:
// meta (-1, -1, experts -1, weights 0), sendToken = returnSlot = -1.
extern "C" __global__ void __launch_bounds__(256)
moe_static_send_pad(const int* __restrict__ keyBase, int experts, int world, int capacity, int topK,
                    int* __restrict__ sendToken, int* __restrict__ sendMeta, int* __restrict__ returnSlot) {
    const long r = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= (long)world * capacity) return;
    const int local = experts / world;
    const int d = (int)(r / capacity);
    const int p = (int)(r - (long)d * capacity);
    if (p < keyBase[(d + 1) * local] - keyBase[d * local]) return;
    int* row = sendMeta + r * (MOE_META_FIXED + 2 * topK);
    for (int q = 0; q < MOE_META_FIXED + topK; ++q) row[q] = -1;
    for (int q = 0; q < topK; ++q) row[MOE_META_FIXED + topK + q] = 0;
    sendToken[r] = -1;
    returnSlot[r] = -1;
}

// groupOffsets [L+1]: exclusive scan of counts [L], each group padded to a multiple of alignment.
extern "C" __global__ void __launch_bounds__(1)
moe_static_group_offsets(const int* __restrict__ counts, int localExperts, int alignment, int* __restrict__ groupOffsets) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int off = 0;
    groupOffsets[0] = 0;
    for (int l = 0; l < localExperts; ++l) {
        off += (counts[l] + alignment - 1) / alignment * alignment;
        groupOffsets[l + 1] = off;
    }
}

// buildStaticRecvPlan outputs, indexed by received row u (one slot per unit at most): entry
// i = u*K + j with a local expert (groupKey >= 0) writes the slot arrays at u and the row arrays at
// row = rowPos[i] (stable by i from groupOffsets), rows past rowsMax skipped. Slot arrays are pre-filled with -1 (weights 0),
// row arrays with -1.
extern "C" __global__ void __launch_bounds__(256)
moe_static_recv_write(const int* __restrict__ meta, int units, int topK, const int* __restrict__ groupKey,
                      const int* __restrict__ rowPos, long rowsMax, int* __restrict__ slotUnit, int* __restrict__ slotUnitSlot,
                      int* __restrict__ slotExpertRow, float* __restrict__ slotWeight, int* __restrict__ rowSrcRank,
                      int* __restrict__ rowSrcIndex, int* __restrict__ rowTopkSlot) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)units * topK || groupKey[i] < 0) return;
    const long u = i / topK;
    const int j = (int)(i - u * topK);
    const int* m = meta + u * (MOE_META_FIXED + 2 * topK);
    const int row = rowPos[i];
    if (row < 0 || row >= rowsMax) return;  // only for meta with several local slots in a unit (not a static plan's)
    slotUnit[u] = (int)u;
    slotUnitSlot[u] = (int)i;
    slotExpertRow[u] = row;
    slotWeight[u] = __int_as_float(m[MOE_META_FIXED + topK + j]);
    rowSrcRank[row] = m[0];
    rowSrcIndex[row] = m[1];
    rowTopkSlot[row] = j;
}
