// moe4j grouped GEMM, Hopper path (sm_90a): warp-specialised TMA + wgmma pipeline.
// Included by grouped_gemm.cu only (the kernels are defined there).
//
// CTA: 384 threads = 3 warpgroups. Warpgroup 0 is the producer: one thread issues bulk tensor
// copies (cp.async.bulk.tensor, 128-byte swizzle) into a 4-stage shared-memory ring and signals a
// "full" mbarrier per stage (transaction bytes). Warpgroups 1 and 2 are consumers: consumer c owns
// 64 rows (M) of the 128-row CTA tile, waits on "full", issues 4 wgmma.mma_async (k16 each,
// BK = 64) with both operands read from shared memory through matrix descriptors, keeps one wgmma
// group in flight, and releases the previous stage on its "empty" mbarrier (one arrival per
// consumer warp, after that warp's wgmma.wait_group). setmaxnreg moves registers from the
// producer (40) to the consumers (232).
//
// Stage = 16 KB of A + 16 KB of B, both as 128-byte rows (64 bf16) written by the TMA with the
// 128-byte swizzle (16-byte chunk c of row r lands at chunk c ^ (r % 8)), 1024-byte aligned:
//   K-major operand ([rows][k], k contiguous; forward A and B, dX A): one box {64 k, R rows};
//     row = one M/N index, 8-row groups 1024 bytes apart (SBO), LBO unused (1); k16 step = +32 B.
//   MN-major operand ([k][mn], mn contiguous; dX B, weight-gradient A and B): boxes {64 mn, 64 k},
//     row = one k index; 8-k groups 1024 bytes apart (SBO), the next 64 mn = the next box,
//     8192 bytes on (LBO); k16 step = +2048 B; wgmma's transpose immediate set for that operand.
// Consumer c reads A at stage offset c * 8192 in both layouts (rows 64c.. of a K-major box, or
// the c-th MN-major box).
//
// Kernels (grouped_gemm.cu), tensor maps built on the host with cuTensorMapEncodeTiled (bf16,
// interleave none, swizzle 128B, OOB fill zero) and passed by value (const __grid_constant__):
//   moe_gg_fwd_wgmma    C = A . B_g^T      A [rows, K]: dims {K, rows} box {64, 128}
//                                          B [groups*N, K]: dims {K, groups*N} box {64, 128}
//   moe_gg_swiglu_wgmma H = silu(A.W1_g^T) * (A.W3_g^T): W1/W3 maps as B with box {64, 64}
//   moe_gg_dx_wgmma     C = A1 . B1_g (+ A2 . B2_g)  A as above; B [groups][K][N] (MN-major):
//                                          dims {N, K, groups} box {64, 64, 1}
//   moe_gg_wgrad_wgmma  C_g = A_g^T . B_g  A [rows, M]: dims {M, rows} box {64, 64};
//                                          B [rows, N]: dims {N, rows} box {64, 64}
// Overrun: an A tile may run past its group into the next group's rows and a forward B tile
// into the next expert's rows: those products land only in rows/columns the epilogue does not
// store. Along K nothing of another group may enter a sum: the forward and dX maps end at K
// (zero fill; dX's 3-D map ends every expert at K), and the weight-gradient consumers zero the
// rows of the last, partial K tile that lie past their group before multiplying.
// Launch: block 384, dynamic smem SMEM_BYTES = 4 * 32768 + 1024 (alignment slack) = 132096;
//   fwd/dx grid (ceil(rows/128) + groups, ceil(N/128)), swiglu (.., ceil(N/64)),
//   wgrad grid (ceil(N/128), ceil(M/128), groups).
// Only valid on compute capability 9.0 (the sm_90a cubin); the compute_90 PTX of these kernels traps.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <stdint.h>

