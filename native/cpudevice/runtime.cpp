// moe4j CPU device: the kernel runtime. Runs one kernel launch block by block; a block's CUDA
// threads are cooperative fibers on the launching OS thread, switched only where CUDA threads wait
// for each other. Implements the emu_* entry points of emu.h, memcheck (the instrumentation
// callbacks of -fsanitize=kernel-address) and racecheck (vector clocks over the block's threads).
//
// Scheduling: fibers run in thread-index order, each until it blocks (barrier, warp collective,
// mbarrier wait) or returns. When no fiber can run and some have not returned, the launch fails
// with what each waits for (a barrier some thread never reaches, an mbarrier phase that cannot
// complete) instead of hanging.
//
// Racecheck (shared memory only): every CUDA thread has a vector clock; barriers, warp collectives
// (shuffles, votes, __syncwarp, ldmatrix, mma), warpgroup collectives (wgmma) and mbarriers
// (arrive = release, completed wait = acquire, TMA complete_tx = release by the issuing thread)
// order threads. Each shared byte remembers its last writer and up to two readers; an access that
// is not ordered after a conflicting one fails the launch (read after write, write after read,
// write after write, by different threads). Atomics do not race with each other.
#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
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

// The block's shared memory: dynamic shared memory first (1024-aligned, shared address 0), then the
// kernels' static __shared__ variables (all in section moe4j_smem; this object is linked first).
static constexpr uint32_t kMaxDynamicShared = 232448;  // H100/H200 opt-in maximum per block
__attribute__((section("moe4j_smem"), used, aligned(1024))) static unsigned char g_dynSmem[kMaxDynamicShared];
extern "C" unsigned char __start_moe4j_smem[];
extern "C" unsigned char __stop_moe4j_smem[];

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
    std::vector<CpAsync> cpPending;  // issued, not yet waited for
    std::vector<size_t> cpGroups;    // cpPending size at each commit
    int wgmmaUncommitted = 0;        // wgmma issued since the last commit_group
    int wgmmaGroups = 0;             // committed groups not yet waited for
};

// A rendezvous of a warp (32 lanes) or a warpgroup (128 threads) at one collective instruction.
struct Rendezvous {
    int op = 0;
    uint32_t mask = 0;
    int arrived = 0;
    int need = 0;
    int first = 0;                    // tid of lane 0
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

struct Shadow {
    uint32_t gen;
    uint16_t w, r0, r1;  // thread + 1 (0: none)
    uint32_t wc, rc0, rc1;
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
    std::vector<Rendezvous> warps;       // per warp
    std::vector<Rendezvous> warpgroups;  // per warpgroup
    NamedBarrier bars[16];
    std::unordered_map<uint32_t, MBarrier> mbars;
    // memcheck
    bool memcheck = true;
    uintptr_t cacheLo = 0, cacheHi = 0;
    uint64_t cacheGen = ~0ull;
    // racecheck
    bool racecheck = true;
    bool raceActive = false;
    std::vector<uint32_t> vc;  // [nthreads][nthreads]
    uint32_t shadowGen = 0;     // this block's generation (g_shadowGen when it started)
};

static Exec* g_exec = nullptr;
static std::vector<Shadow> g_shadow;
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
#if defined(__x86_64__)
    moe4j_fiber_switch(&f->sp, e.schedSp);
#else
    swapcontext(&f->uc, &e.schedUc);
#endif
}

// Ends the launch with a fault raised by the running fiber: the fiber is abandoned (its stack is
// discarded with the launch), the scheduler stops.
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

// ---------------------------------------------------------------------------------------------
// Racecheck
// ---------------------------------------------------------------------------------------------
static inline uint32_t* vc_of(int t) { return &g_exec->vc[(size_t)t * g_exec->nthreads]; }

static void race_activate() {
    Exec& e = *g_exec;
    e.raceActive = true;
    e.vc.assign((size_t)e.nthreads * e.nthreads, 0);
    for (int t = 0; t < e.nthreads; ++t) vc_of(t)[t] = 1;
}

