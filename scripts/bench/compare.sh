#!/usr/bin/env bash
# moe4j next to PyTorch on this machine: runs the JMH benchmarks of every stage (router, dispatch+combine,
# experts, MoE layer forward and forward+backward), the PyTorch peers on exactly the shapes JMH ran, with the
# same thread count, and writes docs/benchmarks.md (speedup = PyTorch time / moe4j time).
#
#   scripts/bench/compare.sh                      full run (machine should be quiet), writes docs/benchmarks.md
#   scripts/bench/compare.sh --quick              pipeline smoke test: tiny iteration counts, writes
#                                                 build/bench/<run>/benchmarks.md (numbers are noise)
# Options:
#   --stages LIST        comma list of router,dispatch,experts,layer (default: all)
#   --threads N          threads for both sides (default 2)
#   --jmh-args "ARGS"    extra JMH arguments, e.g. "-p tokens=16384" (appended last, so they win)
#   --gpu-results PATH   a GPU run's result file or directory (from the GPU bundle) for the GPU section
#   --out FILE           report path (default docs/benchmarks.md; build/bench/<run>/benchmarks.md with --quick)
#   --render-only DIR    do not measure: re-render the report from an earlier run directory
#   --python PATH        python with torch (default /usr/bin/python3)
# Raw results stay in build/bench/<run>/: jmh.json, shapes.json, peers.json, torch-env.json, run.json, logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/bench"
ORIG_ARGS=("$@")

QUICK=0 STAGES="router,dispatch,experts,layer" THREADS=2 JMH_EXTRA="" GPU="" OUT="" RENDER_ONLY="" PY=/usr/bin/python3
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --stages) STAGES="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --jmh-args) JMH_EXTRA="$2"; shift ;;
    --gpu-results) GPU="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --render-only) RENDER_ONLY="$2"; shift ;;
    --python) PY="$2"; shift ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --threads must be a positive integer, got '$THREADS'" >&2; exit 2; }
[[ -z "$GPU" || -e "$GPU" ]] || { echo "compare.sh: --gpu-results '$GPU' does not exist" >&2; exit 2; }
[[ -x "$PY" ]] || { echo "compare.sh: $PY not found; the PyTorch peers need python3 with torch (Debian: python3-torch)" >&2; exit 2; }

render() { # $1 = run dir, $2 = output file
  local gpu=()
  [[ -n "$GPU" ]] && gpu=(--gpu-results "$GPU")
  "$PY" "$HERE/compare.py" render --run "$1" --out "$2" "${gpu[@]}"
}

if [[ -n "$RENDER_ONLY" ]]; then
  [[ -f "$RENDER_ONLY/jmh.json" ]] || { echo "compare.sh: $RENDER_ONLY/jmh.json not found (not a run directory)" >&2; exit 2; }
  render "$RENDER_ONLY" "${OUT:-$ROOT/docs/benchmarks.md}"
  exit 0
fi

# Benchmark classes of the selected stages.
CLASSES=()
IFS=',' read -ra SEL <<< "$STAGES"
for s in "${SEL[@]}"; do
  case "$s" in
    router) CLASSES+=(RouterBenchmark) ;;
    dispatch) CLASSES+=(DispatchBenchmark) ;;
    experts) CLASSES+=(ExpertsBenchmark) ;;
    layer) CLASSES+=(MoeLayerBenchmark) ;;
    *) echo "compare.sh: unknown stage '$s' (router, dispatch, experts, layer)" >&2; exit 2 ;;
  esac
done

RUN="$ROOT/build/bench/$(date -u +%Y%m%d-%H%M%S)$([[ $QUICK == 1 ]] && echo -quick || true)"
mkdir -p "$RUN"
[[ -z "$OUT" ]] && { [[ $QUICK == 1 ]] && OUT="$RUN/benchmarks.md" || OUT="$ROOT/docs/benchmarks.md"; }
echo "compare.sh: run directory $RUN"
LOAD="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if [[ $QUICK == 0 ]] && awk -v l="$LOAD" 'BEGIN { exit !(l > 0.5) }'; then
  echo "compare.sh: warning: load average $LOAD before measuring: other work competes for the cores and" \
       "2-thread timings (PyTorch's especially) suffer; measure on a quiet machine" >&2
fi

