#!/usr/bin/env bash
# moe4j GPU verification: the one call for a GPU host (copied to gpu-bundle/run.sh by
# scripts/gpu-bundle.sh; see docs/gpu.md "The one GPU call").
#
#   run.sh [OUT_DIR]       run the verification plan below within the global deadline
#   run.sh --plan          print the plan (steps, their timeouts) and exit
#   run.sh --nccl-dirs     print the directories holding libnccl.so.2 that would be used, and exit
#
# The plan, in this order; every step is its own process (JVM, python, binary) under its own timeout,
# clipped to the time left before the global deadline (MOE4J_DEADLINE_S, default 470 s); a step with
# less than MOE4J_MIN_STEP_S (default 20) left is skipped and says so. A step that hangs or crashes
# costs its own timeout, never the results of the others, and the summary is always written.
#    1 env          nvidia-smi, driver libraries, torch, kernel (uname -r), cuobjdump: sm_90a code with HGMMA
#    2 smoke        bindings, fatbin load, launch, events, pinned memory (CudaSmokeGpuTest), NCCL at W = 1
#    3 routing      router, permute and combine parity (CudaRoutingKernelsGpuTest, CudaDispatchKernelsGpuTest)
#    4 gemm-mma     grouped-GEMM parity, mma path (CudaExpertKernelsGpuTest with moe4j.gpu.gemmPaths=mma)
#    5 gemm-wgmma   the same on the wgmma path
#    6 layer-mma    MoeLayer on the CUDA backend against the CPU backend (MoeLayerGpuTest), mma GEMMs
#    7 layer-wgmma  the same with -Dmoe4j.cuda.gemm=wgmma
#    8 calibrate    the CPU device's emulated PTX against this GPU, bit for bit (./calibrate)
#    9 gemm-bench   GroupedGemmGpuBench and the torch._grouped_mm / cuBLAS peer at two row counts
#   10 comm         (time left) communicator tests: virtual ranks, NCCL, multi-process
#   11 graph        (time left) a sync-free layer step (0 host reads, SyncFreeLayerStepGpuTest), CUDA graph
#                   capture rules (CudaGraphGpuTest) and a whole layer step replayed (LayerStepGraphGpuTest)
#   12 bench-more   (time left) router and permute benchmarks and their PyTorch peers
#   sanitizer       only when MOE4J_STEPS names it: compute-sanitizer memcheck over the parity tests
# MOE4J_STEPS=a,b,... runs only the named steps (still in plan order).
#
# OUT_DIR (default $OUT, else ./gpu-results) receives at most 8 files: summary.txt, env.txt, tests.log
# (one line per test as it finishes, steps 2-7, 10 and 11), calibrate.log, bench.log (steps 9 and 12,
# PyTorch peers included), sanitizer.log (only with that step), and hs_err_<pid>.log of a JVM that
# crashed. The summary is also printed last.
# Exit status: 0 every step that ran passed (GPU tests skipped for lack of a GPU count as passed
# unless MOE4J_REQUIRE_GPU=1, then 4), 1 a step failed, timed out or crashed, 2 bad usage or a broken bundle.
# Environment: MOE4J_DEADLINE_S, MOE4J_MIN_STEP_S, MOE4J_STEPS, MOE4J_TEST_TIMEOUT (per test step,
# default 150 s), MOE4J_BENCH_TIMEOUT (per benchmark, default 120 s), MOE4J_BENCH_ROWS (the two row
# counts, default "4096 16384"), MOE4J_JVM_OPTS (extra JVM flags), MOE4J_CLASS_PATH (test hook: class
# path instead of the bundle's jars), MOE4J_SEARCH_ROOT (test hook: file-system root for the wheel scan).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SROOT="${MOE4J_SEARCH_ROOT:-}"
T0=$(date +%s)

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

