// moe4j CPU device: GPU calibration of the PTX emulation (native/cpudevice/ptx_emu.cpp).
//
// README
// ------
// What: draws random micro-cases, runs each on a Hopper GPU with the same inline-PTX wrappers the
// kernels use (grouped_gemm_mma.cuh, grouped_gemm_wgmma.cuh) and on the host with the emulator
// functions, and compares the results bit for bit. One line per case family:
//   mma-layout       mma.m16n8k16 bf16, small integers (exact sums: checks fragments only)
//   mma-numerics     mma.m16n8k16 bf16, random magnitudes incl. huge / tiny (checks the
//                    emulator's summation order / rounding / denormal handling; max ulp printed)
//   ldmatrix         ldmatrix .x4 and .x4.trans from a random shared image
//   tma-2d, tma-3d   cp.async.bulk.tensor with 128B swizzle, partially out-of-bounds boxes
//                    (shared image incl. untouched bytes; the complete_tx byte count must make the
//                    mbarrier complete, a bounded wait reports a timeout otherwise)
//   tma-unaligned    destination 128-byte but not 1024-byte aligned (is the swizzle address based?)
//   tma-narrow       inner box 64 bytes with 128B swizzle, and a no-swizzle box
//   wgmma-layout     m64n128k16 / m64n64k16, K-major / MN-major operands placed by TMA, kernel
//                    descriptors (desc_a / desc_b), 4 k16 steps, small integers (exact)
//   wgmma-numerics   the same with random values
//   mbarrier         random arrive / expect_tx / complete_tx sequences, test_wait.parity after each
//   encode           cuTensorMapEncodeTiled (real driver) vs the emulator's encoder: success or
//                    failure for valid and rule-breaking argument sets (behaviour, not bytes)
// Exit status: 0 every family matches; 1 a layout/semantics family differs (mma-layout, ldmatrix,
// tma-*, wgmma-layout, mbarrier, encode: the emulator is wrong there, fix it); 3 only the numerics
// families differ (the tensor cores accumulate in another order or precision than the emulator:
// report, then adjust dot16() in ptx_emu.cpp); 2 no CUDA device or not compute capability 9.0;
// 4 a CUDA runtime/driver error outside the probes (driver too old, cuTensorMapEncodeTiled missing).
// A first mismatch is printed with its inputs' position; rerun with the printed seed to reproduce:
//   calibrate [seed]
// Build: native/cpudevice/calibration/build.sh <output-binary>   (nvcc -arch=sm_90a; the host part
// links ptx_emu.cpp, compiled by the host compiler against the CPU device's cuda.h shim; this file
// sees the real cuda.h: the two declare the same tags with the same layouts).
// Reading the numerics lines: a mismatch there means the tensor core's accumulation differs from
// "C first, then k ascending, fp32 round-to-nearest each step"; the first mismatch shows the inputs.
#include <cuda.h>
#include <cuda_runtime.h>

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "grouped_gemm_mma.cuh"
#include "grouped_gemm_wgmma.cuh"
#include "ptx_emu.h"

namespace E = moe4j_emu;

#define CK(x)                                                                                       \
    do {                                                                                            \
        cudaError_t e_ = (x);                                                                       \
        if (e_ != cudaSuccess) {                                                                    \
            std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, \
                         __LINE__, #x);                                                             \
            std::exit(4);                                                                           \
        }                                                                                           \
    } while (0)

// A GPU error inside a family (a faulting probe kills the context): recorded as a mismatch, later
// families are skipped. SOFT returns from a probe, SOFT_R also prints the family line.
static bool g_dead = false;
#define SOFT(f, x)                                                                                  \
    do {                                                                                            \
        cudaError_t e_ = (x);                                                                       \
        if (e_ != cudaSuccess) {                                                                    \
            (f).mismatch(std::string("GPU error ") + cudaGetErrorString(e_) + " at line " + std::to_string(__LINE__)); \
            g_dead = true;                                                                          \
            return;                                                                                 \
        }                                                                                           \
    } while (0)
#define SOFT_R(f, x)                                                                                \
    do {                                                                                            \
        cudaError_t e_ = (x);                                                                       \
        if (e_ != cudaSuccess) {                                                                    \
            (f).mismatch(std::string("GPU error ") + cudaGetErrorString(e_) + " at line " + std::to_string(__LINE__)); \
            g_dead = true;                                                                          \
            (f).report();                                                                           \
            return;                                                                                 \
        }                                                                                           \
    } while (0)
#define SKIP_IF_DEAD(name)                                                                          \
    do {                                                                                            \
        if (g_dead) {                                                                               \
            std::printf("%s: skipped (earlier GPU error)\n", name);                                \
            ++g_bad_families;                                                                       \
            return;                                                                                 \
        }                                                                                           \
    } while (0)

// ---------------------------------------------------------------------------------------------
// Device side
// ---------------------------------------------------------------------------------------------

constexpr long WAIT_SPINS = 1L << 22;  // bounded mbarrier wait: a wrong byte count reports, not hangs

__device__ __forceinline__ bool mbar_try(uint32_t bar, uint32_t parity) {
    uint32_t ok;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(ok) : "r"(bar), "r"(parity) : "memory");
    return ok != 0;
}

