// moe4j native kernels: shared helpers for every native/*.cu.
//
// Conventions (every kernel family follows them):
//  - one .cu per kernel family, compiled by the Maven build (moe-cuda, profile "nvcc") into
//    org/moe4j/cuda/kernels/<family>.fatbin: sm_90a machine code plus compute_90 PTX;
//  - kernels are extern "C" (MOE4J_KERNEL) so Java finds them by plain name with cuModuleGetFunction;
//  - arguments are int32/int64/float/double scalars and device pointers, in the order the Java
//    launcher (org.moe4j.cuda.Launch) passes them;
//  - code that needs sm_90a-only instructions (wgmma, setmaxnreg) must sit under MOE4J_SM90A, because
//    the same source is also compiled to plain compute_90 PTX;
//  - no float atomics on the default path (deterministic results), every launch checked on the Java side.
#pragma once

#include <cstdint>

#define MOE4J_KERNEL extern "C" __global__

// Shared memory. Kernels declare it with these macros, never with a bare __shared__:
//   MOE4J_SHARED(float, tile, [32][33]);              static: __shared__ float tile[32][33]
//   MOE4J_SHARED_ALIGNED(8, uint64_t, bar, [4]);      static with an alignment
//   MOE4J_DYNAMIC_SHARED(16, int, counts);            the launch's dynamic shared memory (int counts[])
// nvcc: the usual declarations. The CPU device (native/cpudevice, emu.h) compiles the same source as
// host C++, where each name is bound to the block's shared memory inside the emulator, so that every
// access is checked (bounds per variable, races between threads).
#if defined(MOE4J_CPU_DEVICE)
#define MOE4J_DYNAMIC_SHARED(align, type, name) type* const name = reinterpret_cast<type*>(::moe4j_emu::emu_dynamic_shared())
#define MOE4J_SHARED_ALIGNED(align, type, name, dims)                                                        \
    static unsigned char* const name##_moe4j_shared =                                                      \
        ::moe4j_emu::emu_static_shared(sizeof(type dims), (align) > alignof(type) ? (align) : alignof(type), #name); \
    type(&name) dims = *reinterpret_cast<type(*) dims>(name##_moe4j_shared)
#define MOE4J_SHARED(type, name, dims) MOE4J_SHARED_ALIGNED(1, type, name, dims)
#else
#define MOE4J_DYNAMIC_SHARED(align, type, name) extern __shared__ __align__(align) type name[]
#define MOE4J_SHARED_ALIGNED(align, type, name, dims) __shared__ __align__(align) type name dims
#define MOE4J_SHARED(type, name, dims) __shared__ type name dims
#endif

// True while compiling the sm_90a (architecture-specific) pass; false for the compute_90 PTX pass.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOE4J_SM90A 1
#else
#define MOE4J_SM90A 0
#endif

namespace moe4j {

constexpr int kWarpSize = 32;

// Sum over a warp in a fixed butterfly order: every lane ends with the same, deterministic result.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

// Sum over a block of blockDim.x threads (a multiple of 32, at most 1024) in a fixed order.
// `scratch` must hold 32 floats of shared memory. Every thread returns the block's sum.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % kWarpSize;
    const int warp = threadIdx.x / kWarpSize;
    const int warps = (blockDim.x + kWarpSize - 1) / kWarpSize;
    v = warp_sum(v);
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    float total = lane < warps ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();  // scratch may be reused right after
    return total;
}

// Grid-stride loop bounds in 64-bit, so tensors over 2^31 elements work.
__device__ __forceinline__ int64_t global_thread() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t grid_stride() {
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace moe4j
