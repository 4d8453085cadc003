// moe4j CPU device: the interface between the driver API (driver.cpp) and the kernel runtime
// (runtime.cpp). Internal to libmoe4j_cpudevice.so.
#pragma once
#include <cstdint>
#include <string>

#ifndef MOE4J_EMU_RUNTIME
#define MOE4J_EMU_RUNTIME 1
#endif
#include "emu.h"
#include "kernel_registry.h"
#include "ptx_emu.h"

// driver.cpp: the allocation registry (device and pinned host memory).
bool cpudev_find_allocation(uintptr_t a, size_t n, uintptr_t* lo, uintptr_t* hi);
uint64_t cpudev_alloc_generation();
std::string cpudev_describe_address(uintptr_t a);

namespace moe4j_emu {

struct LaunchResult {
    bool ok = true;
    std::string message;  // the fault, naming kernel, block, thread and what went wrong
};

// Runs every block of the launch to completion (or to the first fault). The caller holds the
// device lock and has checked the launch configuration.
LaunchResult launch(const KernelInfo* k, dim3 grid, dim3 block, uint32_t dynShared, void* const* slots);

// Empty when the library is usable; otherwise why not (checked by cuInit).
std::string runtime_check();

// ptx_emu.cpp (whole-warp / whole-warpgroup semantics of the PTX instructions)
void mma_m16n8k16_bf16(const uint32_t a[32][4], const uint32_t b[32][2], const float c[32][4], float d[32][4]);
void ldmatrix_m8n8_b16(SmemWindow w, int num, bool trans, const uint32_t addr[32], uint32_t out[32][4]);
void wgmma_m64nNk16_bf16(SmemWindow w, int N, uint64_t descA, uint64_t descB, int transA, int transB, bool scaleD,
                         float* const d[128]);
uint32_t tma_load_tiled(SmemWindow w, uint32_t dstAddr, const CUtensorMap* map, int rank, const int32_t* coords);
CUresult tensor_map_encode_tiled(CUtensorMap* tensorMap, CUtensorMapDataType tensorDataType, cuuint32_t tensorRank,
                                 void* globalAddress, const cuuint64_t* globalDim, const cuuint64_t* globalStrides,
                                 const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
                                 CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion l2Promotion, CUtensorMapFloatOOBfill oobFill);

}  // namespace moe4j_emu
