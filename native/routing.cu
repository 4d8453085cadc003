// moe4j routing kernels: the device side of org.moe4j.routing.RoutingKernels
// (gateLogits, route, countTokens, dropOverCapacity, segmentStats, routeBackward, gateBackward)
// plus the aux-loss-free expert-bias step.
//
// Contract (DESIGN.md section 2; matches moe-routing's CpuRoutingKernels, read that first):
//   logits      [tokens, experts]  fp32 or bf16, row-major
//   scores      [tokens, experts]  fp32 = softmax(logits) or sigmoid(logits); 0 for padding tokens
//   choice      = scores + expertBias           (bias steers selection only)
//   node-limited routing: experts split into `groups` contiguous groups; group score =
//   sum of the two largest choice values in the group (TOP2_SUM) or the largest (MAX);
//   the top `limitedGroups` groups are kept (ties -> lower group index); only experts of
//   kept groups are selectable.
//   selected    [tokens, topK]     int32; top-k of choice in descending order, ties -> lower
//                                  expert index; forceBalanced: (t*topK + k) mod experts;
//                                  -1 for padding tokens
//   topkWeights [tokens, topK]     fp32; scores[selected]; if routeNorm: / (sum_k + 1e-20) with the
//                                  sum in k order; then * routeScale; 0 for padding tokens
//   lse         [tokens]           logsumexp(logits) (0 for padding)
//   A token whose logits hold NaN/Inf is reported through firstBad (integer atomicMin: the
//   lowest such index) and its outputs are left unwritten, as on the CPU.
//   Histograms use integer atomics only (exact, order-free); callers zero them first.
//
// Determinism: no floating-point atomics anywhere in this file. Every floating-point
// reduction runs in a fixed order that depends only on the launch shape stated below. Sums
// over k run serially in k order (bit-identical to the CPU); sums over experts use a warp
// butterfly (within a few ulp of the CPU's vector sums; the CPU's exp is its own polynomial,
// so scores agree to ~1e-7 relative, not bitwise).
//
// Launch shapes and limits (checked on the host by the Java launcher; kernels trust them):
//   moe_router_fwd       block 128 threads (4 warps, one warp per token), grid ceil(tokens/4),
//                        dynamic shared memory = (4 + 2) * experts * 4 bytes.
//                        experts <= 2048, 1 <= topK <= min(32, experts), groups <= 32,
//                        experts % groups == 0, 1 <= limitedGroups <= groups.
//   moe_router_bwd       block 128 (one warp per token), grid ceil(tokens/4), dynamic shared
//                        memory = 4 * experts * 4 bytes; topK <= 32, experts <= 2048.
//   moe_fp32_gemm        block (16,16), grid (ceil(N/64), ceil(M/64)); fp32 math, fixed k order.
//   moe_seq_histogram    block 256, grid ceil(tokens*topK/256), dynamic smem experts*4.
//   moe_segment_partials block 256, grid segments * ceil(segmentLength/64), dynamic smem
//                        experts*4 + 64*4 bytes; writes per-block partials.
//   moe_segment_finish   block 128, grid (ceil(experts/128), segments).
//   moe_capacity_drop    block 256, grid experts; uses the expert-major rowSrc and unpadded
//                        expertOffsets of permute.cu's layout kernels (align = 1).
//   moe_expert_bias_update  block 1, thread 1 (experts is small; serial = CPU order).

#include <cuda_bf16.h>
#include "common.cuh"
#include <stdint.h>

#define MOE_ROUTER_WARPS 4
#define MOE_MAX_EXPERTS 2048
#define MOE_MAX_SLOTS (MOE_MAX_EXPERTS / 32)

namespace {

__device__ __forceinline__ float load_logit(const void* p, long i, int bf16) {
    if (bf16) return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
    return reinterpret_cast<const float*>(p)[i];
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    // butterfly: every lane ends with the same value, order fixed by lane numbering
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Better candidate: larger value, or equal value and lower index. NaN never wins
// against a number; index -1 marks "no candidate".
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    if (i < 0) return false;
    if (bi < 0) return true;
    return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (better(ov, oi, v, i)) { v = ov; i = oi; }
    }
}

}  // namespace