namespace moe_wg {

constexpr int BM = 128;
constexpr int BK = 64;
constexpr int STAGES = 4;
constexpr int A_BYTES = BM * BK * 2;  // 16384
constexpr int B_BYTES = 128 * BK * 2; // 16384 in total per stage for either NB
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
constexpr int BOX_BYTES = 64 * 64 * 2;      // one MN-major box {64 mn, 64 k}: 8192
constexpr uint32_t SBO_BYTES = 1024;        // 8 rows of 128 bytes
constexpr uint32_t LBO_KMAJOR = 16;         // unused by swizzled K-major layouts ("assumed 1")
constexpr uint32_t LBO_MN = BOX_BYTES;      // MN-major: the next 64 mn elements live in the next box
constexpr int KSTEP_KMAJOR = 32 >> 4;       // k16 step in descriptor units (16 bytes): +32 bytes
constexpr int KSTEP_MN = (16 * 128) >> 4;   // k16 step for MN-major: 16 rows of 128 bytes

// Shared-memory matrix descriptor bits, 128-byte swizzle, SBO = 1024 bytes (8 rows of 128 bytes);
// lboBytes: LBO_KMAJOR or LBO_MN (see the layout notes above). Base offset 0: every tile starts on
// a 1024-byte boundary (k16 steps inside a K-major row stay within the pattern, as the PTX ISA
// canonical layouts allow). Host-callable, so that a CPU test (WgmmaLayoutModelTest) can decode
// exactly what the consumers hand to wgmma.
__host__ __device__ constexpr uint64_t desc_bits(uint32_t smemAddr, uint32_t lboBytes) {
    return (uint64_t)((smemAddr & 0x3FFFF) >> 4)              // start address, bits 0-13
           | (uint64_t)((lboBytes & 0x3FFFF) >> 4) << 16      // leading dimension byte offset, bits 16-29
           | (uint64_t)(SBO_BYTES >> 4) << 32                 // stride dimension byte offset, bits 32-45
           | (uint64_t)1 << 62;                               // layout: 128-byte swizzle
}

// Descriptor of consumer cw's A operand for k16 step kk of the stage at shared address `stage`.
template <bool A_MN>
__host__ __device__ constexpr uint64_t desc_a(uint32_t stage, int cw, int kk) {
    return desc_bits(stage + cw * BOX_BYTES, A_MN ? LBO_MN : LBO_KMAJOR) + (uint64_t)((A_MN ? KSTEP_MN : KSTEP_KMAJOR) * kk);
}

// Descriptor of the B operand (half = 0, or 1 for the second 64-row operand of the fused SwiGLU
// tile) for k16 step kk of the stage at shared address `stage`.
template <bool B_MN>
__host__ __device__ constexpr uint64_t desc_b(uint32_t stage, int half, int kk) {
    return desc_bits(stage + A_BYTES + half * (B_BYTES / 2), B_MN ? LBO_MN : LBO_KMAJOR)
           + (uint64_t)((B_MN ? KSTEP_MN : KSTEP_KMAJOR) * kk);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOE_WGMMA_ENABLED 1
#else
#define MOE_WGMMA_ENABLED 0
#endif

#if MOE_WGMMA_ENABLED

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// PTX wrappers. Each has a CPU-device branch (native/cpudevice, MOE4J_CPU_DEVICE) that runs the
// same instruction's semantics on the host; the PTX ISA section is named next to each.

// mbarrier.init (PTX ISA, parallel synchronization: "mbarrier.init"): phase 0, `count` expected arrivals.
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_mbar_init(bar, count);
#else
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
#endif
}

// fence.mbarrier_init.release.cluster (PTX ISA, "membar/fence"): makes the inits visible to the
// async proxy (TMA complete_tx). The CPU device has one proxy: nothing to order.
__device__ __forceinline__ void mbar_init_fence() {
#if !defined(MOE4J_CPU_DEVICE)
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// mbarrier.arrive.expect_tx (PTX ISA, "mbarrier.expect_tx" + "mbarrier.arrive"): raise the phase's
// transaction count by `bytes`, then arrive.
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_mbar_arrive(bar, bytes);
#else
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes));
#endif
}

// mbarrier.arrive (PTX ISA, "mbarrier.arrive"): one arrival on the current phase.
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_mbar_arrive(bar, 0);
#else
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
#endif
}