__device__ bool mbar_wait_bounded(uint32_t bar, uint32_t parity) {
    for (long i = 0; i < WAIT_SPINS; ++i)
        if (mbar_try(bar, parity)) return true;
    return false;
}

// one warp per case: d = a.b + c
__global__ void k_mma(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
    const int cs = blockIdx.x, lane = threadIdx.x;
    uint32_t ra[4], rb[2];
    float rc[4];
    for (int i = 0; i < 4; ++i) ra[i] = a[(cs * 32 + lane) * 4 + i];
    for (int i = 0; i < 2; ++i) rb[i] = b[(cs * 32 + lane) * 2 + i];
    for (int i = 0; i < 4; ++i) rc[i] = c[(cs * 32 + lane) * 4 + i];
    moe_mma::mma16816(rc, ra, rb);
    for (int i = 0; i < 4; ++i) d[(cs * 32 + lane) * 4 + i] = rc[i];
}

// one warp per case: a 2 KB shared image, per-lane row addresses, x4 plain and x4.trans
__global__ void k_ldmatrix(const unsigned char* img, const uint32_t* addr, uint32_t* out, uint32_t* base) {
    __shared__ __align__(128) unsigned char s[2048];
    const int cs = blockIdx.x, lane = threadIdx.x;
    for (int i = lane; i < 2048; i += 32) s[i] = img[cs * 2048 + i];
    __syncwarp();
    const uint32_t sb = moe_mma::smem_u32(s);
    if (cs == 0 && lane == 0) *base = sb;
    uint32_t r[4];
    moe_mma::ldsm_x4(sb + addr[cs * 32 + lane], r[0], r[1], r[2], r[3]);
    for (int i = 0; i < 4; ++i) out[((cs * 2 + 0) * 32 + lane) * 4 + i] = r[i];
    moe_mma::ldsm_x4_t(sb + addr[cs * 32 + lane], r[0], r[1], r[2], r[3]);
    for (int i = 0; i < 4; ++i) out[((cs * 2 + 1) * 32 + lane) * 4 + i] = r[i];
}

constexpr int TMA_REGION = 36 * 1024;

// one block per case: fill a 36 KB 1024-aligned shared region with 0xAB, one bulk tensor copy to
// region + dstOff, bounded wait for `bytes`, copy the region out. info: [0] shared address of the
// region, [1] 1 = completed, 0 = timed out.
__global__ void k_tma(const __grid_constant__ CUtensorMap map, int rank, int c0, int c1, int c2, uint32_t dstOff,
                      uint32_t bytes, unsigned char* out, uint32_t* info) {
#if MOE_WGMMA_ENABLED
    extern __shared__ __align__(1024) unsigned char dyn[];
    __shared__ __align__(8) uint64_t bar;
    unsigned char* s = dyn + ((1024u - (moe_wg::smem_u32(dyn) & 1023u)) & 1023u);
    for (int i = threadIdx.x; i < TMA_REGION; i += blockDim.x) s[i] = 0xAB;
    moe_wg::fence_proxy_async_smem();
    if (threadIdx.x == 0) {
        moe_wg::mbar_init(&bar, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        moe_wg::mbar_expect_tx(&bar, bytes);
        if (rank == 2) moe_wg::tma_load_2d(s + dstOff, &map, &bar, c0, c1);
        else moe_wg::tma_load_3d(s + dstOff, &map, &bar, c0, c1, c2);
    }
    const bool done = mbar_wait_bounded(moe_wg::smem_u32(&bar), 0);
    __syncthreads();
    for (int i = threadIdx.x; i < TMA_REGION; i += blockDim.x) out[i] = s[i];
    if (threadIdx.x == 0) {
        info[0] = moe_wg::smem_u32(s);
        info[1] = done ? 1u : 0u;
    }
#endif
}

struct WgLoads {
    int n;                 // number of bulk copies of this operand (1 or 2)
    int c0[2], c1[2];      // coordinates
    uint32_t off[2];       // destination offset from the stage
};

// one warpgroup per launch: the kernel's stage layout filled by TMA, then 4 wgmma k16 steps with the
// kernel's descriptors (consumer cw, B half), scale-d = 0 on the first step (acc starts at 7.0).
template <int TA, int TB, int N>
__global__ void __launch_bounds__(128) k_wgmma(const __grid_constant__ CUtensorMap mA, const __grid_constant__ CUtensorMap mB,
                                               WgLoads la, WgLoads lb, int cw, int half, uint32_t bytes, float* out,
                                               unsigned char* stageOut, uint32_t* info) {
#if MOE_WGMMA_ENABLED
    namespace W = moe_wg;
    extern __shared__ __align__(1024) unsigned char dyn[];
    __shared__ __align__(8) uint64_t bar;
    unsigned char* s = dyn + ((1024u - (W::smem_u32(dyn) & 1023u)) & 1023u);
    for (int i = threadIdx.x; i < W::STAGE_BYTES; i += blockDim.x) s[i] = 0;
    W::fence_proxy_async_smem();
    if (threadIdx.x == 0) {
        W::mbar_init(&bar, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        W::mbar_expect_tx(&bar, bytes);
        for (int i = 0; i < la.n; ++i) W::tma_load_2d(s + la.off[i], &mA, &bar, la.c0[i], la.c1[i]);
        for (int i = 0; i < lb.n; ++i) W::tma_load_2d(s + lb.off[i], &mB, &bar, lb.c0[i], lb.c1[i]);
    }
    const bool done = mbar_wait_bounded(W::smem_u32(&bar), 0);
    __syncthreads();
    const uint32_t stage = W::smem_u32(s);
    float acc[N / 2];
    for (int i = 0; i < N / 2; ++i) acc[i] = 7.0f;
    if (done) {
        W::fence_operands(acc);
        W::wgmma_fence();
        for (int kk = 0; kk < 4; ++kk) {
            const uint64_t dA = W::desc_a<TA == 1>(stage, cw, kk);
            const uint64_t dB = W::desc_b<TB == 1>(stage, half, kk);
            if constexpr (N == 128) W::wgmma_m64n128k16<TA, TB>(acc, dA, dB, kk > 0 ? 1 : 0);
            else W::wgmma_m64n64k16<TA, TB>(acc, dA, dB, kk > 0 ? 1 : 0);
        }
        W::wgmma_commit();
        W::wgmma_wait<0>();
        W::fence_operands(acc);
    }
    for (int i = 0; i < N / 2; ++i) out[threadIdx.x * (N / 2) + i] = acc[i];
    for (int i = threadIdx.x; i < W::STAGE_BYTES; i += blockDim.x) stageOut[i] = s[i];
    if (threadIdx.x == 0) {
        info[0] = stage;
        info[1] = done ? 1u : 0u;
    }
#endif
}

// one thread: mbarrier program. op: 0 arrive, 1 expect_tx(v), 2 complete_tx(v), 3 arrive.expect_tx(v).
// res[i] = test_wait.parity(0) | test_wait.parity(1) << 1 after op i.
__global__ void k_mbar(uint32_t count, const int* ops, const uint32_t* vals, int n, uint32_t* res) {
    __shared__ __align__(8) uint64_t bar;
    const uint32_t b = moe_mma::smem_u32(&bar);
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(b), "r"(count) : "memory");
    for (int i = 0; i < n; ++i) {
        const uint32_t v = vals[i];
        switch (ops[i]) {
            case 0: asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(b) : "memory"); break;
            case 1: asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(b), "r"(v) : "memory"); break;
            case 2: asm volatile("mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(b), "r"(v) : "memory"); break;
            default: asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(b), "r"(v) : "memory"); break;
        }
        res[i] = (mbar_try(b, 0) ? 1u : 0u) | (mbar_try(b, 1) ? 2u : 0u);
    }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

