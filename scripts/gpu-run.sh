#!/usr/bin/env bash
# moe4j GPU bundle runner (copied to gpu-bundle/run.sh by scripts/gpu-bundle.sh).
#
#   run.sh [OUT_DIR]       run every @Tag("gpu") test, then every benchmark in benchmarks.txt
#   run.sh --nccl-dirs     print the directories holding libnccl.so.2 that would be used, and exit
#
# OUT_DIR defaults to $OUT, else ./gpu-results. It receives at most 8 files (what the device tool
# brings back, two folders deep): summary.txt, tests.log, junit/TEST-junit-jupiter.xml, bench.log,
# peers.log, sanitizer.log, gpu.txt, env.txt. The summary is also printed last.
# Steps (MOE4J_STEPS, comma-separated, default all): tests (every @Tag("gpu") test, then the layer
# test again with -Dmoe4j.cuda.gemm=wgmma), bench (benchmarks.txt), peers (PyTorch peers), sanitizer
# (compute-sanitizer memcheck + racecheck). One device call is limited to 10 minutes: e.g. run
# MOE4J_STEPS=tests,bench in one call and MOE4J_STEPS=peers,sanitizer in the next.
# Exit status: 0 all ran and passed (or skipped: no GPU), 1 test failures, 3 a benchmark failed,
# 4 MOE4J_REQUIRE_GPU=1 and the GPU tests were skipped, 2 bad usage or a broken bundle.
# Environment: MOE4J_STEPS, MOE4J_BENCH_TIMEOUT (s, default 300), MOE4J_TEST_TIMEOUT (s, default 1200),
# MOE4J_JVM_OPTS (extra JVM flags), MOE4J_SEARCH_ROOT (test hook: file-system root for the wheel scan).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SROOT="${MOE4J_SEARCH_ROOT:-}"

# Site-packages directories: python3's own sys.path when python3 exists (never required), then the
# usual prefixes, like org.moe4j.cuda.internal.NativeLibraries.
site_dirs() {
  if [[ -z "$SROOT" ]] && command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, site
for p in sys.path + site.getsitepackages() + [site.getusersitepackages()]:
    print(p)' 2>/dev/null
  fi
  local d
  for d in "${VIRTUAL_ENV:-}" "${CONDA_PREFIX:-}"; do
    [[ -n "$d" ]] && compgen -G "$d/lib/python3*/site-packages" 2>/dev/null
  done
  for d in "$SROOT$HOME/.local/lib" "$SROOT/usr/local/lib" "$SROOT/usr/lib" "$SROOT"/opt/*/lib "$SROOT"/opt/*/.venv/lib; do
    compgen -G "$d/python3*/site-packages" 2>/dev/null
    compgen -G "$d/python3*/dist-packages" 2>/dev/null
  done
}