# name | kind | timeout variable default | what
PLAN=(
  "env|env|60|environment, driver, cuobjdump proof, torch, kernel"
  "smoke|tests|TEST|bindings, fatbin load, launch, events, pinned memory, NCCL at W = 1"
  "routing|tests|TEST|router, permute and combine parity"
  "gemm-mma|tests|TEST|grouped-GEMM parity, mma path"
  "gemm-wgmma|tests|TEST|grouped-GEMM parity, wgmma path"
  "layer-mma|tests|TEST|MoeLayer CUDA vs CPU, mma GEMMs"
  "layer-wgmma|tests|TEST|MoeLayer CUDA vs CPU, wgmma GEMMs"
  "calibrate|calibrate|120|CPU-device emulator vs this GPU"
  "gemm-bench|bench|BENCH|grouped GEMM benchmark + torch/cuBLAS peer"
  "comm|tests|TEST|communicator tests (time left)"
  "graph|tests|TEST|sync-free step, graph capture, whole layer step replayed (time left)"
  "bench-more|bench|BENCH|router and permute benchmarks + peers (time left)"
  "sanitizer|sanitizer|180|compute-sanitizer memcheck over the parity tests (only on request)"
)
DEADLINE="${MOE4J_DEADLINE_S:-470}"
MIN_STEP="${MOE4J_MIN_STEP_S:-20}"
TEST_TIMEOUT="${MOE4J_TEST_TIMEOUT:-150}"
BENCH_TIMEOUT="${MOE4J_BENCH_TIMEOUT:-120}"
for v in DEADLINE:MOE4J_DEADLINE_S MIN_STEP:MOE4J_MIN_STEP_S TEST_TIMEOUT:MOE4J_TEST_TIMEOUT BENCH_TIMEOUT:MOE4J_BENCH_TIMEOUT; do
  n="${v%%:*}"
  [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: ${v#*:} must be a positive number of seconds, got '${!n}'" >&2; exit 2; }
done
step_timeout() { # the plan's timeout of one entry
  case "$1" in TEST) echo "$TEST_TIMEOUT" ;; BENCH) echo "$BENCH_TIMEOUT" ;; *) echo "$1" ;; esac
}

if [[ "${1:-}" == "--nccl-dirs" ]]; then
  nccl_dirs
  exit 0
fi
if [[ "${1:-}" == "--plan" ]]; then
  echo "global deadline ${DEADLINE} s; steps in order (timeout in s):"
  for e in "${PLAN[@]}"; do
    IFS='|' read -r name _ t what <<< "$e"
    printf '  %-12s %4s  %s\n' "$name" "$(step_timeout "$t")" "$what"
  done
  exit 0
fi

