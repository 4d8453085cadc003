#!/usr/bin/env bash
# Builds and runs the PTX emulation tests with g++ (no CUDA needed). Exit status = test result.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cpudev="$(dirname "$here")"
out="${TMPDIR:-/tmp}/moe4j_ptx_emu_test.$$"
trap 'rm -f "$out"' EXIT
g++ -std=c++17 -O1 -Wall -Wextra -I "$cpudev/include" -I "$cpudev" \
    "$here/ptx_emu_test.cpp" "$cpudev/ptx_emu.cpp" -o "$out"
"$out"
