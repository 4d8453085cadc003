// Standalone tests of native/cpudevice/ptx_emu.cpp (no GPU, no test framework):
//   native/cpudevice/test/run-ptx-emu-test.sh   (g++ -std=c++17 -O1 -I native/cpudevice/include
//   -I native/cpudevice test/ptx_emu_test.cpp ptx_emu.cpp)
// One line per check; exit status 1 if any check fails. The expected layouts are written here a
// second time, by hand from the PTX ISA figures (lane / register / half for every element), in a
// different form from ptx_emu.cpp, and "planted bug" checks show that a one-index mistake in those
// layouts is caught by the same comparisons.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ptx_emu.h"

using namespace moe4j_emu;

static int g_failures = 0, g_checks = 0;

static void check(bool ok, const std::string& name, const std::string& detail = "") {
    ++g_checks;
    if (ok) {
        std::printf("PASS %s\n", name.c_str());
    } else {
        ++g_failures;
        std::printf("FAIL %s%s%s\n", name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
    }
}

// Runs f, expecting a Fault whose message contains `needle`.
static void check_fault(const std::string& name, const char* needle, const std::function<void()>& f) {
    try {
        f();
        check(false, name, "no fault");
    } catch (const Fault& e) {
        const bool ok = std::strstr(e.what(), needle) != nullptr;
        check(ok, name, ok ? "" : std::string("message \"") + e.what() + "\" lacks \"" + needle + "\"");
    }
}

static uint16_t bf(float f) { return emu_float_to_bf16_rn(f); }
static float fl(uint16_t b) { return emu_bf16_to_float(b); }
static uint32_t f2u(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// ---------------------------------------------------------------------------------------------
// Hand-derived mma.m16n8k16 fragment positions (PTX ISA figures "MMA .m16n8k16 fragment layout
// for matrix A / B / accumulator C/D" with .bf16 / .f32): where does element (row, col) live?
// ---------------------------------------------------------------------------------------------
struct Pos { int lane, reg, half; };
// A[m][k]: rows 0-7 in a0-a1 / a4-a5 (regs 0, 2), rows 8-15 in a2-a3 / a6-a7 (regs 1, 3);
// k 0-7 in regs 0-1, k 8-15 in regs 2-3; lane = 4 * (m % 8) + (k % 8) / 2, half = k % 2.
static Pos posA(int m, int k) { return {4 * (m % 8) + (k % 8) / 2, (m / 8) + 2 * (k / 8), k % 2}; }
// B[k][n]: lane = 4 * n + (k % 8) / 2, register k / 8, half k % 2.
static Pos posB(int k, int n) { return {4 * n + (k % 8) / 2, k / 8, k % 2}; }
// C/D[m][n]: lane = 4 * (m % 8) + n / 2, register 2 * (m / 8) + n % 2.
static Pos posD(int m, int n, bool plantBug = false) {
    if (plantBug) return {4 * (m % 8) + n / 2, (m / 8) + 2 * (n % 2), 0};  // rows/cols register bits swapped
    return {4 * (m % 8) + n / 2, 2 * (m / 8) + n % 2, 0};
}

static void set_half(uint32_t& r, int half, uint16_t v) {
    r = half ? ((r & 0xFFFFu) | ((uint32_t)v << 16)) : ((r & 0xFFFF0000u) | v);
}

// Runs the emulated mma on logical matrices (bf16 A[16][16], B[16][8], f32 C[16][8]) through the
// hand-derived layouts and returns D as a matrix.
static void run_mma(const uint16_t A[16][16], const uint16_t B[16][8], const float C[16][8], float D[16][8],
                    bool plantBug = false) {
    uint32_t a[32][4] = {}, b[32][2] = {};
    float c[32][4] = {}, d[32][4] = {};
    for (int m = 0; m < 16; ++m)
        for (int k = 0; k < 16; ++k) { Pos p = posA(m, k); set_half(a[p.lane][p.reg], p.half, A[m][k]); }
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 8; ++n) { Pos p = posB(k, n); set_half(b[p.lane][p.reg], p.half, B[k][n]); }
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) { Pos p = posD(m, n, plantBug); c[p.lane][p.reg] = C[m][n]; }
    mma_m16n8k16_bf16(a, b, c, d);
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) { Pos p = posD(m, n, plantBug); D[m][n] = d[p.lane][p.reg]; }
}

// The documented numerics, written out: C first, then k ascending, binary32 round to nearest.
static float ref_dot(float c, const float* a, int astride, const float* b, int bstride) {
    float acc = c;
    for (int k = 0; k < 16; ++k) acc = acc + a[k * astride] * b[k * bstride];
    return acc;
}

static void test_bf16() {
    check(bf(1.0f) == 0x3F80 && bf(-2.0f) == 0xC000, "bf16: exact values");
    check(bf(fl(0x3F80) + std::ldexp(1.0f, -8)) == 0x3F80, "bf16: tie rounds to even (down)");
    check(bf(fl(0x3F81) + std::ldexp(1.0f, -8)) == 0x3F82, "bf16: tie rounds to even (up)");
    check(bf(3.4028234e38f) == 0x7F80 && bf(3.3895e38f) == 0x7F7F, "bf16: overflow rounds to infinity");
    check((bf(std::nanf("")) & 0x7FC0) == 0x7FC0, "bf16: NaN stays a quiet NaN");
    check(bf(-0.0f) == 0x8000, "bf16: negative zero kept");
}

