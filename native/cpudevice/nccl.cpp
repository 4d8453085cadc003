// moe4j CPU device: the NCCL subset of libmoe4j_cpudevice.so (see include/nccl.h), implemented on
// the CPU, where "device memory" is host memory.
//
// Semantics
// ---------
// * Ranks. A communicator has 1..64 ranks; they may be threads of one process (each with its own
//   ncclComm_t) or separate processes on one machine, in any mix: both use one code path. All
//   ranks meet in a POSIX shared-memory segment (shm_open + mmap) whose name is derived from the
//   128-byte ncclUniqueId (ncclGetUniqueId fills 16 random bytes from getrandom, so the name is
//   unguessable). The first rank to arrive creates it (O_CREAT|O_EXCL; the losers of the race open
//   it and wait for the creator's "ready" word), the last rank to join unlinks the name, so nothing
//   is left in /dev/shm once the communicator is up (a failed init unlinks it too).
// * ncclCommInitRank blocks until all nranks ranks joined (bounded by the timeout below). A rank
//   whose nranks differs from the segment's gets ncclInvalidArgument, a rank number already taken
//   gets ncclInvalidUsage; either failure is posted in the segment, so the ranks already waiting
//   fail at once (ncclInvalidUsage, with the offender's message) instead of timing out.
// * Execution is eager, like every stream operation of the CPU device: when a call returns its
//   work is complete (streams are only validated). Outside a group a call executes inside the call
//   and blocks until its peers have matched it. Inside ncclGroupStart/ncclGroupEnd (nestable; the
//   group state is per thread, like NCCL's) calls are validated and recorded, and the outermost
//   ncclGroupEnd executes them: per communicator first the collectives in call order, then all
//   sends and receives together, progressed by one non-blocking loop, so any pattern NCCL accepts
//   in a group (two ranks sending to each other, all-to-all-v with any sizes) cannot deadlock. One
//   group may span several communicators (one thread driving several ranks).
// * Transport. Every ordered pair (src, dst), src != dst, has a single-producer single-consumer
//   mailbox of K slots of S payload bytes in the segment (S = 2 KiB..256 KiB and K = 4, or 2 above
//   16 ranks, sized to keep the segment near 8 MiB, ~17 MiB at 64 ranks; it is fully allocated up front with
//   posix_fallocate so a full /dev/shm is an init error, not a SIGBUS). A message is cut into
//   S-byte slots; each slot carries the message's kind and total size, which the receiver checks:
//   a send/recv size mismatch or ranks calling different collectives fail with ncclInvalidUsage
//   instead of corrupting data. Messages between a pair are matched in call order; zero-byte
//   messages are no-ops on both sides (never matched). A rank sending to itself needs the matching
//   receive in the same group (outside a group it is ncclInvalidUsage). Waiting is a short spin
//   with sched_yield and then a process-shared futex ("doorbell" per rank) rung by peers.
// * Collectives. chunk q of an all-reduce is the q-th of W near-equal parts (the first count % W
//   parts get one more element). All-reduce = reduce-scatter (rank q receives chunk q from every
//   rank and reduces it) followed by all-gather of the reduced chunks; reduce-scatter is the first
//   half; all-gather sends the buffer to every rank. Every element is reduced once, by its owner,
//   in rank order ((x0 op x1) op x2) ... op x(W-1), so results are deterministic and bitwise
//   identical on every rank. Accumulation: integers in their own type (sum/prod wrap modulo 2^n),
//   float64 in double, float32 in float, float16/bfloat16 in float32 over all ranks and rounded
//   to nearest-even once at the end -- the moe4j RankOrderReduce contract, so the result matches
//   org.moe4j.cuda.comm.internal.RankOrderReduce bit for bit (real NCCL rounds at every step).
//   max/min on floating types follow Java's Math.max/min (NaN wins, +0 > -0). ncclAvg = the
//   rank-order sum divided by W in the accumulator type (integers: truncating division), rounded
//   once. fp8 types can be sent and gathered but not reduced (ncclInvalidArgument).
// * Validation happens before anything is posted (all or nothing): NULL or destroyed comm, bad
//   peer, count overflow, unknown datatype or op, a buffer not inside a live device allocation
//   (cpudev::device_range_live; NULL is fine for zero bytes), an invalid stream -> ncclInvalid-
//   Argument; a sticky CUDA error -> ncclUnhandledCudaError. Inside a group the failing call
//   returns the error and the outermost ncclGroupEnd discards the whole group and returns it
//   again. ncclGetLastError returns the calling thread's last error message.
// * Timeouts and failures. A rank waiting on peers gives up when no progress was made for
//   MOE4J_CPUDEV_NCCL_TIMEOUT_S seconds (read at ncclCommInitRank, default 300; a positive
//   decimal number, anything else fails ncclCommInitRank with ncclInvalidArgument naming the
//   variable and value) with ncclSystemError; a peer that left (destroyed, aborted or failed) or
//   whose process died (kill(pid, 0) == ESRCH, checked every 100 ms) gives ncclRemoteError at
//   once; a message mismatch gives ncclInvalidUsage. Messages name the op, the rank, the peer and
//   the communicator. After such an error the communicator is broken: ncclCommGetAsyncError reports
//   the error, every later operation returns it, and the rank is marked as left so that its peers
//   fail fast too. ncclCommAbort may be called from another thread while a call is blocked: the
//   call returns ncclSystemError ("aborted") and the abort frees the communicator once it has.
// * Thread safety: different communicators may be used concurrently from different threads; one
//   communicator must be used by one thread at a time (ncclCommAbort excepted), as in NCCL.
#include "nccl.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "device_internal.h"

#define NCCL_API extern "C" __attribute__((visibility("default")))

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMaxRanks = 64;
constexpr uint64_t kShmMagic = 0x3176656463706a34ULL;  // "4jpcdev1"
constexpr char kIdMagic[8] = {'m', 'o', 'e', '4', 'j', 'C', 'P', 'U'};
constexpr size_t kKeyBytes = 16;
constexpr size_t kSlotHeader = 64;
constexpr const char* kTimeoutEnv = "MOE4J_CPUDEV_NCCL_TIMEOUT_S";

enum RankState : uint32_t { kAbsent = 0, kJoined = 1, kLeft = 2 };

// Message kinds carried in every slot, checked by the receiver.
enum Kind : uint32_t { kP2P = 1, kAllReduceScatter = 2, kAllReduceGather = 3, kReduceScatter = 4, kAllGather = 5 };

const char* kind_name(uint32_t k) {
    switch (k) {
        case kP2P: return "ncclSend";
        case kAllReduceScatter: return "ncclAllReduce (reduce phase)";
        case kAllReduceGather: return "ncclAllReduce (gather phase)";
        case kReduceScatter: return "ncclReduceScatter";
        case kAllGather: return "ncclAllGather";
        default: return "unknown";
    }
}

// ------------------------------------------------------------------ shared segment layout

struct alignas(64) RankSlot {
    std::atomic<uint32_t> state;    // RankState
    std::atomic<int32_t> pid;
    std::atomic<uint32_t> bell;     // futex word: bumped whenever this rank may progress
    std::atomic<uint32_t> waiting;  // 1 while the rank sleeps on bell
};

struct alignas(64) PairCtl {
    std::atomic<uint64_t> head;  // slots published by the sender
    char pad0[56];
    std::atomic<uint64_t> tail;  // slots consumed by the receiver
    char pad1[56];
};

struct SlotHdr {
    uint64_t msg_bytes;
    uint64_t len;
    uint32_t kind;
};