// route(): scores, (biased, node-limited) top-k selection and weights; see the contract above.
//   logits [tokens, experts] fp32 (logitsBf16 = 0) or bf16 (1)
//   expertBias (nullable) [experts] fp32
//   paddingMask (nullable) [tokens] int32, 0 = padding token
//   scoreFn: 0 softmax, 1 sigmoid;  groupScore: 0 TOP2_SUM, 1 MAX
//   groups <= 1 or limitedGroups >= groups disables the group mask
//   scores [tokens, experts] fp32, selected/topkWeights [tokens, topK]
//   lse (nullable) [tokens] fp32
//   tokensPerExpert (nullable) [experts] int32, zeroed by the caller
//   firstBad (nullable) int32 scalar, set to INT_MAX by the caller; receives the lowest token
//   index with non-finite logits; such a token is routed nowhere, like a padding token
extern "C" __global__ void __launch_bounds__(128)
moe_router_fwd(const void* __restrict__ logits, int logitsBf16,
               const float* __restrict__ expertBias, const int* __restrict__ paddingMask,
               int tokens, int experts, int topK, int scoreFn,
               int groups, int limitedGroups, int groupScore,
               int routeNorm, float routeScale, int forceBalanced,
               float* __restrict__ scores, int* __restrict__ selected,
               float* __restrict__ topkWeights, float* __restrict__ lse,
               int* __restrict__ tokensPerExpert, int* __restrict__ firstBad) {
    MOE4J_DYNAMIC_SHARED(16, float, smem);
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    float* sBias = smem;                                   // [experts]
    int* sHist = reinterpret_cast<int*>(smem + experts);   // [experts]
    float* sScore = smem + 2 * experts + warp * experts;   // [experts] for this warp's token

    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        sBias[e] = expertBias ? expertBias[e] : 0.0f;
        sHist[e] = 0;
    }
    __syncthreads();

    const int t = blockIdx.x * MOE_ROUTER_WARPS + warp;
    const long row = (long)t * experts;
    const bool padding = t < tokens && paddingMask != nullptr && paddingMask[t] == 0;
    bool finite = true;
    if (t < tokens && !padding) {
        float m = -INFINITY;
        for (int e = lane; e < experts; e += 32) {
            float x = load_logit(logits, row + e, logitsBf16);
            finite = finite && isfinite(x);
            sScore[e] = x;
            m = fmaxf(m, x);
        }
        finite = __all_sync(0xffffffffu, finite);
        if (!finite && lane == 0 && firstBad) atomicMin(firstBad, t);
    }
    // a padding token, and a token with non-finite logits (reported through firstBad; with the
    // deferred check the step goes on), routes nowhere: scores 0, selection -1, weights 0, lse 0
    if (t < tokens && (padding || !finite)) {
        for (int e = lane; e < experts; e += 32) scores[row + e] = 0.0f;
        if (lane < topK) {
            selected[(long)t * topK + lane] = -1;
            topkWeights[(long)t * topK + lane] = 0.0f;
        }
        if (lse && lane == 0) lse[t] = 0.0f;
    }
    if (t < tokens && !padding && finite) {
        // 1-2. scores (and logsumexp)
        float m = -INFINITY;
        for (int e = lane; e < experts; e += 32) m = fmaxf(m, sScore[e]);
        m = warp_max(m);
        if (scoreFn == 0 || lse) {
            float sum = 0.0f;
            for (int e = lane; e < experts; e += 32) sum = __fadd_rn(sum, expf(sScore[e] - m));
            sum = warp_sum(sum);
            if (lse && lane == 0) lse[t] = m + logf(sum);
            if (scoreFn == 0)
                for (int e = lane; e < experts; e += 32) sScore[e] = __fdiv_rn(expf(sScore[e] - m), sum);
        }
        if (scoreFn != 0)
            for (int e = lane; e < experts; e += 32)
                sScore[e] = __fdiv_rn(1.0f, __fadd_rn(expf(-sScore[e]), 1.0f));
        __syncwarp();
        for (int e = lane; e < experts; e += 32) scores[row + e] = sScore[e];

        // 4. node-limited group mask (bit g set = group g kept)
        unsigned kept = 0xffffffffu;
        int perGroup = experts;
        if (!forceBalanced && groups > 1 && limitedGroups < groups) {
            perGroup = experts / groups;
            float gs = -INFINITY;
            int gi = -1;
            if (lane < groups) {
                float b1 = -INFINITY, b2 = -INFINITY;
                for (int j = 0; j < perGroup; ++j) {
                    int e = lane * perGroup + j;
                    float c = __fadd_rn(sScore[e], sBias[e]);
                    if (c > b1) { b2 = b1; b1 = c; } else if (c > b2) { b2 = c; }
                }
                gs = groupScore == 0 ? __fadd_rn(b1, b2) : b1;
                gi = lane;
            }
            kept = 0u;
            for (int r = 0; r < limitedGroups; ++r) {
                float v = (kept >> lane) & 1u ? -INFINITY : gs;
                int i = (kept >> lane) & 1u ? -1 : gi;
                warp_argmax(v, i);
                if (i >= 0) kept |= 1u << i;
            }
        }

        // 5. top-k over choice; bit j of `taken` = expert lane + 32*j already selected
        uint64_t taken = 0;
        int myIdx = -1;
        float myW = 0.0f;
        for (int k = 0; k < topK; ++k) {
            int bi = -1;
            if (forceBalanced) {
                bi = (int)(((long)t * topK + k) % experts);
            } else {
                float bv = -INFINITY;
                int j = 0;
                for (int e = lane; e < experts; e += 32, ++j) {
                    if ((taken >> j) & 1ull) continue;
                    if (!((kept >> (e / perGroup)) & 1u)) continue;
                    float c = __fadd_rn(sScore[e], sBias[e]);
                    if (better(c, e, bv, bi)) { bv = c; bi = e; }
                }
                warp_argmax(bv, bi);
                if (bi >= 0 && (bi & 31) == lane) taken |= 1ull << (bi >> 5);
            }
            if (lane == k) { myIdx = bi; myW = bi >= 0 ? sScore[bi] : 0.0f; }
        }
        // 6. weights: sum in k order (every lane computes the same serial sum)
        float s = 0.0f;
        for (int k = 0; k < topK; ++k) s = __fadd_rn(s, __shfl_sync(0xffffffffu, myW, k));
        const float denom = __fadd_rn(s, 1e-20f);
        if (lane < topK) {
            const long o = (long)t * topK + lane;
            const float w = routeNorm ? __fdiv_rn(myW, denom) : myW;
            topkWeights[o] = __fmul_rn(w, routeScale);
            selected[o] = myIdx;
            if (tokensPerExpert && myIdx >= 0) atomicAdd(&sHist[myIdx], 1);
        }
    }
    __syncthreads();
    if (tokensPerExpert) {
        for (int e = threadIdx.x; e < experts; e += blockDim.x) {
            int c = sHist[e];
            if (c) atomicAdd(&tokensPerExpert[e], c);
        }
    }
}

