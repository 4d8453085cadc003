// moe4j routing kernels: token-choice top-k router forward/backward, load statistics,
// auxiliary-loss helpers and the aux-loss-free expert-bias update.
//
// Contract (DESIGN.md section 2; must match the CPU RoutingKernels of moe-routing):
//   logits      [tokens, experts]  fp32 or bf16, row-major
//   scores      [tokens, experts]  fp32 = softmax(logits) or sigmoid(logits)
//   choice      = scores + expertBias           (bias steers selection only)
//   node-limited routing: experts split into `groups` contiguous groups; group score =
//   sum of the two largest choice values in the group (TOP2_SUM) or the largest (MAX);
//   the top `limitedGroups` groups are kept (ties -> lower group index); experts of the
//   other groups count as -inf for selection.
//   topkIdx     [tokens, topK]     int32; top-k of choice, ties -> lower expert index,
//                                  in descending choice order; -1 for masked tokens
//   topkWeights [tokens, topK]     fp32; scores[topkIdx]; if routeNorm: / (sum_k + 1e-20);
//                                  then * routeScale; 0 for masked tokens
//   tokensPerExpert [experts]      int32 histogram of topkIdx (skipping -1), accumulated with
//                                  integer atomics (exact, order-free): caller zeroes it first.
//
// Determinism: no floating-point atomics anywhere in this file. Every floating-point
// reduction runs in a fixed order that depends only on the launch shape stated below.
//
// Launch shapes and limits (checked on the host by the Java launcher; kernels trust them):
//   moe_router_fwd       block 128 threads (4 warps, one warp per token), grid ceil(tokens/4),
//                        dynamic shared memory = (4 + 2) * experts * 4 bytes.
//                        experts <= 2048, 1 <= topK <= min(32, experts), groups <= 32,
//                        experts % groups == 0, 1 <= limitedGroups <= groups.
//   moe_router_bwd       block 128 (one warp per token), grid ceil(tokens/4), dynamic shared
//                        memory = 4 * 2 * experts * 4 bytes (above 48 KB, i.e. experts > 1536,
//                        the launcher raises the kernel's dynamic shared-memory limit); topK <= 32.
//   moe_router_logits    block (16,16), grid (ceil(experts/64), ceil(tokens/64)); fp32 math.
//   moe_seq_histogram    block 256, grid ceil(tokens*topK/256), dynamic smem experts*4 when
//                        seqLength >= tokens (single sequence), else 0.
//   moe_row_sum          block 128 (warp per token), grid ceil(tokens/4).
//   moe_score_colsum     block 128, grid (ceil(experts/128), numSeq).
//   moe_aux_grad         block 128 (warp per token), grid ceil(tokens/4).
//   moe_expert_bias_update  block 1, thread 1 (experts is small; serial = CPU order).

#include <cuda_bf16.h>
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

