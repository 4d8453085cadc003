#!/usr/bin/env bash
# Builds the CPU device, libmoe4j_cpudevice.so: the CUDA driver API + NCCL subset on the CPU, with
# every native/*.cu kernel compiled a second time as host C++ (see docs/gpu.md).
#   native/cpudevice/build.sh <out-dir>          -> <out-dir>/libmoe4j_cpudevice.so
# Called by the Maven build of moe-cuda (generate-test-resources); needs only g++ (C++17) and perl.
# Environment: CXX (default g++), MOE4J_CPUDEV_JOBS (parallel compiles, default 2).
# Up to date (nothing rebuilt) when the library is newer than every source it is built from.
set -euo pipefail
OUT="${1:?usage: build.sh <out-dir>}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NATIVE="$(cd "$HERE/.." && pwd)"
CXX="${CXX:-g++}"
JOBS="${MOE4J_CPUDEV_JOBS:-2}"
LIB="$OUT/libmoe4j_cpudevice.so"
command -v "$CXX" >/dev/null || { echo "cpudevice: C++ compiler '$CXX' not found (install g++)" >&2; exit 1; }
mkdir -p "$OUT/obj" "$OUT/gen"

shopt -s nullglob
kernels=("$NATIVE"/*.cu "$HERE"/test/*.cu)  # test/*.cu: planted-bug kernels of the emulator tests
support=("$HERE"/runtime.cpp "$HERE"/driver.cpp "$HERE"/ptx_emu.cpp)
[[ -f "$HERE/nccl.cpp" ]] && support+=("$HERE/nccl.cpp")
deps=("${kernels[@]}" "$NATIVE"/*.cuh "${support[@]}" "$HERE"/*.h "$HERE"/include/*.h "$HERE"/gen-registry.pl "${BASH_SOURCE[0]}")
if [[ -f "$LIB" ]]; then
  stale=0
  for d in "${deps[@]}"; do [[ "$d" -nt "$LIB" ]] && { stale=1; break; }; done
  if [[ $stale -eq 0 ]]; then echo "cpudevice: $LIB up to date"; exit 0; fi
fi

COMMON=(-std=c++17 -O2 -g0 -fPIC -fvisibility=hidden -pthread -I "$HERE/include" -I "$HERE")
# Kernels: same source as nvcc compiles; IEEE single operations (no FMA contraction, like the
# kernels' explicit _rn intrinsics); every load/store calls the runtime (memcheck, racecheck).
KFLAGS=(-x c++ -include "$HERE/emu.h" -I "$NATIVE" -ffp-contract=off -fno-strict-aliasing -Wno-unknown-pragmas
        -fsanitize=kernel-address --param asan-instrumentation-with-call-threshold=0
        --param asan-stack=0 --param asan-globals=0)

jobs=()
for s in "${support[@]}"; do
  jobs+=("support|$s|$OUT/obj/$(basename "$s" .cpp).o")
done
for cu in "${kernels[@]}"; do
  name="$(basename "$cu" .cu)"
  perl "$HERE/gen-registry.pl" "$cu" > "$OUT/gen/$name.emu.cpp"
  jobs+=("kernel|$OUT/gen/$name.emu.cpp|$OUT/obj/$name.emu.o")
done

compile() {
  IFS='|' read -r kind src obj <<< "$1"
  if [[ "$kind" == kernel ]]; then
    # shellcheck disable=SC2086
    $CXX $COMMON_STR $KFLAGS_STR -c "$src" -o "$obj"
  else
    # shellcheck disable=SC2086
    $CXX $COMMON_STR -Wall -c "$src" -o "$obj"
  fi || { echo "cpudevice: FAILED to compile $src" >&2; return 1; }
}
export -f compile
export CXX COMMON_STR="${COMMON[*]}" KFLAGS_STR="${KFLAGS[*]}"
echo "cpudevice: compiling ${#support[@]} runtime sources and ${#kernels[@]} kernel families with $($CXX --version | head -1)"
printf '%s\0' "${jobs[@]}" | xargs -0 -n1 -P "$JOBS" bash -c 'compile "$0"'

objs=("$OUT/obj/runtime.o")
for j in "${jobs[@]}"; do
  IFS='|' read -r _ _ obj <<< "$j"
  [[ "$obj" == "$OUT/obj/runtime.o" ]] || objs+=("$obj")
done
cat > "$OUT/exports.map" <<'MAP'
{ global: cu*; nccl*; pnccl*; local: *; };
MAP
tmp="$LIB.tmp.$$"
$CXX -shared -pthread -o "$tmp" "${objs[@]}" -Wl,--version-script="$OUT/exports.map" -Wl,--no-undefined -ldl -lrt
mv -f "$tmp" "$LIB"
echo "cpudevice: built $LIB ($(stat -c %s "$LIB") bytes)"
