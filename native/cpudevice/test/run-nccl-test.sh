#!/usr/bin/env bash
# Builds and runs the standalone test of the CPU device's NCCL subset (nccl.cpp with stubbed
# cpudev:: hooks). Exit status: the test's. Usage: run-nccl-test.sh [extra g++ flags, e.g. -fsanitize=thread]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/.."
out="$(mktemp -d "${TMPDIR:-/tmp}/moe4j-nccl-test.XXXXXX")"
trap 'rm -rf "$out"' EXIT
${CXX:-g++} -std=c++17 -O1 -g -pthread -Wall -Wextra "$@" -I"$src/include" -I"$src" \
    "$src/nccl.cpp" "$here/nccl_test.cpp" -o "$out/nccl_test" -lrt
timeout "${MOE4J_NCCL_TEST_TIMEOUT_S:-120}" "$out/nccl_test"