KNOWN=" $(for e in "${PLAN[@]}"; do printf '%s ' "${e%%|*}"; done)"
if [[ -n "${MOE4J_STEPS:-}" ]]; then
  for st in ${MOE4J_STEPS//,/ }; do
    [[ "$KNOWN" == *" $st "* ]] || { echo "run.sh: unknown step '$st' in MOE4J_STEPS (steps:$KNOWN)" >&2; exit 2; }
  done
  WANT=",${MOE4J_STEPS},"
else
  WANT=",$(for e in "${PLAN[@]}"; do n="${e%%|*}"; [[ "$n" != sanitizer ]] && printf '%s,' "$n"; done)"
fi

OUTDIR="${1:-${OUT:-$PWD/gpu-results}}"
mkdir -p "$OUTDIR" || { echo "run.sh: cannot create $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
SCRATCH="$(mktemp -d)"
exec 3>&1   # the terminal, for the summary (the TERM trap may fire inside a step's redirect)
JAVA="$HERE/jre/bin/java"
# a copy of the bundle can lose the exec bits of the jlinked runtime: restore them before use
[[ -d "$HERE/jre/bin" ]] && chmod +x "$HERE"/jre/bin/* 2>/dev/null
[[ -f "$HERE/jre/lib/jspawnhelper" ]] && chmod +x "$HERE/jre/lib/jspawnhelper" 2>/dev/null
[[ -f "$HERE/calibrate" ]] && chmod +x "$HERE/calibrate" 2>/dev/null
[[ -x "$JAVA" ]] || { echo "run.sh: $JAVA missing: not a complete bundle (build it with scripts/gpu-bundle.sh)" >&2; exit 2; }
CONSOLE="$(compgen -G "$HERE/lib/junit-platform-console-standalone-*.jar" | head -1)"
[[ -n "$CONSOLE" ]] || { echo "run.sh: JUnit console launcher missing in $HERE/lib" >&2; exit 2; }

# Class path: moe.jar, test jars, test-only dependencies (or the test hook's).
if [[ -n "${MOE4J_CLASS_PATH:-}" ]]; then
  CP="$MOE4J_CLASS_PATH"
else
  CP="$HERE/lib/moe.jar"
  for j in "$HERE"/lib/tests/*.jar "$HERE"/lib/test-deps/*.jar; do [[ -f "$j" ]] && CP="$CP:$j"; done
fi

# LD_LIBRARY_PATH: the NCCL wheel's directory and a driver directory the dynamic linker does not
# search by itself (containers mount the driver at /usr/local/nvidia/lib64), nothing else: not the
# caller's value, never a toolkit's lib64, which would shadow torch's own CUDA libraries in the peers.
NCCL_DIR="$(nccl_dirs | head -1)"
LIBS=""
[[ -n "$NCCL_DIR" ]] && LIBS="$NCCL_DIR"
compgen -G "/usr/local/nvidia/lib64/libcuda.so*" >/dev/null 2>&1 && LIBS="${LIBS:+$LIBS:}/usr/local/nvidia/lib64"
export LD_LIBRARY_PATH="$LIBS"
export PYTHONUNBUFFERED=1
JVM=(--enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -Xss4m -XX:+UseParallelGC
     "-XX:ErrorFile=$OUTDIR/hs_err_%p.log" -XX:-CreateCoredumpOnCrash)
[[ -n "$NCCL_DIR" ]] && JVM+=("-Dmoe4j.nccl.lib=$NCCL_DIR/libnccl.so.2")
# shellcheck disable=SC2206
JVM+=(${MOE4J_JVM_OPTS:-})

: > "$OUTDIR/tests.log"
: > "$OUTDIR/bench.log"
LINES=()      # one summary line per step
FAILED=0
SKIPPED_FOR_NO_GPU=0
RAN_TESTS=0

left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
finish_summary() {
  {
    echo "moe4j GPU verification ($(( $(date +%s) - T0 )) s of a ${DEADLINE} s deadline)"
    cat "$OUTDIR/env.txt" 2>/dev/null | sed -n '1,6p'
    printf '%s\n' "${LINES[@]}"
    echo "files: $(cd "$OUTDIR" && find . -type f | sort | tr '\n' ' ')"
  } > "$OUTDIR/summary.txt"
  cat "$OUTDIR/summary.txt" >&3
  rm -rf "$SCRATCH"
}
# a kill of the whole call (the device tool's limit) still leaves the summary of what finished
trap 'LINES+=("interrupted: the call was killed before the plan ended"); finish_summary; exit 1' TERM INT

# Runs "$@" under the step's timeout (clipped to the deadline); prints the exit code (124: timeout).
run_limited() {
  local limit="$1"; shift
  timeout -k 5 "$limit" "$@"
}

counts() { sed -n "s/.*<testsuite [^>]*\b$2=\"\([0-9]*\)\".*/\1/p" "$1" 2>/dev/null | head -1; }

# JUnit console: one line per test as it finishes (testfeed), into tests.log.
junit_step() { # name limit [jvm flags...] -- selectors...
  local name="$1" limit="$2"; shift 2
  local flags=() sel=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do flags+=("$1"); shift; done
  shift
  sel=("$@")
  local reports="$SCRATCH/junit-$name"
  echo "===== $name: $(date -u +%H:%M:%S)" >> "$OUTDIR/tests.log"
  CUDA_LAUNCH_BLOCKING=1 run_limited "$limit" "$JAVA" "${JVM[@]}" "${flags[@]}" -jar "$CONSOLE" execute \
    --disable-banner --disable-ansi-colors --details=testfeed --class-path "$CP" --include-tag gpu \
    --reports-dir "$reports" "${sel[@]}" >> "$OUTDIR/tests.log" 2>&1 < /dev/null
  local rc=$?
  local x="$reports/TEST-junit-jupiter.xml" t f e s
  t="$(counts "$x" tests)"; f="$(counts "$x" failures)"; e="$(counts "$x" errors)"; s="$(counts "$x" skipped)"
  echo "===== $name: exit $rc" >> "$OUTDIR/tests.log"
  RAN_TESTS=$(( RAN_TESTS + ${t:-0} ))
  if [[ -n "$t" && "$t" != 0 && "$t" == "$s" ]] && grep -q 'no usable GPU' "$OUTDIR/tests.log"; then
    SKIPPED_FOR_NO_GPU=1
  fi
  local verdict="ok"
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then verdict="TIMEOUT after ${limit} s"; FAILED=1
  elif [[ $rc -ge 128 || ( -z "$t" && $rc -ne 0 ) ]]; then verdict="CRASHED (exit $rc)"; FAILED=1
  elif [[ $rc -ne 0 ]]; then verdict="FAILED"; FAILED=1
  fi
  LINES+=("$(printf '%-12s %s: %s run, %s failed, %s errors, %s skipped' "$name" "$verdict" "${t:-?}" "${f:-?}" "${e:-?}" "${s:-?}")")
  if [[ "$verdict" != ok ]]; then  # the step's last failing tests, from its part of tests.log
    while IFS= read -r l; do LINES+=("               $l"); done \
      < <(sed -n "/^===== $name: [0-9]/,\$p" "$OUTDIR/tests.log" | grep -E '(FAILED|ABORTED)' | grep -v '^=====' | tail -5)
  fi
}

# A PyTorch peer: name limit script [args...]; its log and JSON rows go into bench.log (compare.py
# reads the JSON lists there).
peer_one() {
  local name="$1" limit="$2" py="$3"; shift 3
  bench_one "$name" "$limit" python3 -u "$py" --out "$SCRATCH/$name.json" "$@"
  [[ -f "$SCRATCH/$name.json" ]] && { cat "$SCRATCH/$name.json"; echo; } >> "$OUTDIR/bench.log"
}

# One benchmark or peer: name limit command... -> appended to bench.log
bench_one() {
  local name="$1" limit="$2"; shift 2
  echo "===== $name: $*" >> "$OUTDIR/bench.log"
  local start rc
  start=$(date +%s)
  run_limited "$limit" "$@" >> "$OUTDIR/bench.log" 2>&1 < /dev/null
  rc=$?
  echo "===== $name: exit $rc" >> "$OUTDIR/bench.log"
  local verdict="ok"
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then verdict="TIMEOUT"; FAILED=1
  elif [[ $rc -ne 0 ]]; then verdict="FAILED rc=$rc"; FAILED=1
  fi
  LINES+=("$(printf '  %-22s %s in %s s' "$name" "$verdict" "$(( $(date +%s) - start ))")")
}

have_torch_cuda() {
  command -v python3 >/dev/null 2>&1 && [[ -d "$HERE/peers" ]] \
    && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
}

ROWS="${MOE4J_BENCH_ROWS:-4096 16384}"
for entry in "${PLAN[@]}"; do
  IFS='|' read -r name kind tdef _ <<< "$entry"
  [[ "$WANT" == *",$name,"* ]] || continue
  budget=$(left)
  if (( budget < MIN_STEP )); then
    LINES+=("$(printf '%-12s skipped: %s s left before the deadline' "$name" "$budget")")
    continue
  fi
  limit=$(step_timeout "$tdef")
  (( limit > budget )) && limit=$budget
  echo "run.sh: step $name (limit ${limit} s, ${budget} s left)"
  case "$name" in
    env)
      ENV_END=$(( $(date +%s) + limit ))
      env_limited() { # seconds command...: run_limited within what is left of the env step; marks a timeout
        local l=$(( ENV_END - $(date +%s) )) rc
        (( l > $1 )) && l=$1
        shift
        (( l >= 1 )) || { : > "$SCRATCH/env-timeout"; echo "(not run, the env step's time is spent: $1)"; return 124; }
        run_limited "$l" "$@"
        rc=$?
        (( rc == 124 || rc == 137 )) && { : > "$SCRATCH/env-timeout"; echo "(timed out after $l s: $1)"; }
        return $rc
      }
      {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host: $(hostname) kernel $(uname -r) $(uname -m)"
        echo "bundle: $(sed -n 's/^commit: *//p' "$HERE/BUNDLE.txt" 2>/dev/null)"
        echo "java: $(env_limited 10 "$JAVA" -version 2>&1 | head -1)"
        echo "nccl: ${NCCL_DIR:-not found in Python wheels (libnccl from the system, if any)}"
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
        echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-<unset>}"
        echo "driver libraries: $( (ldconfig -p 2>/dev/null | grep -oE '/[^ ]*lib(cuda|nvidia-ml)\.so[^ ]*' ; \
            ls /usr/local/nvidia/lib64/libcuda.so* 2>/dev/null) | sort -u | tr '\n' ' ')"
        echo "----- nvidia-smi"
        if command -v nvidia-smi >/dev/null 2>&1; then
          env_limited 15 nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,clocks.sm,clocks.max.sm,temperature.gpu --format=csv 2>&1
        else
          echo "nvidia-smi not found: no NVIDIA driver on this host"
        fi
        echo "----- cuobjdump of the fatbins in moe.jar"
        CUOBJDUMP="$(command -v cuobjdump 2>/dev/null || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null || true)"
        if [[ -n "$CUOBJDUMP" ]] && command -v python3 >/dev/null 2>&1 && [[ -f "$HERE/lib/moe.jar" ]]; then
          python3 - "$HERE/lib/moe.jar" "$SCRATCH/fatbins" <<'PY'
import sys, zipfile, os
jar, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(jar) as z:
    for n in z.namelist():
        if n.endswith(".fatbin"):
            open(os.path.join(out, os.path.basename(n)), "wb").write(z.read(n))
PY
          for fb in "$SCRATCH"/fatbins/*.fatbin; do
            [[ -f "$fb" ]] || continue
            elf="$(env_limited 20 "$CUOBJDUMP" --list-elf "$fb" 2>&1 | grep -oE 'sm_[0-9]+a?' | sort -u | tr '\n' ' ')"
            hg="$(env_limited 60 "$CUOBJDUMP" -sass "$fb" 2>/dev/null | grep -c HGMMA)"
            echo "$(basename "$fb"): elf ${elf:-none}; HGMMA instructions: ${hg:-0}"
          done
        else
          echo "cuobjdump, python3 or lib/moe.jar missing: no fatbin proof"
        fi
        # slower probes last, so that a cold torch import cannot squeeze out the proofs above
        echo "----- torch"
        if command -v python3 >/dev/null 2>&1; then
          echo "torch: $(env_limited 20 python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -1)"
        else
          echo "torch: no python3"
        fi
        echo "----- moe info (backends, devices, libraries as moe4j sees them)"
        env_limited 30 "$JAVA" "${JVM[@]}" -cp "$CP" org.moe4j.bench.cli.MoeCli info 2>&1 | tail -40
      } > "$OUTDIR/env.txt" 2>&1
      if [[ -f "$SCRATCH/env-timeout" ]]; then
        LINES+=("$(printf '%-12s TIMEOUT: a probe hung, env.txt cut short at %s s' "$name" "$limit")"); FAILED=1
      else
        LINES+=("$(printf '%-12s ok: env.txt' "$name")")
      fi
      ;;
    smoke)
      junit_step "$name" "$limit" -- --select-class org.moe4j.cuda.CudaSmokeGpuTest \
        --select-class org.moe4j.cuda.StreamOrderedMemoryGpuTest --select-class org.moe4j.cuda.kernels.GroupedGemmBenchCheckTest \
        --select-method "org.moe4j.cuda.comm.DeviceCommGpuTest#ncclAtWorldSizeOneMatchesTheCpuReferenceBitForBit" ;;
    routing)
      junit_step "$name" "$limit" -- --select-class org.moe4j.cuda.kernels.CudaRoutingKernelsGpuTest \
        --select-class org.moe4j.cuda.kernels.CudaDispatchKernelsGpuTest ;;
    gemm-mma)
      junit_step "$name" "$limit" -Dmoe4j.gpu.gemmPaths=mma -- --select-class org.moe4j.cuda.kernels.CudaExpertKernelsGpuTest ;;
    gemm-wgmma)
      junit_step "$name" "$limit" -Dmoe4j.gpu.gemmPaths=wgmma -- --select-class org.moe4j.cuda.kernels.CudaExpertKernelsGpuTest ;;
    layer-mma)
      junit_step "$name" "$limit" -Dmoe4j.cuda.gemm=mma -- --select-class org.moe4j.cuda.layer.MoeLayerGpuTest ;;
    layer-wgmma)
      junit_step "$name" "$limit" -Dmoe4j.cuda.gemm=wgmma -- --select-class org.moe4j.cuda.layer.MoeLayerGpuTest ;;
    calibrate)
      if [[ -x "$HERE/calibrate" ]]; then
        run_limited "$limit" "$HERE/calibrate" > "$OUTDIR/calibrate.log" 2>&1 < /dev/null
        rc=$?
        case $rc in
          0) LINES+=("$(printf '%-12s ok: the emulator matches this GPU bit for bit' "$name")") ;;
          3) LINES+=("$(printf '%-12s ok for layouts; numerics differ (tensor-core accumulation order, see calibrate.log)' "$name")") ;;
          2) LINES+=("$(printf '%-12s skipped: no CUDA device of compute capability 9.0 (exit 2)' "$name")") ;;
          4) LINES+=("$(printf '%-12s FAILED: CUDA runtime or driver error, exit 4 (calibrate.log)' "$name")"); FAILED=1 ;;
          124|137) LINES+=("$(printf '%-12s TIMEOUT after %s s (calibrate.log)' "$name" "$limit")"); FAILED=1 ;;
          *) LINES+=("$(printf '%-12s MISMATCH in a layout/semantics family, exit %s (calibrate.log)' "$name" "$rc")"); FAILED=1 ;;
        esac
        while IFS= read -r l; do LINES+=("               $l"); done < <(grep -E ': [0-9]+ cases, ' "$OUTDIR/calibrate.log" | cut -c1-200)
      else
        LINES+=("$(printf '%-12s skipped: no calibrate binary in this bundle (nvcc absent when it was built)' "$name")")
      fi
      ;;
    gemm-bench)
      LINES+=("$(printf '%-12s (bench.log)' "$name")")
      # shellcheck disable=SC2086
      bench_one "GroupedGemmGpuBench" "$limit" "$JAVA" "${JVM[@]}" -cp "$CP" org.moe4j.cuda.kernels.GroupedGemmGpuBench $ROWS
      if have_torch_cuda && [[ -f "$HERE/peers/grouped_gemm_peer.py" ]]; then
        b=$(left); (( b < limit )) && limit=$b
        if (( limit >= MIN_STEP )); then
          peer_one "grouped_gemm_peer" "$limit" "$HERE/peers/grouped_gemm_peer.py" --rows "${ROWS// /,}"
        else
          LINES+=("  grouped_gemm_peer      skipped: deadline")
        fi
      else
        LINES+=("  grouped_gemm_peer      skipped: no python3 with a CUDA-enabled torch (or no peers/)")
      fi
      ;;
    comm)
      junit_step "$name" "$limit" -- --select-class org.moe4j.cuda.comm.DeviceCommGpuTest \
        --select-class org.moe4j.cuda.comm.DispatcherOnVirtualRanksGpuTest --select-class org.moe4j.cuda.comm.NcclMultiProcessGpuTest ;;
    graph)
      junit_step "$name" "$limit" -- --select-class org.moe4j.cuda.layer.SyncFreeLayerStepGpuTest \
        --select-class org.moe4j.cuda.CudaGraphGpuTest --select-class org.moe4j.cuda.layer.LayerStepGraphGpuTest ;;
    bench-more)
      LINES+=("$(printf '%-12s (bench.log)' "$name")")
      for pair in "RouterGpuBench router_peer" "PermuteGpuBench permute_peer"; do
        read -r cls peer <<< "$pair"
        b=$(left); (( b < MIN_STEP )) && { LINES+=("  $cls skipped: deadline"); continue; }
        l=$(( b < limit ? b : limit ))
        # shellcheck disable=SC2086
        bench_one "$cls" "$l" "$JAVA" "${JVM[@]}" -cp "$CP" "org.moe4j.cuda.kernels.$cls" $ROWS
        if have_torch_cuda && [[ -f "$HERE/peers/$peer.py" ]]; then
          b=$(left); l=$(( b < limit ? b : limit ))
          (( l >= MIN_STEP )) && peer_one "$peer" "$l" "$HERE/peers/$peer.py" --tokens "${ROWS// /,}"
        fi
      done
      ;;
    sanitizer)
      SANITIZER="$(command -v compute-sanitizer 2>/dev/null || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
      if [[ -z "$SANITIZER" ]]; then
        LINES+=("$(printf '%-12s skipped: compute-sanitizer not found' "$name")")
      else
        run_limited "$limit" "$SANITIZER" --tool memcheck --target-processes all --error-exitcode 99 \
          "$JAVA" "${JVM[@]}" -Dmoe4j.gpu.small=true -jar "$CONSOLE" execute --disable-banner --disable-ansi-colors \
          --details=testfeed --class-path "$CP" --include-tag gpu \
          --select-class org.moe4j.cuda.kernels.CudaRoutingKernelsGpuTest \
          --select-class org.moe4j.cuda.kernels.CudaDispatchKernelsGpuTest \
          --select-class org.moe4j.cuda.kernels.CudaExpertKernelsGpuTest > "$OUTDIR/sanitizer.log" 2>&1 < /dev/null
        rc=$?
        case $rc in
          0) LINES+=("$(printf '%-12s memcheck clean' "$name")") ;;
          124|137) LINES+=("$(printf '%-12s TIMEOUT after %s s (sanitizer.log)' "$name" "$limit")"); FAILED=1 ;;
          *) LINES+=("$(printf '%-12s FAILED rc=%s (sanitizer.log)' "$name" "$rc")"); FAILED=1 ;;
        esac
      fi
      ;;
  esac
done

n=0
for f in "$OUTDIR"/hs_err_*.log; do
  [[ -f "$f" ]] || continue
  n=$(( n + 1 )); FAILED=1
  if (( n <= 2 )); then LINES+=("JVM crash file: $(basename "$f")")
  else LINES+=("JVM crash file: $(basename "$f") deleted (8-file limit): $(grep -m1 -A1 'Problematic frame' "$f" | tail -1)"); rm -f "$f"; fi
done
if (( SKIPPED_FOR_NO_GPU )); then
  LINES+=("GPU tests SKIPPED: $(grep -m1 -o 'no usable GPU: .*' "$OUTDIR/tests.log" | cut -c1-300)")
fi
trap - TERM INT
finish_summary
if (( FAILED )); then exit 1; fi
if [[ "${MOE4J_REQUIRE_GPU:-0}" == "1" && $SKIPPED_FOR_NO_GPU -eq 1 ]]; then exit 4; fi
exit 0