static std::mt19937_64 rng;
static int g_bad_families = 0;       // layout / semantics families that differ
static int g_numerics_families = 0;  // numerics families that differ (accumulation order / precision)

static uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

static long ulp_dist(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return (std::isnan(a) && std::isnan(b)) ? 0 : 1L << 40;
    auto key = [](float f) { int32_t i; std::memcpy(&i, &f, 4); return i < 0 ? (int64_t)INT32_MIN - i : (int64_t)i; };
    return (long)std::llabs(key(a) - key(b));
}

struct Family {
    std::string name;
    bool numerics() const { return name.find("numerics") != std::string::npos; }
    long cases = 0, mismatches = 0, maxUlp = 0;
    std::string first;
    void mismatch(const std::string& what) {
        if (mismatches++ == 0) first = what;
    }
    void report() {
        std::printf("%s: %ld cases, %ld mismatches", name.c_str(), cases, mismatches);
        if (maxUlp > 0) std::printf(", max %ld ulp", maxUlp);
        if (mismatches) std::printf("; first: %s", first.c_str());
        std::printf("\n");
        if (mismatches) ++(numerics() ? g_numerics_families : g_bad_families);
    }
};

static uint16_t rand_bf16_int() { return E::emu_float_to_bf16_rn((float)((int)(rng() % 9) - 4)); }

static uint16_t rand_bf16_wide() {
    // sign, significand random; exponent mostly moderate, sometimes huge or tiny (incl. products that
    // underflow fp32 into subnormals), sometimes zero
    const uint32_t r = (uint32_t)rng();
    int e;
    switch (r % 16) {
        case 0: e = 127 + 50 + (int)(rng() % 10); break;  // huge
        case 1: e = 127 - 60 - (int)(rng() % 20); break;  // tiny
        case 2: return (uint16_t)((r >> 8) & 0x8000);     // +-0
        default: e = 127 - 8 + (int)(rng() % 17); break;
    }
    return (uint16_t)(((r >> 4) & 0x8000) | ((uint32_t)e << 7) | ((r >> 20) & 0x7F));
}

