// moe4j CPU device: the kernel runtime. Runs one kernel launch block by block; a block's CUDA
// threads are cooperative fibers on the launching OS thread, switched where CUDA threads wait for
// each other (and, so that a thread spinning on memory cannot starve the others, after every atomic
// and every 2^20 memory accesses). Implements the emu_* entry points of emu.h, memcheck (the
// instrumentation callbacks of -fsanitize=kernel-address) and racecheck.
//
// Scheduling: fibers run in thread-index order, each until it blocks (barrier, warp collective,
// mbarrier wait), yields or returns. When no fiber can run and some have not returned, the launch
// fails with what each waits for (a barrier some thread never reaches, an mbarrier phase that cannot
// complete) instead of hanging; a launch that runs past MOE4J_CPUDEV_LAUNCH_TIMEOUT_S (default 600)
// fails as a livelock (e.g. a spin on a flag that only another block sets: blocks run one by one).
//
// Shared memory: one window per process, the launch's dynamic shared memory at shared address 0
// (1024-aligned) and the kernels' static variables (MOE4J_SHARED) after it, each between red zones.
// Both are filled with 0xFF bytes when each block starts (real shared memory holds garbage).
//
// Racecheck (shared memory): every CUDA thread has a vector clock. Barriers (__syncthreads, bar.sync)
// and __syncwarp join their participants; mbarriers order arrive (release) before a completed wait
// (acquire), and a TMA copy's complete_tx is a release by the issuing thread; a wgmma group's
// completion is a release by the thread that completed it, acquired by each thread's wait_group.
// Shuffles, votes and match do not order memory (PTX memory model: only bar.warp.sync does). Each
// shared byte remembers its last writer (plain or atomic) and its readers since; an access that is
// not ordered after a conflicting one by another thread fails the launch (read-after-write,
// write-after-read, write-after-write; two atomics never conflict).
#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#define MOE4J_EMU_RUNTIME 1
#include "emu.h"
#include "kernel_registry.h"
#include "ptx_emu.h"
#include "runtime.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace moe4j_emu {

ThreadCoords* g_coords = nullptr;

// The shared-memory window: [0, kMaxDynamicShared) dynamic, then kStaticArea for static variables.
static constexpr uint32_t kMaxDynamicShared = 232448;  // H100/H200 opt-in maximum per block
static constexpr uint32_t kStaticArea = 64 * 1024;
static constexpr uint32_t kRedZone = 64;
alignas(1024) static unsigned char g_smem[kMaxDynamicShared + kStaticArea];

struct StaticVar {
    uint32_t off;  // in the static area
    uint32_t size;
    const char* name;
};
static std::vector<StaticVar> g_staticVars;
static std::vector<uint8_t> g_staticOk(kStaticArea, 0);  // 1 where a static variable lives
static uint32_t g_staticUsed = kRedZone;

// ---------------------------------------------------------------------------------------------
// Kernel registry
// ---------------------------------------------------------------------------------------------
static std::vector<KernelInfo*>& registry() {
    static std::vector<KernelInfo*> r;
    return r;
}
void register_kernel(KernelInfo* k) { registry().push_back(k); }
const std::vector<KernelInfo*>& kernels() { return registry(); }

}  // namespace moe4j_emu

#include <cxxabi.h>

namespace moe4j_emu {

std::string demangle(const char* mangled) {
    int status = 0;
    char* s = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string r = status == 0 && s ? s : mangled;
    free(s);
    return r;
}

// ---------------------------------------------------------------------------------------------
// Fibers
// ---------------------------------------------------------------------------------------------
#if defined(__x86_64__)
extern "C" void moe4j_fiber_switch(void** save, void* to);
asm(R"(
.text
.globl moe4j_fiber_switch
.hidden moe4j_fiber_switch
.type moe4j_fiber_switch,@function
moe4j_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size moe4j_fiber_switch, .-moe4j_fiber_switch
)");
#endif

enum FiberState { RUNNABLE, BLOCKED, DONE };

struct CpAsync {
    uint32_t dst;
    const unsigned char* src;
    int srcBytes;
};

struct WgOp;

struct Fiber {
    void* sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    int tid = 0;
    ThreadCoords* coordsAt = nullptr;  // at the top of the fiber's stack, so that kernel reads of it are stack reads
    ThreadCoords coords{};
    FiberState state = RUNNABLE;
    const char* waitWhat = "";
    uint64_t waitA = 0, waitB = 0;
    uintptr_t stackLo = 0, stackHi = 0;
    uint32_t accessesSinceSwitch = 0;
    std::vector<CpAsync> cpPending;  // issued, not yet waited for
    std::vector<size_t> cpGroups;    // cpPending size at each commit
    std::vector<std::shared_ptr<WgOp>> wgUncommitted;           // wgmma issued since the last commit_group
    std::vector<std::vector<std::shared_ptr<WgOp>>> wgGroups;   // committed, not yet waited for (oldest first)
};

// A rendezvous of some lanes of a warp (member mask) or of a warpgroup at one collective instruction.
struct Rendezvous {
    int op = 0;
    int width = 32;
    uint32_t mask = 0;
    int arrived = 0;
    int first = 0;                    // tid of lane 0
    const char* what = "";
    void (*complete)(Rendezvous&) = nullptr;
    std::vector<Fiber*> lanes;        // [width]; null where the lane has not arrived
    std::vector<void*> io;            // [width]
};

struct NamedBarrier {
    int arrived = 0;
    int target = 0;
    bool all = false;
    std::vector<Fiber*> members;
};

struct MBarrier {
    bool init = false;
    int count = 0;
    int pending = 0;
    int64_t tx = 0;
    uint32_t phase = 0;
    std::vector<uint32_t> acc;   // join of the clocks released in the current phase
    std::vector<uint32_t> done;  // join over completed phases
};

// One wgmma.mma_async of a warpgroup: executed (operands read, accumulators written) when the first
// thread waits for its group, as late as the PTX ISA lets the hardware read its operands.
struct WgOp {
    int n = 0, ta = 0, tb = 0, scaleD = 0;
    uint64_t da = 0, db = 0;
    float* d[128] = {};
    std::vector<float> in;                // accumulators when issued (threads x n/2), unless chained
    std::shared_ptr<WgOp> prev;           // the pending wgmma on the same accumulators, issued before
    std::vector<float> out;               // result, once executed
    bool executed = false;
    bool superseded = false;              // a later pending wgmma continues from this one's result
    std::vector<uint32_t> doneVC;         // clock of the completing thread (racecheck)
};

struct Shadow {
    uint32_t gen;
    uint16_t w, aw, r0, r1;  // thread + 1 (0: none): last plain write, last atomic, readers since
    uint8_t more;            // readers beyond r0/r1 in g_moreReaders
    uint32_t wc, awc, rc0, rc1;
};

struct Exec {
    const KernelInfo* kernel = nullptr;
    void* args = nullptr;
    uintptr_t argsLo = 0, argsHi = 0;
    dim3 grid{}, block{};
    uint32_t dynShared = 0;
    int nthreads = 0;
    int live = 0;
    uint3 blockIdx{};
    std::vector<Fiber> fibers;
    Fiber* cur = nullptr;
    void* schedSp = nullptr;
#if !defined(__x86_64__)
    ucontext_t schedUc;
#endif
    bool faulted = false;
    std::string message;
    std::vector<std::vector<Rendezvous>> warps;  // per warp: pending rendezvous, one per member mask
    std::vector<Rendezvous> warpgroups;          // per warpgroup
    NamedBarrier bars[16];
    std::unordered_map<uint32_t, MBarrier> mbars;
    std::unordered_map<const float*, std::shared_ptr<WgOp>> wgLatest;  // accumulators -> last pending wgmma
    std::chrono::steady_clock::time_point deadline;
    // memcheck
    bool memcheck = true;
    uintptr_t cacheLo = 0, cacheHi = 0;
    uint64_t cacheGen = ~0ull;
    // racecheck
    bool racecheck = true;
    bool raceActive = false;
    std::vector<uint32_t> vc;  // [nthreads][nthreads]
    uint32_t shadowGen = 0;
};

static Exec* g_exec = nullptr;
static std::vector<Shadow> g_shadow;
static std::unordered_map<uint32_t, std::vector<std::pair<uint16_t, uint32_t>>> g_moreReaders;
static uint32_t g_shadowGen = 0;  // one per block run in the process; stale shadow entries have older ones
static uintptr_t g_smemLo, g_smemHi, g_dynHi;
static uintptr_t g_imageLo = ~(uintptr_t)0, g_imageHi = 0;

// Fiber stacks: one mapping, a guard page below each stack.
static constexpr size_t kStackBytes = 256 * 1024;
static constexpr size_t kPage = 4096;
static unsigned char* g_stacks = nullptr;
static int g_stackCount = 0;

static void ensure_stacks(int n) {
    if (n <= g_stackCount) return;
    if (g_stacks) munmap(g_stacks, (size_t)g_stackCount * (kStackBytes + kPage));
    const size_t bytes = (size_t)n * (kStackBytes + kPage);
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        g_stacks = nullptr;
        g_stackCount = 0;
        throw std::runtime_error("cannot map fiber stacks");
    }
    g_stacks = static_cast<unsigned char*>(p);
    for (int i = 0; i < n; ++i) mprotect(g_stacks + (size_t)i * (kStackBytes + kPage), kPage, PROT_NONE);
    g_stackCount = n;
}