// routeBackward(): dLogits for every token (0 for padding tokens, i.e. selected[t,0] < 0).
//   logits (nullable unless zGrad != 0) [tokens, experts] fp32; scores [tokens, experts]
//   selected (before capacity drops), topkIdx (after drops) [tokens, topK]
//   dTopkWeights (nullable) [tokens, topK]: g_k = kept ? dW_k * routeScale : 0;
//     routeNorm: S = sum_k s[sel_k], dot = sum_k g_k s[sel_k] (k order), den = S + 1e-20,
//     dS[sel_k] += g_k / den - dot / (den * den); else dS[sel_k] += g_k
//   auxGrad (nullable) [segments, experts] = dLoss/dp, segment = t / auxSegmentLength;
//     softmax: dS = auxGrad; sigmoid (p = s / sum s): dS = (auxGrad - <auxGrad, p>) / sum s
//   through the score function: sigmoid dL = dS * (s * (1 - s)); softmax dL = s * (dS - <dS, s>)
//   z-loss: dL += (zGrad * lse[t]) * exp(logits - lse[t])
extern "C" __global__ void __launch_bounds__(128)
moe_router_bwd(const float* __restrict__ logits, const float* __restrict__ scores,
               const int* __restrict__ selected, const int* __restrict__ topkIdx,
               const float* __restrict__ dTopkWeights, const float* __restrict__ auxGrad, int auxSegmentLength,
               const float* __restrict__ lse, float zGrad,
               int tokens, int experts, int topK, int scoreFn, int routeNorm, float routeScale,
               float* __restrict__ dLogits) {
    MOE4J_DYNAMIC_SHARED(16, float, smem);
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    float* sDs = smem + warp * experts;  // [experts] dScores
    const int t = blockIdx.x * MOE_ROUTER_WARPS + warp;
    if (t >= tokens) return;
    const long row = (long)t * experts;
    const long slot = (long)t * topK;
    if (selected[slot] < 0) {
        for (int e = lane; e < experts; e += 32) dLogits[row + e] = 0.0f;
        return;
    }

    // balance-loss path
    if (auxGrad) {
        const float* a = auxGrad + (long)(t / auxSegmentLength) * experts;
        if (scoreFn == 0) {
            for (int e = lane; e < experts; e += 32) sDs[e] = a[e];
        } else {
            float sum = 0.0f;
            for (int e = lane; e < experts; e += 32) sum = __fadd_rn(sum, scores[row + e]);
            sum = warp_sum(sum);
            float dot = 0.0f;
            for (int e = lane; e < experts; e += 32)
                dot = __fadd_rn(dot, __fmul_rn(a[e], __fdiv_rn(scores[row + e], sum)));
            dot = warp_sum(dot);
            for (int e = lane; e < experts; e += 32) sDs[e] = __fdiv_rn(__fsub_rn(a[e], dot), sum);
        }
    } else {
        for (int e = lane; e < experts; e += 32) sDs[e] = 0.0f;
    }
    __syncwarp();

    // top-k weight path (selected experts are distinct: lanes update distinct entries)
    if (dTopkWeights) {
        int e = -1;
        float s = 0.0f, g = 0.0f;
        if (lane < topK) {
            e = selected[slot + lane];
            s = scores[row + e];
            g = topkIdx[slot + lane] >= 0 ? __fmul_rn(dTopkWeights[slot + lane], routeScale) : 0.0f;
        }
        float sum = 0.0f, dot = 0.0f;
        for (int k = 0; k < topK; ++k) {
            const float sk = __shfl_sync(0xffffffffu, s, k);
            sum = __fadd_rn(sum, sk);
            dot = __fadd_rn(dot, __fmul_rn(__shfl_sync(0xffffffffu, g, k), sk));
        }
        if (lane < topK) {
            float add;
            if (routeNorm) {
                const float den = __fadd_rn(sum, 1e-20f);
                const float corr = __fdiv_rn(dot, __fmul_rn(den, den));
                add = __fsub_rn(__fdiv_rn(g, den), corr);
            } else {
                add = g;
            }
            sDs[e] = __fadd_rn(sDs[e], add);
        }
        __syncwarp();
    }

    // through the score function, then the z-loss
    float dot = 0.0f;
    if (scoreFn == 0) {
        for (int e = lane; e < experts; e += 32) dot = __fadd_rn(dot, __fmul_rn(sDs[e], scores[row + e]));
        dot = warp_sum(dot);
    }
    const float zc = zGrad != 0.0f ? __fmul_rn(zGrad, lse[t]) : 0.0f;
    const float lt = zGrad != 0.0f ? lse[t] : 0.0f;
    for (int e = lane; e < experts; e += 32) {
        const float se = scores[row + e];
        float v = scoreFn == 0 ? __fmul_rn(se, __fsub_rn(sDs[e], dot))
                               : __fmul_rn(sDs[e], __fmul_rn(se, __fsub_rn(1.0f, se)));
        if (zGrad != 0.0f) v = fmaf(expf(logits[row + e] - lt), zc, v);
        dLogits[row + e] = v;
    }
}

