// moe4j grouped GEMM for the experts: bf16 operands, fp32 accumulation, bf16 or fp32 output.
//
// Groups are contiguous row ranges of the token-side matrices: group g owns rows
// [offsets[g], offsets[g+1]) (int32 offsets [groups+1], non-decreasing; empty groups allowed)
// and uses expert weights number g (groups = local experts). Every operand has an explicit
// leading dimension (elements), so views into a larger buffer (e.g. [dG | dU]) work.
//
// Kernels (extern "C", stable names), "_mma" = portable path (mma.sync, sm_80+),
// "_wgmma" = Hopper path (sm_90a: wgmma.mma_async + TMA bulk tensor copies + mbarrier pipeline;
// every GEMM below has both, operands described by tensor maps: grouped_gemm_wgmma.cuh):
//   moe_gg_fwd_mma / moe_gg_fwd_wgmma        C[r, n] = sum_k A[r, k] * B_g[n, k]
//       A [rows, K] (lda), B [groups][N][K] (ldb, strideB per group), C [rows, N] (ldc)
//       used for the down projection Y = Hact . W2_g^T and generally X . W^T.
//   moe_gg_swiglu_mma / moe_gg_swiglu_wgmma  fused gate+up with SwiGLU epilogue:
//       G = A . W1_g^T, U = A . W3_g^T (one pass over A), H = silu(G) * U -> C [rows, N];
//       optional Gsave/Usave [rows, N] (ldgu, same dtype as C) for the backward.
//   moe_gg_dx_mma / moe_gg_dx_wgmma          C[r, n] = sum_k A1[r, k] B1_g[k, n] (+ A2 . B2_g)
//       B stored [groups][K][N] (the forward weights read transposed): dHact = dY . W2_g and
//       dX = dG . W1_g + dU . W3_g in one kernel (second pair nullable).
//   moe_gg_wgrad_mma / moe_gg_wgrad_wgmma    C_g[m, n] = sum_{r in group g} A[r, m] * B[r, n]
//       A [rows, M], B [rows, N], C [groups][M][N] (strideC, ldc): dW2_g = dY^T Hact,
//       dW1_g = dG^T X, dW3_g = dU^T X. Empty groups write zeros.
//   moe_swiglu_bwd                           dG, dU from dH, G, U (elementwise, fp32 math).
//   fwd/dx/wgrad (both paths) take `accumulate` (C += result; C must be fp32), for ExpertKernels.GemmSpec.
// ExpertKernels support (org.moe4j.experts.ExpertKernels, matching CpuExpertKernels):
//   moe_gg_matmul_f32 / moe_gg_wgrad_f32     exact-fp32 SIMT grouped GEMMs (F32 operands without
//                                            the bf16 option; BF16 operands also accepted)
//   moe_cast_bf16, moe_transpose_batched     operand preparation (bf16 rounding, [G,R,C]->[G,C,R])
//   moe_swiglu_fwd_f32 / moe_swiglu_bwd_f32  element-wise SwiGLU with the CPU's operation order
//
// Determinism: every output element is reduced by exactly one CTA in a fixed k order
// (no split-K, no atomics); results are bitwise reproducible run to run on a given GPU.
//
// Limits (checked by the host launcher): K, N (and M of wgrad) multiples of 8; all base
// pointers 16-byte aligned and leading dimensions multiples of 8 elements; rows < 2^31.
// Launch shapes:
//   _mma kernels: block 256; dynamic smem = moe_gg_smem_bytes(kind) (above 48 KB: the launcher
//     raises CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES once per function).
//     fwd/dx:   grid (ceil(rows/128) + groups, ceil(N/128));  swiglu: (ceil(rows/128) + groups, ceil(N/64))
//     wgrad:    grid (ceil(N/128), ceil(M/128), groups)
//   _wgmma kernels: see grouped_gemm_wgmma.cuh (block 384, tensor maps built on the host).
//   moe_swiglu_bwd: block 256, any grid (grid-stride).
//
// Smem per kind (bytes): fwd 61440, swiglu 61440, dx 56832, wgrad 52224.

#include "common.cuh"
#include "grouped_gemm_mma.cuh"
#include "grouped_gemm_wgmma.cuh"

using namespace moe_mma;