# Directories with libnccl.so.2 inside Python wheels (nvidia/nccl/lib, nvidia/cu13/lib, nvidia/*/lib).
nccl_dirs() {
  local s l seen=""
  while IFS= read -r s; do
    [[ -d "$s/nvidia" ]] || continue
    for l in "$s"/nvidia/nccl/lib "$s"/nvidia/cu13/lib "$s"/nvidia/*/lib; do
      if [[ -f "$l/libnccl.so.2" && " $seen " != *" $l "* ]]; then
        seen="$seen $l"
        echo "$l"
      fi
    done
  done < <(site_dirs | awk 'NF && !seen[$0]++')
}

if [[ "${1:-}" == "--nccl-dirs" ]]; then
  nccl_dirs
  exit 0
fi

OUTDIR="${1:-${OUT:-$PWD/gpu-results}}"
mkdir -p "$OUTDIR/junit" || { echo "run.sh: cannot create $OUTDIR" >&2; exit 2; }
STEPS=",${MOE4J_STEPS:-tests,bench,peers,sanitizer},"
for st in ${STEPS//,/ }; do
  case "$st" in tests|bench|peers|sanitizer) ;; *) echo "run.sh: unknown step '$st' in MOE4J_STEPS (tests, bench, peers, sanitizer)" >&2; exit 2;; esac
done
step() { [[ "$STEPS" == *",$1,"* ]]; }
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
JAVA="$HERE/jre/bin/java"
[[ -x "$JAVA" ]] || { echo "run.sh: $JAVA missing: not a complete bundle (build it with scripts/gpu-bundle.sh)" >&2; exit 2; }
CONSOLE="$(compgen -G "$HERE/lib/junit-platform-console-standalone-*.jar" | head -1)"
[[ -n "$CONSOLE" ]] || { echo "run.sh: JUnit console launcher missing in $HERE/lib" >&2; exit 2; }

# Class path: moe.jar, test jars, test-only dependencies.
CP="$HERE/lib/moe.jar"
TEST_JARS=()
for j in "$HERE"/lib/tests/*.jar; do [[ -f "$j" ]] && { TEST_JARS+=("$j"); CP="$CP:$j"; }; done
for j in "$HERE"/lib/test-deps/*.jar; do [[ -f "$j" ]] && CP="$CP:$j"; done

# NCCL from Python wheels, driver libraries from the usual places.
NCCL_DIR="$(nccl_dirs | head -1)"
LIBS=""
[[ -n "$NCCL_DIR" ]] && LIBS="$NCCL_DIR"
for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64; do
  [[ -d "$d" ]] && LIBS="${LIBS:+$LIBS:}$d"
done
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
JVM=(--enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -Xss4m -XX:+UseParallelGC)
[[ -n "$NCCL_DIR" ]] && JVM+=("-Dmoe4j.nccl.lib=$NCCL_DIR/libnccl.so.2")
# shellcheck disable=SC2206
JVM+=(${MOE4J_JVM_OPTS:-})

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname) $(uname -srm)"
  echo "bundle: $(sed -n 's/^commit: *//p' "$HERE/BUNDLE.txt" 2>/dev/null)"
  echo "java: $("$JAVA" -version 2>&1 | head -1)"
  echo "nccl: ${NCCL_DIR:-not found in Python wheels (libnccl from the system, if any)}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-<unset>}"
} > "$OUTDIR/env.txt"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,clocks.sm,clocks.max.sm,temperature.gpu --format=csv \
    > "$OUTDIR/gpu.txt" 2>&1 || true
else
  echo "nvidia-smi not found: no NVIDIA driver on this host" > "$OUTDIR/gpu.txt"
fi