static void test_mma() {
    // Single-element probes: A[m][k] = 1, B[k][n] = 2, everything else 0: exactly D[m][n] = 2, at
    // the hand-derived lane/register. Exhaustive over m, k, n.
    bool ok = true;
    std::string detail;
    for (int m = 0; m < 16 && ok; ++m)
        for (int k = 0; k < 16 && ok; ++k)
            for (int n = 0; n < 8 && ok; ++n) {
                uint32_t a[32][4] = {}, b[32][2] = {};
                float c[32][4] = {}, d[32][4];
                Pos pa = posA(m, k), pb = posB(k, n), pd = posD(m, n);
                set_half(a[pa.lane][pa.reg], pa.half, bf(1.0f));
                set_half(b[pb.lane][pb.reg], pb.half, bf(2.0f));
                mma_m16n8k16_bf16(a, b, c, d);
                for (int l = 0; l < 32; ++l)
                    for (int r = 0; r < 4; ++r) {
                        const float want = (l == pd.lane && r == pd.reg) ? 2.0f : 0.0f;
                        if (d[l][r] != want) {
                            ok = false;
                            char buf[160];
                            std::snprintf(buf, sizeof buf, "A(%d,%d) B(%d,%d): lane %d reg %d = %g, want %g", m, k, k, n, l, r,
                                          d[l][r], want);
                            detail = buf;
                        }
                    }
            }
    check(ok, "mma: single-element probes, all 16x16x8 (A,B) positions light exactly D lane/reg", detail);

    // The figure, spot-checked: lane 5 (groupID 1, threadID_in_group 1) holds A[1][2..3] in a reg 0,
    // A[9][2..3] in reg 1, A[1][10..11] in reg 2, A[9][10..11] in reg 3; B[2..3][1] in b reg 0,
    // B[10..11][1] in reg 1; D[1][2..3] in d regs 0-1, D[9][2..3] in d regs 2-3.
    check(posA(1, 2).lane == 5 && posA(1, 3).half == 1 && posA(9, 2).reg == 1 && posA(1, 10).reg == 2 &&
              posA(9, 11).reg == 3 && posB(2, 1).lane == 5 && posB(10, 1).reg == 1 && posD(1, 3).lane == 5 &&
              posD(1, 3).reg == 1 && posD(9, 2).reg == 2,
          "mma: hand layout agrees with the ISA figure at lane 5");

    // C passes through to the same place: C = tag, A = B = 0.
    {
        uint16_t A[16][16] = {}, B[16][8] = {};
        float C[16][8], D[16][8];
        for (int m = 0; m < 16; ++m)
            for (int n = 0; n < 8; ++n) C[m][n] = (float)(m * 8 + n + 1);
        run_mma(A, B, C, D);
        ok = true;
        for (int m = 0; m < 16; ++m)
            for (int n = 0; n < 8; ++n) ok &= D[m][n] == C[m][n];
        check(ok, "mma: C fragment passes through to D unchanged (A = B = 0)");
    }

    // Random full case against a naive GEMM with the documented order, bit exact.
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> u(-4.0f, 4.0f);
    uint16_t A[16][16], B[16][8];
    float Af[16][16], Bf[16][8], C[16][8], D[16][8];
    for (int m = 0; m < 16; ++m)
        for (int k = 0; k < 16; ++k) { A[m][k] = bf(u(rng) * (k % 5 == 0 ? 1000.0f : 1.0f)); Af[m][k] = fl(A[m][k]); }
    for (int k = 0; k < 16; ++k)
        for (int n = 0; n < 8; ++n) { B[k][n] = bf(u(rng)); Bf[k][n] = fl(B[k][n]); }
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) C[m][n] = u(rng);
    auto compare = [&](bool plantBug) {
        run_mma(A, B, C, D, plantBug);
        int bad = 0;
        for (int m = 0; m < 16; ++m)
            for (int n = 0; n < 8; ++n)
                if (f2u(D[m][n]) != f2u(ref_dot(C[m][n], Af[m], 1, &Bf[0][n], 8))) ++bad;
        return bad;
    };
    int bad = compare(false);
    check(bad == 0, "mma: random 16x8x16 case equals the naive GEMM bit for bit", std::to_string(bad) + " mismatches");
    bad = compare(true);
    check(bad > 0, "mma: planted bug (D register index rows/cols swapped) is detected",
          "the comparison did not notice the wrong layout");

    // Summation order is observable: C = 2^24, 16 products of 1: adding 1 to 2^24 rounds back (tie
    // to even) each time, so the documented order gives exactly 2^24 (a products-first sum would
    // give 2^24 + 16).
    {
        uint16_t A1[16][16], B1[16][8];
        float C1[16][8], D1[16][8];
        for (int m = 0; m < 16; ++m)
            for (int k = 0; k < 16; ++k) A1[m][k] = bf(1.0f);
        for (int k = 0; k < 16; ++k)
            for (int n = 0; n < 8; ++n) B1[k][n] = bf(1.0f);
        for (int m = 0; m < 16; ++m)
            for (int n = 0; n < 8; ++n) C1[m][n] = 16777216.0f;
        run_mma(A1, B1, C1, D1);
        check(D1[3][5] == 16777216.0f, "mma: documented order (C first, then k ascending, fp32 rn each step)");
    }
    // d may alias c
    {
        uint32_t a[32][4] = {}, b[32][2] = {};
        float cd[32][4];
        for (int l = 0; l < 32; ++l)
            for (int r = 0; r < 4; ++r) cd[l][r] = (float)(l * 4 + r);
        Pos pa = posA(0, 0), pb = posB(0, 0);
        set_half(a[pa.lane][pa.reg], 0, bf(1.0f));
        set_half(b[pb.lane][pb.reg], 0, bf(1.0f));
        mma_m16n8k16_bf16(a, b, cd, cd);
        check(cd[0][0] == 1.0f && cd[0][1] == 1.0f && cd[31][3] == 127.0f, "mma: d aliasing c accumulates in place");
    }
}