namespace {

// Epilogue for the row-grouped kernels: write acc of operand 0 as C (NB = 1).
template <int NT>
__device__ __forceinline__ void store_plain(const float (&acc)[4][NT][4], void* C, long ldc, int cBf16,
                                            int rowStart, int rows, int n0, int N, int accumulate) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm0 = (warp >> 2) * 64, wn0 = (warp & 3) * (NT * 8);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = wm0 + i * 16 + (lane >> 2) + h * 8;
            if (r >= rows) continue;
#pragma unroll
            for (int j = 0; j < NT; ++j) {
                const int n = n0 + wn0 + j * 8 + (lane & 3) * 2;
                if (n < N) {
                    const long o = (long)(rowStart + r) * ldc + n;
                    if (accumulate) add2(C, o, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
                    else store2(C, o, cBf16, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
                }
            }
        }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(256, 1)
moe_gg_fwd_mma(const __nv_bfloat16* __restrict__ A, long lda,
               const __nv_bfloat16* __restrict__ B, long strideB, long ldb,
               const int* __restrict__ offsets, int groups, int N, int K,
               void* __restrict__ C, long ldc, int cBf16, int accumulate) {
    MOE4J_DYNAMIC_SHARED(128, unsigned char, smemRaw);
    int g, rowStart, rows;
    if (!find_m_tile(offsets, groups, g, rowStart, rows)) return;
    const int n0 = blockIdx.y * 128;
    Operands ops[1];
    ops[0].a = A + (long)rowStart * lda;
    ops[0].lda = lda;
    ops[0].b[0] = B + g * strideB + (long)n0 * ldb;
    ops[0].b[1] = nullptr;
    ops[0].ldb = ldb;
    float acc[1][4][4][4] = {};
    mainloop<true, true, 1>(acc, ops[0], ops[0], 1, rows, N - n0, K, reinterpret_cast<__nv_bfloat16*>(smemRaw));
    store_plain<4>(acc[0], C, ldc, cBf16, rowStart, rows, n0, N, accumulate);
}

extern "C" __global__ void __launch_bounds__(256, 1)
moe_gg_swiglu_mma(const __nv_bfloat16* __restrict__ A, long lda,
                  const __nv_bfloat16* __restrict__ W1, const __nv_bfloat16* __restrict__ W3,
                  long strideW, long ldw, const int* __restrict__ offsets, int groups, int N, int K,
                  void* __restrict__ C, long ldc, int cBf16,
                  void* __restrict__ Gsave, void* __restrict__ Usave, long ldgu) {
    MOE4J_DYNAMIC_SHARED(128, unsigned char, smemRaw);
    int g, rowStart, rows;
    if (!find_m_tile(offsets, groups, g, rowStart, rows)) return;
    const int n0 = blockIdx.y * 64;
    Operands ops[1];
    ops[0].a = A + (long)rowStart * lda;
    ops[0].lda = lda;
    ops[0].b[0] = W1 + g * strideW + (long)n0 * ldw;
    ops[0].b[1] = W3 + g * strideW + (long)n0 * ldw;
    ops[0].ldb = ldw;
    float acc[2][4][2][4] = {};
    mainloop<true, true, 2>(acc, ops[0], ops[0], 1, rows, N - n0, K, reinterpret_cast<__nv_bfloat16*>(smemRaw));

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm0 = (warp >> 2) * 64, wn0 = (warp & 3) * 16;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = wm0 + i * 16 + (lane >> 2) + h * 8;
            if (r >= rows) continue;
            const long row = rowStart + r;
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const int n = n0 + wn0 + j * 8 + (lane & 3) * 2;
                if (n >= N) continue;
                store_swiglu2(C, row * ldc + n, cBf16, Gsave, Usave, row * ldgu + n, acc[0][i][j][2 * h],
                              acc[0][i][j][2 * h + 1], acc[1][i][j][2 * h], acc[1][i][j][2 * h + 1]);
            }
        }
}

extern "C" __global__ void __launch_bounds__(256, 1)
moe_gg_dx_mma(const __nv_bfloat16* __restrict__ A1, long lda1, const __nv_bfloat16* __restrict__ B1,
              const __nv_bfloat16* __restrict__ A2, long lda2, const __nv_bfloat16* __restrict__ B2,
              long strideB, long ldb, const int* __restrict__ offsets, int groups, int N, int K,
              void* __restrict__ C, long ldc, int cBf16, int accumulate) {
    MOE4J_DYNAMIC_SHARED(128, unsigned char, smemRaw);
    int g, rowStart, rows;
    if (!find_m_tile(offsets, groups, g, rowStart, rows)) return;
    const int n0 = blockIdx.y * 128;
    Operands ops[2];
    ops[0].a = A1 + (long)rowStart * lda1;
    ops[0].lda = lda1;
    ops[0].b[0] = B1 + g * strideB + n0;
    ops[0].b[1] = nullptr;
    ops[0].ldb = ldb;
    const int pairs = A2 != nullptr ? 2 : 1;
    ops[1].a = A2 != nullptr ? A2 + (long)rowStart * lda2 : nullptr;
    ops[1].lda = lda2;
    ops[1].b[0] = B2 != nullptr ? B2 + g * strideB + n0 : nullptr;
    ops[1].b[1] = nullptr;
    ops[1].ldb = ldb;
    float acc[1][4][4][4] = {};
    mainloop<true, false, 1>(acc, ops[0], ops[1], pairs, rows, N - n0, K, reinterpret_cast<__nv_bfloat16*>(smemRaw));
    store_plain<4>(acc[0], C, ldc, cBf16, rowStart, rows, n0, N, accumulate);
}

