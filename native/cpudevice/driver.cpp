// moe4j CPU device: the CUDA driver API subset moe-cuda binds, on the CPU.
//
// One device ("moe4j CPU device", compute capability 9.0, H200-like limits) with one primary
// context. Device memory is host memory from this library's allocator (256-byte aligned, filled
// with 0xFF bytes when allocated, as real device memory holds garbage); pinned host memory too.
// Every allocation is registered, so memcheck and the copy calls can tell whether an address range
// is live. Streams and events keep their ordering semantics by executing eagerly: an operation
// enqueued on any stream has completed when the call returns (so a host read after a
// synchronisation sees every earlier write; what eager execution cannot show is a missing
// synchronisation, see docs/gpu.md). Kernels run through the kernel runtime (runtime.cpp), one
// launch at a time in the process. A kernel fault (memcheck, racecheck, deadlock, __trap) makes
// the context's error sticky, as on the driver: every later call that uses the context returns
// it until the primary context is released by all its users and retained again.
//
// Environment:
//   MOE4J_CPUDEV_DEVICES     how many devices to report, 1..8 (default 1); all share the host's memory,
//                            each has its own primary context (for multi-process tests, one rank per device)
//   MOE4J_CPUDEV_MEMORY_GB   device memory each device reports; all allocations together are capped by it (default 16)
//   MOE4J_CPUDEV_MEMCHECK    0 disables memcheck (default on)
//   MOE4J_CPUDEV_RACECHECK   0 disables racecheck (default on)
//   MOE4J_CPUDEV_POISON      0 disables the 0xFF fill of new allocations (default on)
//   MOE4J_CPUDEV_LAUNCH_LOG  a file: the name of every kernel launched (once per process) is appended
//                            to it, so that a test can show that every kernel ran
#define MOE4J_EMU_RUNTIME 1
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "device_internal.h"
#include "runtime.h"

#define API extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kDriverVersion = 13000;
constexpr int kMaxDynamicShared = 232448;
constexpr int kDefaultDynamicShared = 48 * 1024;

struct Alloc {
    size_t size;
    bool pinned;
    int device;  // the context's device; destroying that primary context frees the allocation
};

std::mutex g_memLock;
std::map<uintptr_t, Alloc> g_allocs;
std::atomic<uint64_t> g_allocGen{1};
size_t g_deviceBytesUsed = 0;

std::mutex g_stateLock;
bool g_initialised = false;
constexpr int kMaxDevices = 8;
int g_primaryRefs[kMaxDevices] = {};
std::atomic<int> g_sticky[kMaxDevices] = {};  // per device's primary context; 0 = CUDA_SUCCESS
std::string g_lastFault[kMaxDevices];         // guarded by g_stateLock
std::set<void*> g_streams;
std::set<void*> g_events;
std::set<void*> g_modules;
std::mutex g_launchLock;

thread_local int t_current = -1;  // device of the calling thread's current context, -1 for none

struct CtxTag {
    int device;
} g_primaryCtx[kMaxDevices] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};

int device_count() {
    static const int n = [] {
        const char* v = getenv("MOE4J_CPUDEV_DEVICES");
        if (!v || !*v) return 1;
        char* end = nullptr;
        const long d = strtol(v, &end, 10);
        if (!end || *end || d < 1 || d > kMaxDevices) {
            fprintf(stderr, "moe4j cpu device: MOE4J_CPUDEV_DEVICES=%s is not a device count in 1..%d; using 1\n", v, kMaxDevices);
            return 1;
        }
        return (int)d;
    }();
    return n;
}

}  // namespace

struct CUstream_st {
    unsigned flags;
    int device;                                                       // of the context current at creation
    CUstreamCaptureStatus capture = CU_STREAM_CAPTURE_STATUS_NONE;  // guarded by g_stateLock
    std::vector<cpudev::GraphNode> nodes;                             // recorded while capturing
    std::shared_ptr<std::vector<uintptr_t>> graphMemory;              // allocations made while capturing
};
// A captured graph and its executable copy: the nodes in capture order, plus the device memory the
// capture allocated (kept alive, at fixed addresses, until the last graph or exec holding it goes).
struct CUgraph_st {
    std::vector<cpudev::GraphNode> nodes;
    std::shared_ptr<std::vector<uintptr_t>> memory;
};
struct CUgraphExec_st {
    std::vector<cpudev::GraphNode> nodes;
    std::shared_ptr<std::vector<uintptr_t>> memory;
};
struct CUevent_st {
    unsigned flags;
    bool recorded;
    std::chrono::steady_clock::time_point when;
};
struct CUfunc_st {
    const moe4j_emu::KernelInfo* k;
    int maxDynamicShared;
};
struct CUmod_st {
    std::map<std::string, CUfunc_st*> functions;
};