// ---------------------------------------------------------------------------------------------
// ldmatrix
// ---------------------------------------------------------------------------------------------
static void test_ldmatrix() {
    std::vector<unsigned char> smem(4096);
    for (size_t i = 0; i < smem.size() / 2; ++i) {
        const uint16_t tag = (uint16_t)i;  // element tag = its halfword address
        std::memcpy(&smem[2 * i], &tag, 2);
    }
    SmemWindow w{smem.data(), (uint32_t)smem.size()};
    uint32_t addr[32];
    // matrix i row r at 0x200*i + 0x30*r + 0x40 (scattered, padded rows)
    for (int l = 0; l < 32; ++l) addr[l] = 0x200u * (l / 8) + 0x30u * (l % 8) + 0x40u;
    auto tag = [&](int matrix, int row, int col) { return (uint16_t)((addr[8 * matrix + row] + 2 * col) / 2); };
    for (int num : {1, 2, 4}) {
        for (bool trans : {false, true}) {
            uint32_t a2[32];
            std::memcpy(a2, addr, sizeof a2);
            for (int l = 8 * num; l < 32; ++l) a2[l] = 0xFFFFFFF3u;  // unused lanes: garbage must be ignored
            uint32_t out[32][4];
            for (auto& o : out)
                for (auto& r : o) r = 0xDEADBEEFu;
            ldmatrix_m8n8_b16(w, num, trans, a2, out);
            bool ok = true;
            for (int l = 0; l < 32; ++l)
                for (int i = 0; i < 4; ++i) {
                    uint32_t want;
                    if (i >= num) want = 0xDEADBEEFu;
                    else if (!trans) want = emu_pack_bf16x2(tag(i, l / 4, 2 * (l % 4)), tag(i, l / 4, 2 * (l % 4) + 1));
                    else want = emu_pack_bf16x2(tag(i, 2 * (l % 4), l / 4), tag(i, 2 * (l % 4) + 1, l / 4));
                    ok &= out[l][i] == want;
                }
            check(ok, std::string("ldmatrix: .x") + std::to_string(num) + (trans ? ".trans" : "") +
                          " fragment (every lane/register; unused lanes and registers untouched)");
        }
    }
    // Spot checks from the figure: lane 0 gets row 0 elements 0,1; lane 31 row 7 elements 6,7;
    // .trans: lane 1 gets column 0 of rows 2 and 3.
    {
        uint32_t out[32][4];
        ldmatrix_m8n8_b16(w, 1, false, addr, out);
        bool ok = out[0][0] == emu_pack_bf16x2(tag(0, 0, 0), tag(0, 0, 1)) && out[31][0] == emu_pack_bf16x2(tag(0, 7, 6), tag(0, 7, 7));
        ldmatrix_m8n8_b16(w, 1, true, addr, out);
        ok &= out[1][0] == emu_pack_bf16x2(tag(0, 2, 0), tag(0, 3, 0));
        check(ok, "ldmatrix: figure spot checks (lane 0, lane 31, .trans lane 1)");
        // planted bug: a .trans model that forgets to transpose is caught
        bool caught = false;
        for (int l = 0; l < 32; ++l)
            caught |= out[l][0] != emu_pack_bf16x2(tag(0, l / 4, 2 * (l % 4)), tag(0, l / 4, 2 * (l % 4) + 1));
        check(caught, "ldmatrix: planted bug (.trans read as plain) is detected");
    }
    check_fault("ldmatrix: unaligned row address faults, naming lane and address", "lane 5 row address 0x48", [&] {
        uint32_t a2[32], out[32][4];
        std::memcpy(a2, addr, sizeof a2);
        a2[5] = 0x48;
        ldmatrix_m8n8_b16(w, 1, false, a2, out);
    });
    check_fault("ldmatrix: row outside the window faults", "lane 20", [&] {
        uint32_t a2[32], out[32][4];
        std::memcpy(a2, addr, sizeof a2);
        a2[20] = 4096 - 8 + 8;  // aligned, but the 16 bytes end past the window
        ldmatrix_m8n8_b16(w, 4, true, a2, out);
    });
    check_fault("ldmatrix: .x3 is rejected", ".x3", [&] {
        uint32_t out[32][4];
        ldmatrix_m8n8_b16(w, 3, false, addr, out);
    });
}

// ---------------------------------------------------------------------------------------------
// wgmma descriptors and layouts. Local copy of grouped_gemm_wgmma.cuh's descriptor helpers (that
// header needs the CUDA headers), as WgmmaLayoutModelTest checks them.
// ---------------------------------------------------------------------------------------------
namespace kern {
constexpr uint32_t SBO_BYTES = 1024, LBO_KMAJOR = 16, BOX_BYTES = 8192, LBO_MN = BOX_BYTES;
constexpr int A_BYTES = 16384, B_BYTES = 16384;
constexpr int KSTEP_KMAJOR = 32 >> 4, KSTEP_MN = (16 * 128) >> 4;
uint64_t desc_bits(uint32_t a, uint32_t lbo) {
    return (uint64_t)((a & 0x3FFFF) >> 4) | (uint64_t)((lbo & 0x3FFFF) >> 4) << 16 | (uint64_t)(SBO_BYTES >> 4) << 32 |
           (uint64_t)1 << 62;
}
uint64_t desc_a(bool mn, uint32_t stage, int cw, int kk) {
    return desc_bits(stage + cw * BOX_BYTES, mn ? LBO_MN : LBO_KMAJOR) + (uint64_t)((mn ? KSTEP_MN : KSTEP_KMAJOR) * kk);
}
uint64_t desc_b(bool mn, uint32_t stage, int half, int kk) {
    return desc_bits(stage + A_BYTES + half * (B_BYTES / 2), mn ? LBO_MN : LBO_KMAJOR) +
           (uint64_t)((mn ? KSTEP_MN : KSTEP_KMAJOR) * kk);
}
}  // namespace kern

// Tag image: one int per bf16 slot, -1 = never written (as WgmmaLayoutModelTest's Smem).
struct TagSmem {
    static constexpr uint32_t STAGE = 0x8400;
    std::vector<int> slots = std::vector<int>((STAGE + 2 * 32768) / 2, -1);
    // a TMA box of 64 inner x rows outer with 128-byte swizzle (chunk c of row r at c ^ (r % 8))
    void box(uint32_t base, int rows, const std::function<int(int, int)>& tag) {
        for (int j = 0; j < rows; ++j)
            for (int i = 0; i < 64; ++i) {
                const uint32_t row = base + j * 128u;
                const uint32_t chunk = (uint32_t)(i / 8) ^ (uint32_t)(j % 8);  // written as the ISA's figure says
                slots[(row + chunk * 16 + (i % 8) * 2) / 2] = tag(i, j);
            }
    }
    int read(uint64_t desc, bool mnMajor, int mn, int k, bool plantBug = false) const {
        WgmmaDesc d = wgmma_decode_desc(desc);
        if (plantBug) std::swap(d.lbo, d.sbo);
        return slots[swizzle128(wgmma_operand_addr(d, mnMajor, mn, k)) / 2];
    }
};
static int tagv(int op, int row, int col) { return (op << 24) | (row << 12) | col; }