static std::string where(const Fiber* f) {
    char b[200];
    const Exec& e = *g_exec;
    if (f) {
        snprintf(b, sizeof b, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", e.kernel->name, e.blockIdx.x, e.blockIdx.y,
                 e.blockIdx.z, f->coords.threadIdx.x, f->coords.threadIdx.y, f->coords.threadIdx.z);
    } else {
        snprintf(b, sizeof b, "kernel %s, block (%u,%u,%u)", e.kernel->name, e.blockIdx.x, e.blockIdx.y, e.blockIdx.z);
    }
    return b;
}

static void switch_to_scheduler() {
    Exec& e = *g_exec;
    Fiber* f = e.cur;
    f->accessesSinceSwitch = 0;
#if defined(__x86_64__)
    moe4j_fiber_switch(&f->sp, e.schedSp);
#else
    swapcontext(&f->uc, &e.schedUc);
#endif
}

// Ends the launch with a fault raised by the running fiber: the fiber is abandoned (its stack is
// discarded with the launch), the scheduler stops. Never called inside a catch block (the
// exception would stay alive on the launching thread).
[[noreturn]] static void abandon(const std::string& msg) {
    Exec& e = *g_exec;
    if (!e.faulted) {
        e.faulted = true;
        e.message = msg;
    }
    e.cur->state = DONE;
    switch_to_scheduler();
    __builtin_unreachable();
}

[[noreturn]] static void kfault(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] static void kfault(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    abandon(where(g_exec->cur) + ": " + buf);
}

void emu_trap(const char* what) { kfault("%s", what); }

// Runs a PTX helper of ptx_emu.cpp; a Fault it throws becomes the launch's fault (outside the catch).
template <typename F>
static void ptx_call(F&& f) {
    std::string failure;
    try {
        f();
        return;
    } catch (const Fault& x) {
        failure = x.what();
    }
    kfault("%s", failure.c_str());
}

// Lets the other threads of the block run (a thread spinning on memory must not starve them).
static void yield_now() {
    Exec* e = g_exec;
    if (!e || !e->cur) return;
    switch_to_scheduler();  // stays RUNNABLE
}

// ---------------------------------------------------------------------------------------------
// Racecheck
// ---------------------------------------------------------------------------------------------
static inline uint32_t* vc_of(int t) { return &g_exec->vc[(size_t)t * g_exec->nthreads]; }

// Clocks start when a block first touches shared memory: synchronisation before that orders nothing.
static void race_activate() {
    Exec& e = *g_exec;
    e.raceActive = true;
    e.vc.assign((size_t)e.nthreads * e.nthreads, 0);
    for (int t = 0; t < e.nthreads; ++t) vc_of(t)[t] = 1;
}

// All participants see everything each of them did before (barrier, __syncwarp), then move on.
static void race_join(const std::vector<Fiber*>& members) {
    Exec& e = *g_exec;
    if (!e.raceActive || members.empty()) return;
    const int n = e.nthreads;
    std::vector<uint32_t> j(vc_of(members[0]->tid), vc_of(members[0]->tid) + n);
    for (size_t m = 1; m < members.size(); ++m) {
        const uint32_t* v = vc_of(members[m]->tid);
        for (int i = 0; i < n; ++i) j[i] = std::max(j[i], v[i]);
    }
    for (Fiber* f : members) {
        std::copy(j.begin(), j.end(), vc_of(f->tid));
        vc_of(f->tid)[f->tid]++;
    }
}
static void race_release(std::vector<uint32_t>& into, int t) {
    Exec& e = *g_exec;
    if (!e.raceActive) return;
    if (into.size() != (size_t)e.nthreads) into.assign(e.nthreads, 0);
    const uint32_t* v = vc_of(t);
    for (int i = 0; i < e.nthreads; ++i) into[i] = std::max(into[i], v[i]);
    vc_of(t)[t]++;
}
static void race_acquire(const std::vector<uint32_t>& from, int t) {
    Exec& e = *g_exec;
    if (!e.raceActive || from.size() != (size_t)e.nthreads) return;
    uint32_t* v = vc_of(t);
    for (int i = 0; i < e.nthreads; ++i) v[i] = std::max(v[i], from[i]);
}

[[noreturn]] static void race_fault(const char* kind, int other, uintptr_t a) {
    const Exec& e = *g_exec;
    const Fiber& o = e.fibers[other];
    char b[400];
    snprintf(b, sizeof b,
             "racecheck: %s hazard on shared memory 0x%x (%s) with thread (%u,%u,%u): no barrier, __syncwarp or "
             "mbarrier orders the two accesses",
             kind, (unsigned)(a - g_smemLo), a < g_dynHi ? "dynamic" : "static", o.coords.threadIdx.x,
             o.coords.threadIdx.y, o.coords.threadIdx.z);
    abandon(where(e.cur) + ": " + b);
}

enum AccessKind { READ, WRITE, ATOMIC };