// mbarrier.try_wait.parity (PTX ISA, "mbarrier.test_wait/mbarrier.try_wait"): true once the phase
// with the given parity has completed (i.e. the current phase's parity differs); loops until then.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_mbar_wait(bar, parity);
#else
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT_%=;\n"
        "}\n" ::"r"(smem_u32(bar)), "r"(parity) : "memory");
#endif
}

// cp.async.bulk.tensor.{2,3}d.shared::cluster.global.mbarrier::complete_tx::bytes (PTX ISA, data
// movement: "cp.async.bulk.tensor"; tensor-map tiled mode, swizzle and out-of-bound fill per the
// "Tensors" chapter): the box at the coordinates lands in shared memory and completes its bytes on bar.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1) {
#if defined(MOE4J_CPU_DEVICE)
    const int c[2] = {c0, c1};
    moe4j_emu::emu_tma_load(dst, map, bar, 2, c);
#else
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n"
        ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1)
        : "memory");
#endif
}

__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1, int c2) {
#if defined(MOE4J_CPU_DEVICE)
    const int c[3] = {c0, c1, c2};
    moe4j_emu::emu_tma_load(dst, map, bar, 3, c);
#else
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n"
        ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
        : "memory");
#endif
}

// Makes this thread's generic-proxy shared-memory writes visible to the async proxy (wgmma).
// (PTX ISA, "membar/fence": fence.proxy.async). The CPU device has one proxy: only racecheck notes it.
__device__ __forceinline__ void fence_proxy_async_smem() {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_fence_proxy_async();
#else
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Barrier over the two consumer warpgroups only (named barrier 1, 256 threads).
// bar.sync 1, 256 (PTX ISA, parallel synchronization: "bar/barrier"): named barrier 1, 256 threads.
__device__ __forceinline__ void consumers_sync() {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_bar_sync(1, 256);
#else
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
#endif
}

// wgmma.fence / wgmma.commit_group / wgmma.wait_group (PTX ISA, asynchronous warpgroup-level matrix
// instructions). The CPU device tracks the groups: a wait checks that the groups it waits for were committed.
__device__ __forceinline__ void wgmma_fence() {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_wgmma_fence();
#else
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_wgmma_commit();
#else
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_wgmma_wait(N);
#else
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Pins accumulator registers in place around a wgmma pipeline stage, so that the compiler does not
// move or re-define them between wgmma.fence and wgmma.wait_group (which would serialise wgmma).
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#if !defined(MOE4J_CPU_DEVICE)
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
#endif
}

// setmaxnreg.{inc,dec}.sync.aligned.u32 (PTX ISA, miscellaneous: "setmaxnreg"): registers are not a
// resource on the CPU device, so a no-op there.
template <int R>
__device__ __forceinline__ void reg_alloc() {
#if !defined(MOE4J_CPU_DEVICE)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
#endif
}
template <int R>
__device__ __forceinline__ void reg_dealloc() {
#if !defined(MOE4J_CPU_DEVICE)
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
#endif
}

// TA / TB: 0 = operand K-major, 1 = MN-major (wgmma's imm-trans-a / imm-trans-b).
template <int TA, int TB>
// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 (PTX ISA, "wgmma.mma_async"; operands through
// "Matrix Descriptor Format" and the canonical K-major / MN-major layouts with 128-byte swizzle).
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t descA, uint64_t descB, int scaleD) {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_wgmma(128, TA, TB, d, descA, descB, scaleD);
#else
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, %67, %68;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(descA), "l"(descB), "r"(scaleD), "n"(TA), "n"(TB));
#endif
}

template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t descA, uint64_t descB, int scaleD) {
#if defined(MOE4J_CPU_DEVICE)
    moe4j_emu::emu_wgmma(64, TA, TB, d, descA, descB, scaleD);
#else
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(descA), "l"(descB), "r"(scaleD), "n"(TA), "n"(TB));
#endif
}

#endif  // MOE_WGMMA_ENABLED

}  // namespace moe_wg
