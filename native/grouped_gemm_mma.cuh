// moe4j grouped GEMM, portable tensor-core path: mma.sync.m16n8k16 bf16 -> fp32 (sm_80+).
// Included by grouped_gemm.cu only. See grouped_gemm.cu for the operand contract.
//
// CTA: 256 threads = 8 warps laid out 2 (M) x 4 (N); CTA tile BM=128 x BN (per B operand),
// BK=32, 3-stage cp.async pipeline (16-byte copies, zero-fill outside the matrix / group).
// Warp tile 64 x (BN/4): 4 m16 tiles x NT n8 tiles per B operand.
//   NB = 1: BN = 128, NT = 4.   NB = 2 (gate+up fused): BN = 64 per operand, NT = 2.
// Shared-memory rows are padded by 16 bytes: ldmatrix of 8 rows x 16 bytes is conflict free.
// Operand storage: K-major = [rows][k] (k contiguous), MN-major = [k][rows] (rows contiguous);
// MN-major operands are read with ldmatrix.trans.
#pragma once

#include <cuda_bf16.h>
#include <stdint.h>

namespace moe_mma {

constexpr int BM = 128;
constexpr int BK = 32;
constexpr int STAGES = 3;
constexpr int THREADS = 256;

// smem tile geometry: (rows x cols) with padded leading dimension, in bf16 elements
template <bool KMAJOR, int MN>
struct Tile {
    static constexpr int ROWS = KMAJOR ? MN : BK;
    static constexpr int COLS = KMAJOR ? BK : MN;
    static constexpr int LD = COLS + 8;
    static constexpr int ELEMS = ROWS * LD;
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// PTX wrappers. Each has a CPU-device branch (native/cpudevice, MOE4J_CPU_DEVICE) that runs the
// same instruction's semantics on the host; the PTX ISA section is named next to each.

// cp.async (PTX ISA, data movement: "cp.async"): 16-byte global->shared copy; src-size n < 16 zero-fills.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
    const int n = valid ? 16 : 0;  // n == 0: no global read, 16 zero bytes written
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_cp_async16(dst, src, n);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
#endif
}
// cp.async.commit_group / cp.async.wait_group (PTX ISA, data movement: "cp.async.commit_group", "cp.async.wait_group").
__device__ __forceinline__ void cp_async_commit() {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 (PTX ISA, warp-level matrix instructions: "ldmatrix").
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
#if defined(MOE4J_CPU_DEVICE)
    uint32_t r[4];
    moe4j_emu::emu_ldmatrix(4, false, addr, r);
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
#endif
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
#if defined(MOE4J_CPU_DEVICE)
    uint32_t r[4];
    moe4j_emu::emu_ldmatrix(4, true, addr, r);
    r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
#endif
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA, warp-level matrix instructions: "mma", "Matrix Fragments for mma.m16n8k16 with floating point type").
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_mma_m16n8k16_bf16(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// Copy a ROWS x COLS bf16 tile whose origin is g (row-major, leading dimension ld elements)
// into smem (leading dimension LD). Rows >= rowLimit and column chunks >= colLimit are zero.
// colLimit is a multiple of 8 (checked by the host), so a 16-byte chunk is all in or all out.
template <int ROWS, int COLS, int LD>
__device__ __forceinline__ void load_tile(__nv_bfloat16* s, const __nv_bfloat16* g, long ld,
                                          int rowLimit, int colLimit) {
    constexpr int CPR = COLS / 8;  // chunks per row
    constexpr int CHUNKS = ROWS * CPR;
    static_assert(CHUNKS % THREADS == 0, "tile chunks must divide among the threads");
#pragma unroll
    for (int i = 0; i < CHUNKS / THREADS; ++i) {
        const int c = threadIdx.x + i * THREADS;
        const int r = c / CPR, col = (c % CPR) * 8;
        const bool valid = r < rowLimit && col < colLimit;
        const __nv_bfloat16* src = valid ? g + (long)r * ld + col : g;
        cp_async16(smem_u32(s + r * LD + col), src, valid);
    }
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

__device__ __forceinline__ void store2(void* base, long idx, bool bf16, float v0, float v1) {
    if (bf16) {
        *reinterpret_cast<__nv_bfloat162*>(reinterpret_cast<__nv_bfloat16*>(base) + idx) =
            __floats2bfloat162_rn(v0, v1);
    } else {
        *reinterpret_cast<float2*>(reinterpret_cast<float*>(base) + idx) = make_float2(v0, v1);
    }
}

// SwiGLU epilogue for two adjacent columns: C = silu(G) * U, optionally saving G and U (same dtype
// as C, leading dimension ldgu). With bf16 output the backward sees the rounded G and U, so H is
// computed from those same rounded values. Shared by moe_gg_swiglu_mma and moe_gg_swiglu_wgmma.
__device__ __forceinline__ void store_swiglu2(void* C, long cIdx, bool bf16, void* Gsave, void* Usave, long guIdx,
                                              float g0, float g1, float u0, float u1) {
    if (bf16) {
        const __nv_bfloat162 gb = __floats2bfloat162_rn(g0, g1);
        const __nv_bfloat162 ub = __floats2bfloat162_rn(u0, u1);
        store2(C, cIdx, true, silu(__low2float(gb)) * __low2float(ub), silu(__high2float(gb)) * __high2float(ub));
        if (Gsave) *reinterpret_cast<__nv_bfloat162*>(reinterpret_cast<__nv_bfloat16*>(Gsave) + guIdx) = gb;
        if (Usave) *reinterpret_cast<__nv_bfloat162*>(reinterpret_cast<__nv_bfloat16*>(Usave) + guIdx) = ub;
    } else {
        store2(C, cIdx, false, silu(g0) * u0, silu(g1) * u1);
        if (Gsave) store2(Gsave, guIdx, false, g0, g1);
        if (Usave) store2(Usave, guIdx, false, u0, u1);
    }
}

// C[idx..idx+1] += (v0, v1), fp32 only (ExpertKernels' accumulate option).
__device__ __forceinline__ void add2(void* base, long idx, float v0, float v1) {
    float2* p = reinterpret_cast<float2*>(reinterpret_cast<float*>(base) + idx);
    float2 c = *p;
    c.x = __fadd_rn(c.x, v0);
    c.y = __fadd_rn(c.y, v1);
    *p = c;
}

// Operand description for one k-slice source (a pair A, B[NB]).
struct Operands {
    const __nv_bfloat16* a;     // origin of this CTA's A tile at k = 0 (see mainloop)
    long lda;
    const __nv_bfloat16* b[2];  // origin of this CTA's B tiles at k = 0
    long ldb;
};

// Main loop: acc += sum over kTiles of A_tile(k) * B_tile(k)^T for `pairs` operand pairs run
// one after the other (pairs = 2 for dX = dG.W1 + dU.W3). Row/column limits are relative to
// the tile origin: aRows/bRows limit the M/N extent, kLimit the K extent.
template <bool A_KM, bool B_KM, int NB>
__device__ __forceinline__ void mainloop(float (&acc)[NB][4][(NB == 2 ? 2 : 4)][4], const Operands& o0,
                                         const Operands& o1, int pairs, int aRows, int bRows, int kLimit, __nv_bfloat16* smem) {
    constexpr int BN = NB == 2 ? 64 : 128;
    constexpr int NT = BN / 32;  // n8 tiles per warp per operand
    using TA = Tile<A_KM, BM>;
    using TB = Tile<B_KM, BN>;
    constexpr int STAGE = TA::ELEMS + NB * TB::ELEMS;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm0 = (warp >> 2) * 64;   // warp's first row in the CTA tile
    const int wn0 = (warp & 3) * (BN / 4);

    const int kTiles = (kLimit + BK - 1) / BK;
    const int total = kTiles * (pairs > 1 ? 2 : 1);

    auto load = [&](int t, int stage) {
        // select the operand pair with conditionals (no run-time array index: no local memory)
        const bool second = t >= kTiles;
        const int k0 = (second ? t - kTiles : t) * BK;
        const int kRem = kLimit - k0;
        const __nv_bfloat16* a = second ? o1.a : o0.a;
        const long lda = second ? o1.lda : o0.lda;
        const long ldb = second ? o1.ldb : o0.ldb;
        __nv_bfloat16* sA = smem + stage * STAGE;
        if (A_KM) load_tile<TA::ROWS, TA::COLS, TA::LD>(sA, a + k0, lda, aRows, kRem);
        else      load_tile<TA::ROWS, TA::COLS, TA::LD>(sA, a + (long)k0 * lda, lda, kRem, aRows);
#pragma unroll
        for (int b = 0; b < NB; ++b) {
            const __nv_bfloat16* gb = second ? o1.b[b] : o0.b[b];
            __nv_bfloat16* sB = sA + TA::ELEMS + b * TB::ELEMS;
            if (B_KM) load_tile<TB::ROWS, TB::COLS, TB::LD>(sB, gb + k0, ldb, bRows, kRem);
            else      load_tile<TB::ROWS, TB::COLS, TB::LD>(sB, gb + (long)k0 * ldb, ldb, kRem, bRows);
        }
    };

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < total) load(s, s);
        cp_async_commit();
    }

    for (int t = 0; t < total; ++t) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        {
            const int nt = t + STAGES - 1;
            if (nt < total) load(nt, nt % STAGES);
            cp_async_commit();
        }
        const __nv_bfloat16* sA = smem + (t % STAGES) * STAGE;
        const int q = lane >> 3, r = lane & 7;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int m = wm0 + i * 16;
                if (A_KM) {
                    ldsm_x4(smem_u32(sA + (m + (lane & 15)) * TA::LD + kk + (lane >> 4) * 8),
                            af[i][0], af[i][1], af[i][2], af[i][3]);
                } else {
                    ldsm_x4_t(smem_u32(sA + (kk + r + (q >> 1) * 8) * TA::LD + m + (q & 1) * 8),
                              af[i][0], af[i][1], af[i][2], af[i][3]);
                }
            }
#pragma unroll
            for (int b = 0; b < NB; ++b) {
                const __nv_bfloat16* sB = sA + TA::ELEMS + b * TB::ELEMS;
                uint32_t bf[NT][2];
#pragma unroll
                for (int jp = 0; jp < NT / 2; ++jp) {
                    const int n = wn0 + jp * 16;
                    if (B_KM) {
                        ldsm_x4(smem_u32(sB + (n + r + (q >> 1) * 8) * TB::LD + kk + (q & 1) * 8),
                                bf[2 * jp][0], bf[2 * jp][1], bf[2 * jp + 1][0], bf[2 * jp + 1][1]);
                    } else {
                        ldsm_x4_t(smem_u32(sB + (kk + r + (q & 1) * 8) * TB::LD + n + (q >> 1) * 8),
                                  bf[2 * jp][0], bf[2 * jp][1], bf[2 * jp + 1][0], bf[2 * jp + 1][1]);
                    }
                }
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < NT; ++j) mma16816(acc[b][i][j], af[i], bf[j]);
            }
        }
    }
    cp_async_wait<0>();
}

template <bool A_KM, bool B_KM, int NB>
constexpr int smem_bytes() {
    return STAGES * (Tile<A_KM, BM>::ELEMS + NB * Tile<B_KM, (NB == 2 ? 64 : 128)>::ELEMS) * 2;
}

// Map blockIdx.x over the concatenated m-tiles of all groups. Returns false if this CTA has
// no tile (grid.x is an upper bound: ceil(totalRows / BM) + groups).
__device__ __forceinline__ bool find_m_tile(const int* offsets, int groups, int& g, int& rowStart, int& rows) {
    int tile = blockIdx.x;
    for (g = 0; g < groups; ++g) {
        const int m = offsets[g + 1] - offsets[g];
        const int nt = (m + BM - 1) / BM;
        if (tile < nt) {
            rowStart = offsets[g] + tile * BM;
            rows = min(BM, offsets[g + 1] - rowStart);
            return true;
        }
        tile -= nt;
    }
    return false;
}

}  // namespace moe_mma