static void race_access(int t, uintptr_t a, size_t n, AccessKind kind) {
    Exec& e = *g_exec;
    if (!e.racecheck) return;
    if (!e.raceActive) race_activate();
    const uint32_t* v = vc_of(t);
    const uint32_t now = v[t];
    auto unordered = [&](uint16_t who, uint32_t clk) { return who && who - 1 != t && v[who - 1] < clk; };
    for (size_t i = 0; i < n; ++i) {
        const uint32_t off = (uint32_t)(a + i - g_smemLo);
        Shadow& s = g_shadow[off];
        if (s.gen != e.shadowGen) s = Shadow{e.shadowGen, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        // every access is ordered after the last plain write; plain accesses after the last atomic too
        if (unordered(s.w, s.wc)) race_fault(kind == READ ? "read-after-write" : "write-after-write", s.w - 1, a + i);
        if (kind != ATOMIC && unordered(s.aw, s.awc)) {
            race_fault(kind == READ ? "read-after-atomic" : "write-after-atomic", s.aw - 1, a + i);
        }
        if (kind == READ) {
            if (!s.r0 || s.r0 - 1 == t || !unordered(s.r0, s.rc0)) {
                s.r0 = (uint16_t)(t + 1);
                s.rc0 = now;
            } else if (!s.r1 || s.r1 - 1 == t || !unordered(s.r1, s.rc1)) {
                s.r1 = (uint16_t)(t + 1);
                s.rc1 = now;
            } else {  // a third unordered reader: keep every one (a write must be ordered after all)
                auto& more = g_moreReaders[off];
                if (!s.more) more.clear();
                s.more = 1;
                bool found = false;
                for (auto& r : more) {
                    if (r.first == t + 1) {
                        r.second = now;
                        found = true;
                    }
                }
                if (!found) more.emplace_back((uint16_t)(t + 1), now);
            }
            continue;
        }
        if (unordered(s.r0, s.rc0)) race_fault("write-after-read", s.r0 - 1, a + i);
        if (unordered(s.r1, s.rc1)) race_fault("write-after-read", s.r1 - 1, a + i);
        if (s.more) {
            for (const auto& r : g_moreReaders[off])
                if (unordered(r.first, r.second)) race_fault("write-after-read", r.first - 1, a + i);
            g_moreReaders.erase(off);
            s.more = 0;
        }
        if (kind == ATOMIC) {
            s.aw = (uint16_t)(t + 1);
            s.awc = now;
        } else {
            s.w = (uint16_t)(t + 1);
            s.wc = now;
            s.aw = 0;
        }
        s.r0 = s.r1 = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Memcheck
// ---------------------------------------------------------------------------------------------
[[noreturn]] static void global_fault(uintptr_t a, size_t n, bool write) {
    std::string near = cpudev_describe_address(a);
    char b[300];
    snprintf(b, sizeof b, "memcheck: invalid global %s of %zu bytes at 0x%" PRIxPTR ": %s", write ? "write" : "read", n, a,
             near.c_str());
    abandon(where(g_exec->cur) + ": " + b);
}

static std::string nearest_static(uint32_t off) {
    const StaticVar* best = nullptr;
    uint32_t dist = ~0u;
    for (const StaticVar& v : g_staticVars) {
        const uint32_t d = off < v.off ? v.off - off : off >= v.off + v.size ? off - (v.off + v.size) + 1 : 0;
        if (d < dist) {
            dist = d;
            best = &v;
        }
    }
    if (!best) return "no __shared__ variable is declared";
    char b[200];
    snprintf(b, sizeof b, "%u bytes %s __shared__ %s (%u bytes)", dist, off < best->off ? "before" : "past the end of",
             best->name, best->size);
    return b;
}

static void mbar_store_check(Exec& e, uintptr_t a, size_t n);

static inline void check_shared(Exec& e, uintptr_t a, size_t n, AccessKind kind) {
    if (a < g_dynHi) {
        if (a + n > g_smemLo + e.dynShared) {
            char b[300];
            snprintf(b, sizeof b,
                     "memcheck: invalid shared %s of %zu bytes at shared 0x%x: past the launch's %u bytes of dynamic "
                     "shared memory",
                     kind == READ ? "read" : "write", n, (unsigned)(a - g_smemLo), e.dynShared);
            abandon(where(e.cur) + ": " + b);
        }
    } else {
        const uint32_t off = (uint32_t)(a - g_dynHi);
        for (size_t i = 0; i < n; ++i) {
            if (!g_staticOk[off + i]) {
                char b[400];
                snprintf(b, sizeof b, "memcheck: invalid shared %s of %zu bytes at shared 0x%x: outside every __shared__ "
                         "variable (%s)", kind == READ ? "read" : "write", n, (unsigned)(a - g_smemLo),
                         nearest_static(off + (uint32_t)i).c_str());
                abandon(where(e.cur) + ": " + b);
            }
        }
    }
    if (kind == WRITE && !e.mbars.empty()) mbar_store_check(e, a, n);
    if (e.racecheck) race_access(e.cur->tid, a, n, kind);
}

static inline void check_access(uintptr_t a, size_t n, bool write) {
    Exec* e = g_exec;
    if (!e || !e->cur) return;
    Fiber* f = e->cur;
    if (++f->accessesSinceSwitch >= (1u << 20)) yield_now();
    if (a >= f->stackLo && a + n <= f->stackHi) return;
    if (a >= g_smemLo && a + n <= g_smemHi) {
        check_shared(*e, a, n, write ? WRITE : READ);
        return;
    }
    if (!e->memcheck) return;
    if (a >= e->argsLo && a + n <= e->argsHi) return;
    if (a >= e->cacheLo && a + n <= e->cacheHi && e->cacheGen == cpudev_alloc_generation()) return;
    uintptr_t lo, hi;
    if (cpudev_find_allocation(a, n, &lo, &hi)) {
        e->cacheLo = lo;
        e->cacheHi = hi;
        e->cacheGen = cpudev_alloc_generation();
        return;
    }
    if (!write && a >= g_imageLo && a + n <= g_imageHi) return;  // constant tables of the kernels' image
    global_fault(a, n, write);
}

// Global range check for the PTX helpers (TMA, cp.async).
static bool range_live_for_ptx(const void* p, size_t n) {
    uintptr_t lo, hi;
    return cpudev_find_allocation((uintptr_t)p, n, &lo, &hi);
}

void emu_atomic_begin(const void* p, size_t bytes, bool) {
    Exec* e = g_exec;
    if (!e || !e->cur) return;
    yield_now();  // a polling loop on an atomic lets the thread it waits for run
    const uintptr_t a = (uintptr_t)p;
    if (a >= g_smemLo && a + bytes <= g_smemHi) {
        check_shared(*e, a, bytes, ATOMIC);
        return;
    }
    if (!e->memcheck) return;
    uintptr_t lo, hi;
    if (!cpudev_find_allocation(a, bytes, &lo, &hi)) global_fault(a, bytes, true);
}

}  // namespace moe4j_emu

// The callbacks GCC emits for -fsanitize=kernel-address with call instrumentation.
#define MOE4J_ASAN_CB(n)                                                                                     \
    extern "C" __attribute__((visibility("hidden"))) void __asan_load##n##_noabort(uintptr_t a) {           \
        moe4j_emu::check_access(a, n, false);                                                                \
    }                                                                                                        \
    extern "C" __attribute__((visibility("hidden"))) void __asan_store##n##_noabort(uintptr_t a) {          \
        moe4j_emu::check_access(a, n, true);                                                                 \
    }
MOE4J_ASAN_CB(1)
MOE4J_ASAN_CB(2)
MOE4J_ASAN_CB(4)
MOE4J_ASAN_CB(8)
MOE4J_ASAN_CB(16)
extern "C" __attribute__((visibility("hidden"))) void __asan_loadN_noabort(uintptr_t a, size_t n) {
    moe4j_emu::check_access(a, n, false);
}
extern "C" __attribute__((visibility("hidden"))) void __asan_storeN_noabort(uintptr_t a, size_t n) {
    moe4j_emu::check_access(a, n, true);
}
extern "C" __attribute__((visibility("hidden"))) void __asan_handle_no_return() {}
extern "C" __attribute__((visibility("hidden"))) void __asan_before_dynamic_init(const char*) {}
extern "C" __attribute__((visibility("hidden"))) void __asan_after_dynamic_init() {}