TEST_RC=0
TESTS=""; FAILURES=""; ERRORS=""; SKIPPED=""; WG_LINE=""; CAL_LINE=""
counts() { sed -n "s/.*<testsuite [^>]*\b$2=\"\([0-9]*\)\".*/\1/p" "$1" 2>/dev/null | head -1; }
if step tests; then
  echo "run.sh: GPU tests ($(basename "$CONSOLE"), ${#TEST_JARS[@]} test jars) -> $OUTDIR"
  SCAN=()
  for j in "${TEST_JARS[@]}"; do SCAN+=(--scan-class-path "$j"); done
  timeout "${MOE4J_TEST_TIMEOUT:-1200}" "$JAVA" "${JVM[@]}" -jar "$CONSOLE" execute --disable-banner --disable-ansi-colors \
    --exclude-engine junit-vintage --exclude-engine junit-platform-suite \
    --class-path "$CP" "${SCAN[@]}" --include-tag gpu --reports-dir "$OUTDIR/junit" \
    --details=tree --details-theme=ascii > "$OUTDIR/tests.log" 2>&1
  TEST_RC=$?
  XML="$OUTDIR/junit/TEST-junit-jupiter.xml"
  TESTS="$(counts "$XML" tests)"; FAILURES="$(counts "$XML" failures)"; ERRORS="$(counts "$XML" errors)"; SKIPPED="$(counts "$XML" skipped)"
  # the whole layer again on the Hopper GEMM path (the test skips itself on other devices)
  echo "run.sh: MoeLayerGpuTest with -Dmoe4j.cuda.gemm=wgmma"
  echo "===== MoeLayerGpuTest with -Dmoe4j.cuda.gemm=wgmma" >> "$OUTDIR/tests.log"
  timeout "${MOE4J_TEST_TIMEOUT:-1200}" "$JAVA" "${JVM[@]}" -Dmoe4j.cuda.gemm=wgmma -jar "$CONSOLE" execute \
    --disable-banner --disable-ansi-colors --class-path "$CP" --select-class org.moe4j.cuda.layer.MoeLayerGpuTest \
    --include-tag gpu --reports-dir "$SCRATCH/junit-wgmma" --details=tree --details-theme=ascii >> "$OUTDIR/tests.log" 2>&1
  rc=$?
  WX="$SCRATCH/junit-wgmma/TEST-junit-jupiter.xml"
  WG_LINE="layer on wgmma: $(counts "$WX" tests) run, $(counts "$WX" failures) failed, $(counts "$WX" errors) errors, $(counts "$WX" skipped) skipped (exit $rc)"
  [[ $rc -ne 0 ]] && TEST_RC=$rc
  # the CPU device's calibration: the emulator's mma/ldmatrix/wgmma/TMA/mbarrier answers against
  # this GPU's, bit for bit (native/cpudevice/calibration); appended to tests.log
  if [[ -x "$HERE/calibrate" ]]; then
    echo "run.sh: CPU-device calibration (emulator vs this GPU)"
    timeout 120 "$HERE/calibrate" > "$SCRATCH/calibrate.log" 2>&1
    rc=$?
    { echo "===== calibrate: exit $rc"; cat "$SCRATCH/calibrate.log"; } >> "$OUTDIR/tests.log"
    case $rc in
      0) CAL_LINE="calibration: emulator matches this GPU bit for bit" ;;
      2) CAL_LINE="calibration: no sm_90 device (exit 2)" ;;
      *) CAL_LINE="calibration: MISMATCH or failure, exit $rc (see tests.log)" ;;
    esac
  else
    CAL_LINE="calibration: not in this bundle (nvcc absent when it was built)"
  fi
fi