// Checks every element of every k16 step; returns the number of mismatches (first one in *first).
static int layout_check(const TagSmem& s, const std::function<uint64_t(int)>& desc, bool mnMajor, int extent,
                        const std::function<int(int, int)>& want, std::string* first, bool plantBug = false) {
    int bad = 0;
    for (int kk = 0; kk < 4; ++kk)
        for (int mn = 0; mn < extent; ++mn)
            for (int k = 0; k < 16; ++k) {
                const int got = s.read(desc(kk), mnMajor, mn, k, plantBug), w = want(mn, 16 * kk + k);
                if (got != w && bad++ == 0 && first) {
                    char buf[160];
                    std::snprintf(buf, sizeof buf, "k16 step %d (mn %d, k %d): tag 0x%x, want 0x%x", kk, mn, k, got, w);
                    *first = buf;
                }
            }
    return bad;
}

static void test_wgmma_layouts() {
    using namespace kern;
    const uint32_t ST = TagSmem::STAGE;
    std::string first;
    {
        TagSmem s;  // forward: A box {64 k, 128 rows}, B box {64 k, 128 n}: both K-major
        s.box(ST, 128, [](int i, int j) { return tagv(1, j, i); });
        s.box(ST + A_BYTES, 128, [](int i, int j) { return tagv(2, j, i); });
        int bad = 0;
        for (int cw = 0; cw < 2; ++cw)
            bad += layout_check(s, [&](int kk) { return desc_a(false, ST, cw, kk); }, false, 64,
                                [&](int m, int k) { return tagv(1, cw * 64 + m, k); }, &first);
        bad += layout_check(s, [&](int kk) { return desc_b(false, ST, 0, kk); }, false, 128,
                            [](int n, int k) { return tagv(2, n, k); }, &first);
        check(bad == 0, "wgmma layout: K-major 128B swizzle (SBO 1024, k16 step +32 B), fwd A per consumer and B", first);
        bad = layout_check(s, [&](int kk) { return desc_b(false, ST, 0, kk); }, false, 128,
                           [](int n, int k) { return tagv(2, n, k); }, nullptr, true);
        check(bad > 0, "wgmma layout: planted bug (LBO/SBO swapped) is detected for K-major");
    }
    {
        TagSmem s;  // swiglu: two 64-row weight boxes
        s.box(ST + A_BYTES, 64, [](int i, int j) { return tagv(2, j, i); });
        s.box(ST + A_BYTES + B_BYTES / 2, 64, [](int i, int j) { return tagv(3, j, i); });
        int bad = layout_check(s, [&](int kk) { return desc_b(false, ST, 0, kk); }, false, 64,
                               [](int n, int k) { return tagv(2, n, k); }, &first);
        bad += layout_check(s, [&](int kk) { return desc_b(false, ST, 1, kk); }, false, 64,
                            [](int n, int k) { return tagv(3, n, k); }, &first);
        check(bad == 0, "wgmma layout: K-major fused SwiGLU halves (B at +8192)", first);
    }
    {
        TagSmem s;  // dx: B [K][N] MN-major, boxes {64 n, 64 k} for n0 and n0 + 64
        for (int h = 0; h < 2; ++h)
            s.box(ST + A_BYTES + h * BOX_BYTES, 64, [h](int i, int j) { return tagv(2, j, h * 64 + i); });
        int bad = layout_check(s, [&](int kk) { return desc_b(true, ST, 0, kk); }, true, 128,
                               [](int n, int k) { return tagv(2, k, n); }, &first);
        check(bad == 0, "wgmma layout: MN-major 128B swizzle (LBO 8192 = next 64 mn, SBO 1024, k16 step +2048 B), dx B",
              first);
        bad = layout_check(s, [&](int kk) { return desc_b(true, ST, 0, kk); }, true, 128,
                           [](int n, int k) { return tagv(2, k, n); }, nullptr, true);
        check(bad > 0, "wgmma layout: planted bug (LBO/SBO swapped) is detected for MN-major");
    }
    {
        TagSmem s;  // wgrad: A [rows][M], B [rows][N], both MN-major, 2 boxes each
        for (int h = 0; h < 2; ++h) {
            s.box(ST + h * BOX_BYTES, 64, [h](int i, int j) { return tagv(1, j, h * 64 + i); });
            s.box(ST + A_BYTES + h * BOX_BYTES, 64, [h](int i, int j) { return tagv(2, j, h * 64 + i); });
        }
        int bad = 0;
        for (int cw = 0; cw < 2; ++cw)
            bad += layout_check(s, [&](int kk) { return desc_a(true, ST, cw, kk); }, true, 64,
                                [&](int m, int r) { return tagv(1, r, cw * 64 + m); }, &first);
        bad += layout_check(s, [&](int kk) { return desc_b(true, ST, 0, kk); }, true, 128,
                            [](int n, int r) { return tagv(2, r, n); }, &first);
        check(bad == 0, "wgmma layout: MN-major wgrad A per consumer and B", first);
    }
    // the swizzle helper: chunk c of row r (1024-aligned base) at c ^ (r % 8), bytes within a chunk kept
    {
        bool ok = true;
        for (uint32_t r = 0; r < 16; ++r)
            for (uint32_t c = 0; c < 8; ++c)
                for (uint32_t b = 0; b < 16; ++b)
                    ok &= swizzle128(0x2000 + r * 128 + c * 16 + b) == 0x2000 + r * 128 + ((c ^ (r % 8)) * 16) + b;
        check(ok, "swizzle128: chunk c of row r at chunk c ^ (r % 8)");
        check(swizzle_addr(0x1A0, 64) == (0x1A0u ^ (((0x1A0u >> 7) & 3u) << 4)) && swizzle_addr(0x1A0, 0) == 0x1A0 &&
                  swizzle_addr(0x90, 32) == 0x80,
              "swizzle_addr: 64B/32B/none patterns");
    }
    check_fault("wgmma: no-swizzle descriptor faults (not emulated)", "no-swizzle", [] {
        WgmmaDesc d = wgmma_decode_desc(0x40);
        wgmma_operand_addr(d, false, 0, 0);
    });
}

