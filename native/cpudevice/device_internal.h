// moe4j CPU device: what the parts of libmoe4j_cpudevice.so (driver.cpp, nccl.cpp, ptx_emu.cpp,
// the kernel runtime) share. Not a public header: nothing outside native/cpudevice includes it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include "cuda.h"

namespace cpudev {

// True when [p, p + bytes) lies inside one live device allocation (cuMemAlloc) or one live pinned
// host allocation (cuMemAllocHost). Thread-safe.
bool device_range_live(const void* p, size_t bytes);

// True when s is 0 (the legacy default stream) or a live stream of the current process.
bool stream_valid(CUstream s);

// Work on a stream runs eagerly, in call order, on the calling thread (see docs/gpu.md): an
// operation enqueued on any stream has completed when the call that enqueued it returns.
// A sticky error (a faulted kernel) makes every later stream operation fail with that error;
// this returns it (CUDA_SUCCESS when none).
CUresult sticky_error();

// Stream capture (CUDA graphs). While a stream captures, the work enqueued on it is recorded as graph
// nodes instead of executed; cuGraphLaunch re-issues the nodes in capture order.
struct GraphNode {
    int kind;          // kKernelNode, kMemsetNode, kMemcpyNode, kCollectiveNode, kEventNode
    const void* key;   // the kernel (kernel nodes): an update may change parameters, not the function
    std::function<CUresult()> run;
};
enum { kKernelNode = 1, kMemsetNode = 2, kMemcpyNode = 3, kCollectiveNode = 4, kEventNode = 5 };

// CUDA_SUCCESS and *recorded = false when s is not capturing (execute the work now); CUDA_SUCCESS and
// *recorded = true when s captures (the node was appended); CUDA_ERROR_STREAM_CAPTURE_INVALIDATED when
// s's capture was invalidated.
CUresult capture_enqueue(CUstream s, GraphNode node, bool* recorded);

// An operation on s: CUDA_SUCCESS unless s is the legacy default stream (0) while a blocking stream
// (no CU_STREAM_NON_BLOCKING) of the current device captures. The legacy stream waits for, and holds
// back, every blocking stream, which a capture cannot record: as the driver does, every such capture
// is invalidated (its cuStreamEndCapture fails with CUDA_ERROR_STREAM_CAPTURE_INVALIDATED) and the
// operation fails with CUDA_ERROR_STREAM_CAPTURE_IMPLICIT without running.
CUresult legacy_stream_use(CUstream s);

// True when s is capturing (its capture may be invalidated).
bool stream_capturing(CUstream s);

}  // namespace cpudev