BENCH_RC=0
BENCH_LINES=()
: > "$OUTDIR/bench.log"
if step bench && [[ -f "$HERE/benchmarks.txt" ]]; then
  while read -r name main args; do
    [[ -z "$name" || "$name" == \#* ]] && continue
    echo "run.sh: benchmark $name ($main $args)"
    echo "===== $name: $main $args" >> "$OUTDIR/bench.log"
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout "${MOE4J_BENCH_TIMEOUT:-300}" "$JAVA" "${JVM[@]}" -cp "$CP" "$main" $args >> "$OUTDIR/bench.log" 2>&1 < /dev/null
    rc=$?
    BENCH_LINES+=("  $name: $([[ $rc -eq 0 ]] && echo ok || echo "FAILED rc=$rc$([[ $rc -eq 124 ]] && echo ' (timeout)')") in $(( $(date +%s) - start )) s")
    [[ $rc -ne 0 ]] && BENCH_RC=3
    echo "===== $name: exit $rc" >> "$OUTDIR/bench.log"
  done < "$HERE/benchmarks.txt"
fi

# PyTorch peers (same GPU, same run): scripts/gpu-peers/*.py, when python3 with a CUDA torch is here.
# Each peer's log and JSON rows go into peers.log (compare.py reads the JSON lists in it).
PEER_LINES=()
if ! step peers; then
  PEER_LINES+=("  not run (MOE4J_STEPS)")
elif [[ -d "$HERE/peers" ]] && command -v python3 >/dev/null 2>&1 \
    && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  : > "$OUTDIR/peers.log"
  for py in "$HERE"/peers/*_peer.py; do
    name="$(basename "$py" .py)"
    echo "run.sh: peer $name"
    timeout "${MOE4J_BENCH_TIMEOUT:-300}" python3 "$py" --out "$SCRATCH/$name.json" > "$SCRATCH/$name.log" 2>&1
    rc=$?
    { echo "===== $name: exit $rc"; cat "$SCRATCH/$name.log"; echo; [[ -f "$SCRATCH/$name.json" ]] && cat "$SCRATCH/$name.json"; echo; } >> "$OUTDIR/peers.log"
    PEER_LINES+=("  $name: $([[ $rc -eq 0 ]] && echo ok || echo "FAILED rc=$rc")")
  done
elif [[ -d "$HERE/peers" ]]; then
  PEER_LINES+=("  skipped: no python3 with a CUDA-enabled torch")
fi

# compute-sanitizer memcheck and racecheck over the kernel parity tests (MOE4J_SANITIZER=0 skips).
SAN_LINES=()
SANITIZER="$(command -v compute-sanitizer 2>/dev/null || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if ! step sanitizer; then
  SAN_LINES+=("  not run (MOE4J_STEPS)")
elif [[ -n "$SANITIZER" && "${MOE4J_SANITIZER:-1}" != "0" ]]; then
  for tool in memcheck racecheck; do
    echo "run.sh: compute-sanitizer --tool $tool (kernel parity tests)"
    timeout "${MOE4J_SANITIZER_TIMEOUT:-1200}" "$SANITIZER" --tool "$tool" --target-processes all --error-exitcode 99 \
      "$JAVA" "${JVM[@]}" -Dmoe4j.gpu.small=true -jar "$CONSOLE" execute --disable-banner --disable-ansi-colors \
      --class-path "$CP" --select-package org.moe4j.cuda.kernels --include-tag gpu \
      --details=summary > "$SCRATCH/sanitizer-$tool.log" 2>&1
    rc=$?
    { echo "===== compute-sanitizer --tool $tool: exit $rc"; cat "$SCRATCH/sanitizer-$tool.log"; } >> "$OUTDIR/sanitizer.log"
    SAN_LINES+=("  $tool: $([[ $rc -eq 0 ]] && echo clean || echo "FAILED rc=$rc (see sanitizer.log)")")
  done
else
  SAN_LINES+=("  skipped: $([[ -z "$SANITIZER" ]] && echo 'compute-sanitizer not found' || echo 'MOE4J_SANITIZER=0')")
fi

SKIP_REASON="$(grep -m1 -o 'no usable GPU: .*' "$OUTDIR/tests.log" | cut -c1-400)"
{
  echo "moe4j GPU run"
  cat "$OUTDIR/env.txt"
  echo "gpu: $(grep -v "^name," "$OUTDIR/gpu.txt" | head -1)"
  if step tests; then
    echo "tests: ${TESTS:-?} run, ${FAILURES:-?} failed, ${ERRORS:-?} errors, ${SKIPPED:-?} skipped (console launcher exit $TEST_RC)"
    echo "  $WG_LINE"
    echo "  $CAL_LINE"
  else
    echo "tests: not run (MOE4J_STEPS)"
  fi
  if [[ -n "$TESTS" && "$TESTS" == "$SKIPPED" && "$TESTS" != "0" ]]; then
    echo "  all GPU tests SKIPPED: ${SKIP_REASON:-see tests.log}"
  fi
  grep -E '\[X\]|✘' "$OUTDIR/tests.log" | head -20 | sed 's/^/  /'
  echo "benchmarks:"
  step bench || echo "  not run (MOE4J_STEPS)"
  ((${#BENCH_LINES[@]})) && printf '%s\n' "${BENCH_LINES[@]}"
  echo "peers:"
  ((${#PEER_LINES[@]})) && printf '%s\n' "${PEER_LINES[@]}"
  echo "compute-sanitizer:"
  ((${#SAN_LINES[@]})) && printf '%s\n' "${SAN_LINES[@]}"
  echo "files: $(cd "$OUTDIR" && find . -type f | sort | tr '\n' ' ')"
} > "$OUTDIR/summary.txt"
cat "$OUTDIR/summary.txt"

if [[ $TEST_RC -ne 0 ]]; then exit 1; fi
if [[ $BENCH_RC -ne 0 ]]; then exit 3; fi
if [[ "${MOE4J_REQUIRE_GPU:-0}" == "1" && -n "$TESTS" && "$TESTS" == "$SKIPPED" ]]; then exit 4; fi
exit 0