// Small fp32 GEMM with strided operands (fixed k order, fp32 FMA accumulation):
//   C[m, n] = sum_k A[m*aRs + k*aKs] * B[n*bNs + k*bKs], C row-major [M, N] (ldc = N).
// A and B are fp32 or bf16 (aBf16/bBf16). Used for the gate projection and its backward:
//   gateLogits:  A = x [T,H] (aRs=H, aKs=1), B = Wg [E,H] (bNs=H, bKs=1), M=T, N=E, K=H
//   dX:          A = dLogits [T,E] (E, 1), B = Wg read as (n=h, k=e): (1, H), M=T, N=H, K=E
//   dGate:       A = dLogits read as (m=e, k=t): (1, E), B = x as (n=h, k=t): (1, H), M=E, N=H, K=T
// 64x64 output tile per block of 16x16 threads, 4x4 outputs per thread, k tile 16.
extern "C" __global__ void __launch_bounds__(256)
moe_fp32_gemm(const void* __restrict__ A, int aBf16, long aRs, long aKs,
              const void* __restrict__ B, int bBf16, long bNs, long bKs,
              int M, int N, int K, float* __restrict__ C) {
    MOE4J_SHARED(float, sa, [16][64 + 1]);
    MOE4J_SHARED(float, sb, [16][64 + 1]);
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * 16 + tx;
    const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
    // unit-stride operand along k: threads walk k fastest; otherwise along m/n (coalescing)
    const bool aKfast = aKs == 1, bKfast = bKs == 1;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += 16) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int li = tid + r * 256;  // 0..1023 over a 64x16 tile
            int m = aKfast ? li >> 4 : li & 63, kk = aKfast ? li & 15 : li >> 6;
            int gm = m0 + m, gk = k0 + kk;
            sa[kk][m] = (gm < M && gk < K) ? load_logit(A, gm * aRs + gk * aKs, aBf16) : 0.0f;
            int n = bKfast ? li >> 4 : li & 63;
            kk = bKfast ? li & 15 : li >> 6;
            int gn = n0 + n;
            gk = k0 + kk;
            sb[kk][n] = (gn < N && gk < K) ? load_logit(B, gn * bNs + gk * bKs, bBf16) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = sa[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = sb[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m < M && n < N) C[(long)m * N + n] = acc[i][j];
        }
}