namespace moe4j_emu {

// ---------------------------------------------------------------------------------------------
// Shared memory declarations
// ---------------------------------------------------------------------------------------------
unsigned char* emu_dynamic_shared() { return g_smem; }

// A static __shared__ variable (MOE4J_SHARED): its place in the static area, once per process.
unsigned char* emu_static_shared(size_t size, size_t align, const char* name) {
    if (align == 0 || (align & (align - 1))) kfault("__shared__ %s: alignment %zu is not a power of two", name, align);
    const uint32_t off = (uint32_t)((g_staticUsed + align - 1) / align * align);
    if ((size_t)off + size + kRedZone > kStaticArea) {
        kfault("__shared__ %s (%zu bytes): the CPU device's %u bytes for static shared memory are used up", name, size,
               kStaticArea);
    }
    g_staticVars.push_back(StaticVar{off, (uint32_t)size, name});
    std::fill(g_staticOk.begin() + off, g_staticOk.begin() + off + size, 1);
    g_staticUsed = off + (uint32_t)size + kRedZone;
    return g_smem + kMaxDynamicShared + off;
}

uint32_t emu_cvta_shared(const void* p) {
    const uintptr_t a = (uintptr_t)p;
    if (a < g_smemLo || a >= g_smemHi) kfault("__cvta_generic_to_shared: 0x%" PRIxPTR " is not a shared-memory address", a);
    return (uint32_t)(a - g_smemLo);
}

static SmemWindow window() { return SmemWindow{(unsigned char*)g_smemLo, (uint32_t)(g_smemHi - g_smemLo)}; }

// Shared address -> host address, checked like an access of `n` bytes by the current thread.
static uintptr_t shared_host(uint32_t addr, size_t n, AccessKind kind, const char* what) {
    const uintptr_t a = g_smemLo + addr;
    if (a + n > g_smemHi || a < g_smemLo) kfault("%s: shared address 0x%x (+%zu bytes) outside shared memory", what, addr, n);
    check_shared(*g_exec, a, n, kind);
    return a;
}

// ---------------------------------------------------------------------------------------------
// Blocking, barriers, collectives
// ---------------------------------------------------------------------------------------------
static void block_current(const char* what, uint64_t a, uint64_t b) {
    Fiber* f = g_exec->cur;
    f->state = BLOCKED;
    f->waitWhat = what;
    f->waitA = a;
    f->waitB = b;
    switch_to_scheduler();
}

static void wake(Fiber* f) {
    if (f->state == BLOCKED) f->state = RUNNABLE;
}

static void complete_barrier(NamedBarrier& nb) {
    race_join(nb.members);
    for (Fiber* m : nb.members) wake(m);
    nb.members.clear();
    nb.arrived = 0;
    nb.target = 0;
    nb.all = false;
}

void emu_bar_sync(int id, int count) {
    Exec& e = *g_exec;
    if (id < 0 || id > 15) kfault("bar.sync: barrier id %d outside 0..15", id);
    if (count >= 0 && (count <= 0 || count % 32 != 0 || count > e.nthreads + 31)) {
        kfault("bar.sync %d, %d: the thread count must be a positive multiple of 32 covering at most the block", id, count);
    }
    NamedBarrier& nb = e.bars[id];
    if (nb.arrived == 0) {
        nb.all = count < 0;
        nb.target = count;
    } else if (nb.all != (count < 0) || (count >= 0 && nb.target != count)) {
        kfault("bar.sync %d: threads arrive with different thread counts (%d and %d)", id, nb.target, count);
    }
    nb.members.push_back(e.cur);
    nb.arrived++;
    const int target = nb.all ? e.live : nb.target;
    if (nb.arrived >= target) {
        complete_barrier(nb);
        return;
    }
    block_current(nb.all ? "__syncthreads" : "bar.sync", (uint64_t)id, (uint64_t)target);
}

// Lanes a collective waits for: the mask's lanes that exist in the block and have not exited
// (PTX ISA: shfl.sync, vote.sync, match.sync, bar.warp.sync wait for the non-exited threads of the mask).
static int required_lanes(const Rendezvous& r) {
    const Exec& e = *g_exec;
    int need = 0;
    for (int l = 0; l < r.width; ++l) {
        if (r.width == 32 && !(r.mask >> l & 1u)) continue;
        const int t = r.first + l;
        if (t < e.nthreads && e.fibers[t].state != DONE) need++;
    }
    return need;
}

static void finish_rendezvous(Rendezvous& r) {
    std::vector<Fiber*> members;
    for (Fiber* m : r.lanes)
        if (m) members.push_back(m);
    if (r.op == W_SYNCWARP) race_join(members);  // only bar.warp.sync orders memory between lanes
    Fiber* saved = g_exec->cur;
    r.complete(r);
    g_exec->cur = saved;
    for (Fiber* m : members) wake(m);
    r.arrived = 0;
}

// Arrive at a collective; when every required lane has arrived, the last one runs `complete` with
// every lane's io. Returns when the collective has completed.
static void collective(Rendezvous& r, int width, int op, uint32_t mask, void* io, const char* what,
                       void (*complete)(Rendezvous&)) {
    Exec& e = *g_exec;
    Fiber* f = e.cur;
    const int lane = f->tid % width;
    if (width == 32 && !(mask >> lane & 1u)) kfault("%s: the calling lane %d is not in the member mask 0x%08x", what, lane, mask);
    if (r.arrived == 0) {
        r.op = op;
        r.width = width;
        r.mask = mask;
        r.first = f->tid - lane;
        r.what = what;
        r.complete = complete;
        r.lanes.assign(width, nullptr);
        r.io.assign(width, nullptr);
    } else if (r.op != op) {
        kfault("%s: lanes of one %s meet at different collectives (%s and %s): divergent collective", what,
               width == 32 ? "warp" : "warpgroup", r.what, what);
    }
    if (r.lanes[lane]) kfault("%s: lane %d arrived twice", what, lane);
    r.lanes[lane] = f;
    r.io[lane] = io;
    r.arrived++;
    if (r.arrived >= required_lanes(r)) {
        finish_rendezvous(r);
        return;
    }
    block_current(what, (uint64_t)r.arrived, (uint64_t)required_lanes(r));
}

// The warp's pending rendezvous for this member mask; masks of pending collectives must not overlap.
static Rendezvous& warp_rendezvous(int warp, uint32_t mask, const char* what) {
    auto& list = g_exec->warps[warp];
    Rendezvous* freeSlot = nullptr;
    for (Rendezvous& r : list) {
        if (r.arrived == 0) {
            if (!freeSlot) freeSlot = &r;
            continue;
        }
        if (r.mask == mask) return r;
        if (r.mask & mask) {
            kfault("%s with member mask 0x%08x while lanes of mask 0x%08x wait in %s: divergent collective", what, mask,
                   r.mask, r.what);
        }
    }
    if (freeSlot) return *freeSlot;
    list.emplace_back();
    return list.back();
}

// A thread exits: collectives that waited for it may now be complete.
static void recheck_after_exit(Fiber& f) {
    Exec& e = *g_exec;
    for (Rendezvous& r : e.warps[f.tid / 32])
        if (r.arrived > 0 && r.arrived >= required_lanes(r)) finish_rendezvous(r);
    Rendezvous& g = e.warpgroups[f.tid / 128];
    if (g.arrived > 0 && g.arrived >= required_lanes(g)) finish_rendezvous(g);
    NamedBarrier& nb = e.bars[0];
    if (nb.arrived > 0 && nb.all && nb.arrived >= e.live) complete_barrier(nb);
}

struct WarpIO {
    unsigned long long v;
    int arg;
    int width;
    unsigned long long out;
};

static void complete_warp_op(Rendezvous& r) {
    auto io = [&](int l) { return static_cast<WarpIO*>(r.io[l]); };
    for (int l = 0; l < 32; ++l) {
        if (!r.lanes[l]) continue;
        WarpIO& me = *io(l);
        const int w = me.width;
        const int seg = l & ~(w - 1);
        const int maxLane = seg + w - 1;
        int src = l;
        switch (r.op) {  // PTX ISA shfl.sync: idx / bfly / up / down, with the segment's bounds
            case W_SHFL: src = seg + (me.arg & (w - 1)); break;
            case W_SHFL_XOR: src = (l ^ me.arg) > maxLane ? l : (l ^ me.arg); break;
            case W_SHFL_UP: src = l - me.arg >= seg ? l - me.arg : l; break;
            case W_SHFL_DOWN: src = l + me.arg <= maxLane ? l + me.arg : l; break;
            default: break;
        }
        switch (r.op) {
            case W_SHFL:
            case W_SHFL_XOR:
            case W_SHFL_UP:
            case W_SHFL_DOWN:
                if (src < 0 || src > 31 || !r.lanes[src]) {
                    g_exec->cur = r.lanes[l];
                    kfault("%s: lane %d reads lane %d, which is not in the member mask 0x%08x or has exited (undefined "
                           "on the GPU)", r.what, l, src, r.mask);
                }
                me.out = io(src)->v;
                break;
            case W_ALL: {
                int all = 1;
                for (int k = 0; k < 32; ++k)
                    if (r.lanes[k] && !io(k)->v) all = 0;
                me.out = all;
                break;
            }
            case W_ANY: {
                int any = 0;
                for (int k = 0; k < 32; ++k)
                    if (r.lanes[k] && io(k)->v) any = 1;
                me.out = any;
                break;
            }
            case W_BALLOT: {
                unsigned b = 0;
                for (int k = 0; k < 32; ++k)
                    if (r.lanes[k] && io(k)->v) b |= 1u << k;
                me.out = b;
                break;
            }
            case W_MATCH_ANY: {
                unsigned b = 0;
                for (int k = 0; k < 32; ++k)
                    if (r.lanes[k] && io(k)->v == me.v) b |= 1u << k;
                me.out = b;
                break;
            }
            default: me.out = 0; break;
        }
    }
}

unsigned long long emu_warp_op(int op, unsigned mask, unsigned long long value, int arg, int width) {
    Exec& e = *g_exec;
    if (width <= 0 || width > 32 || (width & (width - 1))) kfault("warp shuffle: width %d is not a power of two <= 32", width);
    WarpIO io{value, arg, width, 0};
    static const char* names[] = {"?", "__shfl_sync", "__shfl_xor_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__all_sync", "__any_sync", "__ballot_sync", "__match_any_sync", "__syncwarp"};
    const int warp = e.cur->tid / 32;
    collective(warp_rendezvous(warp, mask, names[op]), 32, op, mask, &io, names[op], complete_warp_op);
    return io.out;
}

// ---------------------------------------------------------------------------------------------
// cp.async
// ---------------------------------------------------------------------------------------------
void emu_cp_async16(uint32_t dst, const void* src, int srcBytes) {
    Exec& e = *g_exec;
    if (dst % 16) kfault("cp.async: shared destination 0x%x is not 16-byte aligned", dst);
    if (srcBytes < 0 || srcBytes > 16) kfault("cp.async: src-size %d outside 0..16", srcBytes);
    if (g_smemLo + dst + 16 > g_smemHi) kfault("cp.async: shared destination 0x%x outside shared memory", dst);
    if (srcBytes > 0) {
        if ((uintptr_t)src % 16) kfault("cp.async: global source %p is not 16-byte aligned", src);
        if (e.memcheck && !range_live_for_ptx(src, srcBytes)) global_fault((uintptr_t)src, srcBytes, false);
    }
    e.cur->cpPending.push_back(CpAsync{dst, static_cast<const unsigned char*>(src), srcBytes});
}

void emu_cp_async_commit() { g_exec->cur->cpGroups.push_back(g_exec->cur->cpPending.size()); }

// Completes every cp.async except those of the newest n committed groups (and any uncommitted ones,
// which wait_group does not cover): the copies land now, as this thread's writes.
void emu_cp_async_wait(int n) {
    Fiber* f = g_exec->cur;
    if (n < 0) kfault("cp.async.wait_group %d", n);
    const int groups = (int)f->cpGroups.size();
    if (groups <= n) return;
    const size_t upto = f->cpGroups[groups - 1 - n];
    for (size_t i = 0; i < upto; ++i) {
        const CpAsync& c = f->cpPending[i];
        const uintptr_t d = shared_host(c.dst, 16, WRITE, "cp.async");
        unsigned char tmp[16] = {0};
        if (c.srcBytes > 0) std::memcpy(tmp, c.src, c.srcBytes);
        std::memcpy((void*)d, tmp, 16);
    }
    f->cpPending.erase(f->cpPending.begin(), f->cpPending.begin() + upto);
    f->cpGroups.erase(f->cpGroups.begin(), f->cpGroups.begin() + (groups - n));
    for (size_t& g : f->cpGroups) g -= upto;
}

// ---------------------------------------------------------------------------------------------
// ldmatrix / mma (warp-wide, .sync.aligned: all 32 lanes)
// ---------------------------------------------------------------------------------------------
struct LdmIO {
    int num;
    bool trans;
    uint32_t addr;
    uint32_t* r;
};
static void complete_ldmatrix(Rendezvous& r) {
    for (int l = 0; l < 32; ++l)
        if (!r.lanes[l]) kfault("ldmatrix: lane %d has exited; .sync.aligned needs all 32 lanes of the warp", l);
    uint32_t addr[32] = {0};
    uint32_t out[32][4] = {};
    const LdmIO* l0 = static_cast<LdmIO*>(r.io[0]);
    for (int l = 0; l < 32; ++l) {
        const LdmIO& io = *static_cast<LdmIO*>(r.io[l]);
        if (io.num != l0->num || io.trans != l0->trans) kfault("ldmatrix: lanes disagree on the shape (.x%d/.trans)", io.num);
        addr[l] = io.addr;
    }
    Exec& e = *g_exec;
    for (int l = 0; l < 8 * l0->num; ++l) {  // each row is read by the lane that supplies its address
        e.cur = r.lanes[l];
        shared_host(addr[l], 16, READ, "ldmatrix");
    }
    ptx_call([&] { ldmatrix_m8n8_b16(window(), l0->num, l0->trans, addr, out); });
    for (int l = 0; l < 32; ++l) {
        LdmIO& io = *static_cast<LdmIO*>(r.io[l]);
        for (int i = 0; i < io.num; ++i) io.r[i] = out[l][i];
    }
}
void emu_ldmatrix(int num, bool trans, uint32_t addr, uint32_t* r) {
    Exec& e = *g_exec;
    LdmIO io{num, trans, addr, r};
    collective(warp_rendezvous(e.cur->tid / 32, 0xffffffffu, "ldmatrix"), 32, 100 + num * 2 + (trans ? 1 : 0),
               0xffffffffu, &io, "ldmatrix", complete_ldmatrix);
}

struct MmaIO {
    float* c;
    const uint32_t* a;
    const uint32_t* b;
};
static void complete_mma(Rendezvous& r) {
    for (int l = 0; l < 32; ++l)
        if (!r.lanes[l]) kfault("mma.sync: lane %d has exited; .sync.aligned needs all 32 lanes of the warp", l);
    uint32_t a[32][4], b[32][2];
    float c[32][4], d[32][4];
    for (int l = 0; l < 32; ++l) {
        const MmaIO& io = *static_cast<MmaIO*>(r.io[l]);
        for (int i = 0; i < 4; ++i) a[l][i] = io.a[i], c[l][i] = io.c[i];
        for (int i = 0; i < 2; ++i) b[l][i] = io.b[i];
    }
    mma_m16n8k16_bf16(a, b, c, d);
    for (int l = 0; l < 32; ++l) {
        MmaIO& io = *static_cast<MmaIO*>(r.io[l]);
        for (int i = 0; i < 4; ++i) io.c[i] = d[l][i];
    }
}
void emu_mma_m16n8k16_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    Exec& e = *g_exec;
    MmaIO io{c, a, b};
    collective(warp_rendezvous(e.cur->tid / 32, 0xffffffffu, "mma.sync"), 32, 200, 0xffffffffu, &io,
               "mma.sync.m16n8k16", complete_mma);
}