extern "C" __global__ void __launch_bounds__(256, 1)
moe_gg_wgrad_mma(const __nv_bfloat16* __restrict__ A, long lda, const __nv_bfloat16* __restrict__ B, long ldb,
                 const int* __restrict__ offsets, int groups, int M, int N,
                 void* __restrict__ C, long strideC, long ldc, int cBf16, int accumulate) {
    MOE4J_DYNAMIC_SHARED(128, unsigned char, smemRaw);
    const int g = blockIdx.z;
    if (g >= groups) return;
    const int n0 = blockIdx.x * 128, m0 = blockIdx.y * 128;
    const int r0 = offsets[g], kLen = offsets[g + 1] - r0;
    Operands ops[1];
    ops[0].a = A + (long)r0 * lda + m0;
    ops[0].lda = lda;
    ops[0].b[0] = B + (long)r0 * ldb + n0;
    ops[0].b[1] = nullptr;
    ops[0].ldb = ldb;
    float acc[1][4][4][4] = {};
    mainloop<false, false, 1>(acc, ops[0], ops[0], 1, M - m0, N - n0, kLen, reinterpret_cast<__nv_bfloat16*>(smemRaw));

    // C_g rows are m (tile origin m0), columns n
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm0 = (warp >> 2) * 64, wn0 = (warp & 3) * 32;
    char* Cg = reinterpret_cast<char*>(C) + (long)g * strideC * (cBf16 ? 2 : 4);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int m = m0 + wm0 + i * 16 + (lane >> 2) + h * 8;
            if (m >= M) continue;
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int n = n0 + wn0 + j * 8 + (lane & 3) * 2;
                if (n < N) {
                    if (accumulate) add2(Cg, (long)m * ldc + n, acc[0][i][j][2 * h], acc[0][i][j][2 * h + 1]);
                    else store2(Cg, (long)m * ldc + n, cBf16, acc[0][i][j][2 * h], acc[0][i][j][2 * h + 1]);
                }
            }
        }
}

// SwiGLU backward, elementwise over rows x N (row-major with leading dimensions):
//   s = sigmoid(G), dU = dH * G * s, dG = dH * U * s * (1 + G * (1 - s)); outputs bf16.
//   dH dtype per dhBf16, G/U dtype per guBf16.
extern "C" __global__ void __launch_bounds__(256)
moe_swiglu_bwd(const void* __restrict__ dH, long ldh, int dhBf16,
               const void* __restrict__ G, const void* __restrict__ U, long ldgu, int guBf16,
               long rows, int N, __nv_bfloat16* __restrict__ dG, __nv_bfloat16* __restrict__ dU, long ldd) {
    const long total = rows * N;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const long r = i / N;
        const int n = (int)(i - r * N);
        const float dh = dhBf16 ? __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(dH)[r * ldh + n])
                                : reinterpret_cast<const float*>(dH)[r * ldh + n];
        float g, u;
        if (guBf16) {
            g = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(G)[r * ldgu + n]);
            u = __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(U)[r * ldgu + n]);
        } else {
            g = reinterpret_cast<const float*>(G)[r * ldgu + n];
            u = reinterpret_cast<const float*>(U)[r * ldgu + n];
        }
        const float s = 1.0f / (1.0f + expf(-g));
        dU[r * ldd + n] = __float2bfloat16_rn(dh * g * s);
        dG[r * ldd + n] = __float2bfloat16_rn(dh * u * s * (1.0f + g * (1.0f - s)));
    }
}

// Dynamic shared memory needed by a kernel kind: 0 fwd, 1 swiglu, 2 dx, 3 wgrad,
// 4 fwd_wgmma, 5 swiglu_wgmma. A host-callable mirror lives in the Java launcher; this
// device function exists so that the numbers are checked against the templates by
// static_asserts below.
static_assert(smem_bytes<true, true, 1>() == 61440, "fwd smem");
static_assert(smem_bytes<true, true, 2>() == 61440, "swiglu smem");
static_assert(smem_bytes<true, false, 1>() == 56832, "dx smem");
static_assert(smem_bytes<false, false, 1>() == 52224, "wgrad smem");

