#!/usr/bin/env bash
# Compiles every native/*.cu into <out>/<name>.fatbin (sm_90a machine code + compute_90 PTX).
# Called by the Maven build of moe-cuda (profile "nvcc"); usable by hand:
#   native/build-fatbins.sh /usr/local/cuda/bin/nvcc moe-cuda/target/classes/org/moe4j/cuda/kernels
# Environment:
#   MOE4J_NVCC_JOBS      parallel nvcc processes (default 2)
#   MOE4J_NVCC_EXTRA     extra gencode targets, e.g. "80" adds sm_80 machine code (off by default:
#                        Hopper-only kernels then need guards, and it doubles compile time)
#   MOE4J_NVCC_FLAGS     extra nvcc flags
# A fatbin newer than its .cu, every .cuh and this script is not rebuilt. Any compile error fails.
set -euo pipefail
NVCC="${1:?usage: build-fatbins.sh <nvcc> <out-dir>}"
OUT="${2:?usage: build-fatbins.sh <nvcc> <out-dir>}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JOBS="${MOE4J_NVCC_JOBS:-2}"
[[ -x "$NVCC" ]] || { echo "build-fatbins: nvcc not executable: $NVCC" >&2; exit 1; }
mkdir -p "$OUT"

GENCODE=(-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90)
for a in ${MOE4J_NVCC_EXTRA:-}; do GENCODE+=("-gencode=arch=compute_${a},code=sm_${a}"); done
FLAGS=(-O3 --fatbin -std=c++17 -lineinfo -Xptxas=-warn-spills -I "$SRC" "${GENCODE[@]}")
# shellcheck disable=SC2206
FLAGS+=(${MOE4J_NVCC_FLAGS:-})

shopt -s nullglob
sources=("$SRC"/*.cu)
headers=("$SRC"/*.cuh)
if [[ ${#sources[@]} -eq 0 ]]; then echo "build-fatbins: no .cu files in $SRC"; exit 0; fi

todo=()
for cu in "${sources[@]}"; do
  name="$(basename "$cu" .cu)"
  fb="$OUT/$name.fatbin"
  stale=0
  [[ -f "$fb" ]] || stale=1
  for dep in "$cu" "${headers[@]}" "${BASH_SOURCE[0]}"; do
    [[ $stale -eq 1 || "$dep" -nt "$fb" ]] && stale=1
  done
  [[ $stale -eq 1 ]] && todo+=("$cu")
done
if [[ ${#todo[@]} -eq 0 ]]; then echo "build-fatbins: ${#sources[@]} fatbin(s) up to date in $OUT"; exit 0; fi

echo "build-fatbins: compiling ${#todo[@]} of ${#sources[@]} kernel families with $("$NVCC" --version | tail -1) (${GENCODE[*]})"
compile() {
  local cu="$1" name tmp
  name="$(basename "$cu" .cu)"
  tmp="$OUT/.$name.fatbin.tmp"
  if "$NVCC" "${FLAGS[@]}" -o "$tmp" "$cu"; then
    mv -f "$tmp" "$OUT/$name.fatbin"
    echo "build-fatbins:   $name.fatbin ($(stat -c %s "$OUT/$name.fatbin") bytes)"
  else
    rm -f "$tmp"
    echo "build-fatbins: FAILED to compile $cu" >&2
    return 1
  fi
}
export -f compile
export NVCC OUT
export FLAGS_STR="${FLAGS[*]}"
# xargs runs compile in parallel; any failure makes xargs exit non-zero.
printf '%s\0' "${todo[@]}" | xargs -0 -n1 -P "$JOBS" bash -c 'FLAGS=($FLAGS_STR); compile "$0"'