// ---------------------------------------------------------------------------------------------
// mbarrier (an 8-byte object in shared memory; its state lives here, its bytes are racechecked)
// ---------------------------------------------------------------------------------------------
static const char* const kMbarWait = "mbarrier wait";

static MBarrier& mbar_at(uint64_t* bar, const char* what, bool mustInit) {
    const uint32_t a = emu_cvta_shared(bar);
    if (a % 8) kfault("%s: mbarrier at shared 0x%x is not 8-byte aligned", what, a);
    auto it = g_exec->mbars.find(a);
    if (it == g_exec->mbars.end()) {
        if (mustInit) kfault("%s: mbarrier at shared 0x%x was never initialised (mbarrier.init)", what, a);
        it = g_exec->mbars.emplace(a, MBarrier{}).first;
    }
    if (mustInit && !it->second.init) kfault("%s: mbarrier at shared 0x%x was never initialised (mbarrier.init)", what, a);
    return it->second;
}

// A plain store over a live mbarrier corrupts it on the GPU.
static void mbar_store_check(Exec& e, uintptr_t a, size_t n) {
    const uint32_t lo = (uint32_t)(a - g_smemLo), hi = lo + (uint32_t)n;
    for (const auto& kv : e.mbars) {
        if (kv.second.init && lo < kv.first + 8 && kv.first < hi) {
            kfault("memcheck: plain store of %zu bytes at shared 0x%x over the live mbarrier at 0x%x", n, lo, kv.first);
        }
    }
}