// ---------------------------------------------------------------------------------------
// Hopper path (sm_90a). Contract, layouts and launch shapes: grouped_gemm_wgmma.cuh.
// ---------------------------------------------------------------------------------------
namespace {

enum WgMode { WG_FWD = 0, WG_DX = 1, WG_WGRAD = 2 };

// Everything the three Hopper kernels pass to the shared body. FWD/DX: N, K; WGRAD: M (= mDim), N,
// and K is the group's row count. tmA2/tmB2 (DX only) are the optional second operand pair.
struct WgParams {
    uint64_t* full;   // [STAGES] mbarriers in the kernel's shared memory, declared by the kernel: g++, which
    uint64_t* empty;  // compiles this file for the CPU device, cannot place a template's statics in its shared section
    const CUtensorMap* tmA;
    const CUtensorMap* tmB0;
    const CUtensorMap* tmB1;
    const CUtensorMap* tmA2;
    const CUtensorMap* tmB2;
    const int* offsets;
    int groups, mDim, N, K;
    void* C;
    long ldc, strideC;
    int cBf16, accumulate;
    void* Gsave;
    void* Usave;
    long ldgu;
};

template <int NB, int MODE>
__device__ __forceinline__ void wgmma_body(const WgParams& p) {
#if MOE_WGMMA_ENABLED
    namespace W = moe_wg;
    constexpr bool A_MN = MODE == WG_WGRAD;
    constexpr bool B_MN = MODE != WG_FWD;
    constexpr int BN = NB == 2 ? 64 : 128;
    MOE4J_DYNAMIC_SHARED(1024, unsigned char, smemDyn);
    uint64_t* const full = p.full;
    uint64_t* const empty = p.empty;
    unsigned char* smem = smemDyn + ((1024u - (W::smem_u32(smemDyn) & 1023u)) & 1023u);

    // Tile origin. Row-grouped (FWD, DX): rows [rowStart, rowStart + rows) of group g, columns n0...
    // K-grouped (WGRAD): output tile (m0, n0) of group g, reduced over the group's rows [r0, r0 + kLen).
    int g, rowStart = 0, rows = 0, m0 = 0, n0, kLen;
    if constexpr (MODE == WG_WGRAD) {
        g = blockIdx.z;
        if (g >= p.groups) return;
        n0 = blockIdx.x * 128;
        m0 = blockIdx.y * 128;
        rowStart = p.offsets[g];
        kLen = p.offsets[g + 1] - rowStart;
    } else {
        if (!find_m_tile(p.offsets, p.groups, g, rowStart, rows)) return;  // uniform across the CTA
        n0 = blockIdx.y * BN;
        kLen = p.K;
    }
    const int kTiles = (kLen + W::BK - 1) / W::BK;
    const int pairs = MODE == WG_DX && p.tmA2 != nullptr ? 2 : 1;
    const int total = kTiles * pairs;
    const int wg = threadIdx.x / 128;

    if (threadIdx.x == 0) {
#pragma unroll
        for (int s = 0; s < W::STAGES; ++s) {
            W::mbar_init(&full[s], 1);
            W::mbar_init(&empty[s], 8);  // one arrival per consumer warp (2 warpgroups x 4 warps)
        }
        W::mbar_init_fence();
    }
    __syncthreads();

    if (wg == 0) {
        W::reg_dealloc<40>();
        if (threadIdx.x == 0) {
            for (int t = 0; t < total; ++t) {
                const int s = t % W::STAGES;
                W::mbar_wait(&empty[s], ((t / W::STAGES) & 1) ^ 1);
                W::mbar_expect_tx(&full[s], W::STAGE_BYTES);
                unsigned char* sA = smem + s * W::STAGE_BYTES;
                unsigned char* sB = sA + W::A_BYTES;
                if constexpr (MODE == WG_FWD) {
                    const int k0 = t * W::BK;
                    W::tma_load_2d(sA, p.tmA, &full[s], k0, rowStart);
                    W::tma_load_2d(sB, p.tmB0, &full[s], k0, g * p.N + n0);
                    if (NB == 2) W::tma_load_2d(sB + W::B_BYTES / 2, p.tmB1, &full[s], k0, g * p.N + n0);
                } else if constexpr (MODE == WG_DX) {
                    const bool second = t >= kTiles;
                    const int k0 = (second ? t - kTiles : t) * W::BK;
                    const CUtensorMap* mA = second ? p.tmA2 : p.tmA;
                    const CUtensorMap* mB = second ? p.tmB2 : p.tmB0;
                    W::tma_load_2d(sA, mA, &full[s], k0, rowStart);
                    W::tma_load_3d(sB, mB, &full[s], n0, k0, g);
                    W::tma_load_3d(sB + W::BOX_BYTES, mB, &full[s], n0 + 64, k0, g);
                } else {
                    const int r = rowStart + t * W::BK;
                    W::tma_load_2d(sA, p.tmA, &full[s], m0, r);
                    W::tma_load_2d(sA + W::BOX_BYTES, p.tmA, &full[s], m0 + 64, r);
                    W::tma_load_2d(sB, p.tmB0, &full[s], n0, r);
                    W::tma_load_2d(sB + W::BOX_BYTES, p.tmB0, &full[s], n0 + 64, r);
                }
            }
        }
    } else {
        W::reg_alloc<232>();
        const int cw = wg - 1;                // consumer: CTA rows [cw*64, cw*64+64)
        const int tid = threadIdx.x & 127;
        float acc0[BN / 2];
        float acc1[NB == 2 ? BN / 2 : 1];
#pragma unroll
        for (int i = 0; i < BN / 2; ++i) acc0[i] = 0.0f;
#pragma unroll
        for (int i = 0; i < (NB == 2 ? BN / 2 : 1); ++i) acc1[i] = 0.0f;
        W::fence_operands(acc0);
        if constexpr (NB == 2) W::fence_operands(acc1);

        for (int t = 0; t < total; ++t) {
            const int s = t % W::STAGES;
            W::mbar_wait(&full[s], (t / W::STAGES) & 1);
            unsigned char* sA = smem + s * W::STAGE_BYTES + cw * W::BOX_BYTES;
            unsigned char* sB = smem + s * W::STAGE_BYTES + W::A_BYTES;
            const uint32_t stage = W::smem_u32(smem + s * W::STAGE_BYTES);
            if constexpr (MODE == WG_WGRAD) {
                const int valid = kLen - t * W::BK;  // rows of this k tile inside the group
                if (valid < W::BK) {
                    // zero the k rows past the group in this consumer's A box and in B box cw; the
                    // 128-byte swizzle only permutes 16-byte chunks inside a row, so whole rows are
                    // zeroed where they are
                    unsigned char* sBc = sB + cw * W::BOX_BYTES;
                    for (int i = tid; i < (W::BK - valid) * 8; i += 128) {
                        const int off = (valid + (i >> 3)) * 128 + (i & 7) * 16;
                        *reinterpret_cast<uint4*>(sA + off) = make_uint4(0u, 0u, 0u, 0u);
                        *reinterpret_cast<uint4*>(sBc + off) = make_uint4(0u, 0u, 0u, 0u);
                    }
                    W::fence_proxy_async_smem();
                    W::consumers_sync();  // both B boxes are read by both consumers
                }
            }
            W::wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < W::BK / 16; ++kk) {
                const uint64_t dA = W::desc_a<A_MN>(stage, cw, kk);
                if constexpr (NB == 1) {
                    W::wgmma_m64n128k16<A_MN ? 1 : 0, B_MN ? 1 : 0>(acc0, dA, W::desc_b<B_MN>(stage, 0, kk), 1);
                } else {
                    W::wgmma_m64n64k16<0, 0>(acc0, dA, W::desc_b<B_MN>(stage, 0, kk), 1);
                    W::wgmma_m64n64k16<0, 0>(acc1, dA, W::desc_b<B_MN>(stage, 1, kk), 1);
                }
            }
            W::wgmma_commit();
            W::wgmma_wait<1>();  // the group of tile t-1 has finished reading its stage
            // every warp has waited for its own part of the group before its lane 0 releases the stage
            if (t > 0 && (tid & 31) == 0) W::mbar_arrive(&empty[(t - 1) % W::STAGES]);
        }
        W::wgmma_wait<0>();
        W::fence_operands(acc0);
        if constexpr (NB == 2) W::fence_operands(acc1);

        // accumulator fragment of m64nN: warp w4 holds rows 16*w4 + lane/4 (+8), and
        // acc[4j + 2h + c] is column 8j + 2*(lane%4) + c of row +8h
        const int w4 = tid >> 5, lane = tid & 31;
        char* Cg = reinterpret_cast<char*>(p.C);
        int rowLimit = rows;
        long rowBase = rowStart;
        if constexpr (MODE == WG_WGRAD) {
            Cg += (long)g * p.strideC * (p.cBf16 ? 2 : 4);
            rowLimit = p.mDim - m0;
            rowBase = m0;
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = cw * 64 + w4 * 16 + (lane >> 2) + 8 * h;
            if (r >= rowLimit) continue;
            const long row = rowBase + r;
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
                const int n = n0 + j * 8 + (lane & 3) * 2;
                if (n >= p.N) continue;
                const float a0 = acc0[4 * j + 2 * h], a1 = acc0[4 * j + 2 * h + 1];
                if constexpr (NB == 1) {
                    if (p.accumulate) add2(Cg, row * p.ldc + n, a0, a1);
                    else store2(Cg, row * p.ldc + n, p.cBf16, a0, a1);
                } else {
                    store_swiglu2(Cg, row * p.ldc + n, p.cBf16, p.Gsave, p.Usave, row * p.ldgu + n, a0, a1,
                                  acc1[4 * j + 2 * h], acc1[4 * j + 2 * h + 1]);
                }
            }
        }
    }