template <class T>
static T* dalloc(size_t n) {
    T* p;
    CK(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

static void family_mma(bool wide, int ncase) {
    SKIP_IF_DEAD(wide ? "mma-numerics" : "mma-layout");
    Family f{wide ? "mma-numerics" : "mma-layout"};
    std::vector<uint32_t> a(ncase * 128), b(ncase * 64);
    std::vector<float> c(ncase * 128), d(ncase * 128);
    for (auto& x : a) x = E::emu_pack_bf16x2(wide ? rand_bf16_wide() : rand_bf16_int(), wide ? rand_bf16_wide() : rand_bf16_int());
    for (auto& x : b) x = E::emu_pack_bf16x2(wide ? rand_bf16_wide() : rand_bf16_int(), wide ? rand_bf16_wide() : rand_bf16_int());
    for (auto& x : c) x = wide ? std::ldexp((float)((int64_t)(rng() % 2000001) - 1000000), (int)(rng() % 40) - 30)
                               : (float)((int)(rng() % 201) - 100);
    uint32_t *da = dalloc<uint32_t>(a.size()), *db = dalloc<uint32_t>(b.size());
    float *dc = dalloc<float>(c.size()), *dd = dalloc<float>(d.size());
    CK(cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dc, c.data(), c.size() * 4, cudaMemcpyHostToDevice));
    k_mma<<<ncase, 32>>>(da, db, dc, dd);
    SOFT_R(f, cudaGetLastError());
    SOFT_R(f, cudaMemcpy(d.data(), dd, d.size() * 4, cudaMemcpyDeviceToHost));
    for (int cs = 0; cs < ncase; ++cs) {
        ++f.cases;
        float e[32][4];
        E::mma_m16n8k16_bf16(reinterpret_cast<const uint32_t(*)[4]>(&a[cs * 128]), reinterpret_cast<const uint32_t(*)[2]>(&b[cs * 64]),
                             reinterpret_cast<const float(*)[4]>(&c[cs * 128]), e);
        for (int l = 0; l < 32; ++l)
            for (int r = 0; r < 4; ++r) {
                const float g = d[cs * 128 + l * 4 + r], m = e[l][r];
                if (f2u(g) != f2u(m)) {
                    f.maxUlp = std::max(f.maxUlp, ulp_dist(g, m));
                    char buf[200];
                    std::snprintf(buf, sizeof buf, "case %d lane %d reg %d: gpu %.9g (0x%08x) emu %.9g (0x%08x)", cs, l, r, g, f2u(g),
                                  m, f2u(m));
                    f.mismatch(buf);
                }
            }
    }
    cudaFree(da); cudaFree(db); cudaFree(dc); cudaFree(dd);
    f.report();
}

static void family_ldmatrix(int ncase) {
    SKIP_IF_DEAD("ldmatrix");
    Family f{"ldmatrix (x4, x4.trans)"};
    std::vector<unsigned char> img(ncase * 2048);
    std::vector<uint32_t> addr(ncase * 32), out(ncase * 2 * 128);
    for (auto& x : img) x = (unsigned char)rng();
    for (auto& x : addr) x = (uint32_t)(rng() % 128) * 16;
    unsigned char* dimg = dalloc<unsigned char>(img.size());
    uint32_t *daddr = dalloc<uint32_t>(addr.size()), *dout = dalloc<uint32_t>(out.size()), *dbase = dalloc<uint32_t>(1);
    CK(cudaMemcpy(dimg, img.data(), img.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(daddr, addr.data(), addr.size() * 4, cudaMemcpyHostToDevice));
    k_ldmatrix<<<ncase, 32>>>(dimg, daddr, dout, dbase);
    SOFT_R(f, cudaGetLastError());
    SOFT_R(f, cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost));
    for (int cs = 0; cs < ncase; ++cs)
        for (int t = 0; t < 2; ++t) {
            ++f.cases;
            E::SmemWindow w{&img[cs * 2048], 2048};
            uint32_t e[32][4];
            E::ldmatrix_m8n8_b16(w, 4, t == 1, &addr[cs * 32], e);
            for (int l = 0; l < 32; ++l)
                for (int r = 0; r < 4; ++r)
                    if (out[((cs * 2 + t) * 32 + l) * 4 + r] != e[l][r]) {
                        char buf[160];
                        std::snprintf(buf, sizeof buf, "case %d%s lane %d reg %d: gpu 0x%08x emu 0x%08x", cs, t ? " .trans" : "", l, r,
                                      out[((cs * 2 + t) * 32 + l) * 4 + r], e[l][r]);
                        f.mismatch(buf);
                    }
        }
    cudaFree(dimg); cudaFree(daddr); cudaFree(dout); cudaFree(dbase);
    f.report();
}

// the real driver's encoder
typedef CUresult (*EncodeFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                             const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                             CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeFn g_encode = nullptr;

// A bf16 tensor held twice: on the device (for the GPU's map) and on the host (for the emulator's).
struct Tensor {
    std::vector<uint16_t> host;
    uint16_t* dev = nullptr;
    std::vector<cuuint64_t> dims, strides;  // strides in bytes, rank - 1
    void make(std::vector<cuuint64_t> d, uint64_t ldElems, bool ints) {
        dims = d;
        strides.clear();
        uint64_t total = ldElems, s = ldElems * 2;
        for (size_t i = 1; i < d.size(); ++i) {
            strides.push_back(s);
            s *= d[i];
            total *= d[i];
        }
        host.resize(total);
        for (auto& x : host) x = ints ? rand_bf16_int() : E::emu_float_to_bf16_rn(std::ldexp((float)((int)(rng() % 20001) - 10000), -12));
        CK(cudaMalloc(&dev, total * 2));
        CK(cudaMemcpy(dev, host.data(), total * 2, cudaMemcpyHostToDevice));
    }
    ~Tensor() { if (dev) cudaFree(dev); }
    // both maps; false if either encoder refuses
    bool maps(std::vector<cuuint32_t> box, CUtensorMapSwizzle sw, CUtensorMap* gpu, CUtensorMap* emu) const {
        std::vector<cuuint32_t> es(box.size(), 1);
        const cuuint32_t rank = (cuuint32_t)dims.size();
        CUresult r1 = g_encode(gpu, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, dev, dims.data(), strides.data(), box.data(), es.data(),
                               CU_TENSOR_MAP_INTERLEAVE_NONE, sw, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        CUresult r2 = E::tensor_map_encode_tiled(emu, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, rank, (void*)host.data(), dims.data(),
                                                 strides.data(), box.data(), es.data(), CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
                                                 CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        if (r1 != CUDA_SUCCESS || r2 != CUDA_SUCCESS) {
            std::printf("  encode failed: driver %d, emulator %d\n", (int)r1, (int)r2);
            return false;
        }
        return true;
    }
};

static int rand_coord(uint64_t dim, int box) {
    // mostly in range, often straddling either edge
    const int lo = -box + 8, hi = (int)dim - 8;
    return lo + (int)(rng() % (uint64_t)(hi - lo + 1));
}

// One TMA probe: GPU and emulator into a 0xAB-filled region, compared byte for byte.
static void tma_probe(Family& f, const Tensor& t, std::vector<cuuint32_t> box, CUtensorMapSwizzle sw, std::vector<int> coords,
                      uint32_t dstOff) {
    CUtensorMap gm, em;
    if (g_dead) return;
    ++f.cases;
    if (!t.maps(box, sw, &gm, &em)) {
        f.mismatch("encode refused");
        return;
    }
    uint64_t bytes = 2;
    for (auto b : box) bytes *= b;
    unsigned char* dout = dalloc<unsigned char>(TMA_REGION);
    uint32_t* dinfo = dalloc<uint32_t>(2);
    const int rank = (int)box.size();
    k_tma<<<1, 128, TMA_REGION + 1024>>>(gm, rank, coords[0], coords[1], rank > 2 ? coords[2] : 0, dstOff, (uint32_t)bytes, dout, dinfo);
    SOFT(f, cudaGetLastError());
    std::vector<unsigned char> g(TMA_REGION);
    uint32_t info[2];
    SOFT(f, cudaMemcpy(g.data(), dout, TMA_REGION, cudaMemcpyDeviceToHost));
    SOFT(f, cudaMemcpy(info, dinfo, 8, cudaMemcpyDeviceToHost));
    cudaFree(dout);
    cudaFree(dinfo);
    // the emulator: a window whose shared addresses match the GPU's region
    std::vector<unsigned char> win(info[0] + TMA_REGION, 0xAB);
    E::SmemWindow w{win.data(), (uint32_t)win.size()};
    uint32_t eb = 0;
    std::string err;
    try {
        eb = E::tma_load_tiled(w, info[0] + dstOff, &em, rank, coords.data());
    } catch (const E::Fault& e) {
        err = e.what();
    }
    char where[160];
    std::snprintf(where, sizeof where, "box {%u,%u%s} coords {%d,%d%s} dst +%u", box[0], box[1], rank > 2 ? ",..." : "", coords[0],
                  coords[1], rank > 2 ? ",..." : "", dstOff);
    if (!err.empty()) return f.mismatch(std::string(where) + ": emulator fault: " + err);
    if (info[1] == 0) return f.mismatch(std::string(where) + ": GPU mbarrier timed out expecting " + std::to_string(bytes) + " bytes");
    if (eb != bytes) return f.mismatch(std::string(where) + ": emulator complete_tx " + std::to_string(eb));
    for (int i = 0; i < TMA_REGION; ++i)
        if (g[i] != win[info[0] + i]) {
            char buf[120];
            std::snprintf(buf, sizeof buf, ": byte +%d (shared 0x%x) gpu 0x%02x emu 0x%02x", i, info[0] + i, g[i], win[info[0] + i]);
            return f.mismatch(where + std::string(buf));
        }
}

static void family_tma() {
    SKIP_IF_DEAD("tma");
    {
        Family f{"tma-2d (128B swizzle, OOB edges)"};
        for (int cs = 0; cs < 24; ++cs) {
            Tensor t;
            const uint64_t cols = 8 * (4 + rng() % 20), rows = 16 + rng() % 200;
            t.make({cols, rows}, cols + 8 * (rng() % 3), true);
            const cuuint32_t br = (rng() % 2) ? 64 : 128;
            tma_probe(f, t, {64, br}, CU_TENSOR_MAP_SWIZZLE_128B, {rand_coord(cols, 64), rand_coord(rows, (int)br)}, 0);
        }
        f.report();
    }
    {
        Family f{"tma-3d (128B swizzle, {64,64,1} boxes)"};
        for (int cs = 0; cs < 24; ++cs) {
            Tensor t;
            const uint64_t n = 8 * (4 + rng() % 20), k = 8 + rng() % 120, g = 1 + rng() % 4;
            t.make({n, k, g}, n, true);
            tma_probe(f, t, {64, 64, 1}, CU_TENSOR_MAP_SWIZZLE_128B,
                      {rand_coord(n, 64), rand_coord(k, 64), (int)(rng() % (g + 1)) - (cs % 5 == 0 ? 1 : 0)}, 1024 * (rng() % 4));
        }
        f.report();
    }
    {
        Family f{"tma-narrow (64-byte rows with 128B swizzle; no swizzle)"};
        for (int cs = 0; cs < 8; ++cs) {
            Tensor t;
            t.make({96, 96}, 96, true);
            tma_probe(f, t, {32, 32}, cs % 2 ? CU_TENSOR_MAP_SWIZZLE_NONE : CU_TENSOR_MAP_SWIZZLE_128B,
                      {rand_coord(96, 32), rand_coord(96, 32)}, 0);
        }
        f.report();
    }
}

// Last: a destination the hardware might refuse (a fault here ends the context).
static void family_tma_unaligned() {
    SKIP_IF_DEAD("tma-unaligned");
    Family f{"tma-unaligned (dst 128-aligned, not 1024)"};
    for (int cs = 0; cs < 8; ++cs) {
        Tensor t;
        t.make({128, 128}, 128, true);
        tma_probe(f, t, {64, 32}, CU_TENSOR_MAP_SWIZZLE_128B, {rand_coord(128, 64), rand_coord(128, 32)}, 128 * (1 + rng() % 7));
    }
    f.report();
}

template <int TA, int TB, int N>
static void wgmma_case(Family& f, bool ints) {
    if (g_dead) return;
    ++f.cases;
    // operands as the kernels hold them: K-major [rows][K] (box {64, 128} for A / {64, N} for B),
    // MN-major [K][cols] (two boxes {64 mn, 64 k})
    const uint64_t K = 16 + 8 * (rng() % 12);
    Tensor A, B;
    WgLoads la{}, lb{};
    CUtensorMap gA, eA, gB, eB;
    bool ok;
    const int cw = (int)(rng() % 2), half = N == 64 ? (int)(rng() % 2) : 0;
    const int k0 = (int)(rng() % 3) * 8 - 8;  // includes k before 0 (zero-filled rows)
    if (TA == 0) {
        const uint64_t rows = 64 + rng() % 128;
        A.make({K, rows}, K, ints);
        ok = A.maps({64, 128}, CU_TENSOR_MAP_SWIZZLE_128B, &gA, &eA);
        la.n = 1;
        la.c0[0] = k0;
        la.c1[0] = (int)(rng() % rows) - 32;
        la.off[0] = 0;
    } else {
        const uint64_t cols = 64 + 8 * (rng() % 16);
        A.make({cols, K}, cols, ints);
        ok = A.maps({64, 64}, CU_TENSOR_MAP_SWIZZLE_128B, &gA, &eA);
        la.n = 2;
        const int m0 = (int)(rng() % cols) - 16;
        for (int h = 0; h < 2; ++h) { la.c0[h] = m0 + 64 * h; la.c1[h] = k0; la.off[h] = 8192u * h; }
    }
    if (TB == 0) {
        const uint64_t rows = 64 + rng() % 192;
        B.make({K, rows}, K, ints);
        const cuuint32_t br = N == 64 ? 64 : 128;
        ok = ok && B.maps({64, br}, CU_TENSOR_MAP_SWIZZLE_128B, &gB, &eB);
        lb.n = 1;
        lb.c0[0] = k0;
        lb.c1[0] = (int)(rng() % rows) - 32;
        lb.off[0] = 16384u + (uint32_t)half * 8192u;
    } else {
        const uint64_t cols = 64 + 8 * (rng() % 16);
        B.make({cols, K}, cols, ints);
        ok = ok && B.maps({64, 64}, CU_TENSOR_MAP_SWIZZLE_128B, &gB, &eB);
        lb.n = 2;
        const int n0 = (int)(rng() % cols) - 16;
        for (int h = 0; h < 2; ++h) { lb.c0[h] = n0 + 64 * h; lb.c1[h] = k0; lb.off[h] = 16384u + 8192u * h; }
    }
    if (!ok) return f.mismatch("encode refused");
    const uint32_t bytes = (TA == 0 ? 16384u : 16384u) + (TB == 0 ? (N == 64 ? 8192u : 16384u) : 16384u);
    float* dout = dalloc<float>(128 * N / 2);
    unsigned char* dstage = dalloc<unsigned char>(moe_wg::STAGE_BYTES);
    uint32_t* dinfo = dalloc<uint32_t>(2);
    const int smem = moe_wg::STAGE_BYTES + 1024;
    CK(cudaFuncSetAttribute(k_wgmma<TA, TB, N>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    k_wgmma<TA, TB, N><<<1, 128, smem>>>(gA, gB, la, lb, cw, half, bytes, dout, dstage, dinfo);
    SOFT(f, cudaGetLastError());
    std::vector<float> g(128 * N / 2);
    std::vector<unsigned char> gs(moe_wg::STAGE_BYTES);
    uint32_t info[2];
    SOFT(f, cudaMemcpy(g.data(), dout, g.size() * 4, cudaMemcpyDeviceToHost));
    SOFT(f, cudaMemcpy(gs.data(), dstage, gs.size(), cudaMemcpyDeviceToHost));
    SOFT(f, cudaMemcpy(info, dinfo, 8, cudaMemcpyDeviceToHost));
    cudaFree(dout); cudaFree(dstage); cudaFree(dinfo);
    char where[160];
    std::snprintf(where, sizeof where, "m64n%dk16 transA %d transB %d cw %d half %d K %d k0 %d", N, TA, TB, cw, half, (int)K, k0);
    if (info[1] == 0) return f.mismatch(std::string(where) + ": GPU mbarrier timed out");
    const uint32_t stage = info[0];
    std::vector<unsigned char> win(stage + moe_wg::STAGE_BYTES, 0);
    E::SmemWindow w{win.data(), (uint32_t)win.size()};
    static float acc[128][128];
    float* d[128];
    try {
        uint32_t eb = 0;
        for (int i = 0; i < la.n; ++i) { const int32_t c[2] = {la.c0[i], la.c1[i]}; eb += E::tma_load_tiled(w, stage + la.off[i], &eA, 2, c); }
        for (int i = 0; i < lb.n; ++i) { const int32_t c[2] = {lb.c0[i], lb.c1[i]}; eb += E::tma_load_tiled(w, stage + lb.off[i], &eB, 2, c); }
        if (eb != bytes) return f.mismatch(std::string(where) + ": emulator complete_tx " + std::to_string(eb));
        if (std::memcmp(gs.data(), &win[stage], gs.size()) != 0) return f.mismatch(std::string(where) + ": TMA stage image differs");
        for (int t = 0; t < 128; ++t) {
            d[t] = acc[t];
            for (int i = 0; i < N / 2; ++i) acc[t][i] = 7.0f;
        }
        for (int kk = 0; kk < 4; ++kk)
            E::wgmma_m64nNk16_bf16(w, N, moe_wg::desc_a<TA == 1>(stage, cw, kk), moe_wg::desc_b<TB == 1>(stage, half, kk), TA, TB, kk > 0,
                                   d);
    } catch (const E::Fault& e) {
        return f.mismatch(std::string(where) + ": emulator fault: " + e.what());
    }
    for (int t = 0; t < 128; ++t)
        for (int i = 0; i < N / 2; ++i) {
            const float gv = g[t * (N / 2) + i], ev = acc[t][i];
            if (f2u(gv) != f2u(ev)) {
                f.maxUlp = std::max(f.maxUlp, ulp_dist(gv, ev));
                char buf[160];
                std::snprintf(buf, sizeof buf, ": thread %d reg %d gpu %.9g emu %.9g", t, i, gv, ev);
                return f.mismatch(where + std::string(buf));
            }
        }
}

static void family_wgmma(bool ints) {
    SKIP_IF_DEAD(ints ? "wgmma-layout" : "wgmma-numerics");
    Family f{ints ? "wgmma-layout (TMA 128B swizzle, kernel descriptors)" : "wgmma-numerics"};
    for (int r = 0; r < 4; ++r) {
        wgmma_case<0, 0, 128>(f, ints);
        wgmma_case<0, 1, 128>(f, ints);
        wgmma_case<1, 1, 128>(f, ints);
        wgmma_case<1, 0, 128>(f, ints);
        wgmma_case<0, 0, 64>(f, ints);
        wgmma_case<1, 1, 64>(f, ints);
    }
    f.report();
}

static void family_mbar(int nseq) {
    SKIP_IF_DEAD("mbarrier");
    Family f{"mbarrier (arrive / expect_tx / complete_tx, test_wait.parity)"};
    for (int s = 0; s < nseq; ++s) {
        ++f.cases;
        const uint32_t count = 1 + (uint32_t)(rng() % 3);
        E::MbarModel m;
        m.init(count);
        std::vector<int> ops;
        std::vector<uint32_t> vals, want;
        for (int i = 0; i < 40; ++i) {
            int op = (int)(rng() % 4);
            uint32_t v = 16 * (uint32_t)(1 + rng() % 8);
            if ((op == 0 || op == 3) && m.pending == 0) op = 1;
            if (op == 2 && m.tx - (int64_t)v < -4096) op = 1;
            if (op == 1 && m.tx > 4096) op = 2;
            switch (op) {
                case 0: m.arrive(); break;
                case 1: m.expect_tx(v); break;
                case 2: m.complete_tx(v); break;
                default: m.arrive_expect_tx(v); break;
            }
            ops.push_back(op);
            vals.push_back(v);
            want.push_back((m.test_wait_parity(0) ? 1u : 0u) | (m.test_wait_parity(1) ? 2u : 0u));
        }
        int* dops = dalloc<int>(ops.size());
        uint32_t *dvals = dalloc<uint32_t>(vals.size()), *dres = dalloc<uint32_t>(ops.size());
        CK(cudaMemcpy(dops, ops.data(), ops.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dvals, vals.data(), vals.size() * 4, cudaMemcpyHostToDevice));
        k_mbar<<<1, 1>>>(count, dops, dvals, (int)ops.size(), dres);
        SOFT_R(f, cudaGetLastError());
        std::vector<uint32_t> got(ops.size());
        SOFT_R(f, cudaMemcpy(got.data(), dres, got.size() * 4, cudaMemcpyDeviceToHost));
        cudaFree(dops); cudaFree(dvals); cudaFree(dres);
        for (size_t i = 0; i < ops.size(); ++i)
            if (got[i] != want[i]) {
                char buf[160];
                std::snprintf(buf, sizeof buf, "sequence %d (count %u) step %zu op %d value %u: gpu parity bits %u, model %u", s, count, i,
                              ops[i], vals[i], got[i], want[i]);
                f.mismatch(buf);
                break;
            }
    }
    f.report();
}

static void family_encode() {
    Family f{"encode (driver vs emulator: accepted / rejected)"};
    void* dev;
    CK(cudaMalloc(&dev, 1 << 20));
    std::vector<unsigned char> host(1 << 20);
    struct Args {
        const char* what;
        int rank;
        uint64_t off;
        std::vector<cuuint64_t> dims, strides;
        std::vector<cuuint32_t> box, es;
        int sw;
    };
    const Args cases[] = {
        {"kernel layout", 2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 3},
        {"3-D dx layout", 3, 0, {128, 64, 4}, {256, 256 * 64}, {64, 64, 1}, {1, 1, 1}, 3},
        {"stride % 16 != 0", 2, 0, {80, 100}, {168}, {64, 32}, {1, 1}, 3},
        {"box 257", 2, 0, {80, 300}, {176}, {64, 257}, {1, 1}, 0},
        {"inner box 144 B > 128B swizzle", 2, 0, {80, 100}, {176}, {72, 32}, {1, 1}, 3},
        {"inner box 80 B > 64B swizzle", 2, 0, {80, 100}, {176}, {40, 32}, {1, 1}, 2},
        {"inner box 24 B", 2, 0, {80, 100}, {176}, {12, 32}, {1, 1}, 0},
        {"address % 16 == 8", 2, 8, {80, 100}, {176}, {64, 32}, {1, 1}, 3},
        {"dim 0", 2, 0, {0, 100}, {176}, {64, 32}, {1, 1}, 3},
        {"element stride 9", 2, 0, {80, 100}, {176}, {64, 32}, {1, 9}, 3},
        {"element stride 8", 2, 0, {80, 100}, {176}, {64, 32}, {1, 8}, 3},
        {"stride 2^40", 2, 0, {80, 100}, {1ULL << 40}, {64, 32}, {1, 1}, 3},
        {"rank 1", 1, 0, {80}, {}, {64}, {1}, 3},
    };
    for (const Args& a : cases) {
        ++f.cases;
        CUtensorMap m1, m2;
        const CUresult r1 = g_encode(&m1, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, a.rank, (char*)dev + a.off, a.dims.data(), a.strides.data(),
                                     a.box.data(), a.es.data(), CU_TENSOR_MAP_INTERLEAVE_NONE, (CUtensorMapSwizzle)a.sw,
                                     CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        const CUresult r2 = E::tensor_map_encode_tiled(&m2, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, a.rank, host.data() + a.off, a.dims.data(),
                                                       a.strides.data(), a.box.data(), a.es.data(), CU_TENSOR_MAP_INTERLEAVE_NONE,
                                                       (CUtensorMapSwizzle)a.sw, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                                       CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        if ((r1 == CUDA_SUCCESS) != (r2 == CUDA_SUCCESS))
            f.mismatch(std::string(a.what) + ": driver " + std::to_string((int)r1) + ", emulator " + std::to_string((int)r2));
    }
    cudaFree(dev);
    f.report();
}

int main(int argc, char** argv) {
    const uint64_t seed = argc > 1 ? std::strtoull(argv[1], nullptr, 0) : (uint64_t)std::random_device{}();
    std::printf("calibrate: seed %" PRIu64 " (rerun: calibrate %" PRIu64 ")\n", seed, seed);
    rng.seed(seed);
    int ndev = 0;
    const cudaError_t count = cudaGetDeviceCount(&ndev);
    if (count == cudaErrorNoDevice || (count == cudaSuccess && ndev == 0)) {
        std::printf("calibrate: no CUDA device\n");
        return 2;
    }
    if (count != cudaSuccess) {
        std::printf("calibrate: CUDA runtime error: %s (%s)\n", cudaGetErrorName(count), cudaGetErrorString(count));
        return 4;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    std::printf("calibrate: device %s, compute capability %d.%d\n", prop.name, prop.major, prop.minor);
    if (prop.major != 9 || prop.minor != 0) {
        std::printf("calibrate: needs compute capability 9.0 (sm_90a: wgmma, TMA)\n");
        return 2;
    }
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void**)&g_encode, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        g_encode == nullptr) {
        std::printf("calibrate: cuTensorMapEncodeTiled not found in the driver (CUDA 12+ driver needed)\n");
        return 4;
    }
    family_encode();
    family_mma(false, 200);
    family_mma(true, 200);
    family_ldmatrix(100);
    family_tma();
    family_wgmma(true);
    family_wgmma(false);
    family_mbar(50);
    family_tma_unaligned();
    std::printf("calibrate: %s (seed %" PRIu64 ")\n",
                g_bad_families ? "MISMATCHES in layout/semantics families"
                               : g_numerics_families ? "layouts match; numerics differ (accumulation order)" : "all families match",
                seed);
    return g_bad_families ? 1 : g_numerics_families ? 3 : 0;
}
