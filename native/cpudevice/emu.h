// moe4j CPU device: what CUDA provides to a kernel, for compiling native/*.cu as host C++.
//
// build.sh compiles every native/*.cu a second time with g++ -x c++ -include emu.h (the same
// source file nvcc compiles; nothing is copied). Kernels become plain extern "C" functions that
// the runtime (runtime.cpp) runs once per CUDA thread, each thread a cooperative fiber: a block's
// fibers run one at a time on one OS thread and switch only where CUDA threads wait for each
// other (__syncthreads, named barriers, warp collectives, mbarrier waits). Built-ins read the
// running fiber's coordinates. Inline PTX stays in the wrapper headers (grouped_gemm_*.cuh), whose
// MOE4J_CPU_DEVICE branches call the emu_* functions declared here.
//
// Memory: shared memory is declared with MOE4J_SHARED / MOE4J_DYNAMIC_SHARED (common.cuh), which
// bind each name to the emulator's shared-memory window (dynamic at shared address 0, static
// variables after it between red zones); it is poisoned (0xFF bytes: NaN floats, -1 integers) when
// each block starts, as real shared memory holds garbage.
// Kernel translation units are compiled with -fsanitize=kernel-address and call-based
// instrumentation, so every load and store calls the runtime, which checks it (memcheck: inside a
// live allocation, the fiber's stack, the block's shared memory; racecheck: shared-memory accesses
// of different threads ordered by a barrier, a warp collective or an mbarrier phase).
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cuda.h"

#define MOE4J_CPU_DEVICE 1
// Compile the sm_90a code paths (wgmma, TMA, mbarrier): the CPU device reports compute capability 9.0.
#define __CUDA_ARCH_FEAT_SM90_ALL 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) __attribute__((aligned(n)))
// Kernels declare shared memory with MOE4J_SHARED / MOE4J_DYNAMIC_SHARED (common.cuh), so that the
// emulator sees every access; a bare __shared__ stops the compile here with this message.
#define __shared__ static_assert(false, "declare shared memory with MOE4J_SHARED or MOE4J_DYNAMIC_SHARED (common.cuh)");

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};
struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
struct int2 {
    int x, y;
};
struct uint2 {
    unsigned int x, y;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }

namespace moe4j_emu {

// The running CUDA thread (a fiber). Only one OS thread runs kernels at a time (runtime.cpp holds
// the device lock for a whole launch), so a plain global is enough.
struct ThreadCoords {
    uint3 threadIdx;
    uint3 blockIdx;
    dim3 blockDim;
    dim3 gridDim;
};
extern ThreadCoords* g_coords;

// --- runtime entry points used by the built-ins below (runtime.cpp) ---
[[noreturn]] void emu_trap(const char* what);
void emu_bar_sync(int id, int count);  // count < 0: every live thread of the block (__syncthreads)
unsigned long long emu_warp_op(int op, unsigned mask, unsigned long long value, int arg, int width);
unsigned char* emu_dynamic_shared();
unsigned char* emu_static_shared(size_t size, size_t align, const char* name);
uint32_t emu_cvta_shared(const void* p);
void emu_atomic_begin(const void* p, size_t bytes, bool shared_ok);

enum WarpOp { W_SHFL = 1, W_SHFL_XOR, W_SHFL_UP, W_SHFL_DOWN, W_ALL, W_ANY, W_BALLOT, W_MATCH_ANY, W_SYNCWARP };

// PTX wrapper support (grouped_gemm_mma.cuh, grouped_gemm_wgmma.cuh)
void emu_cp_async16(uint32_t dst, const void* src, int srcBytes);
void emu_cp_async_commit();
void emu_cp_async_wait(int n);
void emu_ldmatrix(int num, bool trans, uint32_t addr, uint32_t* r);
void emu_mma_m16n8k16_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]);
void emu_mbar_init(uint64_t* bar, int count);
void emu_mbar_arrive(uint64_t* bar, uint32_t txBytes);  // txBytes > 0: arrive.expect_tx
void emu_mbar_wait(uint64_t* bar, uint32_t parity);
void emu_tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int rank, const int* coords);
void emu_wgmma(int n, int transA, int transB, float* d, uint64_t descA, uint64_t descB, int scaleD);
void emu_wgmma_fence();
void emu_wgmma_commit();
void emu_wgmma_wait(int n);
void emu_fence_proxy_async();

template <typename T>
inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 64 bits");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace moe4j_emu

// Kernel built-ins (not in the runtime's own sources, which define MOE4J_EMU_RUNTIME).
#if !defined(MOE4J_EMU_RUNTIME)
#define threadIdx (::moe4j_emu::g_coords->threadIdx)
#define blockIdx (::moe4j_emu::g_coords->blockIdx)
#define blockDim (::moe4j_emu::g_coords->blockDim)
#define gridDim (::moe4j_emu::g_coords->gridDim)
#define warpSize 32
#endif