#else
    __trap();  // compute_90 PTX: the launcher selects the wgmma kernels only on sm_90a devices
#endif
}

}  // namespace

// The tensor maps are kernel parameters (const __grid_constant__: the bulk tensor copies read them
// from parameter space; the host encodes them with cuTensorMapEncodeTiled and passes them by value).

// C (+)= A . B_g^T on Hopper. tmA over A [rows, K] (box {64, 128}), tmB over B [groups*N, K]
// (box {64, 128}). accumulate: C += result (C fp32).
extern "C" __global__ void __launch_bounds__(384, 1)
moe_gg_fwd_wgmma(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB,
                 const int* __restrict__ offsets, int groups, int N, int K,
                 void* __restrict__ C, long ldc, int cBf16, int accumulate) {
    MOE4J_SHARED_ALIGNED(8, uint64_t, full, [moe_wg::STAGES]);
    MOE4J_SHARED_ALIGNED(8, uint64_t, empty, [moe_wg::STAGES]);
    const WgParams p{full, empty, &tmA, &tmB, &tmB, nullptr, nullptr, offsets, groups, 0, N, K, C, ldc, 0, cBf16,
                     accumulate, nullptr, nullptr, 0};
    wgmma_body<1, WG_FWD>(p);
}

// H = silu(A . W1_g^T) * (A . W3_g^T) on Hopper. tmW1/tmW3 over [groups*N, K] (box {64, 64}: the
// stage's expect_tx counts two 8 KB boxes).
extern "C" __global__ void __launch_bounds__(384, 1)
moe_gg_swiglu_wgmma(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmW1,
                    const __grid_constant__ CUtensorMap tmW3, const int* __restrict__ offsets, int groups,
                    int N, int K, void* __restrict__ C, long ldc, int cBf16,
                    void* __restrict__ Gsave, void* __restrict__ Usave, long ldgu) {
    MOE4J_SHARED_ALIGNED(8, uint64_t, full, [moe_wg::STAGES]);
    MOE4J_SHARED_ALIGNED(8, uint64_t, empty, [moe_wg::STAGES]);
    const WgParams p{full, empty, &tmA, &tmW1, &tmW3, nullptr, nullptr, offsets, groups, 0, N, K, C, ldc, 0, cBf16, 0,
                     Gsave, Usave, ldgu};
    wgmma_body<2, WG_FWD>(p);
}

