// Kernels of the CPU device's own tests (moe-cuda: org.moe4j.cuda.cpudevice, @Tag("cpudevice")):
// each planted bug next to its correct twin, so that a test can show that the emulator catches the
// bug (memcheck, racecheck, deadlock detection, launch checks) and passes the correct code.
//
// Compiled only into libmoe4j_cpudevice.so (build.sh compiles native/cpudevice/test/*.cu as one
// more kernel family); never into a fatbin, so nothing here runs on a real GPU. Every kernel is
// extern "C" __global__ with a name starting moe4jtest_, so that it cannot clash with a product
// kernel; a test loads them with cuModuleLoadData of a small image that lists these names (the CPU
// device finds a module's kernels by scanning the image for registered names).
#include "common.cuh"
#include "grouped_gemm_mma.cuh"
#include "grouped_gemm_wgmma.cuh"

// --- racecheck ---------------------------------------------------------------------------------
// out[b] = sum of in[b * blockDim.x + t] over the block's threads (blockDim.x a multiple of 32).

// Correct: moe4j::block_sum (native/common.cuh).
extern "C" __global__ void moe4jtest_block_sum_ok(const float* in, float* out) {
    MOE4J_SHARED(float, scratch, [32]);
    const float v = in[(long)blockIdx.x * blockDim.x + threadIdx.x];
    const float total = moe4j::block_sum(v, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// Planted: block_sum without its first __syncthreads: lane l of every warp reads scratch[l] that
// lane 0 of warp l wrote, with nothing ordering the two (racecheck: read after write / write after read).
extern "C" __global__ void moe4jtest_block_sum_nosync(const float* in, float* out) {
    MOE4J_SHARED(float, scratch, [32]);
    float v = in[(long)blockIdx.x * blockDim.x + threadIdx.x];
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int warps = (blockDim.x + 31) / 32;
    v = moe4j::warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    // planted: missing __syncthreads();
    float total = lane < warps ? scratch[lane] : 0.0f;
    total = moe4j::warp_sum(total);
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// --- memcheck ----------------------------------------------------------------------------------
// Planted: the tail guard is `i <= n`: thread n writes out[n], one float past a buffer of n floats.
extern "C" __global__ void moe4jtest_tail_off_by_one(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;  // planted: should be i < n
}

// --- deadlock ----------------------------------------------------------------------------------
// Planted: the mbarrier expects 2 arrivals per phase, only thread 0 arrives: phase 0 never
// completes, and every thread waits on it (the CPU device reports a deadlock instead of hanging).
extern "C" __global__ void moe4jtest_mbar_never(float* out) {
    MOE4J_SHARED_ALIGNED(8, uint64_t, bar, );
    if (threadIdx.x == 0) moe_wg::mbar_init(&bar, 2);
    __syncthreads();
    if (threadIdx.x == 0) moe_wg::mbar_arrive(&bar);
    moe_wg::mbar_wait(&bar, 0);
    if (threadIdx.x == 0) out[0] = 1.0f;
}

// --- Java argument checking (Launch against cuFuncGetParamInfo) --------------------------------
// out[i] = i for i < n; the first parameter is a 4-byte int (a Java long must be refused).
extern "C" __global__ void moe4jtest_int_param(int n, float* out) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = (float)i;
}

// --- mma fragments -----------------------------------------------------------------------------
// D[16][8] = A[16][32] * B[8][32]^T (bf16 row-major, B stored n-major: B[n][k]) with two
// mma.sync.m16n8k16 (moe_mma::mma16816, the wrapper grouped_gemm.cu uses), one warp. Fragments are
// loaded straight from global memory per the PTX ISA figures ("Matrix Fragments for
// mma.m16n8k16 with floating point type"): groupID g = lane / 4, threadID_in_group t = lane % 4.
__device__ __forceinline__ uint32_t load_pair(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }

template <bool PLANTED>
__device__ __forceinline__ void mma_tile(const __nv_bfloat16* A, const __nv_bfloat16* B, float* D) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < 32; k0 += 16) {
        uint32_t a[4], b[2];
        for (int r = 0; r < 4; ++r) {
            // a_r: row g (+8 for r odd), columns k0 + 2t (+8 for r >= 2), +1
            a[r] = load_pair(A + (g + 8 * (r & 1)) * 32 + k0 + 2 * t + 8 * (r >> 1));
        }
        if (PLANTED) {  // planted: fragments 1 and 2 swapped (rows 8-15 / columns 8-15 confused)
            const uint32_t x = a[1];
            a[1] = a[2];
            a[2] = x;
        }
        for (int r = 0; r < 2; ++r) b[r] = load_pair(B + g * 32 + k0 + 2 * t + 8 * r);  // b_r: k = 2t (+8), column g
        moe_mma::mma16816(c, a, b);
    }
    for (int r = 0; r < 4; ++r) D[(g + 8 * (r >> 1)) * 8 + 2 * t + (r & 1)] = c[r];  // c_r: row g (+8 for r >= 2), column 2t + (r & 1)
}

extern "C" __global__ void moe4jtest_mma_tile(const __nv_bfloat16* A, const __nv_bfloat16* B, float* D) {
    mma_tile<false>(A, B, D);
}
extern "C" __global__ void moe4jtest_mma_wrong_fragment(const __nv_bfloat16* A, const __nv_bfloat16* B, float* D) {
    mma_tile<true>(A, B, D);
}

// --- launch limits -----------------------------------------------------------------------------
// Dynamic shared memory of `floats` floats (above 48 KB the function needs
// cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)); out[0] = the last float, written by a thread.
extern "C" __global__ void moe4jtest_big_smem(float* out, int floats) {
    MOE4J_DYNAMIC_SHARED(16, float, s);
    for (int i = threadIdx.x; i < floats; i += blockDim.x) s[i] = (float)i;
    __syncthreads();
    if (threadIdx.x == 0) out[0] = s[floats - 1];
}

// __launch_bounds__(128): a launch with a larger block is refused.
extern "C" __global__ void __launch_bounds__(128) moe4jtest_bounds128(float* out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}