// ---------------------------------------------------------------------------------------------
// Synchronisation and warp intrinsics (CUDA C++ Programming Guide: synchronization functions,
// warp shuffle / vote / match functions).
// ---------------------------------------------------------------------------------------------
inline void __syncthreads() { moe4j_emu::emu_bar_sync(0, -1); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { moe4j_emu::emu_warp_op(moe4j_emu::W_SYNCWARP, mask, 0, 0, 32); }
[[noreturn]] inline void __trap() { moe4j_emu::emu_trap("__trap()"); }

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int srcLane, int width = 32) {
    return moe4j_emu::from_bits<T>(moe4j_emu::emu_warp_op(moe4j_emu::W_SHFL, mask, moe4j_emu::to_bits(v), srcLane, width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
    return moe4j_emu::from_bits<T>(moe4j_emu::emu_warp_op(moe4j_emu::W_SHFL_XOR, mask, moe4j_emu::to_bits(v), laneMask, width));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return moe4j_emu::from_bits<T>(moe4j_emu::emu_warp_op(moe4j_emu::W_SHFL_UP, mask, moe4j_emu::to_bits(v), (int)delta, width));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return moe4j_emu::from_bits<T>(moe4j_emu::emu_warp_op(moe4j_emu::W_SHFL_DOWN, mask, moe4j_emu::to_bits(v), (int)delta, width));
}
inline int __all_sync(unsigned mask, int pred) { return (int)moe4j_emu::emu_warp_op(moe4j_emu::W_ALL, mask, pred != 0, 0, 32); }
inline int __any_sync(unsigned mask, int pred) { return (int)moe4j_emu::emu_warp_op(moe4j_emu::W_ANY, mask, pred != 0, 0, 32); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)moe4j_emu::emu_warp_op(moe4j_emu::W_BALLOT, mask, pred != 0, 0, 32);
}
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T v) {
    return (unsigned)moe4j_emu::emu_warp_op(moe4j_emu::W_MATCH_ANY, mask, moe4j_emu::to_bits(v), 0, 32);
}

// ---------------------------------------------------------------------------------------------
// Atomics: one OS thread runs a block's fibers and fibers switch only at synchronisation points,
// so a read-modify-write is atomic by construction. emu_atomic_begin checks the address
// (memcheck) and tells racecheck that this access is atomic.
// ---------------------------------------------------------------------------------------------
template <typename T>
__attribute__((no_sanitize_address)) inline T __moe4j_atomic_rmw(T* p, T v, int op) {
    moe4j_emu::emu_atomic_begin(p, sizeof(T), true);
    T old = *p;
    switch (op) {
        case 0: *p = old + v; break;
        case 1: *p = v < old ? v : old; break;
        case 2: *p = v > old ? v : old; break;
        case 3: *p = v; break;
    }
    return old;
}
inline int atomicAdd(int* p, int v) { return __moe4j_atomic_rmw(p, v, 0); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __moe4j_atomic_rmw(p, v, 0); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __moe4j_atomic_rmw(p, v, 0); }
inline long long atomicAdd(long long* p, long long v) { return __moe4j_atomic_rmw(p, v, 0); }
inline float atomicAdd(float* p, float v) { return __moe4j_atomic_rmw(p, v, 0); }
inline int atomicMin(int* p, int v) { return __moe4j_atomic_rmw(p, v, 1); }
inline long long atomicMin(long long* p, long long v) { return __moe4j_atomic_rmw(p, v, 1); }
inline int atomicMax(int* p, int v) { return __moe4j_atomic_rmw(p, v, 2); }
inline int atomicExch(int* p, int v) { return __moe4j_atomic_rmw(p, v, 3); }

// ---------------------------------------------------------------------------------------------
// Arithmetic intrinsics (CUDA Math API). build.sh compiles kernels with -ffp-contract=off, so each
// _rn operation below is one IEEE-754 binary32 operation rounded to nearest even, as on the GPU.
// ---------------------------------------------------------------------------------------------
using std::isfinite;
using std::isinf;
using std::isnan;
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline int __float_as_int(float f) { return moe4j_emu::from_bits<int>(moe4j_emu::to_bits(f)); }
inline float __int_as_float(int i) { return moe4j_emu::from_bits<float>(moe4j_emu::to_bits(i)); }
inline unsigned __float_as_uint(float f) { return moe4j_emu::from_bits<unsigned>(moe4j_emu::to_bits(f)); }
inline float __uint_as_float(unsigned i) { return moe4j_emu::from_bits<float>(moe4j_emu::to_bits(i)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

inline uint32_t __cvta_generic_to_shared(const void* p) { return moe4j_emu::emu_cvta_shared(p); }

// ---------------------------------------------------------------------------------------------
// bf16 and fp16 storage types (cuda_bf16.h / cuda_fp16.h): conversions round to nearest even,
// NaN stays NaN (quiet), as the __float2bfloat16_rn / __float2half_rn intrinsics do.
// ---------------------------------------------------------------------------------------------
struct __nv_bfloat16 {
    uint16_t __x;
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
struct __half {
    uint16_t __x;
};

inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned)h.__x << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40u)};
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }

inline float __half2float(__half h) {
    const unsigned s = (unsigned)(h.__x & 0x8000u) << 16;
    const unsigned e = (h.__x >> 10) & 0x1fu;
    const unsigned m = h.__x & 0x3ffu;
    if (e == 0x1f) return __uint_as_float(s | 0x7f800000u | (m << 13));
    if (e != 0) return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
    if (m == 0) return __uint_as_float(s);
    return (s ? -1.0f : 1.0f) * std::ldexp((float)m, -24);  // subnormal: m * 2^-24, exact
}
inline __half __float2half_rn(float f) {
    const unsigned u = __float_as_uint(f);
    const unsigned s = (u >> 16) & 0x8000u;
    const unsigned a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return __half{(uint16_t)(s | 0x7e00u | ((a >> 13) & 0x3ffu))};
    if (a >= 0x477ff000u) return __half{(uint16_t)(s | 0x7c00u)};  // rounds to >= 65520: infinity
    if (a >= 0x38800000u) {                                         // normal half
        const unsigned r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
        return __half{(uint16_t)(s | (r >> 13))};
    }
    // subnormal or zero: value = a * 2^24 units of 2^-24, rounded to nearest even
    const float scaled = std::ldexp(__uint_as_float(a), 24);
    return __half{(uint16_t)(s | (unsigned)std::nearbyint(scaled))};
}