// C (+)= A1 . B1_g (+ A2 . B2_g) on Hopper, B stored [groups][K][N]: dHact = dY . W2_g, or
// dX = dG . W1_g + dU . W3_g in one pass. tmA1/tmA2 over [rows, K] (box {64, 128}), tmB1/tmB2
// 3-D over {N, K, groups} (box {64, 64, 1}); pairs = 1 ignores tmA2/tmB2 (pass any valid maps).
extern "C" __global__ void __launch_bounds__(384, 1)
moe_gg_dx_wgmma(const __grid_constant__ CUtensorMap tmA1, const __grid_constant__ CUtensorMap tmB1,
                const __grid_constant__ CUtensorMap tmA2, const __grid_constant__ CUtensorMap tmB2, int pairs,
                const int* __restrict__ offsets, int groups, int N, int K,
                void* __restrict__ C, long ldc, int cBf16, int accumulate) {
    MOE4J_SHARED_ALIGNED(8, uint64_t, full, [moe_wg::STAGES]);
    MOE4J_SHARED_ALIGNED(8, uint64_t, empty, [moe_wg::STAGES]);
    const WgParams p{full, empty, &tmA1, &tmB1, &tmB1, pairs == 2 ? &tmA2 : nullptr, pairs == 2 ? &tmB2 : nullptr,
                     offsets, groups, 0, N, K, C, ldc, 0, cBf16, accumulate, nullptr, nullptr, 0};
    wgmma_body<1, WG_DX>(p);
}

// C_g (+)= A_g^T . B_g on Hopper (weight gradients: dW2_g = dY_g^T Hact_g, dW1_g = dG_g^T X_g, ...),
// A [rows, M] (tmA dims {M, rows}, box {64, 64}), B [rows, N] (tmB dims {N, rows}, box {64, 64}),
// C [groups][M][N] (strideC, ldc elements). Reduced over the group's rows in ascending k tiles;
// empty groups write zeros (or add nothing but +0).
extern "C" __global__ void __launch_bounds__(384, 1)
moe_gg_wgrad_wgmma(const __grid_constant__ CUtensorMap tmA, const __grid_constant__ CUtensorMap tmB,
                   const int* __restrict__ offsets, int groups, int M, int N,
                   void* __restrict__ C, long strideC, long ldc, int cBf16, int accumulate) {
    MOE4J_SHARED_ALIGNED(8, uint64_t, full, [moe_wg::STAGES]);
    MOE4J_SHARED_ALIGNED(8, uint64_t, empty, [moe_wg::STAGES]);
    const WgParams p{full, empty, &tmA, &tmB, &tmB, nullptr, nullptr, offsets, groups, M, N, 0, C, ldc, strideC, cBf16,
                     accumulate, nullptr, nullptr, 0};
    wgmma_body<1, WG_WGRAD>(p);
}