namespace {

size_t device_capacity() {
    static const size_t cap = [] {
        const char* v = getenv("MOE4J_CPUDEV_MEMORY_GB");
        if (!v || !*v) return (size_t)16 << 30;
        char* end = nullptr;
        const double gb = strtod(v, &end);
        if (!end || *end || !(gb > 0) || gb > 1 << 20) {
            fprintf(stderr, "moe4j cpu device: MOE4J_CPUDEV_MEMORY_GB=%s is not a positive number of GiB; using 16\n", v);
            return (size_t)16 << 30;
        }
        return (size_t)(gb * (double)(1ull << 30));
    }();
    return cap;
}

bool env_on(const char* name) {
    const char* v = getenv(name);
    return !(v && (v[0] == '0' || v[0] == 'n' || v[0] == 'N' || v[0] == 'f' || v[0] == 'F'));
}

CUresult ready() {
    if (!g_initialised) return CUDA_ERROR_NOT_INITIALIZED;
    return CUDA_SUCCESS;
}

// Checks that the calling thread has a current context and no sticky error.
CUresult ctx_ready() {
    CUresult r = ready();
    if (r != CUDA_SUCCESS) return r;
    if (t_current < 0) return CUDA_ERROR_INVALID_CONTEXT;
    {
        std::lock_guard<std::mutex> g(g_stateLock);
        if (g_primaryRefs[t_current] <= 0) return CUDA_ERROR_INVALID_CONTEXT;  // released since it was made current
    }
    const int s = g_sticky[t_current].load();
    return s != CUDA_SUCCESS ? (CUresult)s : CUDA_SUCCESS;
}

bool stream_ok(CUstream s) {
    if (!s) return true;
    std::lock_guard<std::mutex> g(g_stateLock);
    return g_streams.count(s) != 0;
}

// Whether [p, p+n) lies inside one live allocation; pinnedOk admits pinned host allocations.
// Whether [p, p+n) lies inside one live allocation (device or pinned host memory).
bool in_allocation(uintptr_t p, size_t n) {
    uintptr_t lo, hi;
    return cpudev_find_allocation(p, n, &lo, &hi);
}

CUresult alloc(void** out, size_t bytes, bool pinned) {
    if (!out || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    const size_t rounded = (bytes + 255) / 256 * 256;
    {
        std::lock_guard<std::mutex> g(g_memLock);
        if (!pinned && g_deviceBytesUsed + rounded > device_capacity()) return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void* p = aligned_alloc(256, rounded);
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    if (env_on("MOE4J_CPUDEV_POISON")) memset(p, 0xFF, rounded);
    std::lock_guard<std::mutex> g(g_memLock);
    g_allocs[(uintptr_t)p] = Alloc{bytes, pinned, t_current};
    if (!pinned) g_deviceBytesUsed += rounded;
    *out = p;
    return CUDA_SUCCESS;
}

CUresult release(uintptr_t p, bool pinned) {
    // like the driver's cuMemFree, wait for a kernel running on another thread (it may use the memory)
    std::lock_guard<std::mutex> launching(g_launchLock);
    void* mem = nullptr;
    {
        std::lock_guard<std::mutex> g(g_memLock);
        auto it = g_allocs.find(p);
        if (it == g_allocs.end() || it->second.pinned != pinned) return CUDA_ERROR_INVALID_VALUE;
        if (!pinned) g_deviceBytesUsed -= (it->second.size + 255) / 256 * 256;
        g_allocs.erase(it);
        g_allocGen++;
        mem = (void*)p;
    }
    free(mem);
    return CUDA_SUCCESS;
}

CUresult set_fault(CUresult code, const std::string& msg) {
    fprintf(stderr, "moe4j cpu device: %s\n", msg.c_str());
    std::lock_guard<std::mutex> g(g_stateLock);
    const int dev = t_current < 0 ? 0 : t_current;
    g_lastFault[dev] = msg;
    int expected = CUDA_SUCCESS;
    g_sticky[dev].compare_exchange_strong(expected, (int)code);
    return code;
}

const char* error_name(CUresult e) {
    switch (e) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_DEINITIALIZED: return "CUDA_ERROR_DEINITIALIZED";
        case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
        case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
        case CUDA_ERROR_NO_BINARY_FOR_GPU: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
        case CUDA_ERROR_INVALID_SOURCE: return "CUDA_ERROR_INVALID_SOURCE";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_ILLEGAL_STATE: return "CUDA_ERROR_ILLEGAL_STATE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_NOT_READY: return "CUDA_ERROR_NOT_READY";
        case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
        case CUDA_ERROR_LAUNCH_TIMEOUT: return "CUDA_ERROR_LAUNCH_TIMEOUT";
        case CUDA_ERROR_HARDWARE_STACK_ERROR: return "CUDA_ERROR_HARDWARE_STACK_ERROR";
        case CUDA_ERROR_ILLEGAL_INSTRUCTION: return "CUDA_ERROR_ILLEGAL_INSTRUCTION";
        case CUDA_ERROR_MISALIGNED_ADDRESS: return "CUDA_ERROR_MISALIGNED_ADDRESS";
        case CUDA_ERROR_INVALID_ADDRESS_SPACE: return "CUDA_ERROR_INVALID_ADDRESS_SPACE";
        case CUDA_ERROR_INVALID_PC: return "CUDA_ERROR_INVALID_PC";
        case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: return "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED";
        case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: return "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED";
        case CUDA_ERROR_STREAM_CAPTURE_UNMATCHED: return "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED";
        case CUDA_ERROR_STREAM_CAPTURE_IMPLICIT: return "CUDA_ERROR_STREAM_CAPTURE_IMPLICIT";
        case CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD: return "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD";
        case CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE: return "CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE";
        case CUDA_ERROR_UNKNOWN: return "CUDA_ERROR_UNKNOWN";
    }
    return nullptr;
}

const char* error_string(CUresult e) {
    switch (e) {
        case CUDA_SUCCESS: return "no error";
        case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
        case CUDA_ERROR_OUT_OF_MEMORY: return "out of memory";
        case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
        case CUDA_ERROR_DEINITIALIZED: return "driver shutting down";
        case CUDA_ERROR_NO_DEVICE: return "no CUDA-capable device is detected";
        case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
        case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
        case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
        case CUDA_ERROR_NO_BINARY_FOR_GPU: return "no kernel image is available for execution on the device";
        case CUDA_ERROR_INVALID_SOURCE: return "device kernel image is invalid";
        case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
        case CUDA_ERROR_ILLEGAL_STATE: return "the operation cannot be performed in the present state";
        case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
        case CUDA_ERROR_NOT_READY: return "device not ready";
        case CUDA_ERROR_ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
        case CUDA_ERROR_LAUNCH_TIMEOUT: return "the launch timed out and was terminated";
        case CUDA_ERROR_HARDWARE_STACK_ERROR: return "hardware stack error";
        case CUDA_ERROR_ILLEGAL_INSTRUCTION: return "an illegal instruction was encountered";
        case CUDA_ERROR_MISALIGNED_ADDRESS: return "misaligned address";
        case CUDA_ERROR_INVALID_ADDRESS_SPACE: return "operation not supported on global/shared address space";
        case CUDA_ERROR_INVALID_PC: return "invalid program counter";
        case CUDA_ERROR_LAUNCH_FAILED: return "unspecified launch failure";
        case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
        case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: return "operation not permitted when stream is capturing";
        case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: return "operation failed due to a previous error during capture";
        case CUDA_ERROR_STREAM_CAPTURE_UNMATCHED: return "capture was not initiated in this stream";
        case CUDA_ERROR_STREAM_CAPTURE_IMPLICIT: return "operation would make the legacy stream depend on a capturing blocking stream";
        case CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD: return "attempt to terminate a thread-local capture sequence from another thread";
        case CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE: return "the graph update was not performed because it included changes which violated constraints specific to instantiated graph update";
        case CUDA_ERROR_UNKNOWN: return "unknown error";
    }
    return nullptr;
}

// Fault codes: memcheck -> illegal address, __trap -> illegal instruction, anything else (racecheck,
// deadlock, bad PTX operand) -> launch failed.
CUresult fault_code(const std::string& msg) {
    if (msg.find("memcheck:") != std::string::npos) return CUDA_ERROR_ILLEGAL_ADDRESS;
    if (msg.find("__trap()") != std::string::npos) return CUDA_ERROR_ILLEGAL_INSTRUCTION;
    return CUDA_ERROR_LAUNCH_FAILED;
}

}  // namespace

// ---- shared with the runtime and nccl.cpp ----------------------------------------------------
bool cpudev_find_allocation(uintptr_t a, size_t n, uintptr_t* lo, uintptr_t* hi) {
    std::lock_guard<std::mutex> g(g_memLock);
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return false;
    --it;
    if (a < it->first || n > it->second.size || a - it->first > it->second.size - n) return false;
    *lo = it->first;
    *hi = it->first + it->second.size;
    return true;
}

uint64_t cpudev_alloc_generation() { return g_allocGen.load(std::memory_order_relaxed); }

std::string cpudev_describe_address(uintptr_t a) {
    std::lock_guard<std::mutex> g(g_memLock);
    char b[200];
    auto it = g_allocs.upper_bound(a);
    if (it != g_allocs.begin()) {
        auto prev = std::prev(it);
        if (a >= prev->first && a - prev->first < prev->second.size) {
            snprintf(b, sizeof b, "the access runs past the end of the %zu-byte allocation at 0x%" PRIxPTR, prev->second.size,
                     prev->first);
            return b;
        }
        snprintf(b, sizeof b, "not inside any live allocation (%zu bytes past the end of the %zu-byte allocation at 0x%" PRIxPTR ")",
                 (size_t)(a - prev->first - prev->second.size), prev->second.size, prev->first);
        return b;
    }
    return "not inside any live allocation";
}

namespace cpudev {
bool device_range_live(const void* p, size_t bytes) { return in_allocation((uintptr_t)p, bytes == 0 ? 1 : bytes); }
bool stream_valid(CUstream s) { return stream_ok(s); }
CUresult sticky_error() { return t_current < 0 ? CUDA_SUCCESS : (CUresult)g_sticky[t_current].load(); }

CUresult legacy_stream_use(CUstream s) {
    if (s) return CUDA_SUCCESS;
    const int dev = t_current < 0 ? 0 : t_current;
    std::lock_guard<std::mutex> g(g_stateLock);
    bool implicit = false;
    for (void* p : g_streams) {
        CUstream c = static_cast<CUstream>(p);
        if (c && c->device == dev && !(c->flags & CU_STREAM_NON_BLOCKING) && c->capture == CU_STREAM_CAPTURE_STATUS_ACTIVE) {
            c->capture = CU_STREAM_CAPTURE_STATUS_INVALIDATED;  // the driver invalidates the capture too
            implicit = true;
        }
    }
    return implicit ? CUDA_ERROR_STREAM_CAPTURE_IMPLICIT : CUDA_SUCCESS;
}

CUresult capture_enqueue(CUstream s, GraphNode node, bool* recorded) {
    *recorded = false;
    if (!s) return legacy_stream_use(s);  // the legacy stream never captures, and waits for every blocking stream
    std::lock_guard<std::mutex> g(g_stateLock);
    if (s->capture == CU_STREAM_CAPTURE_STATUS_NONE) return CUDA_SUCCESS;
    if (s->capture == CU_STREAM_CAPTURE_STATUS_INVALIDATED) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    s->nodes.push_back(std::move(node));
    *recorded = true;
    return CUDA_SUCCESS;
}

bool stream_capturing(CUstream s) {
    if (!s) return false;
    std::lock_guard<std::mutex> g(g_stateLock);
    return s->capture != CU_STREAM_CAPTURE_STATUS_NONE;
}
}  // namespace cpudev

namespace {
std::atomic<int> g_activeCaptures{0};

// A host-synchronising call on a capturing stream ends its capture in error, as the driver does.
CUresult refuse_in_capture(CUstream s) {
    if (!s) return CUDA_SUCCESS;
    std::lock_guard<std::mutex> g(g_stateLock);
    if (s->capture == CU_STREAM_CAPTURE_STATUS_NONE) return CUDA_SUCCESS;
    s->capture = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
    return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
}

// Enqueues fn on s: recorded when s captures, else run now.
CUresult enqueue(CUstream s, int kind, const void* key, std::function<CUresult()> fn) {
    bool recorded = false;
    CUresult r = cpudev::capture_enqueue(s, cpudev::GraphNode{kind, key, fn}, &recorded);
    if (r != CUDA_SUCCESS || recorded) return r;
    return fn();
}
}  // namespace

// ---- initialisation, device, context ---------------------------------------------------------
API CUresult cuInit(unsigned int Flags) {
    if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
    const std::string problem = moe4j_emu::runtime_check();
    if (!problem.empty()) {
        fprintf(stderr, "moe4j cpu device: %s\n", problem.c_str());
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    std::lock_guard<std::mutex> g(g_stateLock);
    g_initialised = true;
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int* driverVersion) {
    if (!driverVersion) return CUDA_ERROR_INVALID_VALUE;
    *driverVersion = kDriverVersion;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetCount(int* count) {
    if (CUresult r = ready()) return r;
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = device_count();
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (CUresult r = ready()) return r;
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *device = ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
    if (CUresult r = ready()) return r;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "%s", "moe4j CPU device (emulated sm_90)");
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev) {
    if (CUresult r = ready()) return r;
    if (!pi) return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    switch (attrib) {
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *pi = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *pi = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *pi = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *pi = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *pi = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *pi = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *pi = kDefaultDynamicShared; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *pi = 32; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = 132; break;
        case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *pi = 0; break;
        case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *pi = 50 * 1024 * 1024; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = 0; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *pi = 233472; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *pi = kMaxDynamicShared; break;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
    if (CUresult r = ready()) return r;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = device_capacity();
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
    if (CUresult r = ready()) return r;
    if (!pctx) return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::mutex> g(g_stateLock);
    g_primaryRefs[dev]++;
    *pctx = reinterpret_cast<CUcontext>(&g_primaryCtx[dev]);
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    if (CUresult r = ready()) return r;
    std::lock_guard<std::mutex> launching(g_launchLock);  // a kernel running on another thread ends first
    if (dev < 0 || dev >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    std::lock_guard<std::mutex> g(g_stateLock);
    if (g_primaryRefs[dev] <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (--g_primaryRefs[dev] == 0) {
        // the context is destroyed: its memory and its sticky error go with it (a new retain starts clean)
        g_sticky[dev].store(CUDA_SUCCESS);
        g_lastFault[dev].clear();
        std::lock_guard<std::mutex> m(g_memLock);
        for (auto it = g_allocs.begin(); it != g_allocs.end();) {
            if (it->second.device != dev) {
                ++it;
                continue;
            }
            if (!it->second.pinned) g_deviceBytesUsed -= (it->second.size + 255) / 256 * 256;
            free((void*)it->first);
            it = g_allocs.erase(it);
            g_allocGen++;
        }
    }
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(CUcontext ctx) {
    if (CUresult r = ready()) return r;
    if (ctx == nullptr) {
        t_current = -1;
        return CUDA_SUCCESS;
    }
    const CtxTag* c = reinterpret_cast<const CtxTag*>(ctx);
    if (c < g_primaryCtx || c >= g_primaryCtx + kMaxDevices) return CUDA_ERROR_INVALID_CONTEXT;
    std::lock_guard<std::mutex> g(g_stateLock);
    if (g_primaryRefs[c->device] <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    t_current = c->device;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize(void) {
    if (CUresult r = ctx_ready()) return r;
    return g_activeCaptures.load() > 0 ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}

// ---- memory ----------------------------------------------------------------------------------
API CUresult cuMemGetInfo_v2(size_t* freeBytes, size_t* total) {
    if (CUresult r = ctx_ready()) return r;
    if (!freeBytes || !total) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> g(g_memLock);
    *total = device_capacity();
    *freeBytes = *total - g_deviceBytesUsed;
    return CUDA_SUCCESS;
}

API CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize) {
    if (CUresult r = ctx_ready()) return r;
    if (!dptr) return CUDA_ERROR_INVALID_VALUE;
    void* p = nullptr;
    CUresult r = alloc(&p, bytesize, false);
    if (r == CUDA_SUCCESS) *dptr = (CUdeviceptr)(uintptr_t)p;
    return r;  // during capture too: a graph allocation has a fixed address, as on the device
}

API CUresult cuMemFree_v2(CUdeviceptr dptr) {
    if (CUresult r = ctx_ready()) return r;
    if (dptr == 0) return CUDA_SUCCESS;
    return release((uintptr_t)dptr, false);
}

// Stream-ordered allocation (cuda.h "Stream Ordered Memory Allocator"): with eager execution every
// operation queued before the call has completed, so allocating or freeing now is stream-ordered.
API CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (!dptr) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = cpudev::legacy_stream_use(hStream)) return r;
    void* p = nullptr;
    CUresult r = alloc(&p, bytesize, false);
    if (r == CUDA_SUCCESS) *dptr = (CUdeviceptr)(uintptr_t)p;
    return r;  // during capture too: a graph allocation has a fixed address, as on the device
}

API CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (dptr == 0) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = cpudev::legacy_stream_use(hStream)) return r;
    if (hStream) {
        std::lock_guard<std::mutex> g(g_stateLock);
        if (hStream->capture == CU_STREAM_CAPTURE_STATUS_INVALIDATED) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        if (hStream->capture == CU_STREAM_CAPTURE_STATUS_ACTIVE) {
            // freed inside the captured work: the graph keeps it until the graph and its execs are gone
            hStream->graphMemory->push_back((uintptr_t)dptr);
            return CUDA_SUCCESS;
        }
    }
    return release((uintptr_t)dptr, false);
}

// One default memory pool per device; its release threshold is kept (memory is host memory here, so
// nothing else changes).
struct CUmemPoolHandle_st {
    int device;
    uint64_t releaseThreshold;
} g_defaultPools[kMaxDevices] = {{0, 0}, {1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 0}, {6, 0}, {7, 0}};

API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool* pool_out, CUdevice dev) {
    if (CUresult r = ready()) return r;
    if (!pool_out) return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= device_count()) return CUDA_ERROR_INVALID_DEVICE;
    *pool_out = &g_defaultPools[dev];
    return CUDA_SUCCESS;
}

API CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void* value) {
    if (CUresult r = ready()) return r;
    if (!pool || pool < g_defaultPools || pool >= g_defaultPools + kMaxDevices || !value) return CUDA_ERROR_INVALID_VALUE;
    if (attr != CU_MEMPOOL_ATTR_RELEASE_THRESHOLD) return CUDA_ERROR_NOT_SUPPORTED;
    memcpy(&pool->releaseThreshold, value, sizeof(uint64_t));
    return CUDA_SUCCESS;
}