// Fused router forward. See the contract above. Pointers marked (nullable) may be 0.
//   logits: [tokens, experts] fp32 (logitsBf16=0) or bf16 (logitsBf16=1)
//   expertBias (nullable): [experts] fp32
//   tokenMask (nullable): [tokens] int32, 0 = padding token (gets -1 / 0)
//   scoreFn: 0 softmax, 1 sigmoid;  groupScore: 0 TOP2_SUM, 1 MAX
//   groups <= 1 or limitedGroups >= groups disables the group mask
//   scoresOut (nullable): [tokens, experts] fp32
//   tokensPerExpert (nullable): [experts] int32, zeroed by the caller
extern "C" __global__ void __launch_bounds__(128)
moe_router_fwd(const void* __restrict__ logits, int logitsBf16,
               const float* __restrict__ expertBias, const int* __restrict__ tokenMask,
               int tokens, int experts, int topK, int scoreFn,
               int groups, int limitedGroups, int groupScore,
               int routeNorm, float routeScale,
               float* __restrict__ scoresOut, int* __restrict__ topkIdx,
               float* __restrict__ topkWeights, int* __restrict__ tokensPerExpert) {
    extern __shared__ float smem[];
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
    if (t < tokens) {
        const long row = (long)t * experts;
        // 1-2. scores
        if (scoreFn == 0) {
            float m = -INFINITY;
            for (int e = lane; e < experts; e += 32) {
                float x = load_logit(logits, row + e, logitsBf16);
                sScore[e] = x;
                m = fmaxf(m, x);
            }
            m = warp_max(m);
            float s = 0.0f;
            for (int e = lane; e < experts; e += 32) {
                float x = expf(sScore[e] - m);
                sScore[e] = x;
                s = __fadd_rn(s, x);
            }
            s = warp_sum(s);
            for (int e = lane; e < experts; e += 32) sScore[e] = __fdiv_rn(sScore[e], s);
        } else {
            for (int e = lane; e < experts; e += 32) {
                float x = load_logit(logits, row + e, logitsBf16);
                sScore[e] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x)));
            }
        }
        __syncwarp();
        if (scoresOut)
            for (int e = lane; e < experts; e += 32) scoresOut[row + e] = sScore[e];

        // 4. node-limited group mask (bit g set = group g kept)
        unsigned kept = 0xffffffffu;
        int perGroup = experts;
        if (groups > 1 && limitedGroups < groups) {
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

        // 5. top-k over choice; selected[j] bit = expert lane + 32*j already taken
        uint64_t selected = 0;
        const bool valid = tokenMask == nullptr || tokenMask[t] != 0;
        int myIdx = -1;
        float myW = 0.0f;
        for (int k = 0; k < topK; ++k) {
            float bv = -INFINITY;
            int bi = -1;
            int j = 0;
            for (int e = lane; e < experts; e += 32, ++j) {
                if ((selected >> j) & 1ull) continue;
                float c = ((kept >> (e / perGroup)) & 1u) ? __fadd_rn(sScore[e], sBias[e]) : -INFINITY;
                if (better(c, e, bv, bi)) { bv = c; bi = e; }
            }
            warp_argmax(bv, bi);
            if (bi >= 0 && (bi & 31) == lane) selected |= 1ull << (bi >> 5);
            if (lane == k) { myIdx = bi; myW = bi >= 0 ? sScore[bi] : 0.0f; }
        }
        // 6. weights: sum in k order (every lane computes the same serial sum)
        float denom = 1.0f;
        if (routeNorm) {
            float s = 0.0f;
            for (int k = 0; k < topK; ++k) s = __fadd_rn(s, __shfl_sync(0xffffffffu, myW, k));
            denom = __fadd_rn(s, 1e-20f);
        }
        if (lane < topK) {
            const long o = (long)t * topK + lane;
            if (valid) {
                float w = routeNorm ? __fdiv_rn(myW, denom) : myW;
                topkWeights[o] = __fmul_rn(w, routeScale);
                topkIdx[o] = myIdx;
                if (tokensPerExpert && myIdx >= 0) atomicAdd(&sHist[myIdx], 1);
            } else {
                topkWeights[o] = 0.0f;
                topkIdx[o] = -1;
            }
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

// Router backward: dLogits from dTopkWeights (+ optional aux terms).
//   scores [tokens, experts] fp32 (saved from forward); topkIdx, dTopkWeights [tokens, topK]
//   dScoresExtra (nullable): [tokens, experts] fp32 gradient w.r.t. scores from auxiliary
//     losses (see moe_aux_grad), added before the score -> logit step
//   zLogits (nullable): [tokens, experts] logits (fp32 or bf16 per zLogitsBf16); the z-loss
//     term dLogits += zScale * lse(logits_t) * softmax(logits_t) is added when zScale != 0.
//     For scoreFn == softmax zLogits may be null (softmax(logits) == scores).
//     zScale = 2 * zCoeff / tokens for z = zCoeff * mean_t lse_t^2.
//   dLogits [tokens, experts] fp32 (fully written)
// weights w_k = scale * s_k / (S + 1e-20) (routeNorm) or scale * s_k:
//   dS_j = scale * (dW_j / (S+eps) - sum_k dW_k s_k / (S+eps)^2)   or scale * dW_j.
// softmax: dL_e = s_e * (dS_e - sum_j s_j dS_j);  sigmoid: dL_e = dS_e * s_e * (1 - s_e).
extern "C" __global__ void __launch_bounds__(128)
moe_router_bwd(const float* __restrict__ scores, const int* __restrict__ topkIdx,
               const float* __restrict__ dTopkWeights,
               int tokens, int experts, int topK, int scoreFn, int routeNorm, float routeScale,
               const float* __restrict__ dScoresExtra,
               const void* __restrict__ zLogits, int zLogitsBf16, float zScale,
               float* __restrict__ dLogits) {
    extern __shared__ float smem[];
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    float* sDs = smem + warp * experts * 2;  // [experts] dScores
    float* sZ = sDs + experts;               // [experts] softmax(zLogits) scratch
    const int t = blockIdx.x * MOE_ROUTER_WARPS + warp;
    if (t >= tokens) return;
    const long row = (long)t * experts;

    for (int e = lane; e < experts; e += 32) sDs[e] = dScoresExtra ? dScoresExtra[row + e] : 0.0f;
    __syncwarp();

    // gradient through the weight normalisation, selected experts only
    int idx = -1;
    float s = 0.0f, dw = 0.0f;
    if (lane < topK) {
        idx = topkIdx[(long)t * topK + lane];
        if (idx >= 0) {
            s = scores[row + idx];
            dw = dTopkWeights[(long)t * topK + lane];
        }
    }
    float g;
    if (routeNorm) {
        float S = 0.0f, dot = 0.0f;
        for (int k = 0; k < topK; ++k) {
            S = __fadd_rn(S, __shfl_sync(0xffffffffu, s, k));
            dot = __fadd_rn(dot, __fmul_rn(__shfl_sync(0xffffffffu, dw, k), __shfl_sync(0xffffffffu, s, k)));
        }
        const float den = __fadd_rn(S, 1e-20f);
        g = __fmul_rn(routeScale, __fsub_rn(__fdiv_rn(dw, den), __fdiv_rn(dot, __fmul_rn(den, den))));
    } else {
        g = __fmul_rn(routeScale, dw);
    }
    // experts are distinct within a token, so plain adds in k order are race free
    for (int k = 0; k < topK; ++k) {
        int e = __shfl_sync(0xffffffffu, idx, k);
        float gk = __shfl_sync(0xffffffffu, g, k);
        if (lane == 0 && e >= 0) sDs[e] = __fadd_rn(sDs[e], gk);
        __syncwarp();
    }

    // z-loss softmax(logits) and logsumexp
    const bool z = zScale != 0.0f;
    float zlse = 0.0f;
    if (z) {
        if (zLogits) {
            float m = -INFINITY;
            for (int e = lane; e < experts; e += 32) {
                float x = load_logit(zLogits, row + e, zLogitsBf16);
                sZ[e] = x;
                m = fmaxf(m, x);
            }
            m = warp_max(m);
            float sum = 0.0f;
            for (int e = lane; e < experts; e += 32) {
                float x = expf(sZ[e] - m);
                sZ[e] = x;
                sum = __fadd_rn(sum, x);
            }
            sum = warp_sum(sum);
            zlse = m + logf(sum);
            for (int e = lane; e < experts; e += 32) sZ[e] = __fdiv_rn(sZ[e], sum);
        }
        __syncwarp();
    }

    if (scoreFn == 0) {
        float dot = 0.0f;
        for (int e = lane; e < experts; e += 32) dot = fmaf(scores[row + e], sDs[e], dot);
        dot = warp_sum(dot);
        for (int e = lane; e < experts; e += 32) {
            float se = scores[row + e];
            float v = __fmul_rn(se, __fsub_rn(sDs[e], dot));
            if (z) v = fmaf(zScale * zlse, zLogits ? sZ[e] : se, v);
            dLogits[row + e] = v;
        }
    } else {
        for (int e = lane; e < experts; e += 32) {
            float se = scores[row + e];
            float v = __fmul_rn(sDs[e], __fmul_rn(se, __fsub_rn(1.0f, se)));
            if (z && zLogits) v = fmaf(zScale * zlse, sZ[e], v);
            dLogits[row + e] = v;
        }
    }
}

// Gate projection logits = x . Wg^T in fp32 (x fp32 or bf16, Wg fp32 or bf16), fixed k order.
//   x [tokens, hidden], gate [experts, hidden], logits [tokens, experts] fp32.
// 64x64 output tile per block of 16x16 threads, 4x4 outputs per thread, k tile 16.
extern "C" __global__ void __launch_bounds__(256)
moe_router_logits(const void* __restrict__ x, int xBf16, const void* __restrict__ gate, int gateBf16,
                  int tokens, int hidden, int experts, float* __restrict__ logits) {
    __shared__ float sx[16][64 + 1];
    __shared__ float sg[16][64 + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * 16 + tx;
    const int t0 = blockIdx.y * 64, e0 = blockIdx.x * 64;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < hidden; k0 += 16) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            int li = tid + r * 256;      // 0..1023 over a 64x16 tile
            int m = li >> 4, kk = li & 15;
            int gt = t0 + m, ge = e0 + m, gk = k0 + kk;
            sx[kk][m] = (gt < tokens && gk < hidden) ? load_logit(x, (long)gt * hidden + gk, xBf16) : 0.0f;
            sg[kk][m] = (ge < experts && gk < hidden) ? load_logit(gate, (long)ge * hidden + gk, gateBf16) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = sx[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = sg[kk][tx + 16 * j];
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
            int t = t0 + ty + 16 * i, e = e0 + tx + 16 * j;
            if (t < tokens && e < experts) logits[(long)t * experts + e] = acc[i][j];
        }
}

// Per-sequence histogram of topkIdx: counts[(t / seqLength) * experts + e] += 1 (skips -1).
// counts [numSeq, experts] int32 zeroed by the caller; seqLength >= tokens gives the global
// tokens-per-expert histogram (then a shared-memory pre-count is used).
extern "C" __global__ void __launch_bounds__(256)
moe_seq_histogram(const int* __restrict__ topkIdx, int tokens, int topK, int experts,
                  int seqLength, int* __restrict__ counts) {
    extern __shared__ int sCount[];
    const bool single = seqLength >= tokens;
    if (single) {
        for (int e = threadIdx.x; e < experts; e += blockDim.x) sCount[e] = 0;
        __syncthreads();
    }
    const long n = (long)tokens * topK;
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        int e = topkIdx[i];
        if (e >= 0 && e < experts) {
            if (single) atomicAdd(&sCount[e], 1);
            else atomicAdd(&counts[(long)((i / topK) / seqLength) * experts + e], 1);
        }
    }
    if (single) {
        __syncthreads();
        for (int e = threadIdx.x; e < experts; e += blockDim.x)
            if (sCount[e]) atomicAdd(&counts[e], sCount[e]);
    }
}

// rowSum[t] = sum_e scores[t, e] (butterfly order, fixed).
extern "C" __global__ void __launch_bounds__(128)
moe_row_sum(const float* __restrict__ scores, int tokens, int experts, float* __restrict__ rowSum) {
    const int t = blockIdx.x * MOE_ROUTER_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (t >= tokens) return;
    float s = 0.0f;
    for (int e = lane; e < experts; e += 32) s = __fadd_rn(s, scores[(long)t * experts + e]);
    s = warp_sum(s);
    if (lane == 0) rowSum[t] = s;
}

// colSum[q, e] = sum over tokens t of sequence q (in token order) of scores[t,e] / rowSum[t]
// (rowSum nullable = no normalisation). Deterministic: one thread per (q, e), serial over t.
extern "C" __global__ void __launch_bounds__(128)
moe_score_colsum(const float* __restrict__ scores, const float* __restrict__ rowSum,
                 int tokens, int experts, int seqLength, float* __restrict__ colSum) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    const int q = blockIdx.y;
    if (e >= experts) return;
    const int tEnd = min(tokens, (q + 1) * seqLength);
    float s = 0.0f;
    for (int t = q * seqLength; t < tEnd; ++t) {
        float v = scores[(long)t * experts + e];
        if (rowSum) v = __fdiv_rn(v, __fadd_rn(rowSum[t], 1e-20f));
        s = __fadd_rn(s, v);
    }
    colSum[(long)q * experts + e] = s;
}