// ---------------------------------------------------------------------------------------
// ExpertKernels support: exact-fp32 grouped GEMMs (SIMT FMA, for F32 operands without the bf16
// option), bf16 cast, batched transpose, element-wise SwiGLU. Operand dtype codes: 0 F32, 1 BF16.
// ---------------------------------------------------------------------------------------
namespace {

__device__ __forceinline__ float ldf(const void* p, long i, int bf16) {
    return bf16 ? __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]) : reinterpret_cast<const float*>(p)[i];
}

constexpr int F_BM = 64;

__device__ __forceinline__ bool find_m_tile64(const int* offsets, int groups, int& g, int& rowStart, int& rows) {
    int tile = blockIdx.y;
    for (g = 0; g < groups; ++g) {
        const int m = offsets[g + 1] - offsets[g];
        const int nt = (m + F_BM - 1) / F_BM;
        if (tile < nt) {
            rowStart = offsets[g] + tile * F_BM;
            rows = min(F_BM, offsets[g + 1] - rowStart);
            return true;
        }
        tile -= nt;
    }
    return false;
}

// acc[i][j] += sa[kk][ty + 16i] * sb[kk][tx + 16j] for kk = 0..15 in ascending order (one fmaf each):
// the inner step of the 64x64-tile fp32 GEMMs below, 4x4 outputs per thread of a (16,16) block.
__device__ __forceinline__ void fma_tile_4x4(const float (*sa)[F_BM + 1], const float (*sb)[64 + 1],
                                             int tx, int ty, float (&acc)[4][4]) {
#pragma unroll
    for (int kk = 0; kk < 16; ++kk) {
        float x[4], y[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) x[i] = sa[kk][ty + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) y[j] = sb[kk][tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(x[i], y[j], acc[i][j]);
    }
}

// Writes (or, with accumulate, adds with one rounding) the thread's 4x4 outputs: row m = m0 + ty + 16i
// (kept while m < mEnd), column n = n0 + tx + 16j (kept while n < N), at base[m * N + n].
__device__ __forceinline__ void store_tile_4x4(float* __restrict__ base, int m0, int mEnd, int n0, int N,
                                               int tx, int ty, const float (&acc)[4][4], int accumulate) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m < mEnd && n < N) {
                float* p = base + (long)m * N + n;
                *p = accumulate ? __fadd_rn(*p, acc[i][j]) : acc[i][j];
            }
        }
}

}  // namespace

// groupedMatmul in fp32: out[r, :] (+)= a[r, :] . b[g] for the rows r of group g.
//   a [rows, K] (aBf16), b [groups, K, N] (bBf16), out [rows, N] fp32. k ascending, fp32 FMA.
// Block (16,16), grid (ceil(N/64), ceil(rows/64) + groups); 64x64 tile, 4x4 per thread.
extern "C" __global__ void __launch_bounds__(256)
moe_gg_matmul_f32(const void* __restrict__ a, int aBf16, const void* __restrict__ b, int bBf16,
                  const int* __restrict__ offsets, int groups, int N, int K,
                  float* __restrict__ out, int accumulate) {
    MOE4J_SHARED(float, sa, [16][F_BM + 1]);
    MOE4J_SHARED(float, sb, [16][64 + 1]);
    int g, rowStart, rows;
    if (!find_m_tile64(offsets, groups, g, rowStart, rows)) return;
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    const int n0 = blockIdx.x * 64;
    const long bBase = (long)g * K * N;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += 16) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int li = tid + r * 256;
            const int m = li >> 4, kk = li & 15;  // a: k fastest (rows are k-contiguous)
            sa[kk][m] = (m < rows && k0 + kk < K) ? ldf(a, (long)(rowStart + m) * K + k0 + kk, aBf16) : 0.0f;
            const int n = li & 63, kb = li >> 6;  // b: n fastest (rows of b[g] are n-contiguous)
            sb[kb][n] = (n0 + n < N && k0 + kb < K) ? ldf(b, bBase + (long)(k0 + kb) * N + n0 + n, bBf16) : 0.0f;
        }
        __syncthreads();
        fma_tile_4x4(sa, sb, tx, ty, acc);
        __syncthreads();
    }
    store_tile_4x4(out + (long)rowStart * N, 0, rows, n0, N, tx, ty, acc, accumulate);
}