// countTokens(): counts[e] += number of entries equal to e in topkIdx (skips -1 and ids out of
// range). counts [experts] int32 zeroed by the caller.
extern "C" __global__ void __launch_bounds__(256)
moe_seq_histogram(const int* __restrict__ topkIdx, long n, int experts, int* __restrict__ counts) {
    MOE4J_DYNAMIC_SHARED(16, int, sCount);
    for (int e = threadIdx.x; e < experts; e += blockDim.x) sCount[e] = 0;
    __syncthreads();
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int e = topkIdx[i];
        if (e >= 0 && e < experts) atomicAdd(&sCount[e], 1);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
        if (sCount[e]) atomicAdd(&counts[e], sCount[e]);
}

#define MOE_SEG_BLOCK 64

// segmentStats() stage 1. Segment s covers tokens [s*L, min(tokens, (s+1)*L)); each CTA takes
// the 64-token block b of segment s (grid = segments * blocksPerSegment, blocksPerSegment =
// ceil(L / 64)) and writes, over its valid tokens (selected[t,0] >= 0), in token order:
//   probPart [cta, experts] double: sum of p[t,e] (score; sigmoid: score / sum_e score with the
//                                   per-token sum serial in expert order, as on the CPU)
//   countPart [cta, experts] int:   assignments to e
//   validPart [cta] int, lsePart [cta] double (sum of lse^2; lse nullable)
extern "C" __global__ void __launch_bounds__(256)
moe_segment_partials(const float* __restrict__ scores, const int* __restrict__ selected,
                     const float* __restrict__ lse, int tokens, int experts, int topK, int sigmoid,
                     int segmentLength, int blocksPerSegment,
                     double* __restrict__ probPart, int* __restrict__ countPart,
                     int* __restrict__ validPart, double* __restrict__ lsePart) {
    MOE4J_DYNAMIC_SHARED(16, int, sCount);  // [experts] then float sRowSum[64]
    float* sRowSum = reinterpret_cast<float*>(sCount + experts);
    const int seg = blockIdx.x / blocksPerSegment, blk = blockIdx.x % blocksPerSegment;
    const int tBegin = seg * segmentLength + blk * MOE_SEG_BLOCK;
    const int tEnd = min(min(tokens, (seg + 1) * segmentLength), tBegin + MOE_SEG_BLOCK);
    for (int e = threadIdx.x; e < experts; e += blockDim.x) sCount[e] = 0;
    if (threadIdx.x < MOE_SEG_BLOCK) {
        const int t = tBegin + threadIdx.x;
        float sum = 1.0f;
        if (sigmoid && t < tEnd) {
            sum = 0.0f;
            for (int e = 0; e < experts; ++e) sum = __fadd_rn(sum, scores[(long)t * experts + e]);
        }
        sRowSum[threadIdx.x] = sum;
    }
    __syncthreads();
    for (long i = (long)tBegin * topK + threadIdx.x; i < (long)tEnd * topK; i += blockDim.x) {
        const long t = i / topK;
        if (selected[t * topK] >= 0) {
            const int e = selected[i];
            if (e >= 0 && e < experts) atomicAdd(&sCount[e], 1);
        }
    }
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        double acc = 0.0;
        for (int t = tBegin; t < tEnd; ++t) {
            if (selected[(long)t * topK] < 0) continue;
            const float s = scores[(long)t * experts + e];
            acc += (double)(sigmoid ? __fdiv_rn(s, sRowSum[t - tBegin]) : s);
        }
        probPart[(long)blockIdx.x * experts + e] = acc;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < experts; e += blockDim.x) countPart[(long)blockIdx.x * experts + e] = sCount[e];
    if (threadIdx.x == 0) {
        int valid = 0;
        double l2 = 0.0;
        for (int t = tBegin; t < tEnd; ++t) {
            if (selected[(long)t * topK] < 0) continue;
            ++valid;
            if (lse) {
                const double l = lse[t];
                l2 += l * l;
            }
        }
        validPart[blockIdx.x] = valid;
        lsePart[blockIdx.x] = l2;
    }
}

