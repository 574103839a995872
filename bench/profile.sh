#!/usr/bin/env bash
# profile.sh - where a model's training step spends its time.
#
#   bash bench/profile.sh bench/mlp.nnl [BATCH] [STEPS] [THREADS]
#
# Compiles the model ahead of time (dlcc compile, so the kernels have
# symbols), links bench/step_main.c against it, runs STEPS training steps
# under `perf record`, and prints the functions that took 0.5 % of the
# samples or more (`perf report`).  Needs perf (linux-perf) and a build
# (tools/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bash bench/profile.sh FILE.nnl [BATCH] [STEPS] [THREADS]}
batch=${2:-64}
steps=${3:-2000}
threads=${4:-1}
build=${DLCC_BUILD_DIR:-build}
name=$(sed -n 's/^model \([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' "$model" | head -1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build"/dlcc compile "$model" --batch "$batch" -o "$work/$name.o" --header "$work/$name.h"
cc -O2 -I runtime -I "$work" -DMODEL_PREFIX="$name" bench/step_main.c "$work/$name.o" \
  "$build"/libdlrt.a -lm -lpthread -lz -o "$work/step"
"$work/step" 20 "$batch" "$threads" >/dev/null # warm-up
perf record -q -o "$work/perf.data" -- "$work/step" "$steps" "$batch" "$threads"
perf report -i "$work/perf.data" --stdio --no-children --percent-limit 0.5 \
  --sort symbol 2>/dev/null | grep -v '^#' | grep -v '^$'
