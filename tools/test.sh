#!/usr/bin/env bash
# test.sh - build and run the whole test suite: the release build, then the
# same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   bash tools/test.sh            both builds
#   bash tools/test.sh --fast     the release build only
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --no-run
jobs=$(nproc)
echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j"$jobs"
if [ "${1:-}" != "--fast" ]; then
  echo "== tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DDLCC_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi
