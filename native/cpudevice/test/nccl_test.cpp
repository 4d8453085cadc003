// Standalone test of the CPU device's NCCL subset (native/cpudevice/nccl.cpp), without the driver:
// the cpudev:: hooks are stubbed here over a registry of test allocations. Built and run by
// run-nccl-test.sh; the exit status is the result.
//
// Ranks as threads (W = 1, 2, 4, 8) and as forked processes (W = 2, 4) run the same exercise:
// blocking and grouped send/recv rings, a grouped all-to-all-v with uneven sizes (zero-size
// messages, self messages, one 64 MB message each way between ranks 0 and 1), all-reduce /
// all-gather / reduce-scatter for f32, bf16 and i64 against a host reference computed here (bitwise;
// rank order 0..W-1, fp32 accumulation for bf16 rounded once), and validation errors that must post
// nothing. Then the failure cases: timeout of a peer that never posts (2 s), ncclCommAbort from
// another thread unblocking a waiter, a peer that left, a dead peer process, mismatched nranks,
// duplicate rank, a bad timeout variable, message size mismatch, sticky CUDA error, and one thread
// driving two ranks in one group.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "device_internal.h"
#include "nccl.h"

// ------------------------------------------------------------------ cpudev stubs

namespace {
std::mutex g_alloc_mu;
std::map<uintptr_t, size_t> g_allocs;
std::atomic<int> g_sticky{CUDA_SUCCESS};
CUstream const kStream = reinterpret_cast<CUstream>(0x5157);
}  // namespace

namespace cpudev {
bool device_range_live(const void* p, size_t bytes) {
    std::lock_guard<std::mutex> g(g_alloc_mu);
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    return a >= it->first && a - it->first <= it->second && bytes <= it->second - (a - it->first);
}
bool stream_valid(CUstream s) { return s == nullptr || s == kStream; }
CUresult sticky_error() { return static_cast<CUresult>(g_sticky.load()); }
// no stream of this standalone test ever captures (graph capture is tested through the driver)
bool stream_capturing(CUstream) { return false; }
CUresult capture_enqueue(CUstream, GraphNode, bool* recorded) {
    *recorded = false;
    return CUDA_SUCCESS;
}
}  // namespace cpudev

namespace {

// A "device" allocation: registered so that device_range_live accepts it.
struct Buf {
    uint8_t* p = nullptr;
    size_t n = 0;
    explicit Buf(size_t bytes) : n(bytes) {
        p = static_cast<uint8_t*>(malloc(bytes ? bytes : 1));
        memset(p, 0xAB, bytes);
        std::lock_guard<std::mutex> g(g_alloc_mu);
        g_allocs[reinterpret_cast<uintptr_t>(p)] = bytes;
    }
    ~Buf() {
        {
            std::lock_guard<std::mutex> g(g_alloc_mu);
            g_allocs.erase(reinterpret_cast<uintptr_t>(p));
        }
        free(p);
    }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
    template <class T> T* as() { return reinterpret_cast<T*>(p); }
};

// ------------------------------------------------------------------ checks

std::atomic<int> g_failures{0};
std::mutex g_print_mu;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            std::lock_guard<std::mutex> g_(g_print_mu);                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            g_failures++;                                                      \
        }                                                                      \
    } while (0)

#define EXPECT_RC(call, want)                                                                          \
    do {                                                                                               \
        ncclResult_t rc_ = (call);                                                                     \
        CHECK(rc_ == (want), "%s returned %d (%s), want %d; last error: %s", #call, (int)rc_,          \
              ncclGetErrorString(rc_), (int)(want), ncclGetLastError(nullptr));                        \
    } while (0)

#define OK(call) EXPECT_RC(call, ncclSuccess)

bool contains(const char* s, const char* sub) { return s && strstr(s, sub) != nullptr; }

double since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// ------------------------------------------------------------------ data and reference

uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t val(uint64_t seed, uint64_t a, uint64_t b, uint64_t i) { return mix(seed ^ mix(a * 1000003 + b) ^ mix(i)); }

float fval(uint64_t v) { return static_cast<float>((static_cast<double>(v >> 11) * 0x1.0p-53 - 0.5) * 1000.0); }

float bf2f(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f2bf(float f) {  // round to nearest even (no NaNs in this test's data)
    uint32_t u;
    memcpy(&u, &f, 4);
    return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

enum class T { F32, BF16, I64 };
ncclDataType_t nccl_type(T t) { return t == T::F32 ? ncclFloat32 : t == T::BF16 ? ncclBfloat16 : ncclInt64; }
size_t tsize(T t) { return t == T::F32 ? 4 : t == T::BF16 ? 2 : 8; }
const char* tname(T t) { return t == T::F32 ? "f32" : t == T::BF16 ? "bf16" : "i64"; }

// Element i of rank q's input of test `tag`, stored into dst.
void input(T t, uint64_t seed, int q, int tag, size_t i, uint8_t* dst) {
    uint64_t v = val(seed, q, tag, i);
    if (t == T::F32) {
        float f = fval(v);
        memcpy(dst, &f, 4);
    } else if (t == T::BF16) {
        uint16_t h = f2bf(fval(v));
        memcpy(dst, &h, 2);
    } else {
        int64_t x = static_cast<int64_t>(v);
        memcpy(dst, &x, 8);
    }
}

void fill(T t, uint64_t seed, int q, int tag, uint8_t* dst, size_t first, size_t n) {
    for (size_t i = 0; i < n; i++) input(t, seed, q, tag, first + i, dst + i * tsize(t));
}

float jmax(float a, float b) { return (a != a) ? a : (a >= b ? a : b); }
float jmin(float a, float b) { return (a != a) ? a : (a <= b ? a : b); }

// Reference reduction of element i over ranks 0..w-1 (the RankOrderReduce contract).
void reference(T t, int op, uint64_t seed, int w, int tag, size_t i, uint8_t* out) {
    uint8_t b[8];
    if (t == T::I64) {
        uint64_t acc = 0;
        for (int q = 0; q < w; q++) {
            input(t, seed, q, tag, i, b);
            int64_t x;
            memcpy(&x, b, 8);
            uint64_t ux = static_cast<uint64_t>(x);
            if (q == 0) acc = ux;
            else if (op == ncclSum || op == ncclAvg) acc += ux;
            else if (op == ncclProd) acc *= ux;
            else if (op == ncclMax) acc = static_cast<uint64_t>(std::max<int64_t>(static_cast<int64_t>(acc), x));
            else acc = static_cast<uint64_t>(std::min<int64_t>(static_cast<int64_t>(acc), x));
        }
        int64_t r = static_cast<int64_t>(acc);
        if (op == ncclAvg) r /= w;
        memcpy(out, &r, 8);
        return;
    }
    float acc = 0;
    for (int q = 0; q < w; q++) {
        input(t, seed, q, tag, i, b);
        float x;
        if (t == T::F32) memcpy(&x, b, 4);
        else {
            uint16_t h;
            memcpy(&h, b, 2);
            x = bf2f(h);
        }
        if (q == 0) acc = x;
        else if (op == ncclSum || op == ncclAvg) acc = acc + x;
        else if (op == ncclProd) acc = acc * x;
        else if (op == ncclMax) acc = jmax(acc, x);
        else acc = jmin(acc, x);
    }
    if (op == ncclAvg) acc = acc / static_cast<float>(w);
    if (t == T::F32) memcpy(out, &acc, 4);
    else {
        uint16_t h = f2bf(acc);
        memcpy(out, &h, 2);
    }
}

// ------------------------------------------------------------------ the exercise of one rank

struct Ctx {
    ncclComm_t c;
    int r, w;
    uint64_t seed;
    bool big;
    const char* mode;
    int tag = 100;  // per rank: every rank must use the same sequence
};

#define RCHECK(cond, ...) CHECK(cond, "[%s W=%d rank %d] " __VA_ARGS__)

void ring_blocking(Ctx& x) {
    if (x.w == 1) return;
    int next = (x.r + 1) % x.w, prev = (x.r + x.w - 1) % x.w;
    size_t ns = 1000 + x.r, nr = 1000 + prev;
    Buf s(ns * 4), d(nr * 4);
    for (size_t i = 0; i < ns; i++) s.as<uint32_t>()[i] = static_cast<uint32_t>(val(x.seed, x.r, 1, i));
    if (x.r % 2 == 0) {
        OK(ncclSend(s.p, ns, ncclUint32, next, x.c, kStream));
        OK(ncclRecv(d.p, nr, ncclUint32, prev, x.c, kStream));
    } else {
        OK(ncclRecv(d.p, nr, ncclUint32, prev, x.c, kStream));
        OK(ncclSend(s.p, ns, ncclUint32, next, x.c, nullptr));
    }
    size_t bad = 0;
    for (size_t i = 0; i < nr; i++) bad += d.as<uint32_t>()[i] != static_cast<uint32_t>(val(x.seed, prev, 1, i));
    RCHECK(bad == 0, "blocking ring: %zu wrong elements", x.mode, x.w, x.r, bad);
}

void ring_grouped(Ctx& x, int tag, size_t n) {
    int next = (x.r + 1) % x.w, prev = (x.r + x.w - 1) % x.w;
    Buf s(n * 4), d(n * 4);
    for (size_t i = 0; i < n; i++) s.as<uint32_t>()[i] = static_cast<uint32_t>(val(x.seed, x.r, tag, i));
    OK(ncclGroupStart());
    OK(ncclGroupStart());  // nesting
    OK(ncclSend(s.p, n, ncclFloat32, next, x.c, kStream));
    OK(ncclGroupEnd());
    OK(ncclRecv(d.p, n, ncclFloat32, prev, x.c, kStream));
    OK(ncclGroupEnd());
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += d.as<uint32_t>()[i] != static_cast<uint32_t>(val(x.seed, prev, tag, i));
    RCHECK(bad == 0, "grouped ring (tag %d, %zu floats): %zu wrong elements", x.mode, x.w, x.r, tag, n, bad);
}

size_t a2a_count(const Ctx& x, int i, int j) {
    if (x.big && ((i == 0 && j == 1) || (i == 1 && j == 0))) return (64u << 20) / 8;  // 64 MB
    uint64_t h = mix(x.seed + i * 131 + j * 7);
    if (h % 4 == 0) return 0;
    return 1 + h % 70000;
}

void all_to_all_v(Ctx& x) {
    std::vector<size_t> soff(x.w + 1, 0), roff(x.w + 1, 0);
    for (int p = 0; p < x.w; p++) {
        soff[p + 1] = soff[p] + a2a_count(x, x.r, p);
        roff[p + 1] = roff[p] + a2a_count(x, p, x.r);
    }
    Buf s(soff[x.w] * 8), d(roff[x.w] * 8 + 64);
    for (int p = 0; p < x.w; p++)
        for (size_t i = 0; i < soff[p + 1] - soff[p]; i++) s.as<uint64_t>()[soff[p] + i] = val(x.seed, x.r * 64 + p, 2, i);
    OK(ncclGroupStart());
    for (int k = 0; k < x.w; k++) {
        int p = (x.r + k) % x.w;  // a different posting order on every rank
        OK(ncclSend(s.as<uint64_t>() + soff[p], soff[p + 1] - soff[p], ncclUint64, p, x.c, kStream));
        OK(ncclRecv(d.as<uint64_t>() + roff[p], roff[p + 1] - roff[p], ncclUint64, p, x.c, kStream));
    }
    OK(ncclGroupEnd());
    size_t bad = 0;
    for (int p = 0; p < x.w; p++)
        for (size_t i = 0; i < roff[p + 1] - roff[p]; i++) bad += d.as<uint64_t>()[roff[p] + i] != val(x.seed, p * 64 + x.r, 2, i);
    size_t guard = 0;
    for (size_t i = roff[x.w] * 8; i < roff[x.w] * 8 + 64; i++) guard += d.p[i] != 0xAB;
    RCHECK(bad == 0 && guard == 0, "all-to-all-v: %zu wrong elements, %zu guard bytes overwritten", x.mode, x.w, x.r,
           bad, guard);
}

void check_reduced(Ctx& x, T t, int op, int tag, const uint8_t* got, size_t first, size_t n, const char* what) {
    size_t bad = 0, esz = tsize(t);
    uint8_t want[8];
    for (size_t i = 0; i < n; i++) {
        reference(t, op, x.seed, x.w, tag, first + i, want);
        if (memcmp(want, got + i * esz, esz) != 0) {
            if (bad == 0) {
                std::lock_guard<std::mutex> g(g_print_mu);
                fprintf(stderr, "  first mismatch at %zu\n", first + i);
            }
            bad++;
        }
    }
    RCHECK(bad == 0, "%s %s op %d n %zu: %zu elements differ from the reference", x.mode, x.w, x.r, what, tname(t), op,
           n, bad);
}

void all_reduce(Ctx& x, T t, int op, size_t n, bool in_place, int tag) {
    size_t esz = tsize(t);
    Buf s(n * esz), d(n * esz);
    fill(t, x.seed, x.r, tag, s.p, 0, n);
    uint8_t* out = in_place ? s.p : d.p;
    OK(ncclAllReduce(s.p, out, n, nccl_type(t), static_cast<ncclRedOp_t>(op), x.c, kStream));
    check_reduced(x, t, op, tag, out, 0, n, in_place ? "all-reduce (in place)" : "all-reduce");
}

void reduce_scatter(Ctx& x, T t, size_t n, bool in_place, int tag) {
    size_t esz = tsize(t);
    Buf s(n * x.w * esz), d(n * esz);
    fill(t, x.seed, x.r, tag, s.p, 0, n * x.w);
    uint8_t* out = in_place ? s.p + x.r * n * esz : d.p;
    OK(ncclReduceScatter(s.p, out, n, nccl_type(t), ncclSum, x.c, kStream));
    check_reduced(x, t, ncclSum, tag, out, x.r * n, n, in_place ? "reduce-scatter (in place)" : "reduce-scatter");
}

void all_gather(Ctx& x, T t, size_t n, bool in_place, int tag) {
    size_t esz = tsize(t);
    Buf s(n * esz), d(n * x.w * esz);
    fill(t, x.seed, x.r, tag, in_place ? d.p + x.r * n * esz : s.p, 0, n);
    OK(ncclAllGather(in_place ? d.p + x.r * n * esz : s.p, d.p, n, nccl_type(t), x.c, kStream));
    std::vector<uint8_t> want(n * esz);
    size_t bad = 0;
    for (int q = 0; q < x.w; q++) {
        fill(t, x.seed, q, tag, want.data(), 0, n);
        bad += memcmp(want.data(), d.p + q * n * esz, n * esz) != 0;
    }
    RCHECK(bad == 0, "all-gather %s n %zu%s: %zu blocks differ", x.mode, x.w, x.r, tname(t), n,
           in_place ? " (in place)" : "", bad);
}

void collectives(Ctx& x) {
    const T types[] = {T::F32, T::BF16, T::I64};
    for (T t : types) {
        for (size_t n : {size_t(0), size_t(1), size_t(x.w + 3), size_t(100003)}) {
            all_reduce(x, t, ncclSum, n, false, x.tag++);
        }
        all_reduce(x, t, ncclMax, 5000, false, x.tag++);
        all_reduce(x, t, ncclMin, 5000, false, x.tag++);
        all_reduce(x, t, ncclAvg, 5000, false, x.tag++);
        all_reduce(x, t, ncclSum, 70001, true, x.tag++);
        for (size_t n : {size_t(1), size_t(33333)}) {
            reduce_scatter(x, t, n, false, x.tag++);
            reduce_scatter(x, t, n, true, x.tag++);
            all_gather(x, t, n, false, x.tag++);
            all_gather(x, t, n, true, x.tag++);
        }
    }
    all_reduce(x, T::I64, ncclProd, 3000, false, x.tag++);
    all_reduce(x, T::F32, ncclProd, 3000, false, x.tag++);
    // A collective inside a group together with p2p.
    {
        int next = (x.r + 1) % x.w, prev = (x.r + x.w - 1) % x.w;
        size_t n = 777;
        Buf s(n * 4), d(n * 4), ps(100 * 8), pd(100 * 8);
        fill(T::F32, x.seed, x.r, 7, s.p, 0, n);
        for (int i = 0; i < 100; i++) ps.as<uint64_t>()[i] = val(x.seed, x.r, 8, i);
        OK(ncclGroupStart());
        OK(ncclSend(ps.p, 100, ncclInt64, next, x.c, kStream));
        OK(ncclAllReduce(s.p, d.p, n, ncclFloat32, ncclSum, x.c, kStream));
        OK(ncclRecv(pd.p, 100, ncclInt64, prev, x.c, kStream));
        OK(ncclGroupEnd());
        check_reduced(x, T::F32, ncclSum, 7, d.p, 0, n, "grouped all-reduce");
        size_t bad = 0;
        for (int i = 0; i < 100; i++) bad += pd.as<uint64_t>()[i] != val(x.seed, prev, 8, i);
        RCHECK(bad == 0, "p2p in a group with a collective: %zu wrong", x.mode, x.w, x.r, bad);
    }
}

void validation(Ctx& x) {
    Buf s(4096), d(4096);
    int peer = (x.r + 1) % x.w;
    char stack[64];
    EXPECT_RC(ncclSend(s.p, 10, ncclFloat32, x.w, x.c, kStream), ncclInvalidArgument);
    CHECK(contains(ncclGetLastError(x.c), "peer"), "message: %s", ncclGetLastError(x.c));
    EXPECT_RC(ncclSend(s.p, 10, ncclFloat32, -1, x.c, kStream), ncclInvalidArgument);
    EXPECT_RC(ncclSend(s.p, 10, static_cast<ncclDataType_t>(42), peer, x.c, kStream), ncclInvalidArgument);
    CHECK(contains(ncclGetLastError(x.c), "datatype"), "message: %s", ncclGetLastError(x.c));
    EXPECT_RC(ncclAllReduce(s.p, d.p, 10, ncclFloat32, static_cast<ncclRedOp_t>(99), x.c, kStream), ncclInvalidArgument);
    EXPECT_RC(ncclAllReduce(s.p, d.p, 10, ncclFloat8e4m3, ncclSum, x.c, kStream), ncclInvalidArgument);
    EXPECT_RC(ncclSend(stack, 8, ncclUint8, peer, x.c, kStream), ncclInvalidArgument);
    CHECK(contains(ncclGetLastError(x.c), "live device allocation"), "message: %s", ncclGetLastError(x.c));
    EXPECT_RC(ncclRecv(d.p, 4097, ncclUint8, peer, x.c, kStream), ncclInvalidArgument);  // one byte too many
    EXPECT_RC(ncclAllGather(s.p, d.p, 4096 / 4 / x.w + 1, ncclFloat32, x.c, kStream), ncclInvalidArgument);
    EXPECT_RC(ncclSend(s.p, SIZE_MAX / 2, ncclFloat32, peer, x.c, kStream), ncclInvalidArgument);
    EXPECT_RC(ncclSend(s.p, 10, ncclFloat32, peer, x.c, reinterpret_cast<CUstream>(0xdead)), ncclInvalidArgument);
    EXPECT_RC(ncclSend(s.p, 10, ncclFloat32, peer, nullptr, kStream), ncclInvalidArgument);
    EXPECT_RC(ncclGroupEnd(), ncclInvalidUsage);
    // A send to self outside a group can never be matched.
    EXPECT_RC(ncclSend(s.p, 10, ncclFloat32, x.r, x.c, kStream), ncclInvalidUsage);
    // One bad call discards the whole group.
    OK(ncclGroupStart());
    OK(ncclSend(s.p, 10, ncclFloat32, peer, x.c, kStream));
    EXPECT_RC(ncclSend(s.p, 10, ncclFloat32, x.w + 5, x.c, kStream), ncclInvalidArgument);
    OK(ncclRecv(d.p, 10, ncclFloat32, peer, x.c, kStream));
    EXPECT_RC(ncclGroupEnd(), ncclInvalidArgument);
    CHECK(contains(ncclGetLastError(x.c), "discarded"), "message: %s", ncclGetLastError(x.c));
    ncclResult_t async = ncclInternalError;
    OK(ncclCommGetAsyncError(x.c, &async));
    CHECK(async == ncclSuccess, "async error %d after validation errors", (int)async);
    // Nothing was posted: a fresh exchange sees exactly its own data (a stale message would be a
    // size mismatch or wrong data).
    ring_grouped(x, 55, 3);
}

void exercise(Ctx& x) {
    int n = -1, rk = -1;
    OK(ncclCommCount(x.c, &n));
    OK(ncclCommUserRank(x.c, &rk));
    CHECK(n == x.w && rk == x.r, "count %d rank %d", n, rk);
    ring_blocking(x);
    ring_grouped(x, 3, 5);
    ring_grouped(x, 4, 300000);  // 1.2 MB, more than a mailbox holds
    all_to_all_v(x);
    collectives(x);
    validation(x);
    ring_blocking(x);
}

ncclUniqueId new_id() {
    ncclUniqueId id;
    ncclResult_t rc = ncclGetUniqueId(&id);
    CHECK(rc == ncclSuccess, "ncclGetUniqueId: %d", (int)rc);
    return id;
}

// Runs fn(rank) on w threads.
void on_threads(int w, const std::function<void(int)>& fn) {
    std::vector<std::thread> ts;
    for (int r = 0; r < w; r++) ts.emplace_back(fn, r);
    for (auto& t : ts) t.join();
}

void threads_exercise(int w, bool big) {
    auto t0 = std::chrono::steady_clock::now();
    ncclUniqueId id = new_id();
    uint64_t seed = mix(w * 77 + 1);
    on_threads(w, [&](int r) {
        ncclComm_t c = nullptr;
        OK(ncclCommInitRank(&c, w, id, r));
        if (!c) return;
        Ctx x{c, r, w, seed, big, "threads"};
        exercise(x);
        OK(ncclCommDestroy(c));
    });
    printf("threads W=%d: done in %.2f s\n", w, since(t0));
}

void process_exercise(int w) {
    auto t0 = std::chrono::steady_clock::now();
    ncclUniqueId id = new_id();
    uint64_t seed = mix(w * 91 + 5);
    std::vector<pid_t> kids;
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < w; r++) {
        pid_t pid = fork();
        if (pid == 0) {
            g_failures = 0;  // count this rank's own failures
            ncclComm_t c = nullptr;
            OK(ncclCommInitRank(&c, w, id, r));
            if (c) {
                Ctx x{c, r, w, seed, true, "processes"};
                exercise(x);
                OK(ncclCommDestroy(c));
            }
            fflush(stderr);
            _exit(g_failures.load() ? 1 : 0);
        }
        kids.push_back(pid);
    }
    for (int r = 0; r < w; r++) {
        int st = 0;
        waitpid(kids[r], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process rank %d of %d: status 0x%x", r, w, st);
    }
    printf("processes W=%d: done in %.2f s\n", w, since(t0));
}

// ------------------------------------------------------------------ failure cases

void set_timeout(const char* v) { setenv("MOE4J_CPUDEV_NCCL_TIMEOUT_S", v, 1); }

void init_pair(ncclComm_t* c0, ncclComm_t* c1) {
    ncclUniqueId id = new_id();
    std::thread t([&] { OK(ncclCommInitRank(c1, 2, id, 1)); });
    OK(ncclCommInitRank(c0, 2, id, 0));
    t.join();
}

void timeout_case() {
    set_timeout("2");
    ncclComm_t c[2] = {nullptr, nullptr};
    init_pair(&c[0], &c[1]);
    std::atomic<bool> rank0_done{false};
    on_threads(2, [&](int r) {
        Buf b(1024);
        if (r == 0) {
            auto t0 = std::chrono::steady_clock::now();
            ncclResult_t rc = ncclRecv(b.p, 256, ncclFloat32, 1, c[0], kStream);
            double s = since(t0);
            const char* msg = ncclGetLastError(c[0]);
            CHECK(rc == ncclSystemError, "timeout: rc %d", (int)rc);
            CHECK(s > 1.9 && s < 4, "timeout after %.2f s", s);
            CHECK(contains(msg, "ncclRecv") && contains(msg, "rank 0 of 2") && contains(msg, "peer 1") &&
                      contains(msg, "MOE4J_CPUDEV_NCCL_TIMEOUT_S"),
                  "timeout message: %s", msg);
            ncclResult_t async = ncclSuccess;
            OK(ncclCommGetAsyncError(c[0], &async));
            CHECK(async == ncclSystemError, "async error %d", (int)async);
            EXPECT_RC(ncclSend(b.p, 1, ncclFloat32, 1, c[0], kStream), ncclSystemError);  // broken from now on
            CHECK(contains(ncclGetLastError(c[0]), "unusable"), "%s", ncclGetLastError(c[0]));
            rank0_done = true;
        } else {
            while (!rank0_done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
            // Rank 0 failed and left: rank 1 finds out at once instead of waiting for its timeout.
            auto t0 = std::chrono::steady_clock::now();
            EXPECT_RC(ncclRecv(b.p, 256, ncclFloat32, 0, c[1], kStream), ncclRemoteError);
            CHECK(since(t0) < 1, "peer-left detection took %.2f s", since(t0));
            CHECK(contains(ncclGetLastError(c[1]), "peer 0 has left"), "%s", ncclGetLastError(c[1]));
        }
    });
    OK(ncclCommDestroy(c[0]));
    OK(ncclCommDestroy(c[1]));
    printf("timeout: ok\n");
}

void abort_case() {
    set_timeout("30");
    ncclComm_t c[2] = {nullptr, nullptr};
    init_pair(&c[0], &c[1]);
    std::atomic<bool> returned{false};
    auto t0 = std::chrono::steady_clock::now();
    std::thread waiter([&] {
        Buf b(1024);
        ncclResult_t rc = ncclRecv(b.p, 256, ncclFloat32, 1, c[0], kStream);
        CHECK(rc == ncclSystemError, "aborted recv: rc %d", (int)rc);
        CHECK(contains(ncclGetLastError(nullptr), "ncclCommAbort"), "%s", ncclGetLastError(nullptr));
        returned = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK(!returned, "recv returned before the abort");
    OK(ncclCommAbort(c[0]));
    waiter.join();
    CHECK(since(t0) < 2, "abort took %.2f s", since(t0));
    OK(ncclCommDestroy(c[1]));
    printf("abort: ok\n");
}

void dead_process_case() {
    set_timeout("30");
    ncclUniqueId id = new_id();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        ncclComm_t c = nullptr;
        ncclCommInitRank(&c, 2, id, 1);
        _exit(0);  // dies without destroying
    }
    ncclComm_t c = nullptr;
    OK(ncclCommInitRank(&c, 2, id, 0));
    int st;
    waitpid(pid, &st, 0);
    Buf b(64);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_RC(ncclRecv(b.p, 16, ncclFloat32, 1, c, kStream), ncclRemoteError);
    CHECK(since(t0) < 2, "dead peer detected after %.2f s", since(t0));
    CHECK(contains(ncclGetLastError(c), "has exited"), "%s", ncclGetLastError(c));
    OK(ncclCommDestroy(c));
    printf("dead peer process: ok\n");
}

void init_failure_cases() {
    set_timeout("30");
    {  // mismatched nranks: one rank gets ncclInvalidArgument, the other learns at once
        ncclUniqueId id = new_id();
        ncclResult_t rc[2];
        ncclComm_t c[2] = {nullptr, nullptr};
        auto t0 = std::chrono::steady_clock::now();
        on_threads(2, [&](int r) {
            if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            rc[r] = ncclCommInitRank(&c[r], r == 0 ? 2 : 3, id, r);
        });
        CHECK(rc[0] == ncclInvalidUsage && rc[1] == ncclInvalidArgument, "mismatched nranks: rc %d %d", rc[0], rc[1]);
        CHECK(c[0] == nullptr && c[1] == nullptr, "communicator returned on failure");
        CHECK(since(t0) < 2, "mismatched nranks took %.2f s", since(t0));
    }
    {  // duplicate rank
        ncclUniqueId id = new_id();
        ncclResult_t rc[2];
        ncclComm_t c[2] = {nullptr, nullptr};
        on_threads(2, [&](int r) {
            if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            rc[r] = ncclCommInitRank(&c[r], 2, id, 0);
        });
        CHECK(rc[0] == ncclInvalidUsage && rc[1] == ncclInvalidUsage, "duplicate rank: rc %d %d", rc[0], rc[1]);
    }
    {  // bad arguments and a bad timeout variable
        ncclUniqueId id = new_id();
        ncclComm_t c = nullptr;
        EXPECT_RC(ncclCommInitRank(&c, 0, id, 0), ncclInvalidArgument);
        EXPECT_RC(ncclCommInitRank(&c, 2, id, 2), ncclInvalidArgument);
        ncclUniqueId junk;
        memset(&junk, 7, sizeof junk);
        EXPECT_RC(ncclCommInitRank(&c, 1, junk, 0), ncclInvalidArgument);
        for (const char* v : {"abc", "2s", "0", "-1", "", "inf"}) {
            set_timeout(v);
            EXPECT_RC(ncclCommInitRank(&c, 1, id, 0), ncclInvalidArgument);
            CHECK(contains(ncclGetLastError(nullptr), "MOE4J_CPUDEV_NCCL_TIMEOUT_S") &&
                      contains(ncclGetLastError(nullptr), (std::string("'") + v + "'").c_str()),
                  "%s", ncclGetLastError(nullptr));
        }
        set_timeout("0.5");
        OK(ncclCommInitRank(&c, 1, id, 0));
        OK(ncclCommDestroy(c));
    }
    {  // a rank that never joins: init times out naming it
        set_timeout("0.3");
        ncclUniqueId id = new_id();
        ncclComm_t c = nullptr;
        EXPECT_RC(ncclCommInitRank(&c, 3, id, 1), ncclSystemError);
        CHECK(contains(ncclGetLastError(nullptr), "rank(s) 0, 2"), "%s", ncclGetLastError(nullptr));
    }
    printf("init failures: ok\n");
}

void mismatch_and_misc_cases() {
    set_timeout("30");
    ncclComm_t c[2] = {nullptr, nullptr};
    init_pair(&c[0], &c[1]);
    on_threads(2, [&](int r) {
        Buf b(400);
        if (r == 0) {
            OK(ncclSend(b.p, 100, ncclFloat32, 1, c[0], kStream));
        } else {
            EXPECT_RC(ncclRecv(b.p, 50, ncclFloat32, 0, c[1], kStream), ncclInvalidUsage);
            CHECK(contains(ncclGetLastError(c[1]), "does not match"), "%s", ncclGetLastError(c[1]));
        }
    });
    OK(ncclCommDestroy(c[0]));
    OK(ncclCommDestroy(c[1]));

    // One thread driving both ranks in one group.
    init_pair(&c[0], &c[1]);
    {
        size_t n = 200000;
        Buf s0(n * 4), s1(n * 4), d0(n * 4), d1(n * 4), p(n * 4), q(n * 4);
        fill(T::F32, 9, 0, 11, s0.p, 0, n);
        fill(T::F32, 9, 1, 11, s1.p, 0, n);
        fill(T::F32, 9, 0, 12, p.p, 0, n);
        OK(ncclGroupStart());
        OK(ncclAllReduce(s0.p, d0.p, n, ncclFloat32, ncclSum, c[0], kStream));
        OK(ncclAllReduce(s1.p, d1.p, n, ncclFloat32, ncclSum, c[1], kStream));
        OK(ncclSend(p.p, n, ncclFloat32, 1, c[0], kStream));
        OK(ncclRecv(q.p, n, ncclFloat32, 0, c[1], kStream));
        OK(ncclGroupEnd());
        Ctx x{c[0], 0, 2, 9, false, "one thread"};
        check_reduced(x, T::F32, ncclSum, 11, d0.p, 0, n, "two-rank group");
        check_reduced(x, T::F32, ncclSum, 11, d1.p, 0, n, "two-rank group");
        CHECK(memcmp(p.p, q.p, n * 4) == 0, "one-thread group p2p");
    }
    OK(ncclCommDestroy(c[0]));
    OK(ncclCommDestroy(c[1]));

    // Sticky CUDA error.
    ncclUniqueId id = new_id();
    ncclComm_t one = nullptr;
    OK(ncclCommInitRank(&one, 1, id, 0));
    Buf b(64);
    g_sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
    EXPECT_RC(ncclAllReduce(b.p, b.p, 4, ncclFloat32, ncclSum, one, kStream), ncclUnhandledCudaError);
    g_sticky = CUDA_SUCCESS;
    OK(ncclAllReduce(b.p, b.p, 4, ncclFloat32, ncclSum, one, kStream));
    OK(ncclCommDestroy(one));
    OK(ncclCommDestroy(nullptr));
    int v = 0;
    OK(ncclGetVersion(&v));
    CHECK(v == NCCL_VERSION_CODE, "version %d", v);
    printf("mismatch, one-thread group, sticky error: ok\n");
}

}  // namespace

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    auto t0 = std::chrono::steady_clock::now();
    set_timeout("60");
    for (int w : {1, 2, 4, 8}) threads_exercise(w, true);
    for (int w : {2, 4}) process_exercise(w);
    set_timeout("60");
    init_failure_cases();
    mismatch_and_misc_cases();
    abort_case();
    dead_process_case();
    timeout_case();
    (void)argc;
    (void)argv;
    int f = g_failures.load();
    printf("%s: %d failure(s) in %.2f s\n", f ? "FAILED" : "PASSED", f, since(t0));
    return f ? 1 : 0;
}