// ---------------------------------------------------------------------------------------------
// TMA + wgmma end to end: global bf16 matrices -> encoded maps -> tma_load_tiled into a stage ->
// wgmma with the kernels' descriptors -> compared with a naive GEMM (small integers: exact).
// ---------------------------------------------------------------------------------------------
struct Smem {
    std::vector<unsigned char> mem;
    explicit Smem(size_t n) : mem(n, 0xAB) {}
    SmemWindow win() { return {mem.data(), (uint32_t)mem.size()}; }
    uint16_t at(uint32_t a) const { uint16_t v; std::memcpy(&v, &mem[a], 2); return v; }
};

static CUtensorMap make_map_2d(void* g, uint64_t cols, uint64_t rows, uint64_t ldBytes, uint32_t bc, uint32_t br,
                               CUtensorMapSwizzle sw = CU_TENSOR_MAP_SWIZZLE_128B) {
    CUtensorMap m;
    const cuuint64_t dims[2] = {cols, rows}, strides[1] = {ldBytes};
    const cuuint32_t box[2] = {bc, br}, es[2] = {1, 1};
    CUresult rc = tensor_map_encode_tiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g, dims, strides, box, es,
                                          CU_TENSOR_MAP_INTERLEAVE_NONE, sw, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (rc != CUDA_SUCCESS) std::printf("  (encode failed: %d)\n", (int)rc);
    return m;
}