// Auxiliary balance-loss gradient w.r.t. scores, accumulated into dScores (+=).
// With c = coefScale * counts[t / seqLength, :] (a loss sum_e c_e * P_e, P_e built from the
// scores of the tokens in the sequence):
//   normalize == 0:  dScores[t, e] += c_e
//   normalize != 0:  s' = s / (sum_j s_j + 1e-20);  dScores[t, e] += (c_e - sum_j c_j s'_j) / (sum_j s_j + 1e-20)
// Switch loss: seqLength = tokens. DeepSeek-V3 sequence loss: normalize = 1.
extern "C" __global__ void __launch_bounds__(128)
moe_aux_grad(const float* __restrict__ scores, const int* __restrict__ counts, float coefScale,
             int tokens, int experts, int seqLength, int normalize, float* __restrict__ dScores) {
    const int t = blockIdx.x * MOE_ROUTER_WARPS + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (t >= tokens) return;
    const long row = (long)t * experts;
    const int* cnt = counts + (long)(t / seqLength) * experts;
    if (!normalize) {
        for (int e = lane; e < experts; e += 32)
            dScores[row + e] = __fadd_rn(dScores[row + e], __fmul_rn(coefScale, (float)cnt[e]));
        return;
    }
    float S = 0.0f, dot = 0.0f;
    for (int e = lane; e < experts; e += 32) {
        float s = scores[row + e];
        S = __fadd_rn(S, s);
        dot = fmaf(__fmul_rn(coefScale, (float)cnt[e]), s, dot);
    }
    S = __fadd_rn(warp_sum(S), 1e-20f);
    dot = __fdiv_rn(warp_sum(dot), S);
    for (int e = lane; e < experts; e += 32) {
        float c = __fmul_rn(coefScale, (float)cnt[e]);
        dScores[row + e] = __fadd_rn(dScores[row + e], __fdiv_rn(__fsub_rn(c, dot), S));
    }
}

// Aux-loss-free balancing: bias[e] += coeff * sign(mean(load) - load[e]); then, if centre != 0,
// bias -= mean(bias). sign() is evaluated exactly in integers (sum(load) - experts * load[e]);
// the mean of the bias is a serial fp32 sum in expert order (the CPU order). One thread.
extern "C" __global__ void moe_expert_bias_update(const int* __restrict__ load, int experts,
                                                  float coeff, int centre, float* __restrict__ bias) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    long long total = 0;
    for (int e = 0; e < experts; ++e) total += load[e];
    float sum = 0.0f;
    for (int e = 0; e < experts; ++e) {
        long long d = total - (long long)experts * load[e];
        float sg = d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
        float b = __fadd_rn(bias[e], __fmul_rn(coeff, sg));
        bias[e] = b;
        sum = __fadd_rn(sum, b);
    }
    if (centre) {
        float mean = __fdiv_rn(sum, (float)experts);
        for (int e = 0; e < experts; ++e) bias[e] = __fsub_rn(bias[e], mean);
    }
}