static void mbar_try_complete(MBarrier& m) {
    if (m.pending == 0 && m.tx == 0) {
        m.phase++;
        m.pending = m.count;
        if (g_exec->raceActive) {
            if (m.done.size() != m.acc.size()) m.done.assign(m.acc.size(), 0);
            for (size_t i = 0; i < m.acc.size(); ++i) m.done[i] = std::max(m.done[i], m.acc[i]);
        }
        m.acc.clear();
        for (Fiber& f : g_exec->fibers)
            if (f.state == BLOCKED && f.waitWhat == kMbarWait) wake(&f);
    }
}

void emu_mbar_init(uint64_t* bar, int count) {
    if (count < 1 || count > (1 << 20) - 1) kfault("mbarrier.init: count %d outside 1..2^20-1", count);
    const uint32_t a = emu_cvta_shared(bar);
    shared_host(a, 8, WRITE, "mbarrier.init");  // init is a write: other threads must be ordered after it
    MBarrier& m = mbar_at(bar, "mbarrier.init", false);
    m = MBarrier{};
    m.init = true;
    m.count = m.pending = count;
}

void emu_mbar_arrive(uint64_t* bar, uint32_t txBytes) {
    MBarrier& m = mbar_at(bar, txBytes ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive", true);
    shared_host(emu_cvta_shared(bar), 8, ATOMIC, "mbarrier.arrive");
    if (m.pending <= 0) kfault("mbarrier.arrive: more arrivals than the expected count %d in one phase", m.count);
    m.tx += txBytes;
    m.pending--;
    race_release(m.acc, g_exec->cur->tid);
    mbar_try_complete(m);
}

void emu_mbar_wait(uint64_t* bar, uint32_t parity) {
    const uint32_t a = emu_cvta_shared(bar);
    for (;;) {
        MBarrier& m = mbar_at(bar, "mbarrier.try_wait.parity", true);
        shared_host(a, 8, ATOMIC, "mbarrier.try_wait");
        if ((m.phase & 1u) != (parity & 1u)) {
            race_acquire(m.done, g_exec->cur->tid);
            return;
        }
        block_current(kMbarWait, a, parity);
    }
}

// ---------------------------------------------------------------------------------------------
// TMA
// ---------------------------------------------------------------------------------------------
void emu_tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int rank, const int* coords) {
    Exec& e = *g_exec;
    const uint32_t d = emu_cvta_shared(dst);
    MBarrier& m = mbar_at(bar, "cp.async.bulk.tensor", true);
    uint32_t bytes = 0;
    ptx_call([&] { bytes = tma_load_tiled(window(), d, map, rank, coords); });
    shared_host(d, bytes, WRITE, "cp.async.bulk.tensor");  // memcheck + racecheck of the box
    m.tx -= bytes;                                          // complete_tx: a release by the issuing thread
    race_release(m.acc, e.cur->tid);
    mbar_try_complete(m);
}

// ---------------------------------------------------------------------------------------------
// wgmma (warpgroup-wide). Issue records the operation and fills its accumulators with NaN (they
// may not be read before wgmma.wait_group); the first wait_group that covers its group executes it:
// operands read from shared memory then, results written to every thread's accumulators.
// ---------------------------------------------------------------------------------------------
struct WgIO {
    int n, ta, tb, scaleD;
    float* d;
    uint64_t da, db;
    std::shared_ptr<WgOp> op;
};

static void complete_wgmma_issue(Rendezvous& r) {
    Exec& e = *g_exec;
    for (int t = 0; t < 128; ++t)
        if (!r.lanes[t]) kfault("wgmma.mma_async: thread %d of the warpgroup has exited; .sync.aligned needs all 128", t);
    const WgIO& w0 = *static_cast<WgIO*>(r.io[0]);
    if (w0.n <= 0 || w0.n > 256 || w0.n % 8) kfault("wgmma.mma_async: N = %d", w0.n);
    auto op = std::make_shared<WgOp>();
    op->n = w0.n, op->ta = w0.ta, op->tb = w0.tb, op->scaleD = w0.scaleD, op->da = w0.da, op->db = w0.db;
    const int half = w0.n / 2;
    for (int t = 0; t < 128; ++t) {
        const WgIO& w = *static_cast<WgIO*>(r.io[t]);
        if (w.n != w0.n || w.ta != w0.ta || w.tb != w0.tb || w.da != w0.da || w.db != w0.db || w.scaleD != w0.scaleD) {
            kfault("wgmma.mma_async: threads of the warpgroup pass different operands (thread %d)", t);
        }
        op->d[t] = w.d;
    }
    auto it = e.wgLatest.find(op->d[0]);
    if (it != e.wgLatest.end() && !it->second->executed) {
        op->prev = it->second;  // continues from the pending result on the same accumulators
        op->prev->superseded = true;
    } else {
        op->in.resize((size_t)128 * half);
        for (int t = 0; t < 128; ++t) std::memcpy(&op->in[(size_t)t * half], op->d[t], sizeof(float) * half);
    }
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (int t = 0; t < 128; ++t) std::fill(op->d[t], op->d[t] + half, nan);
    e.wgLatest[op->d[0]] = op;
    for (int t = 0; t < 128; ++t) static_cast<WgIO*>(r.io[t])->op = op;
}