static void test_wgmma_end_to_end() {
    std::mt19937 rng(77);
    std::uniform_int_distribution<int> ui(-4, 4);
    const int Ksz = 64;
    // A [128][K] K-major (fwd): rows x k; B [128][K] K-major; Bmn [K][128] (dx); Amn [K][128] (wgrad)
    alignas(64) static uint16_t A[128][Ksz], B[128][Ksz], Amn[Ksz][128], Bmn[Ksz][128];
    for (int r = 0; r < 128; ++r)
        for (int k = 0; k < Ksz; ++k) { A[r][k] = bf((float)ui(rng)); B[r][k] = bf((float)ui(rng)); }
    for (int k = 0; k < Ksz; ++k)
        for (int c = 0; c < 128; ++c) { Amn[k][c] = bf((float)ui(rng)); Bmn[k][c] = bf((float)ui(rng)); }
    const uint32_t stage = 0x8400;
    for (int mode = 0; mode < 4; ++mode) {
        // mode 0: A K, B K, N=128; 1: A K, B MN, N=128; 2: A MN, B MN, N=128; 3: A K, B K (half 1), N=64
        const bool aMN = mode == 2, bMN = mode == 1 || mode == 2;
        const int N = mode == 3 ? 64 : 128;
        Smem s(stage + 32768 + 1024);
        SmemWindow w = s.win();
        uint32_t bytes = 0;
        if (!aMN) {
            CUtensorMap m = make_map_2d(A, Ksz, 128, Ksz * 2, 64, 128);
            const int32_t c[2] = {0, 0};
            bytes += tma_load_tiled(w, stage, &m, 2, c);
        } else {
            CUtensorMap m = make_map_2d(Amn, 128, Ksz, 256, 64, 64);
            for (int h = 0; h < 2; ++h) {
                const int32_t c[2] = {64 * h, 0};
                bytes += tma_load_tiled(w, stage + h * 8192, &m, 2, c);
            }
        }
        if (!bMN) {
            CUtensorMap m = make_map_2d(B, Ksz, 128, Ksz * 2, 64, mode == 3 ? 64 : 128);
            const int32_t c[2] = {0, mode == 3 ? 64 : 0};
            bytes += tma_load_tiled(w, stage + 16384 + (mode == 3 ? 8192 : 0), &m, 2, c);
        } else {
            CUtensorMap m = make_map_2d(Bmn, 128, Ksz, 256, 64, 64);
            for (int h = 0; h < 2; ++h) {
                const int32_t c[2] = {64 * h, 0};
                bytes += tma_load_tiled(w, stage + 16384 + h * 8192, &m, 2, c);
            }
        }
        const uint32_t wantBytes = mode == 3 ? 16384 + 8192 : 32768;
        // consumer 1 (rows 64..127 of the CTA tile), 4 k16 steps
        const int cw = 1;
        static float acc[128][128];
        float* d[128];
        for (int t = 0; t < 128; ++t) d[t] = acc[t];
        for (int kk = 0; kk < 4; ++kk)
            wgmma_m64nNk16_bf16(w, N, kern::desc_a(aMN, stage, cw, kk), kern::desc_b(bMN, stage, mode == 3 ? 1 : 0, kk),
                                aMN, bMN, kk > 0, d);
        // expected: D[m][n] = sum_k Aop(64cw + m, k) * Bop(k, n)
        auto aop = [&](int m, int k) { return fl(aMN ? Amn[k][m] : A[m][k]); };
        auto bop = [&](int k, int n) { return fl(bMN ? Bmn[k][n] : B[(mode == 3 ? 64 : 0) + n][k]); };
        int bad = 0;
        std::string first;
        for (int t = 0; t < 128; ++t)
            for (int j = 0; j < N / 8; ++j)
                for (int h = 0; h < 2; ++h)
                    for (int c = 0; c < 2; ++c) {
                        // hand-derived D fragment: warp t/32 rows 16w + lane/4 (+8h), columns 8j + 2*(lane%4) + c
                        const int m = 16 * (t / 32) + (t % 32) / 4 + 8 * h, n = 8 * j + 2 * (t % 4) + c;
                        float want = 0;
                        for (int k = 0; k < Ksz; ++k) want += aop(64 * cw + m, k) * bop(k, n);
                        if (acc[t][4 * j + 2 * h + c] != want && bad++ == 0)
                            first = "t " + std::to_string(t) + " m " + std::to_string(m) + " n " + std::to_string(n) + ": " +
                                    std::to_string(acc[t][4 * j + 2 * h + c]) + " want " + std::to_string(want);
                    }
        static const char* names[4] = {"A K-major, B K-major, m64n128k16", "A K-major, B MN-major, m64n128k16",
                                       "A MN-major, B MN-major, m64n128k16", "A K-major, B K-major half 1, m64n64k16"};
        check(bad == 0 && bytes == wantBytes,
              std::string("wgmma end to end (TMA 128B swizzle -> kernel descriptors -> 4 k16 steps): ") + names[mode],
              bad ? first : "complete_tx bytes " + std::to_string(bytes));
    }
    // scaleD = false ignores old d; bad N and out-of-window descriptors fault
    {
        Smem s(0x10000);
        std::memset(s.mem.data(), 0, s.mem.size());
        static float acc[128][32];
        float* d[128];
        for (int t = 0; t < 128; ++t) {
            d[t] = acc[t];
            for (int i = 0; i < 32; ++i) acc[t][i] = 99.0f;
        }
        wgmma_m64nNk16_bf16(s.win(), 64, kern::desc_bits(0x1000, 16), kern::desc_bits(0x4000, 16), 0, 0, false, d);
        bool ok = true;
        for (int t = 0; t < 128; ++t)
            for (int i = 0; i < 32; ++i) ok &= acc[t][i] == 0.0f;
        check(ok, "wgmma: scaleD = false ignores the old accumulator");
        check_fault("wgmma: N = 60 faults", "m64n60k16", [&] {
            wgmma_m64nNk16_bf16(s.win(), 60, kern::desc_bits(0x1000, 16), kern::desc_bits(0x4000, 16), 0, 0, true, d);
        });
        check_fault("wgmma: B operand past the window faults", "operand B", [&] {
            wgmma_m64nNk16_bf16(s.win(), 64, kern::desc_bits(0x1000, 16), kern::desc_bits(0xFC00, 16), 0, 0, true, d);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// TMA placement, OOB fill, ranks, faults; encode rules
// ---------------------------------------------------------------------------------------------
static void test_tma() {
    // global [100 rows][80 cols] bf16, leading dimension 88 elements (176 bytes), tag = r * 256 + c + 1
    const int R = 100, Cn = 80, LD = 88;
    alignas(64) static uint16_t g[R * LD];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < LD; ++c) g[r * LD + c] = (uint16_t)(c < Cn ? (r * 256 + c + 1) & 0x7FFF : 0xFFFF);
    CUtensorMap m = make_map_2d(g, Cn, R, LD * 2, 64, 32);
    Smem s(0x10000);
    struct Case { int c0, c1; const char* what; };
    const Case cases[] = {{0, 0, "in bounds"}, {-8, -5, "OOB before both edges"}, {40, 90, "OOB past both edges"},
                          {-70, 3, "entirely OOB along dim 0"}};
    for (const Case& cs : cases) {
        std::fill(s.mem.begin(), s.mem.end(), 0xAB);
        const int32_t coords[2] = {cs.c0, cs.c1};
        const uint32_t dst = 0x2000;
        const uint32_t bytes = tma_load_tiled(s.win(), dst, &m, 2, coords);
        bool ok = bytes == 64 * 32 * 2;
        for (int j = 0; j < 32; ++j)
            for (int i = 0; i < 64; ++i) {
                const int r = cs.c1 + j, c = cs.c0 + i;
                const uint16_t want = (r >= 0 && r < R && c >= 0 && c < Cn) ? g[r * LD + c] : 0;
                // chunk i/8 of row j lands at chunk (i/8) ^ (j%8) of row j (1024-aligned destination)
                const uint32_t a = dst + j * 128 + (((i / 8) ^ (j % 8)) * 16) + (i % 8) * 2;
                ok &= s.at(a) == want;
            }
        ok &= s.mem[dst + 64 * 32 * 2] == 0xAB && s.mem[dst - 1] == 0xAB;  // nothing written outside the box
        check(ok, std::string("tma 2-D 128B swizzle placement + zero fill: ") + cs.what);
    }
    // 3-D {N=72, K=40, G=3} (dx's B map shape), box {64, 64, 1}, partially OOB along n and k
    {
        const int N = 72, K = 40, G = 3;
        alignas(64) static uint16_t g3[G * K * N];
        for (int i = 0; i < G * K * N; ++i) g3[i] = (uint16_t)(i + 1);
        CUtensorMap m3;
        const cuuint64_t dims[3] = {(cuuint64_t)N, (cuuint64_t)K, (cuuint64_t)G}, strides[2] = {N * 2, (cuuint64_t)K * N * 2};
        const cuuint32_t box[3] = {64, 64, 1}, es[3] = {1, 1, 1};
        CUresult rc = tensor_map_encode_tiled(&m3, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, g3, dims, strides, box, es,
                                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                              CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        std::fill(s.mem.begin(), s.mem.end(), 0xAB);
        const int32_t coords[3] = {64, -16, 2};
        const uint32_t bytes = tma_load_tiled(s.win(), 0x4000, &m3, 3, coords);
        bool ok = rc == CUDA_SUCCESS && bytes == 8192;
        for (int j = 0; j < 64; ++j)
            for (int i = 0; i < 64; ++i) {
                const int n = 64 + i, k = -16 + j;
                const uint16_t want = (n < N && k >= 0 && k < K) ? g3[(2 * K + k) * N + n] : 0;
                ok &= s.at(0x4000 + j * 128 + (((i / 8) ^ (j % 8)) * 16) + (i % 8) * 2) == want;
            }
        check(ok, "tma 3-D box {64,64,1}: OOB along n (past) and k (before) zero filled, group 2 selected");
        // a planted bug in the expected placement (swizzle by (j+1)%8) must not match
        bool caught = false;
        for (int j = 0; j < 8 && !caught; ++j)
            for (int i = 0; i < 8; ++i) {
                const int n = 64 + i, k = -16 + j;
                const uint16_t want = (n < N && k >= 0 && k < K) ? g3[(2 * K + k) * N + n] : 0;
                caught |= want != 0 && s.at(0x4000 + j * 128 + (((i / 8) ^ ((j + 1) % 8)) * 16) + (i % 8) * 2) != want;
            }
        // rows 0..7 are k = -16..-9 (all zero): use rows 16.. for the planted check
        for (int j = 16; j < 24 && !caught; ++j)
            for (int i = 0; i < 8; ++i) {
                const uint16_t want = g3[(2 * K + (j - 16)) * N + 64 + i];
                caught |= s.at(0x4000 + j * 128 + (((i / 8) ^ ((j + 1) % 8)) * 16) + (i % 8) * 2) != want;
            }
        check(caught, "tma: planted bug (chunk ^ (r+1) % 8) is detected");
    }
    // no swizzle, element strides along dim 1, 1-D
    {
        alignas(64) static uint16_t g1[64 * 64];
        for (int i = 0; i < 64 * 64; ++i) g1[i] = (uint16_t)(i + 1);
        CUtensorMap mn;
        const cuuint64_t dims[2] = {64, 64}, strides[1] = {128};
        const cuuint32_t box[2] = {16, 8}, es[2] = {1, 3};
        CUresult rc = tensor_map_encode_tiled(&mn, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g1, dims, strides, box, es,
                                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                                              CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        std::fill(s.mem.begin(), s.mem.end(), 0xAB);
        const int32_t coords[2] = {8, 60};
        const uint32_t bytes = tma_load_tiled(s.win(), 0x80, &mn, 2, coords);
        bool ok = rc == CUDA_SUCCESS && bytes == 16 * 3 * 2;  // ceil(8 / 3) = 3 rows
        for (int j = 0; j < 3; ++j)
            for (int i = 0; i < 16; ++i) {
                const int r = 60 + 3 * j, c = 8 + i;
                ok &= s.at(0x80 + j * 32 + i * 2) == (r < 64 ? g1[r * 64 + c] : 0);
            }
        check(ok, "tma 2-D no swizzle, elementStrides {1,3}: ceil(box/stride) rows, dense, OOB row zero");
        CUtensorMap m1;
        const cuuint64_t d1[1] = {100};
        const cuuint32_t b1[1] = {32}, e1[1] = {1};
        rc = tensor_map_encode_tiled(&m1, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 1, g1, d1, nullptr, b1, e1,
                                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        const int32_t c1[1] = {80};
        std::fill(s.mem.begin(), s.mem.end(), 0xAB);
        ok = rc == CUDA_SUCCESS && tma_load_tiled(s.win(), 0x100, &m1, 1, c1) == 64;
        for (int i = 0; i < 32; ++i) ok &= s.at(swizzle_addr(0x100 + 2 * i, 64)) == (80 + i < 100 ? g1[80 + i] : 0);
        check(ok, "tma 1-D, 64B swizzle, tail past the end zero filled");
    }
    // faults
    Smem s2(0x4000);
    const int32_t c0[2] = {0, 0};
    check_fault("tma: zeroed map faults", "not a valid encoded map", [&] {
        CUtensorMap z;
        std::memset(&z, 0, sizeof z);
        tma_load_tiled(s2.win(), 0, &z, 2, c0);
    });
    check_fault("tma: one flipped byte in the map faults", "not a valid encoded map", [&] {
        CUtensorMap z = m;
        reinterpret_cast<unsigned char*>(&z)[20] ^= 1;
        tma_load_tiled(s2.win(), 0, &z, 2, c0);
    });
    check_fault("tma: rank mismatch faults", "has rank 2", [&] {
        const int32_t c3[3] = {0, 0, 0};
        tma_load_tiled(s2.win(), 0, &m, 3, c3);
    });
    check_fault("tma: destination not 128-byte aligned faults", "not 128-byte aligned",
                [&] { tma_load_tiled(s2.win(), 0x40, &m, 2, c0); });
    check_fault("tma: box past the window faults", "does not fit", [&] { tma_load_tiled(s2.win(), 0x3080, &m, 2, c0); });
    {
        static const void* deadLo;
        deadLo = &g[10 * LD];
        global_range_live = [](const void* p, size_t n) {
            const char* a = (const char*)p;
            return !(a <= (const char*)deadLo && (const char*)deadLo < a + n);
        };
        check_fault("tma: global read of a dead range faults", "outside any live allocation",
                    [&] { tma_load_tiled(s2.win(), 0, &m, 2, c0); });
        const int32_t c20[2] = {0, 20};
        bool ok = true;
        try { tma_load_tiled(s2.win(), 0, &m, 2, c20); } catch (const Fault&) { ok = false; }
        check(ok, "tma: rows not touching the dead range load fine");
        global_range_live = [](const void*, size_t) { return true; };
    }

    // encode rules
    auto enc = [&](uint32_t rank, uint64_t addrOff, std::vector<cuuint64_t> dims, std::vector<cuuint64_t> strides,
                   std::vector<cuuint32_t> box, std::vector<cuuint32_t> es, int sw = 3, int il = 0, int type = 9, int oob = 0,
                   CUtensorMap* where = nullptr) {
        CUtensorMap mm;
        return tensor_map_encode_tiled(where ? where : &mm, (CUtensorMapDataType)type, rank, (char*)g + addrOff, dims.data(),
                                       strides.data(), box.data(), es.data(), (CUtensorMapInterleave)il,
                                       (CUtensorMapSwizzle)sw, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, (CUtensorMapFloatOOBfill)oob);
    };
    const CUresult INV = CUDA_ERROR_INVALID_VALUE;
    check(enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}) == CUDA_SUCCESS, "encode: the kernels' layout is accepted");
    check(enc(2, 0, {80, 100}, {168}, {64, 32}, {1, 1}) == INV, "encode: stride not a multiple of 16 rejected");
    check(enc(2, 0, {80, 100}, {1ULL << 40}, {64, 32}, {1, 1}) == INV, "encode: stride >= 2^40 rejected");
    check(enc(2, 0, {80, 100}, {176}, {64, 257}, {1, 1}, 0) == INV, "encode: box > 256 rejected");
    check(enc(2, 0, {80, 100}, {176}, {64, 0}, {1, 1}) == INV, "encode: box 0 rejected");
    check(enc(2, 0, {80, 100}, {176}, {72, 32}, {1, 1}) == INV, "encode: inner box 144 bytes > 128-byte swizzle rejected");
    check(enc(2, 0, {80, 100}, {176}, {32, 32}, {1, 1}, 2) == CUDA_SUCCESS &&
              enc(2, 0, {80, 100}, {176}, {40, 32}, {1, 1}, 2) == INV,
          "encode: inner box vs 64B swizzle span (64 ok, 80 rejected)");
    check(enc(2, 0, {80, 100}, {176}, {12, 32}, {1, 1}, 0) == INV, "encode: inner box 24 bytes (not a multiple of 16) rejected");
    check(enc(2, 8, {80, 100}, {176}, {64, 32}, {1, 1}) == INV, "encode: global address not 16-byte aligned rejected");
    check(enc(0, 0, {80}, {}, {64}, {1}) == INV && enc(6, 0, {8, 8, 8, 8, 8, 8}, {16, 128, 1024, 8192, 65536}, {8, 8, 8, 8, 8, 8},
                                                  {1, 1, 1, 1, 1, 1}, 0) == INV,
          "encode: rank 0 and rank 6 rejected");
    check(enc(2, 0, {0, 100}, {176}, {64, 32}, {1, 1}) == INV && enc(2, 0, {80, (1ULL << 32) + 1}, {176}, {64, 32}, {1, 1}) == INV &&
              enc(2, 0, {80, 1ULL << 32}, {176}, {64, 32}, {1, 1}) == CUDA_SUCCESS,
          "encode: dim 0 and dim > 2^32 rejected, 2^32 accepted");
    check(enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 0}) == INV && enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 9}) == INV &&
              enc(2, 0, {80, 100}, {176}, {64, 32}, {8, 8}) == CUDA_SUCCESS,
          "encode: element strides 0 and 9 rejected, 8 accepted");
    check(enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 7) == INV && enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 3, 3) == INV &&
              enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 3, 0, 16) == INV,
          "encode: out-of-range swizzle / interleave / data type rejected");
    check(enc(3, 0, {8, 8, 8}, {32, 256}, {8, 8, 8}, {1, 1, 1}, 3, 2) == INV, "encode: INTERLEAVE_32B without SWIZZLE_32B rejected");
    check(enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 3, 0, 0 /*UINT8*/, 1) == INV,
          "encode: NaN OOB fill with an integer type rejected");
    check(enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 4) == CUDA_ERROR_NOT_SUPPORTED &&
              enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 3, 0, 9, 1) == CUDA_ERROR_NOT_SUPPORTED,
          "encode: valid but unemulated (128B_ATOM_32B swizzle, NaN fill) -> NOT_SUPPORTED");
    {
        alignas(128) unsigned char buf[256];
        check(enc(2, 0, {80, 100}, {176}, {64, 32}, {1, 1}, 3, 0, 9, 0, reinterpret_cast<CUtensorMap*>(buf + 32)) == INV,
              "encode: tensorMap not 64-byte aligned rejected");
        std::memset(buf, 0x5A, sizeof buf);
        CUresult rc = enc(2, 0, {80, 100}, {176}, {72, 32}, {1, 1}, 3, 0, 9, 0, reinterpret_cast<CUtensorMap*>(buf));
        check(rc == INV && buf[0] == 0x5A && buf[127] == 0x5A, "encode: a rejected call leaves the map untouched");
    }
    {
        TensorMapInfo info;
        const bool ok = tensor_map_decode(&m, &info) && info.rank == 2 && info.globalDim[0] == 80 && info.globalDim[1] == 100 &&
                        info.globalStrides[0] == 176 && info.boxDim[0] == 64 && info.boxDim[1] == 32 && info.swizzle == 3 &&
                        info.elemBytes == 2 && info.globalAddress == (uint64_t)(uintptr_t)g && info.l2Promotion == 2;
        check(ok, "decode: round trip of every field");
        CUtensorMap garbage;
        for (int i = 0; i < 16; ++i) garbage.opaque[i] = 0x9E3779B97F4A7C15ULL * (i + 1);
        check(!tensor_map_decode(&garbage, nullptr), "decode: garbage map rejected");
    }
}