struct ShmHeader {
    std::atomic<uint64_t> ready;  // kShmMagic once the creator has initialised the fields below
    uint8_t key[kKeyBytes];
    int32_t nranks;
    uint32_t nslots;
    uint64_t slot_bytes;
    uint64_t total_bytes;
    uint64_t ranks_off, pairs_off, slots_off;
    std::atomic<int32_t> joined;
    std::atomic<int32_t> fail_claim;  // first failing rank + 1 writes fail_msg
    std::atomic<int32_t> init_fail;   // ncclResult_t of an init failure, published after fail_msg
    char fail_msg[512];
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "needs lock-free 64-bit atomics in shared memory");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "needs lock-free 32-bit atomics in shared memory");
static_assert(sizeof(SlotHdr) <= kSlotHeader, "slot header");

// ------------------------------------------------------------------ errors

thread_local std::string t_last_error;

std::string vformat(const char* fmt, va_list ap) {
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return buf;
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

struct Status {
    ncclResult_t code = ncclSuccess;
    std::string msg;
    bool ok() const { return code == ncclSuccess; }
};

Status fail(ncclResult_t code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
Status fail(ncclResult_t code, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    Status s{code, vformat(fmt, ap)};
    va_end(ap);
    return s;
}

ncclResult_t report(const Status& s) {
    if (!s.ok()) t_last_error = s.msg;
    return s.code;
}

// ------------------------------------------------------------------ futex and time

long futex(std::atomic<uint32_t>* addr, int op, uint32_t val, const timespec* ts) {
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, ts, nullptr, 0);
}

void sleep_us(long us) {
    timespec ts{us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, nullptr);
}

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

bool pid_dead(int32_t pid) {
    if (pid <= 0 || pid == getpid()) return false;
    return kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

// ------------------------------------------------------------------ the communicator

struct ncclComm {
    ShmHeader* shm = nullptr;
    size_t map_bytes = 0;
    int rank = 0;
    int nranks = 0;
    double timeout_s = 300;
    std::string tag;  // "rank r of W (comm xxxxxxxx)"
    RankSlot* ranks = nullptr;
    PairCtl* pairs = nullptr;
    uint8_t* slots = nullptr;
    uint64_t S = 0;  // slot payload bytes
    uint32_t K = 0;  // slots per pair

    std::atomic<int> active{0};
    std::atomic<bool> abort_req{false};
    std::atomic<int> async_err{ncclSuccess};
    std::mutex mu;
    std::string async_msg;

    PairCtl& pair(int src, int dst) { return pairs[src * nranks + dst]; }
    uint8_t* slot(int src, int dst, uint64_t i) {
        size_t idx = static_cast<size_t>(src) * (nranks - 1) + (dst < src ? dst : dst - 1);
        return slots + (idx * K + i % K) * (kSlotHeader + S);
    }
    RankSlot& me() { return ranks[rank]; }
};

namespace {

std::mutex g_registry_mu;
std::unordered_set<ncclComm*> g_registry;

bool comm_live(ncclComm* c) {
    std::lock_guard<std::mutex> g(g_registry_mu);
    return g_registry.count(c) != 0;
}

void ring(ncclComm* c, int p) {
    RankSlot& s = c->ranks[p];
    s.bell.fetch_add(1, std::memory_order_seq_cst);
    if (s.waiting.load(std::memory_order_seq_cst)) futex(&s.bell, FUTEX_WAKE, INT32_MAX, nullptr);
}

void ring_all(ncclComm* c) {
    for (int p = 0; p < c->nranks; p++) ring(c, p);
}

// Marks this rank as gone from the communicator so that peers waiting on it fail fast.
void leave(ncclComm* c) {
    c->me().state.store(kLeft, std::memory_order_seq_cst);
    ring_all(c);
}

// Records an error that breaks the communicator (the mailboxes may be mid-message).
void break_comm(ncclComm* c, const Status& s) {
    {
        std::lock_guard<std::mutex> g(c->mu);
        if (c->async_err.load() == ncclSuccess) {
            c->async_msg = s.msg;
            c->async_err.store(s.code);
        }
    }
    leave(c);
}

void unmap(ncclComm* c) {
    if (c->shm) munmap(c->shm, c->map_bytes);
    c->shm = nullptr;
}

// ------------------------------------------------------------------ datatypes and reductions

size_t dtype_size(int d) {
    switch (d) {
        case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
        case ncclFloat16: case ncclBfloat16: return 2;
        case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
        case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
        default: return 0;
    }
}

const char* dtype_name(int d) {
    static const char* names[] = {"ncclInt8", "ncclUint8", "ncclInt32", "ncclUint32", "ncclInt64", "ncclUint64",
                                  "ncclFloat16", "ncclFloat32", "ncclFloat64", "ncclBfloat16", "ncclFloat8e4m3",
                                  "ncclFloat8e5m2"};
    return d >= 0 && d < ncclNumTypes ? names[d] : "?";
}

uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float bf16_to_f32(uint16_t h) { return u2f(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
    return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t s = static_cast<uint32_t>(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu, bits;
    if (e == 0) {
        if (m == 0) {
            bits = s;
        } else {  // subnormal: normalise
            int sh = 0;
            while (!(m & 0x400u)) { m <<= 1; sh++; }
            bits = s | (static_cast<uint32_t>(113 - sh) << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (e == 31) {
        bits = s | 0x7f800000u | (m << 13);
    } else {
        bits = s | ((e + 112) << 23) | (m << 13);
    }
    return u2f(bits);
}

uint16_t f32_to_f16(float f) {
    uint32_t x = f2u(f), ax = x & 0x7fffffffu;
    uint16_t s = static_cast<uint16_t>((x >> 16) & 0x8000u);
    if (ax > 0x7f800000u) return s | 0x7e00u | ((ax >> 13) & 0x3ffu);  // NaN stays (quiet) NaN
    if (ax >= 0x477ff000u) return s | 0x7c00u;                        // overflow (ties to even) -> inf
    if (ax < 0x38800000u) {                                            // zero or subnormal result
        if (ax <= 0x33000000u) return s;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return static_cast<uint16_t>(s | r);
    }
    uint32_t r = ax - 0x38000000u, h = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return static_cast<uint16_t>(s | h);
}

// Storage type T, accumulator A, conversions.
template <int D> struct Ty;
#define PLAIN_TYPE(D, TT)                                   \
    template <> struct Ty<D> {                              \
        using T = TT;                                       \
        using A = TT;                                       \
        static A ld(T v) { return v; }                      \
        static T st(A v) { return v; }                      \
    };
PLAIN_TYPE(ncclInt8, int8_t)
PLAIN_TYPE(ncclUint8, uint8_t)
PLAIN_TYPE(ncclInt32, int32_t)
PLAIN_TYPE(ncclUint32, uint32_t)
PLAIN_TYPE(ncclInt64, int64_t)
PLAIN_TYPE(ncclUint64, uint64_t)
PLAIN_TYPE(ncclFloat32, float)
PLAIN_TYPE(ncclFloat64, double)
#undef PLAIN_TYPE
template <> struct Ty<ncclFloat16> {
    using T = uint16_t;
    using A = float;
    static A ld(T v) { return f16_to_f32(v); }
    static T st(A v) { return f32_to_f16(v); }
};
template <> struct Ty<ncclBfloat16> {
    using T = uint16_t;
    using A = float;
    static A ld(T v) { return bf16_to_f32(v); }
    static T st(A v) { return f32_to_bf16(v); }
};

template <class A> A apply(int op, A a, A b) {
    if constexpr (std::is_integral<A>::value) {
        using U = typename std::make_unsigned<A>::type;
        switch (op) {
            case ncclProd: return static_cast<A>(static_cast<U>(a) * static_cast<U>(b));
            case ncclMax: return a < b ? b : a;
            case ncclMin: return b < a ? b : a;
            default: return static_cast<A>(static_cast<U>(a) + static_cast<U>(b));
        }
    } else {
        switch (op) {
            case ncclProd: return a * b;
            case ncclMax:  // java.lang.Math.max
                if (a != a) return a;
                if (a == 0 && b == 0 && std::signbit(a)) return b;
                return a >= b ? a : b;
            case ncclMin:  // java.lang.Math.min
                if (a != a) return a;
                if (a == 0 && b == 0 && std::signbit(b)) return b;
                return a <= b ? a : b;
            default: return a + b;
        }
    }
}

template <int D, int OP> void fold_t(void* accv, const uint8_t* src, size_t n, bool first) {
    using T = typename Ty<D>::T;
    using A = typename Ty<D>::A;
    A* acc = static_cast<A*>(accv);
    for (size_t i = 0; i < n; i++) {
        T v;
        memcpy(&v, src + i * sizeof(T), sizeof(T));
        A x = Ty<D>::ld(v);
        acc[i] = first ? x : apply<A>(OP, acc[i], x);
    }
}

template <int D> void finish_t(const void* accv, uint8_t* out, size_t n, bool avg, int w) {
    using T = typename Ty<D>::T;
    using A = typename Ty<D>::A;
    const A* acc = static_cast<const A*>(accv);
    for (size_t i = 0; i < n; i++) {
        A a = avg ? static_cast<A>(acc[i] / static_cast<A>(w)) : acc[i];
        T v = Ty<D>::st(a);
        memcpy(out + i * sizeof(T), &v, sizeof(T));
    }
}

using FoldFn = void (*)(void*, const uint8_t*, size_t, bool);
using FinishFn = void (*)(const void*, uint8_t*, size_t, bool, int);

template <int D> FoldFn fold_for(int op) {
    switch (op) {
        case ncclProd: return fold_t<D, ncclProd>;
        case ncclMax: return fold_t<D, ncclMax>;
        case ncclMin: return fold_t<D, ncclMin>;
        default: return fold_t<D, ncclSum>;  // sum and avg
    }
}

template <int D> size_t acc_size() { return sizeof(typename Ty<D>::A); }

bool reduction_fns(int d, int op, FoldFn* fold, FinishFn* finish, size_t* accsz) {
    switch (d) {
#define CASE(D) case D: *fold = fold_for<D>(op); *finish = finish_t<D>; *accsz = acc_size<D>(); return true;
        CASE(ncclInt8) CASE(ncclUint8) CASE(ncclInt32) CASE(ncclUint32) CASE(ncclInt64) CASE(ncclUint64)
        CASE(ncclFloat16) CASE(ncclFloat32) CASE(ncclFloat64) CASE(ncclBfloat16)
#undef CASE
        default: return false;
    }
}

// ------------------------------------------------------------------ recorded operations

enum OpKind { kSend, kRecv, kAllReduce, kAllGatherOp, kReduceScatterOp };

const char* op_name(OpKind k) {
    switch (k) {
        case kSend: return "ncclSend";
        case kRecv: return "ncclRecv";
        case kAllReduce: return "ncclAllReduce";
        case kAllGatherOp: return "ncclAllGather";
        default: return "ncclReduceScatter";
    }
}

struct Op {
    OpKind kind;
    ncclComm* comm;
    const uint8_t* send;
    uint8_t* recv;
    size_t count;  // elements (per rank for all-gather / reduce-scatter)
    int dtype;
    int redop;
    int peer;
};

struct GroupState {
    int depth = 0;
    std::vector<Op> ops;
    Status err;
    cudaStream_t stream = nullptr;  // the stream of the group's operations (captured as one node)
};
thread_local GroupState t_group;

Status check_buffer(const char* fn, const char* what, const void* p, size_t bytes) {
    if (bytes == 0) return {};
    if (p == nullptr || !cpudev::device_range_live(p, bytes))
        return fail(ncclInvalidArgument, "%s: %s %p (%zu bytes) is not inside a live device allocation", fn, what, p,
                    bytes);
    return {};
}

Status validate(const Op& op, cudaStream_t stream) {
    const char* fn = op_name(op.kind);
    if (op.comm == nullptr) return fail(ncclInvalidArgument, "%s: comm is NULL", fn);
    if (!comm_live(op.comm)) return fail(ncclInvalidArgument, "%s: comm %p is not a live communicator", fn, (void*)op.comm);
    ncclComm* c = op.comm;
    size_t esz = dtype_size(op.dtype);
    if (esz == 0) return fail(ncclInvalidArgument, "%s on %s: unknown datatype %d", fn, c->tag.c_str(), op.dtype);
    bool reduces = op.kind == kAllReduce || op.kind == kReduceScatterOp;
    if (reduces) {
        if (op.redop < 0 || op.redop >= ncclNumOps)
            return fail(ncclInvalidArgument, "%s on %s: unknown reduction op %d", fn, c->tag.c_str(), op.redop);
        if (op.dtype == ncclFloat8e4m3 || op.dtype == ncclFloat8e5m2)
            return fail(ncclInvalidArgument, "%s on %s: the CPU device cannot reduce %s", fn, c->tag.c_str(),
                        dtype_name(op.dtype));
    }
    if ((op.kind == kSend || op.kind == kRecv) && (op.peer < 0 || op.peer >= c->nranks))
        return fail(ncclInvalidArgument, "%s on %s: peer %d is not a rank of this %d-rank communicator", fn,
                    c->tag.c_str(), op.peer, c->nranks);
    size_t bytes, wide;
    if (__builtin_mul_overflow(op.count, esz, &bytes) || __builtin_mul_overflow(bytes, (size_t)c->nranks, &wide) ||
        wide > (static_cast<size_t>(1) << 60))
        return fail(ncclInvalidArgument, "%s on %s: count %zu of %s is too large", fn, c->tag.c_str(), op.count,
                    dtype_name(op.dtype));
    if (!cpudev::stream_valid(stream))
        return fail(ncclInvalidArgument, "%s on %s: stream %p is not a valid stream", fn, c->tag.c_str(), (void*)stream);
    CUresult sticky = cpudev::sticky_error();
    if (sticky != CUDA_SUCCESS)
        return fail(ncclUnhandledCudaError, "%s on %s: the CUDA context has a sticky error (CUresult %d)", fn,
                    c->tag.c_str(), (int)sticky);
    Status s;
    switch (op.kind) {
        case kSend: s = check_buffer(fn, "sendbuff", op.send, bytes); break;
        case kRecv: s = check_buffer(fn, "recvbuff", op.recv, bytes); break;
        case kAllReduce:
            s = check_buffer(fn, "sendbuff", op.send, bytes);
            if (s.ok()) s = check_buffer(fn, "recvbuff", op.recv, bytes);
            break;
        case kAllGatherOp:
            s = check_buffer(fn, "sendbuff", op.send, bytes);
            if (s.ok()) s = check_buffer(fn, "recvbuff", op.recv, wide);
            break;
        case kReduceScatterOp:
            s = check_buffer(fn, "sendbuff", op.send, wide);
            if (s.ok()) s = check_buffer(fn, "recvbuff", op.recv, bytes);
            break;
    }
    if (!s.ok()) s.msg += " (" + c->tag + ")";
    return s;
}

// ------------------------------------------------------------------ execution stages

struct Xfer {
    uint8_t* buf;  // source of a send, destination of a receive
    uint64_t bytes;
    uint64_t done;
};

struct LocalCopy {
    uint8_t* dst;
    const uint8_t* src;
    size_t bytes;
};

// The owner's side of a reduce-scatter: piece by piece, folds rank 0..W-1's contributions (its own
// from `local`, the others' from their mailboxes) into acc, then writes out.
struct Reducer {
    bool active = false;
    const uint8_t* local = nullptr;
    uint8_t* out = nullptr;
    uint64_t count = 0, piece_elems = 0, piece = 0, npieces = 0;
    size_t esz = 0;
    int next = 0;
    bool avg = false;
    FoldFn fold = nullptr;
    FinishFn finish = nullptr;
    std::vector<uint64_t> accbuf;
};

struct Stage {
    const char* name = "";
    uint32_t kind = kP2P;
    std::vector<std::deque<Xfer>> sends, recvs;  // per peer, in call order
    std::vector<LocalCopy> copies;              // done when the stage starts
    Reducer red;
    bool started = false;

    bool done() const {
        for (auto& q : sends) if (!q.empty()) return false;
        for (auto& q : recvs) if (!q.empty()) return false;
        return !red.active;
    }
};

struct CommRun {
    ncclComm* c;
    std::vector<Stage> stages;
    size_t cur = 0;
};

void chunk_of(uint64_t n, int w, int q, uint64_t* off, uint64_t* cnt) {
    uint64_t base = n / w, rem = n % w;
    *cnt = base + (static_cast<uint64_t>(q) < rem ? 1 : 0);
    *off = base * q + (static_cast<uint64_t>(q) < rem ? q : rem);
}

Stage new_stage(ncclComm* c, const char* name, uint32_t kind) {
    Stage s;
    s.name = name;
    s.kind = kind;
    s.sends.resize(c->nranks);
    s.recvs.resize(c->nranks);
    return s;
}

void add_send(Stage& s, int peer, const uint8_t* p, uint64_t bytes) {
    if (bytes) s.sends[peer].push_back({const_cast<uint8_t*>(p), bytes, 0});
}

void add_recv(Stage& s, int peer, uint8_t* p, uint64_t bytes) {
    if (bytes) s.recvs[peer].push_back({p, bytes, 0});
}

void setup_reducer(ncclComm* c, Stage& s, const Op& op, const uint8_t* local, uint8_t* out, uint64_t count) {
    if (count == 0) return;
    Reducer& r = s.red;
    size_t accsz = 0;
    reduction_fns(op.dtype, op.redop, &r.fold, &r.finish, &accsz);
    r.active = true;
    r.local = local;
    r.out = out;
    r.count = count;
    r.esz = dtype_size(op.dtype);
    r.piece_elems = c->S / r.esz;
    r.npieces = (count + r.piece_elems - 1) / r.piece_elems;
    r.avg = op.redop == ncclAvg;
    r.accbuf.resize((r.piece_elems * accsz + 7) / 8);
}

// Appends the stages of one collective.
void plan_collective(ncclComm* c, const Op& op, std::vector<Stage>& out) {
    int r = c->rank, w = c->nranks;
    size_t esz = dtype_size(op.dtype);
    uint64_t n = op.count;
    if (n == 0) return;
    if (op.kind == kAllReduce) {
        Stage a = new_stage(c, "ncclAllReduce", kAllReduceScatter);
        uint64_t off, cnt, roff, rcnt;
        for (int q = 0; q < w; q++) {
            chunk_of(n, w, q, &off, &cnt);
            if (q != r) add_send(a, q, op.send + off * esz, cnt * esz);
        }
        chunk_of(n, w, r, &roff, &rcnt);
        setup_reducer(c, a, op, op.send + roff * esz, op.recv + roff * esz, rcnt);
        out.push_back(std::move(a));
        if (w > 1) {
            Stage b = new_stage(c, "ncclAllReduce", kAllReduceGather);
            for (int q = 0; q < w; q++) {
                if (q == r) continue;
                chunk_of(n, w, q, &off, &cnt);
                add_send(b, q, op.recv + roff * esz, rcnt * esz);
                add_recv(b, q, op.recv + off * esz, cnt * esz);
            }
            out.push_back(std::move(b));
        }
    } else if (op.kind == kReduceScatterOp) {
        Stage a = new_stage(c, "ncclReduceScatter", kReduceScatter);
        for (int q = 0; q < w; q++)
            if (q != r) add_send(a, q, op.send + q * n * esz, n * esz);
        setup_reducer(c, a, op, op.send + r * n * esz, op.recv, n);
        out.push_back(std::move(a));
    } else {  // all-gather
        Stage a = new_stage(c, "ncclAllGather", kAllGather);
        if (op.recv + r * n * esz != op.send) a.copies.push_back({op.recv + r * n * esz, op.send, n * esz});
        for (int q = 0; q < w; q++) {
            if (q == r) continue;
            add_send(a, q, op.send, n * esz);
            add_recv(a, q, op.recv + q * n * esz, n * esz);
        }
        out.push_back(std::move(a));
    }
}

// Plans one communicator's share of a group: collectives in call order, then all p2p together.
Status plan(ncclComm* c, const std::vector<const Op*>& ops, bool grouped, std::vector<Stage>& out) {
    Stage p2p = new_stage(c, grouped ? "ncclGroupEnd (send/recv)" : "ncclSend/ncclRecv", kP2P);
    std::vector<const Op*> self_sends, self_recvs;
    bool any_p2p = false;
    for (const Op* op : ops) {
        size_t bytes = op->count * dtype_size(op->dtype);
        if (op->kind == kSend || op->kind == kRecv) {
            if (!grouped) p2p.name = op_name(op->kind);
            if (bytes == 0) continue;
            any_p2p = true;
            if (op->peer == c->rank) {
                (op->kind == kSend ? self_sends : self_recvs).push_back(op);
            } else if (op->kind == kSend) {
                add_send(p2p, op->peer, op->send, bytes);
            } else {
                add_recv(p2p, op->peer, op->recv, bytes);
            }
        } else {
            plan_collective(c, *op, out);
        }
    }
    if (self_sends.size() != self_recvs.size())
        return fail(ncclInvalidUsage,
                    "%s on %s: %zu send(s) to self but %zu receive(s) from self%s; nothing was executed",
                    p2p.name, c->tag.c_str(), self_sends.size(), self_recvs.size(),
                    grouped ? " in the group" : " (a send to self needs its receive in the same group)");
    for (size_t i = 0; i < self_sends.size(); i++) {
        size_t sb = self_sends[i]->count * dtype_size(self_sends[i]->dtype);
        size_t rb = self_recvs[i]->count * dtype_size(self_recvs[i]->dtype);
        if (sb != rb)
            return fail(ncclInvalidUsage, "%s on %s: send #%zu to self has %zu bytes but the receive has %zu", p2p.name,
                        c->tag.c_str(), i, sb, rb);
        p2p.copies.push_back({self_recvs[i]->recv, self_sends[i]->send, sb});
    }
    if (any_p2p) out.push_back(std::move(p2p));
    return {};
}

// ------------------------------------------------------------------ progress

bool push_sends(ncclComm* c, Stage& s, int p) {
    auto& q = s.sends[p];
    if (q.empty()) return false;
    PairCtl& pc = c->pair(c->rank, p);
    uint64_t h = pc.head.load(std::memory_order_relaxed);
    uint64_t t = pc.tail.load(std::memory_order_acquire);
    bool prog = false;
    while (!q.empty()) {
        if (h - t >= c->K) {
            t = pc.tail.load(std::memory_order_acquire);
            if (h - t >= c->K) break;
        }
        Xfer& x = q.front();
        uint64_t len = std::min<uint64_t>(c->S, x.bytes - x.done);
        uint8_t* sl = c->slot(c->rank, p, h);
        SlotHdr hdr{x.bytes, len, s.kind};
        memcpy(sl, &hdr, sizeof hdr);
        memcpy(sl + kSlotHeader, x.buf + x.done, len);
        x.done += len;
        pc.head.store(++h, std::memory_order_release);
        prog = true;
        if (x.done == x.bytes) q.pop_front();
    }
    if (prog) ring(c, p);
    return prog;
}

Status mismatch(ncclComm* c, const Stage& s, int p, const SlotHdr& hdr, uint64_t want_bytes, uint64_t want_len) {
    return fail(ncclInvalidUsage,
                "%s on %s: the message from peer %d does not match: expected %s of %llu bytes (slot of %llu), the "
                "peer sent %s of %llu bytes (slot of %llu); the ranks called different operations or counts",
                s.name, c->tag.c_str(), p, kind_name(s.kind), (unsigned long long)want_bytes,
                (unsigned long long)want_len, kind_name(hdr.kind), (unsigned long long)hdr.msg_bytes,
                (unsigned long long)hdr.len);
}

Status pull_recvs(ncclComm* c, Stage& s, int p, bool& prog) {
    auto& q = s.recvs[p];
    if (q.empty()) return {};
    PairCtl& pc = c->pair(p, c->rank);
    uint64_t t = pc.tail.load(std::memory_order_relaxed);
    uint64_t h = pc.head.load(std::memory_order_acquire);
    bool any = false;
    while (!q.empty()) {
        if (t == h) {
            h = pc.head.load(std::memory_order_acquire);
            if (t == h) break;
        }
        Xfer& x = q.front();
        uint64_t len = std::min<uint64_t>(c->S, x.bytes - x.done);
        const uint8_t* sl = c->slot(p, c->rank, t);
        SlotHdr hdr;
        memcpy(&hdr, sl, sizeof hdr);
        if (hdr.kind != s.kind || hdr.msg_bytes != x.bytes || hdr.len != len) return mismatch(c, s, p, hdr, x.bytes, len);
        memcpy(x.buf + x.done, sl + kSlotHeader, len);
        x.done += len;
        pc.tail.store(++t, std::memory_order_release);
        any = true;
        if (x.done == x.bytes) q.pop_front();
    }
    if (any) {
        ring(c, p);
        prog = true;
    }
    return {};
}

Status step_reducer(ncclComm* c, Stage& s, bool& prog) {
    Reducer& r = s.red;
    int w = c->nranks;
    while (r.active) {
        uint64_t first = r.piece * r.piece_elems;
        uint64_t n = std::min<uint64_t>(r.piece_elems, r.count - first);
        uint64_t len = n * r.esz;
        while (r.next < w) {
            int j = r.next;
            if (j == c->rank) {
                r.fold(r.accbuf.data(), r.local + first * r.esz, n, j == 0);
            } else {
                PairCtl& pc = c->pair(j, c->rank);
                uint64_t t = pc.tail.load(std::memory_order_relaxed);
                if (pc.head.load(std::memory_order_acquire) == t) return {};
                const uint8_t* sl = c->slot(j, c->rank, t);
                SlotHdr hdr;
                memcpy(&hdr, sl, sizeof hdr);
                if (hdr.kind != s.kind || hdr.msg_bytes != r.count * r.esz || hdr.len != len)
                    return mismatch(c, s, j, hdr, r.count * r.esz, len);
                r.fold(r.accbuf.data(), sl + kSlotHeader, n, j == 0);
                pc.tail.store(t + 1, std::memory_order_release);
                ring(c, j);
            }
            r.next++;
            prog = true;
        }
        r.finish(r.accbuf.data(), r.out + first * r.esz, n, r.avg, w);
        r.next = 0;
        if (++r.piece == r.npieces) r.active = false;
    }
    return {};
}

Status step_stage(ncclComm* c, Stage& s, bool& prog) {
    if (!s.started) {
        for (auto& cp : s.copies)
            if (cp.dst != cp.src) memmove(cp.dst, cp.src, cp.bytes);
        s.started = true;
        prog = true;
    }
    for (int p = 0; p < c->nranks; p++) {
        if (push_sends(c, s, p)) prog = true;
        Status st = pull_recvs(c, s, p, prog);
        if (!st.ok()) return st;
    }
    if (s.red.active) return step_reducer(c, s, prog);
    return {};
}

// The first peer this stage waits on (-1 when none), with a description.
int waiting_on(ncclComm* c, const Stage& s, std::string* what) {
    for (int p = 0; p < c->nranks; p++) {
        if (s.red.active && s.red.next == p && p != c->rank) {
            *what = format("reduction input of chunk %d from peer %d (piece %llu of %llu)", c->rank, p,
                           (unsigned long long)s.red.piece + 1, (unsigned long long)s.red.npieces);
            return p;
        }
        if (!s.recvs[p].empty()) {
            const Xfer& x = s.recvs[p].front();
            *what = format("receive of %llu bytes from peer %d, %llu received", (unsigned long long)x.bytes, p,
                           (unsigned long long)x.done);
            return p;
        }
        if (!s.sends[p].empty()) {
            const Xfer& x = s.sends[p].front();
            *what = format("send of %llu bytes to peer %d, %llu delivered", (unsigned long long)x.bytes, p,
                           (unsigned long long)x.done);
            return p;
        }
    }
    return -1;
}

// Whether a peer this stage still needs has left or died (an error when so).
Status peers_alive(ncclComm* c, const Stage& s, bool check_pids) {
    for (int p = 0; p < c->nranks; p++) {
        if (p == c->rank) continue;
        bool needed = !s.sends[p].empty() || !s.recvs[p].empty() || (s.red.active && s.red.next <= p);
        if (!needed) continue;
        std::string what;
        if (c->ranks[p].state.load(std::memory_order_acquire) != kJoined) {
            waiting_on(c, s, &what);
            return fail(ncclRemoteError,
                        "%s on %s: peer %d has left the communicator (destroyed, aborted or failed) while this rank "
                        "still needs it (waiting for: %s)",
                        s.name, c->tag.c_str(), p, what.c_str());
        }
        if (check_pids && pid_dead(c->ranks[p].pid.load())) {
            waiting_on(c, s, &what);
            return fail(ncclRemoteError, "%s on %s: the process of peer %d (pid %d) has exited (waiting for: %s)", s.name,
                        c->tag.c_str(), p, (int)c->ranks[p].pid.load(), what.c_str());
        }
    }
    return {};
}

// Runs the planned stages of every communicator of a group to completion (or the first error,
// which breaks the communicators that still had work).
Status run(std::vector<CommRun>& runs) {
    Clock::time_point last_progress = Clock::now(), last_pid_check = last_progress;
    int idle = 0;
    bool gone_seen = false;
    auto failed = [&](CommRun& culprit, Status st) {
        for (auto& r : runs)
            if (r.cur < r.stages.size()) break_comm(r.c, &r == &culprit ? st : Status{st.code, "another communicator of the group failed: " + st.msg});
        return st;
    };
    for (;;) {
        uint32_t bell = runs.size() == 1 ? runs[0].c->me().bell.load(std::memory_order_acquire) : 0;
        bool prog = false, all_done = true;
        for (auto& r : runs) {
            while (r.cur < r.stages.size()) {
                Stage& s = r.stages[r.cur];
                Status st = step_stage(r.c, s, prog);
                if (!st.ok()) return failed(r, st);
                if (!s.done()) break;
                r.cur++;
                prog = true;
            }
            if (r.cur < r.stages.size()) all_done = false;
        }
        if (all_done) return {};
        if (prog) {
            last_progress = Clock::now();
            idle = 0;
            gone_seen = false;
            continue;
        }
        // No progress: abort? peers gone? timeout? Then spin a little and sleep.
        Clock::time_point now = Clock::now();
        bool check_pids = now - last_pid_check > std::chrono::milliseconds(100);
        if (check_pids) last_pid_check = now;
        for (auto& r : runs) {
            if (r.cur >= r.stages.size()) continue;
            Stage& s = r.stages[r.cur];
            if (r.c->abort_req.load()) {
                std::string what;
                waiting_on(r.c, s, &what);
                return failed(r, fail(ncclSystemError, "%s on %s: interrupted by ncclCommAbort (waiting for: %s)",
                                      s.name, r.c->tag.c_str(), what.c_str()));
            }
            Status st = peers_alive(r.c, s, check_pids);
            if (!st.ok()) {
                // The peer may have published data just before leaving: look once more first.
                if (!gone_seen) {
                    gone_seen = true;
                    prog = true;
                    break;
                }
                return failed(r, st);
            }
            double idle_s = std::chrono::duration<double>(now - last_progress).count();
            if (idle_s > r.c->timeout_s) {
                std::string what;
                int p = waiting_on(r.c, s, &what);
                return failed(r, fail(ncclSystemError,
                                      "%s on %s: no progress for %g s (%s=%g) waiting for peer %d (%s); the peer did "
                                      "not post the matching call",
                                      s.name, r.c->tag.c_str(), idle_s, kTimeoutEnv, r.c->timeout_s, p, what.c_str()));
            }
        }
        if (prog) continue;
        if (++idle < 64) {
            sched_yield();
            continue;
        }
        if (runs.size() == 1) {
            RankSlot& me = runs[0].c->me();
            me.waiting.store(1, std::memory_order_seq_cst);
            timespec ts{0, 20 * 1000 * 1000};
            futex(&me.bell, FUTEX_WAIT, bell, &ts);
            me.waiting.store(0, std::memory_order_relaxed);
        } else {
            sleep_us(100);
        }
    }
}

// Holds a communicator for the duration of a call: refused once aborted or broken.
struct Hold {
    ncclComm* c = nullptr;
    ~Hold() {
        if (c) c->active.fetch_sub(1, std::memory_order_seq_cst);  // last access: abort may free c now
    }
};

Status acquire(Hold& h, ncclComm* c, const char* fn) {
    c->active.fetch_add(1, std::memory_order_seq_cst);
    h.c = c;
    if (c->abort_req.load()) return fail(ncclInvalidUsage, "%s on %s: the communicator is being aborted", fn, c->tag.c_str());
    int e = c->async_err.load();
    if (e != ncclSuccess) {
        std::lock_guard<std::mutex> g(c->mu);
        return fail(static_cast<ncclResult_t>(e), "%s on %s: the communicator is unusable after an earlier error: %s",
                    fn, c->tag.c_str(), c->async_msg.c_str());
    }
    return {};
}

Status execute(const std::vector<Op>& ops, bool grouped) {
    std::vector<ncclComm*> comms;
    for (auto& op : ops)
        if (std::find(comms.begin(), comms.end(), op.comm) == comms.end()) comms.push_back(op.comm);
    std::vector<Hold> holds(comms.size());
    std::vector<CommRun> runs;
    for (size_t i = 0; i < comms.size(); i++) {
        ncclComm* c = comms[i];
        Status st = acquire(holds[i], c, grouped ? "ncclGroupEnd" : op_name(ops[0].kind));
        if (!st.ok()) return st;
        CUresult sticky = cpudev::sticky_error();
        if (sticky != CUDA_SUCCESS)
            return fail(ncclUnhandledCudaError, "%s on %s: the CUDA context has a sticky error (CUresult %d)",
                        grouped ? "ncclGroupEnd" : op_name(ops[0].kind), c->tag.c_str(), (int)sticky);
        std::vector<const Op*> mine;
        for (auto& op : ops)
            if (op.comm == c) mine.push_back(&op);
        CommRun r{c, {}, 0};
        st = plan(c, mine, grouped, r.stages);
        if (!st.ok()) return st;
        runs.push_back(std::move(r));
    }
    return run(runs);
}

// While the stream captures (a CUDA graph), the operations are recorded as one node that executes them
// when the graph is launched (every rank must launch its graph, as every rank issued the calls).
// Returns CUDA_ERROR_NOT_READY when the stream does not capture (execute now).
CUresult capture(std::vector<Op> ops, bool grouped, cudaStream_t stream) {
    CUstream s = reinterpret_cast<CUstream>(stream);
    if (!cpudev::stream_capturing(s)) return CUDA_ERROR_NOT_READY;
    bool recorded = false;
    CUresult r = cpudev::capture_enqueue(s, cpudev::GraphNode{cpudev::kCollectiveNode, nullptr, [ops, grouped]() {
                                             return report(execute(ops, grouped)) == ncclSuccess ? CUDA_SUCCESS
                                                                                                 : CUDA_ERROR_LAUNCH_FAILED;
                                         }},
                                         &recorded);
    return r;
}

ncclResult_t submit(const Op& op, cudaStream_t stream) {
    Status st = validate(op, stream);
    GroupState& g = t_group;
    if (g.depth > 0) {
        if (!st.ok()) {
            if (g.err.ok()) g.err = st;
            return report(st);
        }
        g.ops.push_back(op);
        g.stream = stream;
        return ncclSuccess;
    }
    if (!st.ok()) return report(st);
    if (CUresult r = capture({op}, false, stream); r != CUDA_ERROR_NOT_READY) {
        return r == CUDA_SUCCESS ? ncclSuccess : report(fail(ncclInvalidUsage, "%s: stream capture failed (CUresult %d)",
                                                               op_name(op.kind), (int)r));
    }
    return report(execute({op}, false));
}

// ------------------------------------------------------------------ init helpers

Status parse_timeout(double* out) {
    const char* v = getenv(kTimeoutEnv);
    *out = 300;
    if (v == nullptr) return {};
    errno = 0;
    char* end = nullptr;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || errno != 0 || !std::isfinite(d) || d <= 0 || !(v[0] >= '0' && v[0] <= '9'))
        return fail(ncclInvalidArgument, "ncclCommInitRank: %s='%s' is not a positive number of seconds", kTimeoutEnv, v);
    *out = d;
    return {};
}

std::string hex(const uint8_t* p, size_t n) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; i++) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    return s;
}

void layout(int w, uint32_t* K, uint64_t* S, uint64_t* ranks_off, uint64_t* pairs_off, uint64_t* slots_off,
            uint64_t* total) {
    uint64_t npairs = static_cast<uint64_t>(w) * (w - 1);
    *K = w > 16 ? 2 : 4;
    uint64_t s = 256 * 1024;
    while (s > 2048 && npairs * *K * (s + kSlotHeader) > (8u << 20)) s /= 2;
    *S = s;
    auto align = [](uint64_t x) { return (x + 4095) & ~static_cast<uint64_t>(4095); };
    *ranks_off = align(sizeof(ShmHeader));
    *pairs_off = align(*ranks_off + sizeof(RankSlot) * w);
    *slots_off = align(*pairs_off + sizeof(PairCtl) * w * w);
    *total = align(*slots_off + npairs * *K * (kSlotHeader + s));
}

void post_init_failure(ShmHeader* h, ncclResult_t code, const std::string& msg) {
    int32_t expected = 0;
    if (h->fail_claim.compare_exchange_strong(expected, 1)) {
        snprintf(h->fail_msg, sizeof h->fail_msg, "%s", msg.c_str());
        h->init_fail.store(code, std::memory_order_release);
    }
}

Status open_segment(const std::string& name, const uint8_t* key, int nranks, int rank, double timeout_s,
                    ShmHeader** out, size_t* map_bytes, bool* created) {
    Clock::time_point start = Clock::now();
    uint32_t K;
    uint64_t S, ro, po, so, total;
    layout(nranks, &K, &S, &ro, &po, &so, &total);
    *created = false;
    for (;;) {
        if (seconds_since(start) > timeout_s)
            return fail(ncclSystemError, "ncclCommInitRank (rank %d of %d): timed out after %g s (%s) opening %s",
                        rank, nranks, timeout_s, kTimeoutEnv, name.c_str());
        int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) {  // we create it
            int e = posix_fallocate(fd, 0, static_cast<off_t>(total));
            if (e != 0) {
                close(fd);
                shm_unlink(name.c_str());
                return fail(ncclSystemError,
                            "ncclCommInitRank (rank %d of %d): cannot allocate %llu bytes of shared memory for %s: %s",
                            rank, nranks, (unsigned long long)total, name.c_str(), strerror(e));
            }
            void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            if (m == MAP_FAILED) {
                int err = errno;
                shm_unlink(name.c_str());
                return fail(ncclSystemError, "ncclCommInitRank (rank %d of %d): mmap of %s failed: %s", rank, nranks,
                            name.c_str(), strerror(err));
            }
            ShmHeader* h = static_cast<ShmHeader*>(m);  // zero-filled by the kernel
            memcpy(h->key, key, kKeyBytes);
            h->nranks = nranks;
            h->nslots = K;
            h->slot_bytes = S;
            h->total_bytes = total;
            h->ranks_off = ro;
            h->pairs_off = po;
            h->slots_off = so;
            h->ready.store(kShmMagic, std::memory_order_release);
            *out = h;
            *map_bytes = total;
            *created = true;
            return {};
        }
        if (errno != EEXIST)
            return fail(ncclSystemError, "ncclCommInitRank (rank %d of %d): shm_open(%s) failed: %s", rank, nranks,
                        name.c_str(), strerror(errno));
        fd = shm_open(name.c_str(), O_RDWR, 0);
        if (fd < 0) {
            if (errno == ENOENT) {  // the creator failed and unlinked it, or we raced its unlink: retry
                sleep_us(1000);
                continue;
            }
            return fail(ncclSystemError, "ncclCommInitRank (rank %d of %d): shm_open(%s) failed: %s", rank, nranks,
                        name.c_str(), strerror(errno));
        }
        // Wait for the creator to size and initialise it.
        ShmHeader* h = nullptr;
        size_t len = 0;
        long pause = 50;
        for (;;) {
            struct stat st;
            if (fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) >= sizeof(ShmHeader)) {
                if (h == nullptr) {
                    void* m = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                    if (m != MAP_FAILED) h = static_cast<ShmHeader*>(m);
                }
                if (h && h->ready.load(std::memory_order_acquire) == kShmMagic &&
                    static_cast<size_t>(st.st_size) >= h->total_bytes) {
                    len = h->total_bytes;
                    break;
                }
            }
            if (seconds_since(start) > timeout_s) {
                if (h) munmap(h, 4096);
                close(fd);
                return fail(ncclSystemError,
                            "ncclCommInitRank (rank %d of %d): timed out after %g s (%s) waiting for the creator of %s",
                            rank, nranks, timeout_s, kTimeoutEnv, name.c_str());
            }
            sleep_us(pause);
            pause = std::min(pause * 2, 5000L);
        }
        munmap(h, 4096);
        void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        int err = errno;
        close(fd);
        if (m == MAP_FAILED)
            return fail(ncclSystemError, "ncclCommInitRank (rank %d of %d): mmap of %s failed: %s", rank, nranks,
                        name.c_str(), strerror(err));
        *out = static_cast<ShmHeader*>(m);
        *map_bytes = len;
        return {};
    }
}

}  // namespace

// ------------------------------------------------------------------ API

NCCL_API ncclResult_t ncclGetVersion(int* version) {
    if (version == nullptr) return report(fail(ncclInvalidArgument, "ncclGetVersion: version is NULL"));
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

NCCL_API const char* ncclGetErrorString(ncclResult_t result) {
    switch (result) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error (see ncclGetLastError for details)";
        case ncclSystemError: return "unhandled system error (see ncclGetLastError for details)";
        case ncclInternalError: return "internal error (see ncclGetLastError for details)";
        case ncclInvalidArgument: return "invalid argument (see ncclGetLastError for details)";
        case ncclInvalidUsage: return "invalid usage (see ncclGetLastError for details)";
        case ncclRemoteError: return "remote process exited or there was a network error";
        case ncclInProgress: return "NCCL operation in progress";
        default: return "unknown result code";
    }
}

NCCL_API const char* ncclGetLastError(ncclComm_t comm) {
    if (t_last_error.empty() && comm != nullptr && comm_live(comm)) {
        std::lock_guard<std::mutex> g(comm->mu);
        t_last_error = comm->async_msg;
    }
    return t_last_error.c_str();
}

NCCL_API ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
    if (uniqueId == nullptr) return report(fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL"));
    uint8_t key[kKeyBytes];
    size_t got = 0;
    while (got < kKeyBytes) {
        ssize_t n = getrandom(key + got, kKeyBytes - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return report(fail(ncclSystemError, "ncclGetUniqueId: getrandom failed: %s", strerror(errno)));
        }
        got += static_cast<size_t>(n);
    }
    memset(uniqueId->internal, 0, sizeof uniqueId->internal);
    memcpy(uniqueId->internal, kIdMagic, sizeof kIdMagic);
    memcpy(uniqueId->internal + sizeof kIdMagic, key, kKeyBytes);
    return ncclSuccess;
}

NCCL_API ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
    if (comm == nullptr) return report(fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL"));
    *comm = nullptr;
    if (nranks < 1 || nranks > kMaxRanks)
        return report(fail(ncclInvalidArgument, "ncclCommInitRank: nranks %d is outside 1..%d (CPU device)", nranks,
                           kMaxRanks));
    if (rank < 0 || rank >= nranks)
        return report(fail(ncclInvalidArgument, "ncclCommInitRank: rank %d is outside 0..%d", rank, nranks - 1));
    if (memcmp(commId.internal, kIdMagic, sizeof kIdMagic) != 0)
        return report(fail(ncclInvalidArgument,
                           "ncclCommInitRank (rank %d of %d): the unique id was not made by this library's "
                           "ncclGetUniqueId",
                           rank, nranks));
    double timeout_s;
    Status st = parse_timeout(&timeout_s);
    if (!st.ok()) return report(st);
    const uint8_t* key = reinterpret_cast<const uint8_t*>(commId.internal) + sizeof kIdMagic;
    std::string name = "/moe4j-nccl-" + hex(key, kKeyBytes);

    ShmHeader* h = nullptr;
    size_t map_bytes = 0;
    bool created = false;
    Clock::time_point start = Clock::now();
    st = open_segment(name, key, nranks, rank, timeout_s, &h, &map_bytes, &created);
    if (!st.ok()) return report(st);

    std::unique_ptr<ncclComm> c(new ncclComm);
    c->shm = h;
    c->map_bytes = map_bytes;
    c->rank = rank;
    c->nranks = h->nranks;
    c->timeout_s = timeout_s;
    c->tag = format("rank %d of %d (comm %s)", rank, nranks, hex(key, 4).c_str());
    auto bail = [&](Status s, bool joined) {
        if (joined) leave(c.get());
        shm_unlink(name.c_str());  // nobody else should find a failed communicator
        unmap(c.get());
        return report(s);
    };
    if (memcmp(h->key, key, kKeyBytes) != 0)
        return bail(fail(ncclInternalError, "ncclCommInitRank (%s): shared segment %s has a different key",
                         c->tag.c_str(), name.c_str()), false);
    if (h->nranks != nranks) {
        Status s = fail(ncclInvalidArgument,
                        "ncclCommInitRank: rank %d called with nranks %d but the communicator was created with nranks "
                        "%d by an earlier rank",
                        rank, nranks, (int)h->nranks);
        post_init_failure(h, ncclInvalidUsage, s.msg);
        return bail(s, false);
    }
    c->ranks = reinterpret_cast<RankSlot*>(reinterpret_cast<uint8_t*>(h) + h->ranks_off);
    c->pairs = reinterpret_cast<PairCtl*>(reinterpret_cast<uint8_t*>(h) + h->pairs_off);
    c->slots = reinterpret_cast<uint8_t*>(h) + h->slots_off;
    c->S = h->slot_bytes;
    c->K = h->nslots;

    RankSlot& me = c->me();
    me.pid.store(getpid());
    uint32_t expected = kAbsent;
    if (!me.state.compare_exchange_strong(expected, kJoined)) {
        Status s = fail(ncclInvalidUsage, "ncclCommInitRank: rank %d of %d joined twice (duplicate rank)", rank, nranks);
        post_init_failure(h, ncclInvalidUsage, s.msg);
        return bail(s, false);
    }
    if (h->joined.fetch_add(1) + 1 == nranks) shm_unlink(name.c_str());
    long pause = 50;
    for (;;) {
        int f = h->init_fail.load(std::memory_order_acquire);
        if (f != ncclSuccess)
            return bail(fail(static_cast<ncclResult_t>(f), "ncclCommInitRank (%s): another rank failed to join: %s",
                             c->tag.c_str(), h->fail_msg),
                        true);
        if (h->joined.load(std::memory_order_acquire) == nranks) break;
        if (seconds_since(start) > timeout_s) {
            std::string missing;
            for (int p = 0; p < nranks; p++)
                if (c->ranks[p].state.load() == kAbsent) missing += (missing.empty() ? "" : ", ") + std::to_string(p);
            Status s = fail(ncclSystemError,
                            "ncclCommInitRank (%s): timed out after %g s (%s) waiting for rank(s) %s to join",
                            c->tag.c_str(), timeout_s, kTimeoutEnv, missing.c_str());
            post_init_failure(h, ncclSystemError, s.msg);
            return bail(s, true);
        }
        sleep_us(pause);
        pause = std::min(pause * 2, 5000L);
    }
    {
        std::lock_guard<std::mutex> g(g_registry_mu);
        g_registry.insert(c.get());
    }
    *comm = c.release();
    return ncclSuccess;
}

namespace {
ncclResult_t finish_comm(ncclComm_t comm, bool abort) {
    const char* fn = abort ? "ncclCommAbort" : "ncclCommDestroy";
    if (comm == nullptr) return ncclSuccess;
    if (!comm_live(comm)) return report(fail(ncclInvalidArgument, "%s: comm %p is not a live communicator", fn, (void*)comm));
    if (abort) {
        comm->abort_req.store(true);
        ring(comm, comm->rank);
        while (comm->active.load() != 0) sleep_us(100);
    } else if (comm->active.load() != 0) {
        return report(fail(ncclInvalidUsage, "%s on %s: the communicator is in use by another thread", fn,
                           comm->tag.c_str()));
    }
    {
        std::lock_guard<std::mutex> g(g_registry_mu);
        if (g_registry.erase(comm) == 0) return ncclSuccess;  // a concurrent destroy/abort won
    }
    leave(comm);
    unmap(comm);
    delete comm;
    return ncclSuccess;
}
}  // namespace

NCCL_API ncclResult_t ncclCommDestroy(ncclComm_t comm) { return finish_comm(comm, false); }

NCCL_API ncclResult_t ncclCommAbort(ncclComm_t comm) { return finish_comm(comm, true); }

NCCL_API ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
    if (comm == nullptr || asyncError == nullptr || !comm_live(comm))
        return report(fail(ncclInvalidArgument, "ncclCommGetAsyncError: %s", asyncError ? "comm is not a live communicator" : "asyncError is NULL"));
    *asyncError = static_cast<ncclResult_t>(comm->async_err.load());
    return ncclSuccess;
}

NCCL_API ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
    if (comm == nullptr || count == nullptr || !comm_live(comm))
        return report(fail(ncclInvalidArgument, "ncclCommCount: NULL argument or dead communicator"));
    *count = comm->nranks;
    return ncclSuccess;
}

