// moe4j CPU device: data-level emulation of the PTX instructions the kernels use (see ptx_emu.h).
// Every function states the PTX ISA section (by title; numbering moves between ISA versions) or
// the CUDA driver documentation its semantics come from. Where the documentation leaves a choice
// (summation order of the tensor-core dot products, shared layout of a box narrower than its
// swizzle span) the choice is stated here and measured by calibration/calibrate.cu on a GPU.
#include "ptx_emu.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace moe4j_emu {

// ---------------------------------------------------------------------------------------------
// Faults and the liveness hook.
// ---------------------------------------------------------------------------------------------

void fault(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw Fault(buf);
}

static bool always_live(const void*, size_t) { return true; }
bool (*global_range_live)(const void* p, size_t bytes) = always_live;

// ---------------------------------------------------------------------------------------------
// bf16 <-> float (PTX ISA "Floating Point Data Types": bf16 = the upper 16 bits of an IEEE
// binary32; cvt.rn.bf16.f32 rounds to nearest even).
// ---------------------------------------------------------------------------------------------

float emu_bf16_to_float(uint16_t bits) {
    const uint32_t u = (uint32_t)bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t emu_float_to_bf16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0) return (uint16_t)((u >> 16) | 0x0040u);  // quiet NaN
    const uint32_t lsb = (u >> 16) & 1u;
    u += 0x7FFFu + lsb;  // ties to even; carries into the exponent overflow to infinity as required
    return (uint16_t)(u >> 16);
}

static inline float lo_bf16(uint32_t r) { return emu_bf16_to_float((uint16_t)(r & 0xFFFFu)); }
static inline float hi_bf16(uint32_t r) { return emu_bf16_to_float((uint16_t)(r >> 16)); }

// ---------------------------------------------------------------------------------------------
// Swizzles (PTX ISA "Tensor swizzling modes"; the same patterns as wgmma's "Shared Memory Matrix
// Layout" swizzle atoms): bits [4, 4+b) of the byte address ^= bits [7, 7+b), b = log2(span/16).
// ---------------------------------------------------------------------------------------------

uint32_t swizzle_addr(uint32_t a, uint32_t spanBytes) {
    uint32_t mask;
    switch (spanBytes) {
        case 32: mask = 1; break;
        case 64: mask = 3; break;
        case 128: mask = 7; break;
        default: return a;  // none
    }
    return a ^ (((a >> 7) & mask) << 4);
}

uint32_t swizzle128(uint32_t a) { return swizzle_addr(a, 128); }

// ---------------------------------------------------------------------------------------------
// The dot-product numerics shared by mma and wgmma (our choice; the PTX ISA only says the
// multiply-add is performed with at least single precision for .f32 accumulators):
// bf16 x bf16 products are exact in binary32 (8-bit significands -> 16 bits) except where they
// underflow or overflow binary32; the sum starts from the accumulator C and adds the 16 products
// in ascending k, each addition rounded to nearest even in binary32. No denormal flushing.
// ---------------------------------------------------------------------------------------------

static inline float dot16(float acc, const float* a, const float* b) {
    for (int k = 0; k < 16; ++k) acc = acc + a[k] * b[k];
    return acc;
}

// ---------------------------------------------------------------------------------------------
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA "Warp Level Matrix
// Multiply-Accumulate Instructions" > "Matrix Fragments for mma.m16n8k16 with floating point
// type": figures for A (.bf16), B (.bf16) and C/D (.f32)).
// ---------------------------------------------------------------------------------------------

void mma_m16n8k16_bf16(const uint32_t a[32][4], const uint32_t b[32][2], const float c[32][4], float d[32][4]) {
    float A[16][16], Bt[8][16], C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int r = 0; r < 4; ++r) {
            // a_{2r}, a_{2r+1}: row groupID (+8 for r odd), columns 2*tig (+8 for r >= 2), +1
            const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
            A[row][col] = lo_bf16(a[lane][r]);
            A[row][col + 1] = hi_bf16(a[lane][r]);
            // c_r: row groupID (+8 for r >= 2), column 2*tig + (r & 1)
            C[g + 8 * (r >> 1)][2 * t + (r & 1)] = c[lane][r];
        }
        for (int r = 0; r < 2; ++r) {
            // b_{2r}, b_{2r+1}: rows (k) 2*tig (+8 for r = 1), +1; column groupID
            const int k = 2 * t + 8 * r;
            Bt[g][k] = lo_bf16(b[lane][r]);
            Bt[g][k + 1] = hi_bf16(b[lane][r]);
        }
    }
    float D[16][8];
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) D[m][n] = dot16(C[m][n], A[m], Bt[n]);
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane >> 2, t = lane & 3;
        for (int r = 0; r < 4; ++r) d[lane][r] = D[g + 8 * (r >> 1)][2 * t + (r & 1)];
    }
}