void emu_wgmma(int n, int transA, int transB, float* d, uint64_t descA, uint64_t descB, int scaleD) {
    Exec& e = *g_exec;
    WgIO io{n, transA, transB, scaleD, d, descA, descB, nullptr};
    collective(e.warpgroups[e.cur->tid / 128], 128, 300, 0xffffffffu, &io, "wgmma.mma_async", complete_wgmma_issue);
    e.cur->wgUncommitted.push_back(io.op);
}

void emu_wgmma_fence() {}

void emu_wgmma_commit() {
    Fiber* f = g_exec->cur;
    f->wgGroups.push_back(std::move(f->wgUncommitted));  // an empty group is legal
    f->wgUncommitted.clear();
}

// Executes one wgmma (and, first, the one it continues from) as the current thread.
static void execute_wgmma(WgOp& op) {
    if (op.executed) return;
    if (op.prev) execute_wgmma(*op.prev);
    const int half = op.n / 2;
    // the operands' bytes (whole 8-row groups of 128-byte rows) are read now, by this thread
    auto operand = [&](uint64_t desc, int trans, int mn, const char* what) {
        const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4;
        const uint32_t lbo = (uint32_t)(desc >> 16 & 0x3FFF) << 4;
        const uint32_t sbo = (uint32_t)(desc >> 32 & 0x3FFF) << 4;
        if (trans) {  // MN-major: 64-element boxes LBO apart, each 16 k-rows of 128 bytes
            for (int b = 0; b < mn / 64; ++b) shared_host(start + (uint32_t)b * lbo, 2 * sbo, READ, what);
        } else {      // K-major: mn rows, 8-row groups SBO apart
            shared_host(start & ~127u, (uint32_t)(mn / 8) * sbo, READ, what);
        }
    };
    operand(op.da, op.ta, 64, "wgmma A operand");
    operand(op.db, op.tb, op.n, "wgmma B operand");
    op.out = op.prev ? op.prev->out : op.in;
    std::vector<float*> dp(128);
    for (int t = 0; t < 128; ++t) dp[t] = &op.out[(size_t)t * half];
    ptx_call([&] { wgmma_m64nNk16_bf16(window(), op.n, op.da, op.db, op.ta, op.tb, op.scaleD != 0, dp.data()); });
    op.executed = true;
    if (op.prev) {
        op.prev->out.clear();
        op.prev.reset();
    }
    op.in.clear();
    if (!op.superseded) {
        for (int t = 0; t < 128; ++t) std::memcpy(op.d[t], &op.out[(size_t)t * half], sizeof(float) * half);
    }
    race_release(op.doneVC, g_exec->cur->tid);
}

void emu_wgmma_wait(int n) {
    Exec& e = *g_exec;
    Fiber* f = e.cur;
    if (n < 0) kfault("wgmma.wait_group %d", n);
    if (!f->wgUncommitted.empty()) {
        kfault("wgmma.wait_group with %zu wgmma.mma_async not committed (missing wgmma.commit_group): their results "
               "would never be waited for", f->wgUncommitted.size());
    }
    while ((int)f->wgGroups.size() > n) {
        for (auto& op : f->wgGroups.front()) {
            execute_wgmma(*op);
            race_acquire(op->doneVC, f->tid);
        }
        f->wgGroups.erase(f->wgGroups.begin());
    }
}

void emu_fence_proxy_async() {}

// ---------------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------------
static void fiber_main() {
    Exec& e = *g_exec;
    Fiber* f = e.cur;
    std::string failure;
    try {
        e.kernel->run(e.kernel->fn, e.args);
    } catch (const std::exception& x) {
        failure = x.what();
    } catch (...) {
        failure = "an exception that is not a std::exception";
    }
    if (!failure.empty()) abandon(where(f) + ": " + failure);
    if (!f->wgUncommitted.empty() || !f->wgGroups.empty()) {
        kfault("the thread exits with wgmma.mma_async operations it never waited for (wgmma.wait_group)");
    }
    // cp.async copies in flight when a thread exits land in shared memory nobody reads any more
    f->state = DONE;
    e.live--;
    recheck_after_exit(*f);
    switch_to_scheduler();
    __builtin_unreachable();
}

#if defined(__x86_64__)
extern "C" void moe4j_fiber_start();
asm(R"(
.text
.globl moe4j_fiber_start
.hidden moe4j_fiber_start
.type moe4j_fiber_start,@function
moe4j_fiber_start:
    call moe4j_fiber_main_c
    ud2
.size moe4j_fiber_start, .-moe4j_fiber_start
)");
extern "C" __attribute__((visibility("hidden"), used)) void moe4j_fiber_main_c() { fiber_main(); }
#else
static void fiber_entry_uc() { fiber_main(); }
#endif

static void init_fiber(Fiber& f, int i) {
    unsigned char* base = g_stacks + (size_t)i * (kStackBytes + kPage) + kPage;
    f.stackLo = (uintptr_t)base;
    f.stackHi = (uintptr_t)(base + kStackBytes);
    f.coordsAt = reinterpret_cast<ThreadCoords*>((f.stackHi - sizeof(ThreadCoords)) & ~(uintptr_t)63);
    *f.coordsAt = f.coords;
#if defined(__x86_64__)
    uintptr_t top = (uintptr_t)f.coordsAt & ~(uintptr_t)63;
    // moe4j_fiber_switch pops six registers and returns into moe4j_fiber_start, whose `call` needs
    // a 16-byte aligned stack: sp + 56 = top - 16.
    uint64_t* sp = reinterpret_cast<uint64_t*>(top - 72);
    for (int k = 0; k < 6; ++k) sp[k] = 0;  // r15 r14 r13 r12 rbx rbp
    sp[6] = (uint64_t)(uintptr_t)&moe4j_fiber_start;
    sp[7] = sp[8] = 0;
    f.sp = sp;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = base;
    f.uc.uc_stack.ss_size = (uintptr_t)f.coordsAt - (uintptr_t)base;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_entry_uc, 0);
#endif
}

static void run_fiber(Fiber& f) {
    Exec& e = *g_exec;
    e.cur = &f;
    g_coords = f.coordsAt;
#if defined(__x86_64__)
    moe4j_fiber_switch(&e.schedSp, f.sp);
#else
    swapcontext(&e.schedUc, &f.uc);
#endif
    e.cur = nullptr;
}