// All participants see everything each of them did before (barrier / collective).
static void race_join(const std::vector<Fiber*>& members) {
    Exec& e = *g_exec;
    if (!e.raceActive || members.empty()) return;
    const int n = e.nthreads;
    std::vector<uint32_t> j(vc_of(members[0]->tid), vc_of(members[0]->tid) + n);
    for (size_t m = 1; m < members.size(); ++m) {
        const uint32_t* v = vc_of(members[m]->tid);
        for (int i = 0; i < n; ++i) j[i] = std::max(j[i], v[i]);
    }
    for (Fiber* f : members) std::copy(j.begin(), j.end(), vc_of(f->tid));
}
static void race_tick(const std::vector<Fiber*>& members) {
    if (!g_exec->raceActive) return;
    for (Fiber* f : members) vc_of(f->tid)[f->tid]++;
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

[[noreturn]] static void race_fault(const char* kind, int t, int other, uintptr_t a, uint32_t off) {
    const Exec& e = *g_exec;
    const Fiber& o = e.fibers[other];
    char b[400];
    snprintf(b, sizeof b,
             "racecheck: %s hazard on shared memory 0x%x (%s) with thread (%u,%u,%u): no barrier, warp collective or "
             "mbarrier orders the two accesses",
             kind, off, a < g_dynHi ? "dynamic" : "static", o.coords.threadIdx.x, o.coords.threadIdx.y, o.coords.threadIdx.z);
    (void)t;
    abandon(where(e.cur) + ": " + b);
}

static void race_access(int t, uintptr_t a, size_t n, bool write, bool atomic) {
    Exec& e = *g_exec;
    if (!e.racecheck) return;
    if (!e.raceActive) race_activate();
    const uint32_t* v = vc_of(t);
    const uint32_t now = v[t];
    for (size_t i = 0; i < n; ++i) {
        const uint32_t off = (uint32_t)(a + i - g_smemLo);
        Shadow& s = g_shadow[off];
        if (s.gen != e.shadowGen) s = Shadow{e.shadowGen, 0, 0, 0, 0, 0, 0};
        if (s.w && s.w - 1 != t && v[s.w - 1] < s.wc) {
            race_fault(write ? "write-after-write" : "read-after-write", t, s.w - 1, a + i, off);
        }
        if (atomic) continue;
        if (write) {
            if (s.r0 && s.r0 - 1 != t && v[s.r0 - 1] < s.rc0) race_fault("write-after-read", t, s.r0 - 1, a + i, off);
            if (s.r1 && s.r1 - 1 != t && v[s.r1 - 1] < s.rc1) race_fault("write-after-read", t, s.r1 - 1, a + i, off);
            s.w = (uint16_t)(t + 1);
            s.wc = now;
            s.r0 = s.r1 = 0;
        } else {
            if (!s.r0 || s.r0 - 1 == t || v[s.r0 - 1] >= s.rc0) {
                s.r0 = (uint16_t)(t + 1);
                s.rc0 = now;
            } else {
                s.r1 = (uint16_t)(t + 1);
                s.rc1 = now;
            }
        }
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

static inline void check_shared(Exec& e, uintptr_t a, size_t n, bool write, bool atomic) {
    if (a < g_dynHi && a + n > (uintptr_t)g_smemLo + e.dynShared) {
        char b[300];
        snprintf(b, sizeof b,
                 "memcheck: invalid shared %s of %zu bytes at shared 0x%x: past the launch's %u bytes of dynamic shared memory",
                 write ? "write" : "read", n, (unsigned)(a - g_smemLo), e.dynShared);
        abandon(where(e.cur) + ": " + b);
    }
    if (e.racecheck) race_access(e.cur->tid, a, n, write, atomic);
}

static inline void check_access(uintptr_t a, size_t n, bool write) {
    Exec* e = g_exec;
    if (!e || !e->cur) return;
    Fiber* f = e->cur;
    if (a >= f->stackLo && a + n <= f->stackHi) return;
    if (a >= g_smemLo && a + n <= g_smemHi) {
        check_shared(*e, a, n, write, false);
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

// Global range check for the PTX helpers (TMA, cp.async) and for atomics.
static bool range_live_for_ptx(const void* p, size_t n) {
    uintptr_t lo, hi;
    return cpudev_find_allocation((uintptr_t)p, n, &lo, &hi);
}

void emu_atomic_begin(const void* p, size_t bytes, bool) {
    Exec* e = g_exec;
    if (!e || !e->cur) return;
    const uintptr_t a = (uintptr_t)p;
    if (a >= g_smemLo && a + bytes <= g_smemHi) {
        check_shared(*e, a, bytes, true, true);
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
    race_tick(nb.members);
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

// Lanes of `r` that must arrive: the mask's lanes that exist in the block.
static int required_lanes(const Exec& e, int first, int width, uint32_t mask) {
    int need = 0;
    for (int l = 0; l < width; ++l) {
        if (width == 32 && !(mask >> l & 1u)) continue;
        if (first + l < e.nthreads) need++;
    }
    return need;
}

// Arrive at a collective; the last lane to arrive runs `complete` with every lane's io. Returns
// when the collective has completed.
static void collective(Rendezvous& r, int width, int op, uint32_t mask, void* io, const char* what,
                       void (*complete)(Rendezvous&)) {
    Exec& e = *g_exec;
    Fiber* f = e.cur;
    const int lane = f->tid % width;
    if (width == 32 && !(mask >> lane & 1u)) kfault("%s: the calling lane %d is not in the member mask 0x%08x", what, lane, mask);
    if (r.arrived == 0) {
        r.op = op;
        r.mask = mask;
        r.first = f->tid - lane;
        r.need = required_lanes(e, r.first, width, mask);
        r.lanes.assign(width, nullptr);
        r.io.assign(width, nullptr);
    } else if (r.op != op || r.mask != mask) {
        kfault("%s: lanes of one %s meet at different collectives or member masks (0x%08x vs 0x%08x): divergent "
               "collective", what, width == 32 ? "warp" : "warpgroup", r.mask, mask);
    }
    if (r.lanes[lane]) kfault("%s: lane %d arrived twice", what, lane);
    r.lanes[lane] = f;
    r.io[lane] = io;
    r.arrived++;
    if (r.arrived == r.need) {
        std::vector<Fiber*> members;
        for (Fiber* m : r.lanes)
            if (m) members.push_back(m);
        race_join(members);
        complete(r);  // accesses shared memory at the joined time
        race_tick(members);
        for (Fiber* m : members) wake(m);
        r.arrived = 0;
        return;
    }
    block_current(what, (uint64_t)r.arrived, (uint64_t)r.need);
}

struct WarpIO {
    unsigned long long v;
    int arg;
    int width;
    unsigned long long out;
};

static void complete_warp_op(Rendezvous& r) {
    auto io = [&](int l) { return static_cast<WarpIO*>(r.io[l]); };
    uint32_t present = 0;
    for (int l = 0; l < 32; ++l)
        if (r.lanes[l]) present |= 1u << l;
    for (int l = 0; l < 32; ++l) {
        if (!r.lanes[l]) continue;
        WarpIO& me = *io(l);
        const int w = me.width;
        const int seg = l & ~(w - 1);
        int src = l;
        switch (r.op) {
            case W_SHFL: src = seg + (me.arg & (w - 1)); break;
            case W_SHFL_XOR: src = seg + ((l - seg) ^ me.arg) % w; break;
            case W_SHFL_UP: src = (l - seg) >= me.arg ? l - me.arg : l; break;
            case W_SHFL_DOWN: src = (l - seg) + me.arg < w ? l + me.arg : l; break;
            default: break;
        }
        switch (r.op) {
            case W_SHFL:
            case W_SHFL_XOR:
            case W_SHFL_UP:
            case W_SHFL_DOWN:
                me.out = (present >> src & 1u) ? io(src)->v : me.v;
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
    collective(e.warps[e.cur->tid / 32], 32, op, mask, &io, names[op], complete_warp_op);
    return io.out;
}

unsigned char* emu_dynamic_shared() { return g_dynSmem; }

uint32_t emu_cvta_shared(const void* p) {
    const uintptr_t a = (uintptr_t)p;
    if (a < g_smemLo || a >= g_smemHi) kfault("__cvta_generic_to_shared: 0x%" PRIxPTR " is not a shared-memory address", a);
    return (uint32_t)(a - g_smemLo);
}

static SmemWindow window() { return SmemWindow{(unsigned char*)g_smemLo, (uint32_t)(g_smemHi - g_smemLo)}; }

// Shared address -> host address, checked like a shared access of `n` bytes by the current thread.
static uintptr_t shared_host(uint32_t addr, size_t n, bool write, const char* what) {
    const uintptr_t a = g_smemLo + addr;
    if (a + n > g_smemHi || a < g_smemLo) kfault("%s: shared address 0x%x (+%zu bytes) outside shared memory", what, addr, n);
    check_shared(*g_exec, a, n, write, false);
    return a;
}

// --- cp.async -------------------------------------------------------------------------------
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
        const uintptr_t d = shared_host(c.dst, 16, true, "cp.async");
        unsigned char tmp[16] = {0};
        if (c.srcBytes > 0) std::memcpy(tmp, c.src, c.srcBytes);
        std::memcpy((void*)d, tmp, 16);
    }
    f->cpPending.erase(f->cpPending.begin(), f->cpPending.begin() + upto);
    f->cpGroups.erase(f->cpGroups.begin(), f->cpGroups.begin() + (groups - n));
    for (size_t& g : f->cpGroups) g -= upto;
}

// --- ldmatrix / mma ---------------------------------------------------------------------------
struct LdmIO {
    int num;
    bool trans;
    uint32_t addr;
    uint32_t* r;
};
static void complete_ldmatrix(Rendezvous& r) {
    uint32_t addr[32] = {0};
    uint32_t out[32][4] = {};
    const LdmIO* l0 = static_cast<LdmIO*>(r.io[0]);
    if (r.need != 32 || !l0) kfault("ldmatrix: needs all 32 lanes of the warp");
    for (int l = 0; l < 32; ++l) {
        const LdmIO& io = *static_cast<LdmIO*>(r.io[l]);
        if (io.num != l0->num || io.trans != l0->trans) kfault("ldmatrix: lanes disagree on the shape (.x%d/.trans)", io.num);
        addr[l] = io.addr;
    }
    // the rows each lane supplies are read by that lane (racecheck)
    Exec& e = *g_exec;
    Fiber* saved = e.cur;
    for (int l = 0; l < 8 * l0->num; ++l) {
        e.cur = r.lanes[l];
        shared_host(addr[l], 16, false, "ldmatrix");
    }
    e.cur = saved;
    try {
        ldmatrix_m8n8_b16(window(), l0->num, l0->trans, addr, out);
    } catch (const Fault& x) {
        kfault("%s", x.what());
    }
    for (int l = 0; l < 32; ++l) {
        LdmIO& io = *static_cast<LdmIO*>(r.io[l]);
        for (int i = 0; i < io.num; ++i) io.r[i] = out[l][i];
    }
}
void emu_ldmatrix(int num, bool trans, uint32_t addr, uint32_t* r) {
    Exec& e = *g_exec;
    LdmIO io{num, trans, addr, r};
    collective(e.warps[e.cur->tid / 32], 32, 100 + num * 2 + (trans ? 1 : 0), 0xffffffffu, &io, "ldmatrix", complete_ldmatrix);
}

struct MmaIO {
    float* c;
    const uint32_t* a;
    const uint32_t* b;
};
static void complete_mma(Rendezvous& r) {
    if (r.need != 32) kfault("mma.sync: needs all 32 lanes of the warp");
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
    collective(e.warps[e.cur->tid / 32], 32, 200, 0xffffffffu, &io, "mma.sync.m16n8k16", complete_mma);
}

// --- mbarrier ---------------------------------------------------------------------------------
static MBarrier& mbar_at(uint64_t* bar, const char* what, bool mustInit) {
    const uint32_t a = emu_cvta_shared(bar);
    if (a % 8) kfault("%s: mbarrier at shared 0x%x is not 8-byte aligned", what, a);
    MBarrier& m = g_exec->mbars[a];
    if (mustInit && !m.init) kfault("%s: mbarrier at shared 0x%x was never initialised (mbarrier.init)", what, a);
    return m;
}

static const char* const kMbarWait = "mbarrier wait";

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
    MBarrier& m = mbar_at(bar, "mbarrier.init", false);
    m = MBarrier{};
    m.init = true;
    m.count = m.pending = count;
    *bar = 0;  // the object's bytes are opaque; the state lives in the runtime
}

void emu_mbar_arrive(uint64_t* bar, uint32_t txBytes) {
    MBarrier& m = mbar_at(bar, txBytes ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive", true);
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
        if ((m.phase & 1u) != (parity & 1u)) {
            race_acquire(m.done, g_exec->cur->tid);
            return;
        }
        block_current(kMbarWait, a, parity);
    }
}

// --- TMA --------------------------------------------------------------------------------------
void emu_tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int rank, const int* coords) {
    Exec& e = *g_exec;
    const uint32_t d = emu_cvta_shared(dst);
    MBarrier& m = mbar_at(bar, "cp.async.bulk.tensor", true);
    uint32_t bytes = 0;
    try {
        bytes = tma_load_tiled(window(), d, map, rank, coords);
    } catch (const Fault& x) {
        kfault("%s", x.what());
    }
    shared_host(d, bytes, true, "cp.async.bulk.tensor");  // memcheck + racecheck of the box
    m.tx -= bytes;                                         // complete_tx: a release by the issuing thread
    race_release(m.acc, e.cur->tid);
    mbar_try_complete(m);
}

// --- wgmma ------------------------------------------------------------------------------------
struct WgIO {
    int n, ta, tb, scaleD;
    float* d;
    uint64_t da, db;
};
static void complete_wgmma(Rendezvous& r) {
    if (r.need != 128) kfault("wgmma.mma_async: needs all 128 threads of the warpgroup");
    const WgIO& w0 = *static_cast<WgIO*>(r.io[0]);
    float* d[128];
    for (int t = 0; t < 128; ++t) {
        const WgIO& w = *static_cast<WgIO*>(r.io[t]);
        if (w.n != w0.n || w.ta != w0.ta || w.tb != w0.tb || w.da != w0.da || w.db != w0.db || w.scaleD != w0.scaleD) {
            kfault("wgmma.mma_async: threads of the warpgroup pass different operands (thread %d)", t);
        }
        d[t] = w.d;
    }
    // racecheck / memcheck: the bytes the operands can cover (whole 8-row groups of 128-byte rows)
    auto operand = [&](uint64_t desc, int trans, int mn, const char* what) {
        const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4;
        const uint32_t lbo = (uint32_t)(desc >> 16 & 0x3FFF) << 4;
        const uint32_t sbo = (uint32_t)(desc >> 32 & 0x3FFF) << 4;
        if (trans) {  // MN-major: 64-element boxes LBO apart, each 16 k-rows of 128 bytes
            shared_host(start, (uint32_t)(mn / 64 - 1) * lbo + 2 * sbo, false, what);
        } else {      // K-major: mn rows, 8-row groups SBO apart
            const uint32_t base = start & ~127u;
            shared_host(base, (uint32_t)(mn / 8) * sbo, false, what);
        }
    };
    operand(w0.da, w0.ta, 64, "wgmma A operand");
    operand(w0.db, w0.tb, w0.n, "wgmma B operand");
    try {
        wgmma_m64nNk16_bf16(window(), w0.n, w0.da, w0.db, w0.ta, w0.tb, w0.scaleD != 0, d);
    } catch (const Fault& x) {
        kfault("%s", x.what());
    }
}
void emu_wgmma(int n, int transA, int transB, float* d, uint64_t descA, uint64_t descB, int scaleD) {
    Exec& e = *g_exec;
    WgIO io{n, transA, transB, scaleD, d, descA, descB};
    collective(e.warpgroups[e.cur->tid / 128], 128, 300, 0xffffffffu, &io, "wgmma.mma_async", complete_wgmma);
    e.cur->wgmmaUncommitted++;
}
void emu_wgmma_fence() {}
void emu_wgmma_commit() {
    Fiber* f = g_exec->cur;
    if (f->wgmmaUncommitted) f->wgmmaGroups++;
    f->wgmmaUncommitted = 0;
}
void emu_wgmma_wait(int n) {
    Fiber* f = g_exec->cur;
    if (n < 0) kfault("wgmma.wait_group %d", n);
    if (f->wgmmaGroups > n) f->wgmmaGroups = n;  // results were computed at issue; nothing else to do
}
void emu_fence_proxy_async() {}

// ---------------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------------
static void fiber_main() {
    Exec& e = *g_exec;
    Fiber* f = e.cur;
    try {
        e.kernel->run(e.kernel->fn, e.args);
    } catch (const Fault& x) {
        abandon(where(f) + ": " + x.what());
    } catch (const std::exception& x) {
        abandon(where(f) + ": " + x.what());
    }
    f->state = DONE;
    e.live--;
    if (f->cpGroups.size() || f->cpPending.size()) {
        // copies in flight when a thread exits still land (nobody can read them any more)
    }
    NamedBarrier& nb = e.bars[0];
    if (nb.arrived > 0 && nb.all && nb.arrived >= e.live) complete_barrier(nb);
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
    if (w == "mbarrier wait") {
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
    }
}

static bool env_flag(const char* name, bool dflt) {
    const char* v = getenv(name);
    if (!v || !*v) return dflt;
    return !(v[0] == '0' || v[0] == 'f' || v[0] == 'F' || v[0] == 'n' || v[0] == 'N');
}

static std::once_flag g_initOnce;
static void init_runtime() {
    g_smemLo = (uintptr_t)__start_moe4j_smem;
    g_smemHi = (uintptr_t)__stop_moe4j_smem;
    g_dynHi = (uintptr_t)g_dynSmem + kMaxDynamicShared;
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
    if ((uintptr_t)g_dynSmem != g_smemLo) {
        return "libmoe4j_cpudevice.so was linked with runtime.o after a kernel object: dynamic shared memory must start "
               "section moe4j_smem";
    }
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
    e.args = k->unpack(slots);
    e.argsLo = (uintptr_t)e.args;
    e.argsHi = e.argsLo + k->argsBytes;
    ensure_stacks(e.nthreads);
    e.fibers.resize(e.nthreads);
    e.warps.resize((e.nthreads + 31) / 32);
    e.warpgroups.resize((e.nthreads + 127) / 128);
    g_exec = &e;
    const size_t staticBytes = g_smemHi - g_dynHi;
    for (unsigned bz = 0; bz < grid.z && !e.faulted; ++bz)
        for (unsigned by = 0; by < grid.y && !e.faulted; ++by)
            for (unsigned bx = 0; bx < grid.x && !e.faulted; ++bx) {
                e.blockIdx = uint3{bx, by, bz};
                std::memset(g_dynSmem, 0xFF, dynShared);
                std::memset((void*)g_dynHi, 0xFF, staticBytes);
                e.live = e.nthreads;
                e.mbars.clear();
                for (auto& b : e.bars) b = NamedBarrier{};
                for (auto& r : e.warps) r.arrived = 0;
                for (auto& r : e.warpgroups) r.arrived = 0;
                e.raceActive = false;
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
                    f.cpPending.clear();
                    f.cpGroups.clear();
                    f.wgmmaGroups = f.wgmmaUncommitted = 0;
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
    k->destroy(e.args);
    res.ok = !e.faulted;
    res.message = e.message;
    return res;
}

}  // namespace moe4j_emu
