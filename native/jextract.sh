#!/usr/bin/env bash
# Regenerates the FFM bindings of moe-cuda with jextract (https://jdk.java.net/jextract/), on hosts
# that have it. The committed bindings (cuda_h, nccl_h) were written by hand in the same shape,
# restricted to the functions moe4j calls; jextract's output is a superset with the same names and
# signatures, so code using them compiles against either.
#   native/jextract.sh [jextract] [nccl-include-dir]
# jextract is not published to Maven Central or Debian; get it from jdk.java.net.
set -euo pipefail
JEXTRACT="${1:-jextract}"
NCCL_INCLUDE="${2:-$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' 2>/dev/null || echo /usr/include)}"
CUDA_INCLUDE="${CUDA_HOME:-/usr/local/cuda}/include"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build/jextract"   # review, then copy over moe-cuda/src/main/java/org/moe4j/cuda/internal/ffi
mkdir -p "$OUT"

# CUDA driver API. No --library: the lookup is moe4j's NativeLibraries (property, LD_LIBRARY_PATH, system dirs).
"$JEXTRACT" --output "$OUT" \
  --target-package org.moe4j.cuda.internal.ffi.cuda --header-class-name cuda_h \
  -I "$CUDA_INCLUDE" \
  --include-function cuInit --include-function cuDriverGetVersion \
  --include-function cuDeviceGetCount --include-function cuDeviceGet --include-function cuDeviceGetName \
  --include-function cuDeviceGetAttribute --include-function cuDeviceTotalMem_v2 \
  --include-function cuDevicePrimaryCtxRetain --include-function cuDevicePrimaryCtxRelease_v2 \
  --include-function cuCtxSetCurrent --include-function cuCtxSynchronize --include-function cuMemGetInfo_v2 \
  --include-function cuMemAlloc_v2 --include-function cuMemFree_v2 --include-function cuMemsetD8Async \
  --include-function cuMemcpyHtoDAsync_v2 --include-function cuMemcpyDtoHAsync_v2 --include-function cuMemcpyDtoDAsync_v2 \
  --include-function cuMemAllocHost_v2 --include-function cuMemFreeHost \
  --include-function cuStreamCreate --include-function cuStreamSynchronize --include-function cuStreamDestroy_v2 \
  --include-function cuStreamWaitEvent \
  --include-function cuEventCreate --include-function cuEventRecord --include-function cuEventSynchronize \
  --include-function cuEventElapsedTime_v2 --include-function cuEventDestroy_v2 \
  --include-function cuModuleLoadData --include-function cuModuleUnload --include-function cuModuleGetFunction \
  --include-function cuFuncGetAttribute --include-function cuFuncSetAttribute --include-function cuLaunchKernel \
  --include-function cuGetErrorName --include-function cuGetErrorString \
  "$CUDA_INCLUDE/cuda.h"

# NCCL.
"$JEXTRACT" --output "$OUT" \
  --target-package org.moe4j.cuda.internal.ffi.nccl --header-class-name nccl_h \
  -I "$NCCL_INCLUDE" -I "$CUDA_INCLUDE" \
  --include-function ncclGetVersion --include-function ncclGetUniqueId --include-function ncclCommInitRank \
  --include-function ncclSend --include-function ncclRecv --include-function ncclGroupStart --include-function ncclGroupEnd \
  --include-function ncclAllReduce --include-function ncclAllGather --include-function ncclReduceScatter \
  --include-function ncclCommGetAsyncError --include-function ncclCommAbort --include-function ncclCommDestroy \
  --include-function ncclGetErrorString --include-function ncclGetLastError \
  --include-struct ncclUniqueId \
  "$NCCL_INCLUDE/nccl.h"
echo "jextract output in $OUT"