// segmentStats() stage 2: sums the partials of each segment in block order.
//   probSum [segments, experts] fp32, counts [segments, experts] int32,
//   valid [segments] int32, lseSq [segments] fp32.
extern "C" __global__ void __launch_bounds__(128)
moe_segment_finish(const double* __restrict__ probPart, const int* __restrict__ countPart,
                   const int* __restrict__ validPart, const double* __restrict__ lsePart,
                   int experts, int blocksPerSegment,
                   float* __restrict__ probSum, int* __restrict__ counts,
                   int* __restrict__ valid, float* __restrict__ lseSq) {
    const int seg = blockIdx.y;
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    const long b0 = (long)seg * blocksPerSegment;
    if (e < experts) {
        double acc = 0.0;
        int c = 0;
        for (int b = 0; b < blocksPerSegment; ++b) {
            acc += probPart[(b0 + b) * experts + e];
            c += countPart[(b0 + b) * experts + e];
        }
        probSum[(long)seg * experts + e] = (float)acc;
        counts[(long)seg * experts + e] = c;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        double l2 = 0.0;
        int v = 0;
        for (int b = 0; b < blocksPerSegment; ++b) {
            l2 += lsePart[b0 + b];
            v += validPart[b0 + b];
        }
        valid[seg] = v;
        lseSq[seg] = (float)l2;
    }
}