// groupedWeightGrad in fp32: out[g] (+)= a[rows of g]^T . b[rows of g], rows ascending.
//   a [rows, M], b [rows, N], out [groups, M, N] fp32. Block (16,16), grid (ceil(N/64), ceil(M/64), groups).
extern "C" __global__ void __launch_bounds__(256)
moe_gg_wgrad_f32(const void* __restrict__ a, int aBf16, const void* __restrict__ b, int bBf16,
                 const int* __restrict__ offsets, int M, int N, float* __restrict__ out, int accumulate) {
    MOE4J_SHARED(float, sa, [16][64 + 1]);
    MOE4J_SHARED(float, sb, [16][64 + 1]);
    const int g = blockIdx.z;
    const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 16 + tx;
    const int m0 = blockIdx.y * 64, n0 = blockIdx.x * 64;
    const int r0 = offsets[g], r1 = offsets[g + 1];
    float acc[4][4] = {};
    for (int k0 = r0; k0 < r1; k0 += 16) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int li = tid + r * 256;
            const int c = li & 63, kk = li >> 6;  // both operands: column fastest
            sa[kk][c] = (m0 + c < M && k0 + kk < r1) ? ldf(a, (long)(k0 + kk) * M + m0 + c, aBf16) : 0.0f;
            sb[kk][c] = (n0 + c < N && k0 + kk < r1) ? ldf(b, (long)(k0 + kk) * N + n0 + c, bBf16) : 0.0f;
        }
        __syncthreads();
        fma_tile_4x4(sa, sb, tx, ty, acc);
        __syncthreads();
    }
    store_tile_4x4(out + (long)g * M * N, m0, M, n0, N, tx, ty, acc, accumulate);
}

// dst[i] = bf16(src[i]) (round to nearest even); src F32.
extern "C" __global__ void __launch_bounds__(256)
moe_cast_bf16(const float* __restrict__ src, long n, __nv_bfloat16* __restrict__ dst) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

// Batched transpose with dtype conversion: dst[g][c][r] = src[g][r][c]; src [G, R, C], dst [G, C, R].
// Block (32, 8), grid (ceil(C/32), ceil(R/32), G); 32x32 tile through padded shared memory.
extern "C" __global__ void __launch_bounds__(256)
moe_transpose_batched(const void* __restrict__ src, int srcBf16, int R, int C,
                      void* __restrict__ dst, int dstBf16) {
    MOE4J_SHARED(float, tile, [32][33]);
    const long base = (long)blockIdx.z * R * C;
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += 8) {
        const int r = r0 + i, c = c0 + threadIdx.x;
        if (r < R && c < C) tile[i][threadIdx.x] = ldf(src, base + (long)r * C + c, srcBf16);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += 8) {
        const int c = c0 + i, r = r0 + threadIdx.x;
        if (r < R && c < C) {
            const long o = base + (long)c * R + r;
            const float v = tile[threadIdx.x][i];
            if (dstBf16) reinterpret_cast<__nv_bfloat16*>(dst)[o] = __float2bfloat16_rn(v);
            else reinterpret_cast<float*>(dst)[o] = v;
        }
    }
}

// swigluForward: out = (h * s) * u with s = 1 / (1 + exp(-h)); F32, n elements.
extern "C" __global__ void __launch_bounds__(256)
moe_swiglu_fwd_f32(const float* __restrict__ gate, const float* __restrict__ up, long n, float* __restrict__ out) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float h = gate[i];
        const float s = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-h)));
        out[i] = __fmul_rn(__fmul_rn(h, s), up[i]);
    }
}

// swigluBackward: dGate = (dOut * up) * (s * (1 + h * (1 - s))), dUp = dOut * (h * s); F32.
extern "C" __global__ void __launch_bounds__(256)
moe_swiglu_bwd_f32(const float* __restrict__ gate, const float* __restrict__ up, const float* __restrict__ dOut,
                   long n, float* __restrict__ dGate, float* __restrict__ dUp) {
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        const float h = gate[i], v = up[i], dy = dOut[i];
        const float s = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-h)));
        const float silu = __fmul_rn(h, s);
        const float dsilu = __fmul_rn(s, __fadd_rn(1.0f, __fmul_rn(h, __fsub_rn(1.0f, s))));
        dGate[i] = __fmul_rn(__fmul_rn(dy, v), dsilu);
        dUp[i] = __fmul_rn(dy, silu);
    }
}

// ---------------------------------------------------------------------------------------------
// moe_gg_clamp_offsets (block 1, grid 1): clean[g] = min(rows, max(clean[g-1], raw[g])) with
// clean[-1] = 0, for g in [0, groups]: valid offsets (non-decreasing, within [0, rows]) are copied
// unchanged; invalid ones become the nearest valid layout, so every kernel above stays inside its
// operands without a host-side check (ExpertKernels.offsetsCheckedOnDevice).
extern "C" __global__ void __launch_bounds__(1)
moe_gg_clamp_offsets(const int* __restrict__ raw, int groups, long rows, int* __restrict__ clean) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    long prev = 0;
    for (int g = 0; g <= groups; ++g) {
        long v = raw[g];
        v = v < prev ? prev : v;
        v = v > rows ? rows : v;
        clean[g] = (int)v;
        prev = v;
    }
}