# Same thread count for every pool PyTorch may use (torch's OpenMP pool and OpenBLAS's own pthread pool),
# unless the caller set them (e.g. OPENBLAS_NUM_THREADS=1 to try without the two pools competing for 2 cores);
# the report records the values used.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$THREADS}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$THREADS}"

# 1. PyTorch must call OpenBLAS, or the comparison is meaningless.
"$PY" -c 'import torch' 2>/dev/null || { echo "compare.sh: $PY cannot import torch (Debian: apt-get install python3-torch)" >&2; exit 2; }
if ! "$PY" "$HERE/torch_peers.py" --check-blas --threads "$THREADS" --env-out "$RUN/torch-env.json"; then
  echo "compare.sh: refusing to compare against PyTorch without OpenBLAS: install libopenblas0-pthread" \
       "(apt-get install libopenblas0-pthread), check /etc/alternatives/libblas.so.3-x86_64-linux-gnu points at" \
       "openblas-pthread, and run again." >&2
  exit 3
fi

# 2. Build if stale (./moe does) and list the benchmarks in moe.jar.
"$ROOT/moe" jmh -l > "$RUN/jmh-list.txt"
PRESENT=()
for c in "${CLASSES[@]}"; do
  if grep -q "^org\.moe4j\.bench\.$c\." "$RUN/jmh-list.txt"; then PRESENT+=("$c")
  else echo "compare.sh: $c is not in moe.jar (not merged yet?): its stages are reported as not measured" >&2; fi
done
[[ ${#PRESENT[@]} -gt 0 ]] || { echo "compare.sh: none of the selected benchmarks (${CLASSES[*]}) is in moe.jar" >&2; exit 4; }

# 3. JMH: average time per operation, one fork, N threads inside moe4j (-Dmoe4j.threads for the common pool,
#    -p threads=N for benchmarks that build their own pool; JMH ignores -p for a benchmark without that param).
if [[ $QUICK == 1 ]]; then
  ITER=(-f 1 -wi 1 -w 200ms -i 1 -r 300ms); PEER_REPS=(--reps 3 --budget 2)
else
  ITER=(-f 1 -wi 2 -w 1s -i 5 -r 1s); PEER_REPS=(--reps 15 --budget 15)
fi
REGEX="^org\.moe4j\.bench\.($(IFS='|'; echo "${PRESENT[*]}"))\."
read -ra EXTRA <<< "$JMH_EXTRA"
GIT_COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo '+local changes')"
"$PY" - "$RUN/run.json" "$THREADS" "$QUICK" "$GIT_COMMIT" "$(printf '%q ' scripts/bench/compare.sh "${ORIG_ARGS[@]}")" \
  "$LOAD" "${CLASSES[*]}" "${PRESENT[@]}" <<'EOF'
import datetime, json, os, sys
out, threads, quick, commit, command, load, selected, *present = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
json.dump({"threads": int(threads), "mode": "quick" if quick == "1" else "full", "commit": commit,
           "command": command.strip(), "loadavg": float(load), "selected": selected.split(), "benchmarks": present, "cpu": cpu, "cores": os.cpu_count(),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
          open(out, "w"), indent=1)
EOF
echo "compare.sh: JMH ${PRESENT[*]} (${ITER[*]}, -Dmoe4j.threads=$THREADS)"
"$ROOT/moe" jmh "$REGEX" "${ITER[@]}" -bm avgt -tu ms -rf json -rff "$RUN/jmh.json" \
  -jvmArgsAppend "-Dmoe4j.threads=$THREADS" -p "threads=$THREADS" "${EXTRA[@]}" 2>&1 | tee "$RUN/jmh.log"
[[ -s "$RUN/jmh.json" ]] || { echo "compare.sh: JMH wrote no results (see $RUN/jmh.log)" >&2; exit 4; }

# 4. PyTorch peers on the shapes JMH ran.
"$PY" "$HERE/compare.py" plan --jmh "$RUN/jmh.json" --out "$RUN/shapes.json"
"$PY" "$HERE/torch_peers.py" --shapes "$RUN/shapes.json" --threads "$THREADS" "${PEER_REPS[@]}" \
  --out "$RUN/peers.json" 2>&1 | tee "$RUN/peers.log"

# 5. The report.
render "$RUN" "$OUT"
echo "compare.sh: done: $OUT (raw results in $RUN)"