// Freed memory goes back at once here (host memory), so there is nothing to trim.
API CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t) {
    if (CUresult r = ready()) return r;
    if (!pool || pool < g_defaultPools || pool >= g_defaultPools + kMaxDevices) return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

API CUresult cuMemAllocHost_v2(void** pp, size_t bytesize) {
    if (CUresult r = ctx_ready()) return r;
    return alloc(pp, bytesize, true);
}

API CUresult cuMemFreeHost(void* p) {
    if (CUresult r = ctx_ready()) return r;
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    return release((uintptr_t)p, true);
}

// Copies check every device range against the live allocations (the driver refuses a copy that
// leaves its allocation with CUDA_ERROR_INVALID_VALUE).
API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char uc, size_t N, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (N == 0) return CUDA_SUCCESS;
    if (!in_allocation((uintptr_t)dst, N)) return CUDA_ERROR_INVALID_VALUE;
    return enqueue(hStream, cpudev::kMemsetNode, nullptr, [=]() {
        memset((void*)(uintptr_t)dst, uc, N);
        return CUDA_SUCCESS;
    });
}

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (n == 0) return CUDA_SUCCESS;
    if (!src || !in_allocation((uintptr_t)dst, n)) return CUDA_ERROR_INVALID_VALUE;
    return enqueue(hStream, cpudev::kMemcpyNode, nullptr, [=]() {
        memmove((void*)(uintptr_t)dst, src, n);
        return CUDA_SUCCESS;
    });
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (n == 0) return CUDA_SUCCESS;
    if (!dst || !in_allocation((uintptr_t)src, n)) return CUDA_ERROR_INVALID_VALUE;
    return enqueue(hStream, cpudev::kMemcpyNode, nullptr, [=]() {
        memmove(dst, (const void*)(uintptr_t)src, n);
        return CUDA_SUCCESS;
    });
}