NCCL_API ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
    if (comm == nullptr || rank == nullptr || !comm_live(comm))
        return report(fail(ncclInvalidArgument, "ncclCommUserRank: NULL argument or dead communicator"));
    *rank = comm->rank;
    return ncclSuccess;
}

NCCL_API ncclResult_t ncclGroupStart(void) {
    t_group.depth++;
    return ncclSuccess;
}

NCCL_API ncclResult_t ncclGroupEnd(void) {
    GroupState& g = t_group;
    if (g.depth == 0) return report(fail(ncclInvalidUsage, "ncclGroupEnd: no matching ncclGroupStart"));
    if (--g.depth > 0) return ncclSuccess;
    std::vector<Op> ops;
    ops.swap(g.ops);
    Status err = g.err;
    g.err = Status{};
    if (!err.ok())
        return report(Status{err.code, "ncclGroupEnd: the group was discarded (nothing executed) because a call in "
                                        "it failed: " + err.msg});
    if (ops.empty()) return ncclSuccess;
    cudaStream_t stream = g.stream;
    g.stream = nullptr;
    if (CUresult r = capture(ops, true, stream); r != CUDA_ERROR_NOT_READY) {
        return r == CUDA_SUCCESS ? ncclSuccess
                                 : report(fail(ncclInvalidUsage, "ncclGroupEnd: stream capture failed (CUresult %d)", (int)r));
    }
    return report(execute(ops, true));
}

NCCL_API ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                               cudaStream_t stream) {
    return submit(Op{kSend, comm, static_cast<const uint8_t*>(sendbuff), nullptr, count, datatype, 0, peer}, stream);
}

NCCL_API ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                               cudaStream_t stream) {
    return submit(Op{kRecv, comm, nullptr, static_cast<uint8_t*>(recvbuff), count, datatype, 0, peer}, stream);
}

NCCL_API ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                                    ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    return submit(Op{kAllReduce, comm, static_cast<const uint8_t*>(sendbuff), static_cast<uint8_t*>(recvbuff), count,
                     datatype, op, -1},
                  stream);
}

NCCL_API ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                                    ncclComm_t comm, cudaStream_t stream) {
    return submit(Op{kAllGatherOp, comm, static_cast<const uint8_t*>(sendbuff), static_cast<uint8_t*>(recvbuff),
                     sendcount, datatype, 0, -1},
                  stream);
}

NCCL_API ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                                        ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    return submit(Op{kReduceScatterOp, comm, static_cast<const uint8_t*>(sendbuff), static_cast<uint8_t*>(recvbuff),
                     recvcount, datatype, op, -1},
                  stream);
}