static std::string describe_wait(const Fiber& f) {
    char b[300];
    const std::string w = f.waitWhat;
    if (f.waitWhat == kMbarWait) {
        const auto it = g_exec->mbars.find((uint32_t)f.waitA);
        const MBarrier* m = it == g_exec->mbars.end() ? nullptr : &it->second;
        snprintf(b, sizeof b,
                 "waits on the mbarrier at shared 0x%x for the phase of parity %u, which can never complete (current "
                 "phase %u: %d of %d arrivals missing, %lld transaction bytes outstanding)",
                 (unsigned)f.waitA, (unsigned)f.waitB, m ? m->phase : 0, m ? m->pending : 0, m ? m->count : 0,
                 m ? (long long)m->tx : 0LL);
    } else if (w == "__syncthreads" || w == "bar.sync") {
        snprintf(b, sizeof b, "waits in %s (barrier %u) for %u threads; the others finished or wait elsewhere", w.c_str(),
                 (unsigned)f.waitA, (unsigned)f.waitB);
    } else {
        snprintf(b, sizeof b, "waits in %s with %u of %u lanes arrived", w.c_str(), (unsigned)f.waitA, (unsigned)f.waitB);
    }
    return b;
}

static void run_block() {
    Exec& e = *g_exec;
    for (;;) {
        bool progress = false;
        for (Fiber& f : e.fibers) {
            if (f.state != RUNNABLE) continue;
            run_fiber(f);
            progress = true;
            if (e.faulted) return;
        }
        if (e.live == 0) return;
        if (!progress) {
            for (Fiber& f : e.fibers) {
                if (f.state == BLOCKED) {
                    e.faulted = true;
                    e.message = where(&f) + ": deadlock: " + describe_wait(f);
                    return;
                }
            }
            e.faulted = true;
            e.message = where(nullptr) + ": no thread can run";
            return;
        }
        if (std::chrono::steady_clock::now() > e.deadline) {
            e.faulted = true;
            e.message = where(nullptr) + ": livelock: the launch ran past MOE4J_CPUDEV_LAUNCH_TIMEOUT_S; threads keep "
                        "running without finishing (a spin on memory that no thread of this block writes? blocks run "
                        "one after another on the CPU device, so a wait for another block never ends)";
            return;
        }
    }
}

static bool env_flag(const char* name, bool dflt) {
    const char* v = getenv(name);
    if (!v || !*v) return dflt;
    return !(v[0] == '0' || v[0] == 'f' || v[0] == 'F' || v[0] == 'n' || v[0] == 'N');
}

static double env_seconds(const char* name, double dflt) {
    const char* v = getenv(name);
    if (!v || !*v) return dflt;
    char* end = nullptr;
    const double s = strtod(v, &end);
    if (!end || *end || !(s > 0) || !std::isfinite(s)) {
        fprintf(stderr, "moe4j cpu device: %s=%s is not a positive number of seconds; using %g\n", name, v, dflt);
        return dflt;
    }
    return s;
}

static std::once_flag g_initOnce;
static void init_runtime() {
    g_smemLo = (uintptr_t)g_smem;
    g_dynHi = g_smemLo + kMaxDynamicShared;
    g_smemHi = g_dynHi + kStaticArea;
    std::memset(g_smem, 0xFF, sizeof g_smem);
    g_shadow.assign(g_smemHi - g_smemLo, Shadow{});
    global_range_live = range_live_for_ptx;
    Dl_info info;
    if (dladdr((void*)&init_runtime, &info) && info.dli_fbase) {
        struct Ctx {
            uintptr_t base;
            uintptr_t lo, hi;
        } ctx{(uintptr_t)info.dli_fbase, ~(uintptr_t)0, 0};
        dl_iterate_phdr(
            [](dl_phdr_info* pi, size_t, void* p) -> int {
                Ctx& c = *static_cast<Ctx*>(p);
                if (pi->dlpi_addr != c.base) return 0;
                for (int i = 0; i < pi->dlpi_phnum; ++i) {
                    if (pi->dlpi_phdr[i].p_type != PT_LOAD) continue;
                    const uintptr_t lo = pi->dlpi_addr + pi->dlpi_phdr[i].p_vaddr;
                    c.lo = std::min(c.lo, lo);
                    c.hi = std::max(c.hi, (uintptr_t)(lo + pi->dlpi_phdr[i].p_memsz));
                }
                return 1;
            },
            &ctx);
        g_imageLo = ctx.lo;
        g_imageHi = ctx.hi;
    }
}

std::string runtime_check() {
    std::call_once(g_initOnce, init_runtime);
    return "";
}

LaunchResult launch(const KernelInfo* k, dim3 grid, dim3 block, uint32_t dynShared, void* const* slots) {
    std::call_once(g_initOnce, init_runtime);
    LaunchResult res;
    Exec e;
    e.kernel = k;
    e.grid = grid;
    e.block = block;
    e.dynShared = dynShared;
    e.nthreads = (int)(block.x * block.y * block.z);
    e.memcheck = env_flag("MOE4J_CPUDEV_MEMCHECK", true);
    e.racecheck = env_flag("MOE4J_CPUDEV_RACECHECK", true);
    e.deadline = std::chrono::steady_clock::now() +
                 std::chrono::milliseconds((long long)(1000 * env_seconds("MOE4J_CPUDEV_LAUNCH_TIMEOUT_S", 600)));
    e.args = k->unpack(slots);
    e.argsLo = (uintptr_t)e.args;
    e.argsHi = e.argsLo + k->argsBytes;
    ensure_stacks(e.nthreads);
    e.fibers.resize(e.nthreads);
    e.warps.resize((e.nthreads + 31) / 32);
    e.warpgroups.resize((e.nthreads + 127) / 128);
    g_exec = &e;
    for (unsigned bz = 0; bz < grid.z && !e.faulted; ++bz)
        for (unsigned by = 0; by < grid.y && !e.faulted; ++by)
            for (unsigned bx = 0; bx < grid.x && !e.faulted; ++bx) {
                e.blockIdx = uint3{bx, by, bz};
                std::memset(g_smem, 0xFF, dynShared);
                std::memset((void*)g_dynHi, 0xFF, g_staticUsed);
                e.live = e.nthreads;
                e.mbars.clear();
                e.wgLatest.clear();
                for (auto& b : e.bars) b = NamedBarrier{};
                for (auto& list : e.warps) list.clear();
                for (auto& r : e.warpgroups) r.arrived = 0;
                e.raceActive = false;
                g_moreReaders.clear();
                if (++g_shadowGen == 0) {
                    std::fill(g_shadow.begin(), g_shadow.end(), Shadow{});
                    g_shadowGen = 1;
                }
                e.shadowGen = g_shadowGen;
                for (int t = 0; t < e.nthreads; ++t) {
                    Fiber& f = e.fibers[t];
                    f.state = RUNNABLE;
                    f.tid = t;
                    f.waitWhat = "";
                    f.accessesSinceSwitch = 0;
                    f.cpPending.clear();
                    f.cpGroups.clear();
                    f.wgUncommitted.clear();
                    f.wgGroups.clear();
                    f.coords.threadIdx = uint3{(unsigned)(t % block.x), (unsigned)(t / block.x % block.y),
                                               (unsigned)(t / (block.x * block.y))};
                    f.coords.blockIdx = e.blockIdx;
                    f.coords.blockDim = block;
                    f.coords.gridDim = grid;
                    init_fiber(f, t);
                }
                run_block();
            }
    g_exec = nullptr;
    g_coords = nullptr;
    for (Fiber& f : e.fibers) {  // abandoned fibers may still hold references
        f.wgUncommitted.clear();
        f.wgGroups.clear();
    }
    k->destroy(e.args);
    res.ok = !e.faulted;
    res.message = e.message;
    return res;
}

}  // namespace moe4j_emu
