#!/usr/bin/env bash
# Builds gpu-bundle/: a self-contained folder that runs moe4j's GPU tests and GPU benchmarks on a
# host with an NVIDIA driver but no JDK, Maven or network (see docs/gpu.md).
#
#   scripts/gpu-bundle.sh [OUT_DIR]                  build (default OUT_DIR: <repo>/gpu-bundle)
#   scripts/gpu-bundle.sh --check DIR                verify an existing bundle's layout and size
#
# Layout:
#   run.sh                         the one GPU call: the verification plan under a global deadline (scripts/gpu-run.sh)
#   jre/                           jlinked JDK 25 runtime (modules: jdeps of moe.jar minus java.desktop, + test needs)
#   lib/moe.jar                    every module + runtime dependencies (shaded), fatbins inside
#   lib/junit-platform-console-standalone-<v>.jar
#   lib/tests/<module>-tests.jar   each module's test classes
#   lib/test-deps/*.jar            test-only dependencies not already in moe.jar
#   calibrate                      CPU-device calibration: emulated PTX vs this GPU (native/cpudevice/calibration)
#   peers/*.py                     PyTorch peers of the GPU benchmarks
# The fatbins live only inside moe.jar (run.sh extracts them for cuobjdump).
#   BUNDLE.txt                     commit, date, JDK, modules, file sizes
# Environment: MOE4J_BUNDLE_MODULES replaces the jlink module list; MOE4J_BUNDLE_MAX_MB (default 60).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAX_MB="${MOE4J_BUNDLE_MAX_MB:-60}"
# Always needed besides jdeps' answer: Vector API, JUnit's jar scanning (zipfs), JMH (management).
EXTRA_MODULES="jdk.incubator.vector,java.logging,java.management,jdk.management,jdk.unsupported,jdk.zipfs"
REQUIRED=(run.sh jre/bin/java lib/moe.jar lib/tests BUNDLE.txt)

check_bundle() { # DIR -> 0 when complete and small enough, else prints what is wrong
  local dir="$1" bad=0 f mb
  for f in "${REQUIRED[@]}"; do
    [[ -e "$dir/$f" ]] || { echo "gpu-bundle: $dir/$f is missing" >&2; bad=1; }
  done
  compgen -G "$dir/lib/junit-platform-console-standalone-*.jar" >/dev/null \
    || { echo "gpu-bundle: $dir/lib/junit-platform-console-standalone-*.jar is missing" >&2; bad=1; }
  compgen -G "$dir/lib/tests/*-tests.jar" >/dev/null \
    || { echo "gpu-bundle: no test jars in $dir/lib/tests" >&2; bad=1; }
  [[ -x "$dir/run.sh" ]] || { echo "gpu-bundle: $dir/run.sh is not executable" >&2; bad=1; }
  mb=$(( ($(du -sb "$dir" | cut -f1) + 1048575) / 1048576 ))
  (( mb <= MAX_MB )) || { echo "gpu-bundle: $dir is $mb MB, over the $MAX_MB MB limit" >&2; bad=1; }
  return $bad
}

if [[ "${1:-}" == "--check" ]]; then
  check_bundle "${2:?usage: gpu-bundle.sh --check DIR}" && echo "gpu-bundle: $2 is complete"
  exit $?
fi
OUT="${1:-$ROOT/gpu-bundle}"

find_jdk() {
  local c v
  for c in "${MOE4J_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/* /opt/java/* /opt/jdk*; do
    [[ -n "$c" && -x "$c/bin/jlink" && -x "$c/bin/jdeps" ]] || continue
    v="$("$c/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -1)"
    [[ -n "$v" && "$v" -ge 25 ]] && { echo "$c"; return 0; }
  done
  return 1
}
JDK="$(find_jdk)" || { echo "gpu-bundle: no JDK >= 25 with jlink found (set JAVA_HOME)" >&2; exit 2; }
export JAVA_HOME="$JDK"
CONSOLE_VERSION="$(sed -n 's:.*<junit.platform.version>\([0-9.]*\)</junit.platform.version>.*:\1:p' "$ROOT/pom.xml" | head -1)"
: "${CONSOLE_VERSION:?junit.platform.version not found in pom.xml}"

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/lib/tests" "$STAGE/lib/test-deps"

