// moe4j CPU device: host implementations of the PTX instructions the kernels wrap
// (grouped_gemm_mma.cuh, grouped_gemm_wgmma.cuh), as whole-warp / whole-warpgroup functions of
// plain data. The kernel runtime gathers every lane's operands at the instruction (the lanes are
// fibers that meet there) and calls these; the calibration program runs the same functions next
// to the real instructions on a GPU. Each function names the PTX ISA section its semantics follow.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include "cuda.h"

namespace moe4j_emu {

// A kernel fault: the launch fails with this message (memcheck, an illegal operand, a bad
// descriptor...). Thrown by fault().
struct Fault : std::runtime_error {
    using std::runtime_error::runtime_error;
};
[[noreturn]] void fault(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The block's shared memory: host address of shared-state-space address 0, and its size in bytes.
// A shared address a (what __cvta_generic_to_shared returns) lives at base + a, valid when a < size.
struct SmemWindow {
    unsigned char* base;
    uint32_t size;
};

// Whether [p, p + bytes) is inside a live device allocation (set by the runtime; tests may replace it).
extern bool (*global_range_live)(const void* p, size_t bytes);

// ---------------------------------------------------------------------------------------------
// bf16 helpers (prefixed: the kernel emulation header defines __nv_bfloat16 separately).
// ---------------------------------------------------------------------------------------------
float emu_bf16_to_float(uint16_t bits);
// Round to nearest even; NaN stays NaN (quiet), infinities and signed zeros are kept.
uint16_t emu_float_to_bf16_rn(float f);
// Two bf16 packed in a 32-bit register: `lo` in bits 0-15, `hi` in bits 16-31.
inline uint32_t emu_pack_bf16x2(uint16_t lo, uint16_t hi) { return (uint32_t)lo | ((uint32_t)hi << 16); }

// ---------------------------------------------------------------------------------------------
// Shared-memory swizzles (PTX ISA "Tensor swizzling modes" / wgmma "Shared Memory Matrix
// Layout"): the 16-byte chunk index, address bits 4.., is XORed with address bits 7..; 1 bit for
// 32-byte, 2 bits for 64-byte, 3 bits for 128-byte swizzle. Applied to the shared-state-space
// address itself, so a layout that starts on the pattern's repeat (256/512/1024 bytes) sees
// "chunk c of row r at chunk c ^ (r % rowsPerPattern)".
// ---------------------------------------------------------------------------------------------
uint32_t swizzle128(uint32_t byteAddr);
// spanBytes: 0 (or 16) = none, 32, 64 or 128.
uint32_t swizzle_addr(uint32_t byteAddr, uint32_t spanBytes);

// ---------------------------------------------------------------------------------------------
// Warp-level matrix instructions. Arrays are indexed by lane (0..31) and register number.
// ---------------------------------------------------------------------------------------------

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA "Warp Level Matrix Multiply-Accumulate Instructions", "Matrix Fragments
// for mma.m16n8k16 with floating point type"). groupID = lane / 4, tig = lane % 4.
//   A (16x16, row): a[lane][r] packs A[row][col], A[row][col + 1] (low half = lower col), with
//       row = groupID + 8 * (r & 1), col = 2 * tig + 8 * (r >> 1).
//   B (16x8, col):  b[lane][r] packs B[k][n], B[k + 1][n], k = 2 * tig + 8 * r, n = groupID.
//   C/D (16x8 f32): c[lane][r] = C[groupID + 8 * (r >> 1)][2 * tig + (r & 1)].
// Numerics (ours, see ptx_emu.cpp; the calibration program measures the hardware's):
//   acc = C[m][n]; for k = 0..15 ascending: acc = fp32_rn(acc + A[m][k] * B[k][n]); D = acc.
// d may alias c.
void mma_m16n8k16_bf16(const uint32_t a[32][4], const uint32_t b[32][2], const float c[32][4], float d[32][4]);

// ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16 (PTX ISA "Warp-level matrix load instruction: ldmatrix").
// num = 1, 2 or 4 matrices; lanes 8i..8i+7 give the row addresses (shared state space) of
// matrix i (rows of 8 b16 = 16 bytes, 16-byte aligned, inside the window, else fault); lanes
// not used by .x1/.x2 are ignored. out[lane][i], i < num (registers >= num are not written):
//   plain:  {M_i[lane/4][2*(lane%4)], M_i[lane/4][2*(lane%4)+1]}
//   .trans: {M_i[2*(lane%4)][lane/4], M_i[2*(lane%4)+1][lane/4]}
// where M_i[r][c] = b16 element c of the row addressed by lane 8i + r; low half = first element.
void ldmatrix_m8n8_b16(SmemWindow w, int num, bool trans, const uint32_t addr[32], uint32_t out[32][4]);

// ---------------------------------------------------------------------------------------------
// Warpgroup-level MMA: wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16, both operands from
// shared memory through matrix descriptors (PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate": "Matrix Descriptor Format",
// "Shared Memory Matrix Layout", "Register Fragments" for D).
// ---------------------------------------------------------------------------------------------

// A decoded matrix descriptor.
struct WgmmaDesc {
    uint32_t start;       // byte address (bits 0-13, << 4)
    uint32_t lbo;         // leading dimension byte offset (bits 16-29, << 4)
    uint32_t sbo;         // stride dimension byte offset (bits 32-45, << 4)
    uint32_t baseOffset;  // bits 49-51
    uint32_t swizzle;     // bits 62-63: 0 none, 1 128B, 2 64B, 3 32B
    uint32_t spanBytes;   // 128, 64, 32 or 0 (none)
};
WgmmaDesc wgmma_decode_desc(uint64_t desc);

// The shared address (before the swizzle is applied) at which operand element (mn, k), k < 16, of
// a bf16 operand lives, for descriptor d and major-ness mnMajor (imm-trans-a/b = 1). Swizzled
// canonical layouts only (T = 8 bf16 = 16 bytes, S = swizzle span in bytes):
//   K-major  ((8,m),(T,2k)):((S/2 elems, SBO),(1,T)):    start + (mn%8)*S + (mn/8)*SBO + 2k
//   MN-major ((T,S/16,m),(8,k)):((1,T,LBO),(S/2 elems,SBO)):
//            start + (mn%(S/2))*2 + (mn/(S/2))*LBO + (k%8)*S + (k/8)*SBO
// Faults on the no-swizzle mode and on a non-zero base offset (not emulated).
uint32_t wgmma_operand_addr(const WgmmaDesc& d, bool mnMajor, int mn, int k);

// D (64 x N, f32) (+)= A (64 x 16) . B (16 x N). d[t] (t = thread of the warpgroup, 0..127)
// points at that thread's N/2 accumulator registers: warp w = t/32, lane = t%32,
//   d[t][4j + 2h + c] = D[16w + lane/4 + 8h][8j + 2*(lane%4) + c].
// transA/transB: 0 = K-major, 1 = MN-major. scaleD = false: D = A.B (old d ignored).
// N: multiple of 8 in 8..256. Numerics as mma_m16n8k16_bf16 (acc = D or 0, k ascending).
// Faults on a bad N, an unsupported descriptor, or any element outside the window.
void wgmma_m64nNk16_bf16(SmemWindow w, int N, uint64_t descA, uint64_t descB, int transA, int transB, bool scaleD,
                         float* const d[128]);

// ---------------------------------------------------------------------------------------------
// Tensor maps (cuTensorMapEncodeTiled rules: CUDA 13 cuda.h documentation of that function) and
// the bulk tensor copy cp.async.bulk.tensor.{1..5}d.shared::cluster.global.tile (PTX ISA "Tensors" and
// "cp.async.bulk.tensor": tiled mode, bounding box, out-of-bound access, swizzling modes).
// ---------------------------------------------------------------------------------------------

// What an encoded map holds (our own format inside the 128-byte opaque object).
struct TensorMapInfo {
    uint32_t dataType;      // CUtensorMapDataType
    uint32_t rank;          // 1..5
    uint64_t globalAddress;
    uint64_t globalDim[5];
    uint64_t globalStrides[5];  // bytes; [i] is the stride of dimension i + 1 (rank - 1 used)
    uint32_t boxDim[5];
    uint32_t elementStrides[5];
    uint32_t interleave, swizzle, l2Promotion, oobFill;
    uint32_t elemBytes;
};

// Validates the arguments as cuTensorMapEncodeTiled documents and encodes them.
// CUDA_ERROR_INVALID_VALUE on a violated rule; CUDA_ERROR_NOT_SUPPORTED on a documented-valid
// option the emulator does not implement (interleave 16B/32B, swizzle 128B_ATOM_*, packed or
// FTZ/TF32 data types, NaN OOB fill). The map is written only on success.
CUresult tensor_map_encode_tiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType, cuuint32_t tensorRank,
                                 void* globalAddress, const cuuint64_t* globalDim, const cuuint64_t* globalStrides,
                                 const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
                                 CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion l2Promotion, CUtensorMapFloatOOBfill oobFill);

// True (and *out filled when out != nullptr) when map holds a map encoded by
// tensor_map_encode_tiled (magic word and checksum intact).
bool tensor_map_decode(const CUtensorMap* map, TensorMapInfo* out);

// cp.async.bulk.tensor.<rank>d.shared::cluster.global.tile: copies the box whose first element is
// at coords (innermost first, may be negative or past the end) into shared memory at dstAddr.
// Shared layout: the box dense, innermost first (row = boxDim[0] elements), then the map's swizzle
// applied to each byte address; elements outside the tensor are written as zero. Along dims >= 1
// ceil(boxDim[i] / elementStrides[i]) elements are taken, coords[i] + j * elementStrides[i].
// Faults when the map is not a valid encoded map, rank differs, dstAddr is not 128-byte aligned,
// a written byte falls outside the window, or a global byte read is not live (global_range_live).
// Returns the bytes the copy signals to the mbarrier (complete_tx): the whole box, OOB included.
uint32_t tma_load_tiled(SmemWindow w, uint32_t dstAddr, const CUtensorMap* map, int rank, const int32_t* coords);

// ---------------------------------------------------------------------------------------------
// mbarrier as data (PTX ISA "Parallel Synchronization and Communication Instructions: mbarrier": phases, pending arrival count, tx-count).
// A reference model for the runtime and the calibration program; the runtime may keep its own.
// ---------------------------------------------------------------------------------------------
struct MbarModel {
    uint32_t expected = 0;  // arrival count set by init
    uint32_t pending = 0;   // arrivals still missing in the current phase
    int64_t tx = 0;         // tx-count of the current phase
    uint32_t phase = 0;     // number of completed phases (parity = phase & 1)
    void init(uint32_t count);                 // mbarrier.init
    void expect_tx(uint32_t bytes);            // mbarrier.expect_tx (tx-count += bytes)
    void complete_tx(uint32_t bytes);          // mbarrier.complete_tx / bulk copy completion
    void arrive(uint32_t count = 1);           // mbarrier.arrive (pending -= count)
    void arrive_expect_tx(uint32_t bytes) { expect_tx(bytes); arrive(1); }
    // mbarrier.test_wait.parity / try_wait.parity: true when the phase with parity `parity`
    // has completed, i.e. the current phase's parity differs from it.
    bool test_wait_parity(uint32_t parity) const { return (phase & 1u) != (parity & 1u); }
private:
    void maybe_complete();
};

}  // namespace moe4j_emu