// ---------------------------------------------------------------------------------------------
// mbarrier model
// ---------------------------------------------------------------------------------------------
static void test_mbarrier() {
    MbarModel b;
    b.init(2);
    std::string trace;
    auto probe = [&] { trace += b.test_wait_parity(0) ? '1' : '0'; trace += b.test_wait_parity(1) ? '1' : '0'; trace += ' '; };
    probe();                 // phase 0 pending: parity 0 not done, parity 1 "done" (previous phase)
    b.arrive_expect_tx(256);
    probe();                 // one arrival left, 256 bytes outstanding
    b.arrive();
    probe();                 // arrivals done, bytes outstanding
    b.complete_tx(128);
    probe();
    b.complete_tx(128);
    probe();                 // phase 0 complete
    b.arrive();
    b.arrive();
    probe();                 // phase 1 complete (no tx)
    b.complete_tx(64);       // a copy completing before its expect_tx (tx-count goes negative)
    b.arrive();
    b.arrive_expect_tx(64);
    probe();                 // phase 2 complete
    check(trace == "01 01 01 01 10 01 10 ", "mbarrier model: parity sequence with expect_tx / complete_tx", trace);
    check_fault("mbarrier model: arrival beyond the pending count faults", "arrivals with only", [&] {
        MbarModel c;
        c.init(1);
        c.expect_tx(16);
        c.arrive();
        c.arrive();
    });
}

int main() {
    test_bf16();
    test_mma();
    test_ldmatrix();
    test_wgmma_layouts();
    test_wgmma_end_to_end();
    test_tma();
    test_mbarrier();
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
