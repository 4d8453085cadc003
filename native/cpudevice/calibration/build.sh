#!/usr/bin/env bash
# Builds the GPU calibration program: build.sh <output-binary>. Needs nvcc (CUDA 12.4+); exits 0
# with a message when nvcc is not installed. Run the binary on a Hopper (sm_90) GPU.
set -euo pipefail
out="${1:?usage: build.sh <output-binary>}"
here="$(cd "$(dirname "$0")" && pwd)"
cpudev="$(dirname "$here")"
native="$(dirname "$cpudev")"
NVCC="${NVCC:-}"
if [ -z "$NVCC" ]; then
    if command -v nvcc >/dev/null 2>&1; then NVCC="$(command -v nvcc)"
    elif [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc
    else echo "build.sh: nvcc not found; calibration program not built"; exit 0; fi
fi
CXX="${CXX:-g++}"
obj="$(mktemp -d)"
trap 'rm -rf "$obj"' EXIT
# the emulator against the CPU device's cuda.h shim, exactly as libmoe4j_cpudevice.so builds it
"$CXX" -std=c++17 -O2 -fPIC -I "$cpudev/include" -I "$cpudev" -c "$cpudev/ptx_emu.cpp" -o "$obj/ptx_emu.o"
# the calibration program against the real cuda.h (no shim include path)
"$NVCC" -std=c++17 -O2 -arch=sm_90a -I "$native" -I "$cpudev" -o "$out" "$here/calibrate.cu" "$obj/ptx_emu.o"
echo "build.sh: built $out"