API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (n == 0) return CUDA_SUCCESS;
    if (!in_allocation((uintptr_t)src, n) || !in_allocation((uintptr_t)dst, n)) return CUDA_ERROR_INVALID_VALUE;
    return enqueue(hStream, cpudev::kMemcpyNode, nullptr, [=]() {
        memmove((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n);
        return CUDA_SUCCESS;
    });
}

// ---- streams and events ----------------------------------------------------------------------
API CUresult cuStreamCreate(CUstream* phStream, unsigned int Flags) {
    if (CUresult r = ctx_ready()) return r;
    if (!phStream || (Flags & ~1u)) return CUDA_ERROR_INVALID_VALUE;
    CUstream s = new CUstream_st{Flags, t_current};
    std::lock_guard<std::mutex> g(g_stateLock);
    g_streams.insert(s);
    *phStream = s;
    return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize(CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (CUresult r = cpudev::legacy_stream_use(hStream)) return r;
    return refuse_in_capture(hStream);
}

API CUresult cuStreamDestroy_v2(CUstream hStream) {
    if (CUresult r = ready()) return r;
    if (!hStream) return CUDA_ERROR_INVALID_HANDLE;
    {
        std::lock_guard<std::mutex> g(g_stateLock);
        if (!g_streams.erase(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    }
    delete hStream;
    return CUDA_SUCCESS;
}

static bool event_ok(CUevent e) {
    std::lock_guard<std::mutex> g(g_stateLock);
    return e && g_events.count(e) != 0;
}

API CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream) || !event_ok(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
    if (Flags & ~1u) return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;  // eager execution: the event's work has completed
}

API CUresult cuEventCreate(CUevent* phEvent, unsigned int Flags) {
    if (CUresult r = ctx_ready()) return r;
    if (!phEvent || (Flags & ~7u)) return CUDA_ERROR_INVALID_VALUE;
    CUevent e = new CUevent_st{Flags, false, {}};
    std::lock_guard<std::mutex> g(g_stateLock);
    g_events.insert(e);
    *phEvent = e;
    return CUDA_SUCCESS;
}

API CUresult cuEventRecord(CUevent hEvent, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!event_ok(hEvent) || !stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    return enqueue(hStream, cpudev::kEventNode, nullptr, [hEvent]() {
        hEvent->recorded = true;
        hEvent->when = std::chrono::steady_clock::now();
        return CUDA_SUCCESS;
    });
}

API CUresult cuEventSynchronize(CUevent hEvent) {
    if (CUresult r = ctx_ready()) return r;
    return event_ok(hEvent) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

// Eager execution: recorded work has always completed (and an event never recorded is complete too).
API CUresult cuEventQuery(CUevent hEvent) { return cuEventSynchronize(hEvent); }

API CUresult cuEventElapsedTime_v2(float* ms, CUevent hStart, CUevent hEnd) {
    if (CUresult r = ctx_ready()) return r;
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!event_ok(hStart) || !event_ok(hEnd)) return CUDA_ERROR_INVALID_HANDLE;
    if ((hStart->flags | hEnd->flags) & CU_EVENT_DISABLE_TIMING) return CUDA_ERROR_INVALID_HANDLE;
    if (!hStart->recorded || !hEnd->recorded) return CUDA_ERROR_INVALID_HANDLE;
    *ms = std::chrono::duration<float, std::milli>(hEnd->when - hStart->when).count();
    return CUDA_SUCCESS;
}

API CUresult cuEventDestroy_v2(CUevent hEvent) {
    if (CUresult r = ready()) return r;
    {
        std::lock_guard<std::mutex> g(g_stateLock);
        if (!hEvent || !g_events.erase(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
    }
    delete hEvent;
    return CUDA_SUCCESS;
}

// ---- modules and kernels ---------------------------------------------------------------------
static size_t image_size(const unsigned char* p) {
    // fatbin container: magic 0xBA55ED50, u16 version, u16 header size, u64 body size
    uint32_t magic;
    memcpy(&magic, p, 4);
    if (magic == 0xBA55ED50u) {
        uint16_t hdr;
        uint64_t body;
        memcpy(&hdr, p + 6, 2);
        memcpy(&body, p + 8, 8);
        return hdr + body;
    }
    if (p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F' && p[4] == 2) {  // 64-bit ELF cubin
        uint64_t shoff;
        uint16_t shentsize, shnum;
        memcpy(&shoff, p + 0x28, 8);
        memcpy(&shentsize, p + 0x3A, 2);
        memcpy(&shnum, p + 0x3C, 2);
        return shoff + (uint64_t)shentsize * shnum;
    }
    return strlen(reinterpret_cast<const char*>(p));  // PTX text
}

static bool contains_symbol(const unsigned char* img, size_t n, const char* name) {
    const size_t len = strlen(name);
    const unsigned char* p = img;
    const unsigned char* end = img + n;
    while (p + len <= end) {
        const void* hit = memmem(p, (size_t)(end - p), name, len);
        if (!hit) return false;
        const unsigned char* h = static_cast<const unsigned char*>(hit);
        const bool before = h == img || !(isalnum(h[-1]) || h[-1] == '_');
        const bool after = h + len == end || !(isalnum(h[len]) || h[len] == '_');
        if (before && after) return true;
        p = h + 1;
    }
    return false;
}

API CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    if (CUresult r = ctx_ready()) return r;
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    const unsigned char* img = static_cast<const unsigned char*>(image);
    const size_t n = image_size(img);
    CUmod_st* m = new CUmod_st();
    for (const moe4j_emu::KernelInfo* k : moe4j_emu::kernels()) {
        if (contains_symbol(img, n, k->name)) m->functions[k->name] = new CUfunc_st{k, kDefaultDynamicShared};
    }
    if (m->functions.empty()) {
        delete m;
        return CUDA_ERROR_INVALID_IMAGE;  // no kernel this device was built with is in the image
    }
    std::lock_guard<std::mutex> g(g_stateLock);
    g_modules.insert(m);
    *module = m;
    return CUDA_SUCCESS;
}

API CUresult cuModuleUnload(CUmodule hmod) {
    if (CUresult r = ready()) return r;
    {
        std::lock_guard<std::mutex> g(g_stateLock);
        if (!hmod || !g_modules.erase(hmod)) return CUDA_ERROR_INVALID_HANDLE;
    }
    for (auto& kv : hmod->functions) delete kv.second;
    delete hmod;
    return CUDA_SUCCESS;
}

static bool module_ok(CUmodule m) {
    std::lock_guard<std::mutex> g(g_stateLock);
    return m && g_modules.count(m) != 0;
}

API CUresult cuModuleGetFunction(CUfunction* hfunc, CUmodule hmod, const char* name) {
    if (CUresult r = ctx_ready()) return r;
    if (!hfunc || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!module_ok(hmod)) return CUDA_ERROR_INVALID_HANDLE;
    auto it = hmod->functions.find(name);
    if (it == hmod->functions.end()) return CUDA_ERROR_NOT_FOUND;
    *hfunc = it->second;
    return CUDA_SUCCESS;
}

API CUresult cuFuncGetAttribute(int* pi, CUfunction_attribute attrib, CUfunction f) {
    if (CUresult r = ctx_ready()) return r;
    if (!pi) return CUDA_ERROR_INVALID_VALUE;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    switch (attrib) {
        case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = f->k->maxThreads ? f->k->maxThreads : 1024; break;
        case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *pi = 0; break;
        case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *pi = 0; break;
        case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *pi = 0; break;
        case CU_FUNC_ATTRIBUTE_NUM_REGS: *pi = 32; break;
        case CU_FUNC_ATTRIBUTE_PTX_VERSION: *pi = 90; break;
        case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *pi = 90; break;
        case CU_FUNC_ATTRIBUTE_CACHE_MODE_CA: *pi = 0; break;
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = f->maxDynamicShared; break;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute attrib, int value) {
    if (CUresult r = ctx_ready()) return r;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (attrib != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) return CUDA_ERROR_INVALID_VALUE;
    if (value < 0 || value > kMaxDynamicShared) return CUDA_ERROR_INVALID_VALUE;
    f->maxDynamicShared = value;
    return CUDA_SUCCESS;
}

API CUresult cuFuncGetParamInfo(CUfunction f, size_t paramIndex, size_t* paramOffset, size_t* paramSize) {
    if (CUresult r = ctx_ready()) return r;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (!paramOffset || paramIndex >= f->k->params.size()) return CUDA_ERROR_INVALID_VALUE;  // only paramSize may be NULL
    *paramOffset = f->k->params[paramIndex].offset;
    if (paramSize) *paramSize = f->k->params[paramIndex].size;
    return CUDA_SUCCESS;
}

// Appends a kernel's name to MOE4J_CPUDEV_LAUNCH_LOG the first time this process launches it
// (called under the launch lock; one write(2) per line with O_APPEND, so processes do not interleave).
static void note_launch(const char* name) {
    static const char* path = getenv("MOE4J_CPUDEV_LAUNCH_LOG");
    static std::set<std::string> seen;
    if (!path || !*path || !seen.insert(name).second) return;
    const int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    const std::string line = std::string(name) + "\n";
    if (write(fd, line.data(), line.size()) < 0) { /* best effort: a missing line shows in the coverage test */ }
    close(fd);
}

static CUresult run_launch(const moe4j_emu::KernelInfo* k, dim3 grid, dim3 block, unsigned sharedMemBytes, void** slots) {
    std::lock_guard<std::mutex> g(g_launchLock);
    note_launch(k->name);
    moe4j_emu::LaunchResult res;
    try {
        res = moe4j_emu::launch(k, grid, block, sharedMemBytes, slots);
    } catch (const std::exception& x) {
        return set_fault(CUDA_ERROR_LAUNCH_FAILED, std::string(k->name) + ": " + x.what());
    }
    if (!res.ok) return set_fault(fault_code(res.message), res.message);
    return CUDA_SUCCESS;
}

API CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                            unsigned int by, unsigned int bz, unsigned int sharedMemBytes, CUstream hStream,
                            void** kernelParams, void** extra) {
    if (CUresult r = ctx_ready()) return r;
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    const moe4j_emu::KernelInfo* k = f->k;
    const char* name = k->name;
    // launch configuration, as the hardware limits it
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535 || bx == 0 || by == 0 || bz == 0 ||
        bx > 1024 || by > 1024 || bz > 64 || (uint64_t)bx * by * bz > 1024) {
        fprintf(stderr, "moe4j cpu device: cuLaunchKernel(%s): grid [%u,%u,%u] / block [%u,%u,%u] outside the device limits\n",
                name, gx, gy, gz, bx, by, bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (k->maxThreads && (int)(bx * by * bz) > k->maxThreads) {
        fprintf(stderr, "moe4j cpu device: cuLaunchKernel(%s): block of %u threads exceeds __launch_bounds__(%d)\n", name,
                bx * by * bz, k->maxThreads);
        return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    }
    if (sharedMemBytes > (unsigned)f->maxDynamicShared || sharedMemBytes > (unsigned)kMaxDynamicShared) {
        fprintf(stderr,
                "moe4j cpu device: cuLaunchKernel(%s): %u bytes of dynamic shared memory exceed the function's limit of %d "
                "(above 48 KB a kernel needs cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES))\n",
                name, sharedMemBytes, f->maxDynamicShared);
        return CUDA_ERROR_INVALID_VALUE;
    }
    // parameters: kernelParams (one pointer per parameter) or extra (one packed buffer)
    std::vector<void*> slots(k->params.size());
    if (kernelParams && extra) return CUDA_ERROR_INVALID_VALUE;
    if (extra) {
        void* buf = nullptr;
        size_t* size = nullptr;
        for (size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
            if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) buf = extra[i + 1];
            else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) size = static_cast<size_t*>(extra[i + 1]);
            else return CUDA_ERROR_INVALID_VALUE;
        }
        if (!buf || !size) return CUDA_ERROR_INVALID_VALUE;
        if (*size != k->paramBytes) {
            fprintf(stderr, "moe4j cpu device: cuLaunchKernel(%s): parameter buffer of %zu bytes, the kernel takes %zu\n", name,
                    *size, k->paramBytes);
            return CUDA_ERROR_INVALID_VALUE;
        }
        for (size_t i = 0; i < slots.size(); ++i) slots[i] = static_cast<unsigned char*>(buf) + k->params[i].offset;
    } else if (!slots.empty()) {
        if (!kernelParams) return CUDA_ERROR_INVALID_VALUE;
        for (size_t i = 0; i < slots.size(); ++i) {
            if (!kernelParams[i]) return CUDA_ERROR_INVALID_VALUE;
            slots[i] = kernelParams[i];
        }
    }
    if (cpudev::stream_capturing(hStream)) {
        // captured: the parameter values are copied now (as the driver does), the launch replays them
        auto params = std::make_shared<std::vector<unsigned char>>(k->paramBytes + 16);
        for (size_t i = 0; i < slots.size(); ++i) memcpy(params->data() + k->params[i].offset, slots[i], k->params[i].size);
        const dim3 grid{gx, gy, gz}, block{bx, by, bz};
        return enqueue(hStream, cpudev::kKernelNode, k, [k, grid, block, sharedMemBytes, params]() {
            std::vector<void*> at(k->params.size());
            for (size_t i = 0; i < at.size(); ++i) at[i] = params->data() + k->params[i].offset;
            return run_launch(k, grid, block, sharedMemBytes, at.data());
        });
    }
    if (CUresult r = cpudev::legacy_stream_use(hStream)) return r;
    return run_launch(k, dim3{gx, gy, gz}, dim3{bx, by, bz}, sharedMemBytes, slots.data());
}

// ---- stream capture and graphs ---------------------------------------------------------------
API CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode) {
    if (CUresult r = ctx_ready()) return r;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (mode != CU_STREAM_CAPTURE_MODE_GLOBAL && mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
        mode != CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_ERROR_INVALID_VALUE;
    if (!hStream) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;  // the legacy stream cannot capture
    std::lock_guard<std::mutex> g(g_stateLock);
    if (hStream->capture != CU_STREAM_CAPTURE_STATUS_NONE) return CUDA_ERROR_ILLEGAL_STATE;
    hStream->capture = CU_STREAM_CAPTURE_STATUS_ACTIVE;
    hStream->nodes.clear();
    hStream->graphMemory = std::make_shared<std::vector<uintptr_t>>();
    g_activeCaptures++;
    return CUDA_SUCCESS;
}

API CUresult cuStreamEndCapture(CUstream hStream, CUgraph* phGraph) {
    if (CUresult r = ready()) return r;
    if (!phGraph) return CUDA_ERROR_INVALID_VALUE;
    if (!hStream || !stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    std::vector<cpudev::GraphNode> nodes;
    std::shared_ptr<std::vector<uintptr_t>> memory;
    CUstreamCaptureStatus was;
    {
        std::lock_guard<std::mutex> g(g_stateLock);
        was = hStream->capture;
        if (was == CU_STREAM_CAPTURE_STATUS_NONE) return CUDA_ERROR_ILLEGAL_STATE;
        hStream->capture = CU_STREAM_CAPTURE_STATUS_NONE;
        nodes.swap(hStream->nodes);
        memory = std::move(hStream->graphMemory);
        g_activeCaptures--;
    }
    if (was == CU_STREAM_CAPTURE_STATUS_INVALIDATED) {
        *phGraph = nullptr;
        for (uintptr_t p : *memory) release(p, false);
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    *phGraph = new CUgraph_st{std::move(nodes), std::move(memory)};
    return CUDA_SUCCESS;
}

API CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus* captureStatus) {
    if (CUresult r = ready()) return r;
    if (!captureStatus) return CUDA_ERROR_INVALID_VALUE;
    if (!stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    if (!hStream) {
        *captureStatus = CU_STREAM_CAPTURE_STATUS_NONE;
        return g_activeCaptures.load() > 0 ? CUDA_ERROR_STREAM_CAPTURE_IMPLICIT : CUDA_SUCCESS;
    }
    std::lock_guard<std::mutex> g(g_stateLock);
    *captureStatus = hStream->capture;
    return CUDA_SUCCESS;
}

API CUresult cuGraphInstantiateWithFlags(CUgraphExec* phGraphExec, CUgraph hGraph, unsigned long long flags) {
    if (CUresult r = ctx_ready()) return r;
    if (!phGraphExec || !hGraph || flags != 0) return CUDA_ERROR_INVALID_VALUE;
    *phGraphExec = new CUgraphExec_st{hGraph->nodes, hGraph->memory};
    return CUDA_SUCCESS;
}

// Replays the nodes in capture order on the calling thread (eager, like every stream operation);
// the first failing node stops the replay and its error is returned.
API CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream) {
    if (CUresult r = ctx_ready()) return r;
    if (!hGraphExec || !stream_ok(hStream)) return CUDA_ERROR_INVALID_HANDLE;
    bool recorded = false;
    CUresult r = cpudev::capture_enqueue(hStream, cpudev::GraphNode{cpudev::kKernelNode, hGraphExec, [hGraphExec]() {
                                             for (auto& n : hGraphExec->nodes) {
                                                 if (CUresult e = n.run()) return e;
                                             }
                                             return CUDA_SUCCESS;
                                         }},
                                         &recorded);
    if (r != CUDA_SUCCESS || recorded) return r;
    for (auto& n : hGraphExec->nodes) {
        if (CUresult e = n.run()) return e;
    }
    return CUDA_SUCCESS;
}

// Takes the parameters of hGraph's nodes when its topology (node count, kinds, kernels) is the
// exec's; otherwise reports why and leaves the exec unchanged.
API CUresult cuGraphExecUpdate_v2(CUgraphExec hGraphExec, CUgraph hGraph, CUgraphExecUpdateResultInfo* resultInfo) {
    if (CUresult r = ctx_ready()) return r;
    if (!hGraphExec || !hGraph || !resultInfo) return CUDA_ERROR_INVALID_VALUE;
    resultInfo->errorNode = nullptr;
    resultInfo->errorFromNode = nullptr;
    if (hGraph->nodes.size() != hGraphExec->nodes.size()) {
        resultInfo->result = CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED;
        return CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
    }
    for (size_t i = 0; i < hGraph->nodes.size(); ++i) {
        const auto& a = hGraphExec->nodes[i];
        const auto& b = hGraph->nodes[i];
        if (a.kind != b.kind) {
            resultInfo->result = CU_GRAPH_EXEC_UPDATE_ERROR_NODE_TYPE_CHANGED;
            return CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
        }
        if (a.key != b.key) {
            resultInfo->result = CU_GRAPH_EXEC_UPDATE_ERROR_UNSUPPORTED_FUNCTION_CHANGE;
            return CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE;
        }
    }
    hGraphExec->nodes = hGraph->nodes;
    hGraphExec->memory = hGraph->memory;
    resultInfo->result = CU_GRAPH_EXEC_UPDATE_SUCCESS;
    return CUDA_SUCCESS;
}

static void release_graph_memory(std::shared_ptr<std::vector<uintptr_t>>& m) {
    if (m && m.use_count() == 1) {
        for (uintptr_t p : *m) release(p, false);
    }
    m.reset();
}

API CUresult cuGraphExecDestroy(CUgraphExec hGraphExec) {
    if (CUresult r = ready()) return r;
    if (!hGraphExec) return CUDA_ERROR_INVALID_VALUE;
    release_graph_memory(hGraphExec->memory);
    delete hGraphExec;
    return CUDA_SUCCESS;
}

API CUresult cuGraphDestroy(CUgraph hGraph) {
    if (CUresult r = ready()) return r;
    if (!hGraph) return CUDA_ERROR_INVALID_VALUE;
    release_graph_memory(hGraph->memory);
    delete hGraph;
    return CUDA_SUCCESS;
}

API CUresult cuTensorMapEncodeTiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType, cuuint32_t tensorRank,
                                    void* globalAddress, const cuuint64_t* globalDim, const cuuint64_t* globalStrides,
                                    const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
                                    CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                    CUtensorMapL2promotion l2Promotion, CUtensorMapFloatOOBfill oobFill) {
    if (CUresult r = ready()) return r;
    return moe4j_emu::tensor_map_encode_tiled(tensorMap, tensorDataType, tensorRank, globalAddress, globalDim,
                                              globalStrides, boxDim, elementStrides, interleave, swizzle, l2Promotion,
                                              oobFill);
}

// ---- errors ----------------------------------------------------------------------------------
API CUresult cuGetErrorName(CUresult error, const char** pStr) {
    if (!pStr) return CUDA_ERROR_INVALID_VALUE;
    const char* s = error_name(error);
    *pStr = s;
    return s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// For the error of a kernel fault, the string carries the fault's description (kernel, block,
// thread, address), so that the caller's exception names it.
API CUresult cuGetErrorString(CUresult error, const char** pStr) {
    if (!pStr) return CUDA_ERROR_INVALID_VALUE;
    const char* s = error_string(error);
    if (!s) {
        *pStr = nullptr;
        return CUDA_ERROR_INVALID_VALUE;
    }
    static thread_local std::string detailed;
    std::lock_guard<std::mutex> g(g_stateLock);
    const int dev = t_current < 0 ? 0 : t_current;
    if (error != CUDA_SUCCESS && error == (CUresult)g_sticky[dev].load() && !g_lastFault[dev].empty()) {
        detailed = std::string(s) + " (" + g_lastFault[dev] + ")";
        *pStr = detailed.c_str();
    } else {
        *pStr = s;
    }
    return CUDA_SUCCESS;
}