cd "$ROOT"
MVN=(mvn -B -q -ntp)
export MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow"
echo "gpu-bundle: building the reactor (tests compiled, not run) with $JDK"
# Test-scoped dependencies only: compile/runtime ones are already shaded into moe.jar; JUnit is in the console jar.
"${MVN[@]}" -DskipTests package dependency:copy-dependencies -DexcludeScope=runtime \
  -DexcludeGroupIds=org.moe4j,org.junit.jupiter,org.junit.platform,org.opentest4j,org.apiguardian,com.fasterxml.jackson.core \
  -DexcludeArtifactIds=jmh-generator-annprocess -DoutputDirectory="$STAGE/lib/test-deps"
[[ -f moe-bench/target/moe.jar ]] || { echo "gpu-bundle: moe-bench/target/moe.jar missing (build failed?)" >&2; exit 1; }
"${MVN[@]}" dependency:copy -Dartifact="org.junit.platform:junit-platform-console-standalone:$CONSOLE_VERSION" \
  -DoutputDirectory="$STAGE/lib" -N

cp moe-bench/target/moe.jar "$STAGE/lib/moe.jar"
for m in */pom.xml; do
  mod="$(dirname "$m")"
  tc="$mod/target/test-classes"
  if [[ -d "$tc" ]] && [[ -n "$(find "$tc" -name '*.class' -print -quit)" ]]; then
    "$JDK/bin/jar" --create --file "$STAGE/lib/tests/$mod-tests.jar" -C "$tc" .
  fi
done
# the CPU device's calibration program (run.sh runs it as step 8, calibrate); needs nvcc
bash native/cpudevice/calibration/build.sh "$STAGE/calibrate" || { echo "gpu-bundle: calibration build failed" >&2; exit 1; }
compgen -G "moe-cuda/target/classes/org/moe4j/cuda/kernels/*.fatbin" >/dev/null \
  || echo "gpu-bundle: WARNING: no fatbins (nvcc absent at build time): GPU tests will skip with 'kernels were not built'"

if [[ -n "${MOE4J_BUNDLE_MODULES:-}" ]]; then
  MODULES="$MOE4J_BUNDLE_MODULES"
else
  DEPS="$("$JDK/bin/jdeps" --print-module-deps --ignore-missing-deps --multi-release 25 \
    "$STAGE/lib/moe.jar" "$STAGE"/lib/tests/*.jar 2>/dev/null || echo java.base)"
  # java.desktop (XChart's AWT) alone adds ~15 MB; charts are not drawn on the GPU host.
  MODULES="$(echo "$DEPS,$EXTRA_MODULES" | tr ',' '\n' | grep -v '^java.desktop$' | sort -u | paste -sd, -)"
fi
echo "gpu-bundle: jlink $MODULES"
"$JDK/bin/jlink" --add-modules "$MODULES" --strip-debug --no-man-pages --no-header-files --compress zip-9 \
  --output "$STAGE/jre" 2>&1 | grep -v 'Using incubator modules' || true
[[ -x "$STAGE/jre/bin/java" ]] || { echo "gpu-bundle: jlink failed" >&2; exit 1; }
if command -v strip >/dev/null; then strip --strip-unneeded "$STAGE/jre/lib/server/libjvm.so" || true; fi

cp scripts/gpu-run.sh "$STAGE/run.sh"
chmod +x "$STAGE/run.sh"
# PyTorch peers of the GPU benchmarks (run.sh runs them when python3 with a CUDA torch exists there)
if compgen -G "scripts/gpu-peers/*.py" >/dev/null; then
  mkdir -p "$STAGE/peers" && cp scripts/gpu-peers/*.py "$STAGE/peers/"
fi
{
  echo "moe4j GPU bundle"
  echo "commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "built:   $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "jdk:     $("$STAGE/jre/bin/java" -version 2>&1 | head -1)"
  echo "modules: $MODULES"
  echo "files:"
  (cd "$STAGE" && find . -type f \( -name '*.jar' -o -name '*.fatbin' -o -name '*.sh' -o -name '*.txt' -o -name '*.py' \) -printf '  %-60p %10s\n' | sort)
} > "$STAGE/BUNDLE.txt"

rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
cp -a "$STAGE" "$OUT"
chmod 755 "$OUT"
check_bundle "$OUT"
echo "gpu-bundle: $OUT ($(du -sh "$OUT" | cut -f1)); on the GPU host run: $OUT/run.sh \$OUT"