// dropOverCapacity(): one CTA per expert e. Its assignments are rows [offsets[e], offsets[e+1])
// of the expert-major, token-ordered layout (rowSrc = flat slot t*topK+k; permute.cu with
// align = 1). When more than `capacity`: BY_POSITION (policy 1) drops the rows past capacity;
// BY_SCORE (policy 0) drops those whose rank by (score desc, slot asc) is >= capacity (rank by
// counting, O(n_e^2) per expert). Dropped slots: topkIdx = -1, topkWeights = 0 (topkIdx holds
// a copy of `selected` on entry). dropped (int64) += number of dropped slots (integer atomic).
extern "C" __global__ void __launch_bounds__(256)
moe_capacity_drop(const int* __restrict__ rowSrc, const int* __restrict__ offsets,
                  const float* __restrict__ scores, int topK, int experts, int capacity, int policy,
                  int* __restrict__ topkIdx, float* __restrict__ topkWeights,
                  unsigned long long* __restrict__ dropped) {
    const int e = blockIdx.x;
    const int begin = offsets[e], n = offsets[e + 1] - begin;
    if (n <= capacity) return;
    unsigned long long mine = 0;
    for (int q = threadIdx.x; q < n; q += blockDim.x) {
        const int flat = rowSrc[begin + q];
        int rank = q;
        if (policy == 0) {
            const float s = scores[(long)(flat / topK) * experts + e];
            rank = 0;
            for (int j = 0; j < n; ++j) {
                const int f2 = rowSrc[begin + j];
                const float s2 = scores[(long)(f2 / topK) * experts + e];
                rank += (s2 > s || (s2 == s && f2 < flat)) ? 1 : 0;
            }
        }
        if (rank >= capacity) {
            topkIdx[flat] = -1;
            topkWeights[flat] = 0.0f;
            ++mine;
        }
    }
    if (mine) atomicAdd(dropped, mine);
}

// Aux-loss-free balancing step, as ExpertBias.step + update: mean = (float) sum(load) / experts;
// delta[e] = coeff * sign(mean - (float) load[e]); ZERO_MEAN (centre != 0): delta -= sum(delta)
// / experts (serial fp32 sum in expert order); bias += delta. load is int64. One thread.
extern "C" __global__ void moe_expert_bias_update(const long long* __restrict__ load, int experts,
                                                  float coeff, int centre, float* __restrict__ bias) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    long long total = 0;
    for (int e = 0; e < experts; ++e) total += load[e];
    const float mean = __fdiv_rn((float)total, (float)experts);
    float sum = 0.0f;
    for (int e = 0; e < experts; ++e) {
        const float d = __fsub_rn(mean, (float)load[e]);
        const float sg = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
        sum = __fadd_rn(sum, __fmul_rn(coeff, sg));
    }
    const float m = centre ? __fdiv_rn(sum, (float)experts) : 0.0f;
    for (int e = 0; e < experts; ++e) {
        const float d = __fsub_rn(mean, (float)load[e]);
        const float sg = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
        float delta = __fmul_rn(coeff, sg);
        if (centre) delta = __fsub_rn(delta, m);
        bias[e] = __fadd_rn(bias[e], delta);
    }
}

// Sync-free routing: load[e] += tokensPerExpert[e] (int32 counts into the int64 load) unless
// *firstBad != INT_MAX (a step with non-finite router logits, or any step after one that was not
// yet reported to the host, changes no balancing state). Grid over experts, 256 threads a block.
extern "C" __global__ void __launch_bounds__(256)
moe_load_accumulate(const int* __restrict__ tokensPerExpert, const int* __restrict__ firstBad, int experts,
                    long long* __restrict__ load) {
    if (*firstBad != 0x7fffffff) return;
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e < experts) load[e] += tokensPerExpert[e];
}