// ---------------------------------------------------------------------------------------------
// ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16 (PTX ISA "Warp-level matrix load
// instruction: ldmatrix": thread-to-address mapping table and the m8n8 fragment figure; rows are
// 16 bytes and each row address must be 16-byte aligned).
// ---------------------------------------------------------------------------------------------

void ldmatrix_m8n8_b16(SmemWindow w, int num, bool trans, const uint32_t addr[32], uint32_t out[32][4]) {
    if (num != 1 && num != 2 && num != 4) fault("ldmatrix: .x%d is not a valid shape (x1, x2 or x4)", num);
    uint16_t M[4][8][8];
    for (int lane = 0; lane < 8 * num; ++lane) {
        const uint32_t a = addr[lane];
        if (a & 15u) fault("ldmatrix%s.x%d: lane %d row address 0x%x is not 16-byte aligned", trans ? ".trans" : "", num, lane, a);
        if ((uint64_t)a + 16 > w.size)
            fault("ldmatrix%s.x%d: lane %d row address 0x%x (16 bytes) is outside shared memory [0, 0x%x)", trans ? ".trans" : "",
                  num, lane, a, w.size);
        std::memcpy(M[lane >> 3][lane & 7], w.base + a, 16);
    }
    for (int lane = 0; lane < 32; ++lane) {
        const int r = lane >> 2, c = 2 * (lane & 3);
        for (int i = 0; i < num; ++i) {
            const uint16_t e0 = trans ? M[i][c][r] : M[i][r][c];
            const uint16_t e1 = trans ? M[i][c + 1][r] : M[i][r][c + 1];
            out[lane][i] = emu_pack_bf16x2(e0, e1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// wgmma (PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions":
// "Matrix Descriptor Format", "Shared Memory Matrix Layout" (canonical layouts per swizzle mode
// and major-ness), "Register Fragments" > "Matrix D" for m64nNk16 with .f32 accumulators).
// ---------------------------------------------------------------------------------------------

WgmmaDesc wgmma_decode_desc(uint64_t desc) {
    WgmmaDesc d;
    d.start = (uint32_t)(desc & 0x3FFFu) << 4;
    d.lbo = (uint32_t)((desc >> 16) & 0x3FFFu) << 4;
    d.sbo = (uint32_t)((desc >> 32) & 0x3FFFu) << 4;
    d.baseOffset = (uint32_t)((desc >> 49) & 7u);
    d.swizzle = (uint32_t)(desc >> 62);
    static const uint32_t span[4] = {0, 128, 64, 32};
    d.spanBytes = span[d.swizzle];
    return d;
}

uint32_t wgmma_operand_addr(const WgmmaDesc& d, bool mnMajor, int mn, int k) {
    if (d.spanBytes == 0)
        fault("wgmma: descriptor with no-swizzle layout (start 0x%x) is not emulated", d.start);
    if (d.baseOffset != 0)
        fault("wgmma: descriptor base offset %u is not emulated (start 0x%x; tiles must start on the swizzle repeat)",
              d.baseOffset, d.start);
    const uint32_t S = d.spanBytes;
    if (!mnMajor) {
        // K-major ((8,m),(T,2k)):((S/2,SBO),(1,T)) in bf16 units: row = mn, S bytes per row in a
        // group of 8 rows, 8-row groups SBO apart; the 16 k elements contiguous (LBO unused).
        return d.start + (uint32_t)(mn % 8) * S + (uint32_t)(mn / 8) * d.sbo + (uint32_t)k * 2u;
    }
    // MN-major ((T,S/16,m),(8,k)):((1,T,LBO),(S/2,SBO)): S/2 mn elements contiguous in a row of S
    // bytes, the next S/2 mn LBO on; row = k, 8 rows per group, 8-k groups SBO apart.
    const uint32_t per = S / 2;
    return d.start + ((uint32_t)mn % per) * 2u + ((uint32_t)mn / per) * d.lbo + (uint32_t)(k % 8) * S +
           (uint32_t)(k / 8) * d.sbo;
}

static void load_operand(SmemWindow w, const char* which, uint64_t desc, bool mnMajor, int extent, float (*out)[16]) {
    const WgmmaDesc d = wgmma_decode_desc(desc);
    for (int mn = 0; mn < extent; ++mn)
        for (int k = 0; k < 16; ++k) {
            const uint32_t a = swizzle_addr(wgmma_operand_addr(d, mnMajor, mn, k), d.spanBytes);
            if ((uint64_t)a + 2 > w.size)
                fault("wgmma: operand %s element (%s %d, k %d) at shared 0x%x is outside shared memory [0, 0x%x) "
                      "(descriptor 0x%016llx)", which, which[0] == 'A' ? "m" : "n", mn, k, a, w.size, (unsigned long long)desc);
            uint16_t v;
            std::memcpy(&v, w.base + a, 2);
            out[mn][k] = emu_bf16_to_float(v);
        }
}

void wgmma_m64nNk16_bf16(SmemWindow w, int N, uint64_t descA, uint64_t descB, int transA, int transB, bool scaleD,
                         float* const d[128]) {
    if (N < 8 || N > 256 || N % 8 != 0) fault("wgmma: m64n%dk16 is not a valid shape (N a multiple of 8 in 8..256)", N);
    static thread_local float A[64][16], Bt[256][16];
    load_operand(w, "A", descA, transA != 0, 64, A);
    load_operand(w, "B", descB, transB != 0, N, Bt);
    for (int t = 0; t < 128; ++t) {
        const int warp = t >> 5, lane = t & 31;
        float* r = d[t];
        for (int j = 0; j < N / 8; ++j)
            for (int h = 0; h < 2; ++h)
                for (int c = 0; c < 2; ++c) {
                    const int m = 16 * warp + (lane >> 2) + 8 * h, n = 8 * j + 2 * (lane & 3) + c;
                    float& acc = r[4 * j + 2 * h + c];
                    acc = dot16(scaleD ? acc : 0.0f, A[m], Bt[n]);
                }
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor maps. Encoding rules: CUDA 13 driver API documentation of cuTensorMapEncodeTiled
// (cuda.h). Our opaque format (little endian, inside CUtensorMap's 128 bytes):
//   [0, 8) magic, [8, 120) the Packed fields below, [120, 128) FNV-1a 64 of bytes [0, 120).
// ---------------------------------------------------------------------------------------------

namespace {

constexpr uint64_t MAP_MAGIC = 0x314D54344A454F4DULL;  // "MOEJ4TM1" read little endian

#pragma pack(push, 1)
struct Packed {
    uint64_t magic;
    uint64_t address;
    uint64_t dims[5];
    uint64_t strides[4];
    uint16_t box[5];
    uint8_t estr[5];
    uint8_t dataType, rank, interleave, swizzle, l2, oob;
};
#pragma pack(pop)
static_assert(sizeof(Packed) <= 120, "tensor map fields must leave room for the checksum");

uint64_t fnv1a(const unsigned char* p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

// Element size in bytes of the data types the shim declares (0 for an unknown value).
uint32_t elem_bytes(uint32_t t) {
    switch (t) {
        case 0: return 1;                    // UINT8
        case 1: case 6: case 9: return 2;    // UINT16, FLOAT16, BFLOAT16
        case 2: case 3: case 7: case 10: case 11: case 12: return 4;  // (U)INT32, FLOAT32(_FTZ), TFLOAT32(_FTZ)
        case 4: case 5: case 8: return 8;    // (U)INT64, FLOAT64
        default: return 0;
    }
}

bool is_float_type(uint32_t t) { return t >= 6 && t <= 12; }

}  // namespace

CUresult tensor_map_encode_tiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType, cuuint32_t tensorRank,
                                 void* globalAddress, const cuuint64_t* globalDim, const cuuint64_t* globalStrides,
                                 const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
                                 CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion l2Promotion, CUtensorMapFloatOOBfill oobFill) {
    const uint32_t type = (uint32_t)tensorDataType, il = (uint32_t)interleave, sw = (uint32_t)swizzle;
    const uint32_t l2 = (uint32_t)l2Promotion, oob = (uint32_t)oobFill, rank = tensorRank;
    // "tensorMap address must be aligned to 64 bytes"
    if (tensorMap == nullptr || ((uintptr_t)tensorMap & 63u) != 0) return CUDA_ERROR_INVALID_VALUE;
    // enum ranges (CUDA 13 values: data types 0..15, interleave 0..2, swizzle 0..6, L2 0..3, OOB 0..1)
    if (type > 15 || il > 2 || sw > 6 || l2 > 3 || oob > 1) return CUDA_ERROR_INVALID_VALUE;
    // "tensorRank must be non-zero and <= 5; interleave != NONE requires rank >= 3"
    if (rank == 0 || rank > 5 || (il != 0 && rank < 3)) return CUDA_ERROR_INVALID_VALUE;
    if (globalDim == nullptr || boxDim == nullptr || elementStrides == nullptr || (rank > 1 && globalStrides == nullptr))
        return CUDA_ERROR_INVALID_VALUE;
    // "globalAddress must be 16 byte aligned; 32 with INTERLEAVE_32B or the 16U6/16U4_ALIGN16B types"
    const uintptr_t ga = (uintptr_t)globalAddress;
    const bool align32 = il == 2 || type == 14 || type == 15;
    if ((ga & 15u) != 0 || (align32 && (ga & 31u) != 0)) return CUDA_ERROR_INVALID_VALUE;
    // "globalDim must be non-zero and <= 2^32"
    for (uint32_t i = 0; i < rank; ++i)
        if (globalDim[i] == 0 || globalDim[i] > (1ULL << 32)) return CUDA_ERROR_INVALID_VALUE;
    if ((type == 14 || type == 15) && globalDim[0] % 128 != 0) return CUDA_ERROR_INVALID_VALUE;
    if (type == 13 && globalDim[0] % 2 != 0) return CUDA_ERROR_INVALID_VALUE;
    // "globalStrides must be a multiple of 16 (32 with INTERLEAVE_32B / ALIGN16B types) and < 2^40"
    for (uint32_t i = 0; i + 1 < rank; ++i) {
        const uint64_t s = globalStrides[i];
        if (s % 16 != 0 || s >= (1ULL << 40) || (align32 && s % 32 != 0)) return CUDA_ERROR_INVALID_VALUE;
    }
    // element size (the packed types: bits per value / 8 is fractional; they are not emulated)
    const uint32_t eb = elem_bytes(type);
    // "boxDim must be non-zero and <= 256; with INTERLEAVE_NONE boxDim[0] * elementSize a multiple
    //  of 16 bytes; the ALIGN16B packed types need boxDim[0] == 128"
    for (uint32_t i = 0; i < rank; ++i)
        if (boxDim[i] == 0 || boxDim[i] > 256) return CUDA_ERROR_INVALID_VALUE;
    if ((type == 14 || type == 15) && boxDim[0] != 128) return CUDA_ERROR_INVALID_VALUE;
    uint64_t innerBytes = 0;
    if (eb != 0) innerBytes = (uint64_t)boxDim[0] * eb;
    else if (type == 13 || type == 14) innerBytes = (uint64_t)boxDim[0] / 2;  // 4-bit values, ALIGN8B / 16B
    else innerBytes = (uint64_t)boxDim[0] * 3 / 4;                            // 6-bit values
    if (il == 0 && innerBytes % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
    // "elementStrides must be non-zero and <= 8"
    for (uint32_t i = 0; i < rank; ++i)
        if (elementStrides[i] == 0 || elementStrides[i] > 8) return CUDA_ERROR_INVALID_VALUE;
    // "INTERLEAVE_32B requires SWIZZLE_32B"; "16U6_ALIGN16B requires INTERLEAVE_NONE"
    if (il == 2 && sw != 1) return CUDA_ERROR_INVALID_VALUE;
    if (type == 15 && il != 0) return CUDA_ERROR_INVALID_VALUE;
    // "with INTERLEAVE_NONE and a swizzle, the inner box dimension in bytes <= the swizzle span"
    static const uint32_t span[7] = {0, 32, 64, 128, 128, 128, 128};
    if (il == 0 && sw != 0 && innerBytes > span[sw]) return CUDA_ERROR_INVALID_VALUE;
    // "NAN_REQUEST_ZERO_FMA only for floating-point (non-packed) types"
    if (oob == 1 && !is_float_type(type)) return CUDA_ERROR_INVALID_VALUE;

    // documented-valid options the emulator does not implement
    if (eb == 0 || type >= 10 || il != 0 || sw > 3 || oob != 0) return CUDA_ERROR_NOT_SUPPORTED;

    Packed p;
    std::memset(&p, 0, sizeof p);
    p.magic = MAP_MAGIC;
    p.address = (uint64_t)ga;
    for (uint32_t i = 0; i < rank; ++i) {
        p.dims[i] = globalDim[i];
        p.box[i] = (uint16_t)boxDim[i];
        p.estr[i] = (uint8_t)elementStrides[i];
        if (i + 1 < rank) p.strides[i] = globalStrides[i];
    }
    p.dataType = (uint8_t)type;
    p.rank = (uint8_t)rank;
    p.interleave = (uint8_t)il;
    p.swizzle = (uint8_t)sw;
    p.l2 = (uint8_t)l2;
    p.oob = (uint8_t)oob;
    unsigned char bytes[128];
    std::memset(bytes, 0, sizeof bytes);
    std::memcpy(bytes, &p, sizeof p);
    const uint64_t h = fnv1a(bytes, 120);
    std::memcpy(bytes + 120, &h, 8);
    std::memcpy(tensorMap, bytes, 128);
    return CUDA_SUCCESS;
}

bool tensor_map_decode(const CUtensorMap* map, TensorMapInfo* out) {
    if (map == nullptr) return false;
    unsigned char bytes[128];
    std::memcpy(bytes, map, 128);
    Packed p;
    std::memcpy(&p, bytes, sizeof p);
    uint64_t h;
    std::memcpy(&h, bytes + 120, 8);
    if (p.magic != MAP_MAGIC || h != fnv1a(bytes, 120)) return false;
    if (p.rank < 1 || p.rank > 5 || elem_bytes(p.dataType) == 0) return false;
    if (out != nullptr) {
        std::memset(out, 0, sizeof *out);
        out->dataType = p.dataType;
        out->rank = p.rank;
        out->globalAddress = p.address;
        for (int i = 0; i < 5; ++i) {
            out->globalDim[i] = p.dims[i];
            out->boxDim[i] = p.box[i];
            out->elementStrides[i] = p.estr[i];
            if (i < 4) out->globalStrides[i] = p.strides[i];
        }
        out->interleave = p.interleave;
        out->swizzle = p.swizzle;
        out->l2Promotion = p.l2;
        out->oobFill = p.oob;
        out->elemBytes = elem_bytes(p.dataType);
    }
    return true;
}

// cp.async.bulk.tensor.<n>d.shared::cluster.global.tile (PTX ISA "Data Movement and Conversion
// Instructions: cp.async.bulk.tensor"; "Tensors" > "Tiled mode" (bounding box, traversal stride),
// "Out of Bound Access" (OOB elements of a load are filled: zero with OOB_FILL_NONE), "Tensor
// swizzling modes"; the shared-memory destination must be 128-byte aligned).
// Our reading of the shared layout: the box is written densely in traversal order (dimension 0
// fastest, row pitch = elements along dim 0 * element size), then each byte address is swizzled
// with the map's span. For the kernels' maps (inner box = 128 bytes = the span) this is "chunk c
// of row r at chunk c ^ (r % 8)" from a 1024-byte aligned destination; narrower boxes are a
// calibration item.
uint32_t tma_load_tiled(SmemWindow w, uint32_t dstAddr, const CUtensorMap* map, int rank, const int32_t* coords) {
    TensorMapInfo m;
    if (!tensor_map_decode(map, &m))
        fault("cp.async.bulk.tensor.%dd: tensor map at %p is not a valid encoded map (zeroed, garbage, or modified)", rank,
              (const void*)map);
    if ((uint32_t)rank != m.rank)
        fault("cp.async.bulk.tensor.%dd: the tensor map at %p has rank %u", rank, (const void*)map, m.rank);
    if (dstAddr & 127u) fault("cp.async.bulk.tensor.%dd: shared destination 0x%x is not 128-byte aligned", rank, dstAddr);
    static const uint32_t span[4] = {0, 32, 64, 128};
    const uint32_t S = span[m.swizzle];
    const uint32_t eb = m.elemBytes;
    uint32_t cnt[5] = {1, 1, 1, 1, 1};
    uint64_t rows = 1;
    cnt[0] = m.boxDim[0];  // elementStrides[0] is ignored with INTERLEAVE_NONE
    for (int i = 1; i < rank; ++i) {
        cnt[i] = (m.boxDim[i] + m.elementStrides[i] - 1) / m.elementStrides[i];
        rows *= cnt[i];
    }
    const uint32_t rowBytes = cnt[0] * eb;
    const uint64_t total = rows * rowBytes;
    // window check over every 16-byte chunk's swizzled position (the swizzle stays inside 128 bytes)
    for (uint64_t off = 0; off < total; off += 16) {
        const uint64_t a = swizzle_addr((uint32_t)(dstAddr + off), S);
        if (dstAddr + off + 16 > 0xFFFFFFFFull || a + 16 > w.size)
            fault("cp.async.bulk.tensor.%dd: box of %llu bytes at shared 0x%x does not fit shared memory [0, 0x%x)", rank,
                  (unsigned long long)total, dstAddr, w.size);
    }
    unsigned char row[256 * 8];
    const unsigned char* gbase = reinterpret_cast<const unsigned char*>((uintptr_t)m.globalAddress);
    uint32_t idx[5] = {0, 0, 0, 0, 0};  // traversal index along dims 1..rank-1
    for (uint64_t r = 0; r < rows; ++r) {
        // this row's outer coordinates
        bool inside = true;
        uint64_t goff = 0;
        for (int i = 1; i < rank; ++i) {
            const int64_t c = (int64_t)coords[i] + (int64_t)idx[i] * m.elementStrides[i];
            if (c < 0 || c >= (int64_t)m.globalDim[i]) inside = false;
            else goff += (uint64_t)c * m.globalStrides[i - 1];
        }
        std::memset(row, 0, rowBytes);
        if (inside) {
            const int64_t c0 = coords[0];
            const int64_t lo = c0 < 0 ? -c0 : 0;                                              // first in-bounds j
            const int64_t hi = std::min<int64_t>(cnt[0], (int64_t)m.globalDim[0] - c0);      // one past the last
            if (hi > lo) {
                const unsigned char* src = gbase + goff + (uint64_t)(c0 + lo) * eb;
                const size_t n = (size_t)(hi - lo) * eb;
                if (!global_range_live(src, n))
                    fault("cp.async.bulk.tensor.%dd: global read [%p, +%zu) (box row %llu) is outside any live allocation",
                          rank, (const void*)src, n, (unsigned long long)r);
                std::memcpy(row + lo * eb, src, n);
            }
        }
        for (uint32_t off = 0; off < rowBytes; off += 16) {
            const uint32_t a = swizzle_addr(dstAddr + (uint32_t)(r * rowBytes) + off, S);
            std::memcpy(w.base + a, row + off, 16);
        }
        for (int i = 1; i < rank; ++i) {
            if (++idx[i] < cnt[i]) break;
            idx[i] = 0;
        }
    }
    return (uint32_t)total;
}

// ---------------------------------------------------------------------------------------------
// mbarrier (PTX ISA "Parallel Synchronization and Communication Instructions: mbarrier":
// "Phase completion" = pending arrival count and tx-count both zero; the phase then advances and
// the pending count is reset to the expected count; expect-tx increases, complete-tx decreases
// the tx-count; test_wait/try_wait.parity P succeed once the phase of parity P has completed).
// ---------------------------------------------------------------------------------------------

void MbarModel::init(uint32_t count) {
    expected = count;
    pending = count;
    tx = 0;
    phase = 0;
}

void MbarModel::maybe_complete() {
    if (pending == 0 && tx == 0) {
        ++phase;
        pending = expected;
    }
}

void MbarModel::expect_tx(uint32_t bytes) {
    tx += bytes;
    maybe_complete();
}

void MbarModel::complete_tx(uint32_t bytes) {
    tx -= bytes;
    maybe_complete();
}

void MbarModel::arrive(uint32_t count) {
    if (count > pending)
        fault("mbarrier.arrive: %u arrivals with only %u pending in phase %u (undefined behaviour)", count, pending, phase);
    pending -= count;
    maybe_complete();
}

}  // namespace moe4j_emu
