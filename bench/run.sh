#!/usr/bin/env bash
# bench/run.sh - dlcc against PyTorch (with OpenBLAS) on the same models,
# batch sizes and thread counts, in one invocation.  Prints Markdown tables:
#
#   1. ms per training step (forward, loss, backward, SGD update) for dlcc and
#      PyTorch, their ratio, and dlcc's JIT compile time (parse to JIT ready)
#   2. what fusion gains: dlcc on one thread with and without fusion
#      (`dlcc bench --no-fuse`), step and compile times
#   3. sgemm GFLOP/s: dlcc's GEMM (a model that is one matmul, timed by
#      `dlcc bench --infer --threads 1`) against OpenBLAS through numpy, at
#      square sizes and at the MLP's shapes
#
#   bash bench/run.sh [--threads "1 2"] [--steps N] [--quick]
#
# --threads: the thread counts to run (default: 1 and the number of cores).
# dlcc gets --threads T (its pool: T threads, the caller included); PyTorch
# gets torch.set_num_threads(T) and OPENBLAS_NUM_THREADS=T / OMP_NUM_THREADS=T
# so that it does not oversubscribe.
# --quick: fewer steps and sizes (a smoke run).
#
# The machine's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set here for older
# OpenBLAS builds) make OpenBLAS use an older kernel; the PyTorch and numpy
# runs unset both, in those commands only, and the header says which kernel
# OpenBLAS then runs.  The sgemm table also shows OpenBLAS with the variables
# as set, where they are.
#
# Needs Debian's python3-torch, python3-numpy, python3-threadpoolctl and
# libopenblas0-pthread; installs them with apt-get when missing (never in CI).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
threads="1 $(nproc)"
steps=100
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
  --threads) threads="$2"; shift 2 ;;
  --steps) steps="$2"; shift 2 ;;
  --quick) quick=1; steps=20; shift ;;
  -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
  *) echo "bench/run.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
[ "$threads" = "1 1" ] && threads=1

dlcc=${DLCC:-$root/build/dlcc}
if [ ! -x "$dlcc" ]; then
  cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$root/build" -j"$(nproc)" >/dev/null
fi
py=/usr/bin/python3 # Debian's python, where python3-torch is installed
if ! "$py" -c 'import torch, numpy, threadpoolctl' 2>/dev/null; then
  if [ -n "${CI:-}" ]; then
    echo "bench/run.sh: PyTorch is not installed, and CI does not install it" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy \
    python3-threadpoolctl libopenblas0-pthread >/dev/null
fi
torch_bench="$root/bench/torch_bench.py"
blas_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A field of `dlcc bench` output: field FILE 'train step' -> the median ms.
median_of() { sed -n "s/^  $2: median \([0-9.]*\) ms.*/\1/p" "$1"; }
compile_of() { sed -n 's/^  compile: \([0-9.]*\) ms.*/\1/p' "$1"; }

echo "## Machine"
echo
echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" \
  "($(lscpu | sed -n 's/^Flags:.*\(avx512f\).*/AVX-512/p;' | head -1)$(lscpu | grep -q avx2 && echo ', AVX2'))"
echo "- dlcc: $("$dlcc" --version)"
echo "- PyTorch: $("$py" -c 'import torch; print(torch.__version__)')," \
  "BLAS: $("${blas_env[@]}" "$py" "$torch_bench" blas | head -1)"
echo "- OPENBLAS_CORETYPE here: ${OPENBLAS_CORETYPE:-unset} (unset for the PyTorch and numpy runs)"
echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share the cores)"
echo "- command: bash bench/run.sh --threads \"$threads\" --steps $steps$([ $quick = 1 ] && echo ' --quick')"
echo

echo "## Training step (median ms per step, $steps steps after warm-up)"
echo
echo "| model | batch | threads | dlcc ms | PyTorch ms | dlcc / PyTorch | dlcc JIT compile ms |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
ran=""
not_run=""
for spec in mlp:64 mlp:256 lenet5:64 lstm:32 transformer:16; do
  model=${spec%%:*}
  batch=${spec##*:}
  for t in $threads; do
    out="$tmp/$model.$batch.$t"
    if "$dlcc" bench "$root/bench/$model.nnl" --batch "$batch" --steps "$steps" --threads "$t" \
      >"$out" 2>&1; then
      d=$(median_of "$out" "train step")
      c=$(compile_of "$out")
      case " $ran " in *" $model "*) ;; *) ran="$ran $model" ;; esac
    else
      d=""
      c=""
      msg=$(grep -m1 -E 'error' "$out" | sed 's/^[^ ]*: error: //' | cut -c1-90)
      case "$not_run" in *"$model:"*) ;; *) not_run="$not_run"$'\n'"- $model: $msg" ;; esac
    fi
    p=$(OPENBLAS_NUM_THREADS=$t OMP_NUM_THREADS=$t "${blas_env[@]}" "$py" "$torch_bench" \
      train "$model" "$batch" "$t" "$steps")
    if [ -n "$d" ]; then
      ratio=$(awk -v a="$d" -v b="$p" 'BEGIN { printf "%.2f", a / b }')
      echo "| $model | $batch | $t | $d | $p | $ratio | $c |"
    else
      echo "| $model | $batch | $t | not run | $p | | |"
    fi
  done
done
echo
echo "dlcc ran:${ran:- none}."
[ -n "$not_run" ] && echo "Not run by dlcc (what it said):$not_run"
echo

echo "## What fusion gains (dlcc, one thread, median ms per step)"
echo
echo "| model | batch | fused ms | unfused ms | fused / unfused | fused compile ms | unfused compile ms | kernels per step, fused / unfused |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for spec in mlp:64 mlp:256 lenet5:64 lstm:32 transformer:16; do
  model=${spec%%:*}
  batch=${spec##*:}
  for fuse in "" --no-fuse; do
    "$dlcc" bench "$root/bench/$model.nnl" --batch "$batch" --steps "$steps" --threads 1 --stats \
      $fuse >"$tmp/fuse$fuse.out" 2>&1 || true
  done
  d1=$(median_of "$tmp/fuse.out" "train step")
  d2=$(median_of "$tmp/fuse--no-fuse.out" "train step")
  [ -n "$d1" ] && [ -n "$d2" ] || continue
  k1=$(sed -n 's/^  train_step *\([0-9]*\) kernels.*/\1/p' "$tmp/fuse.out")
  k2=$(sed -n 's/^  train_step *\([0-9]*\) kernels.*/\1/p' "$tmp/fuse--no-fuse.out")
  echo "| $model | $batch | $d1 | $d2 | $(awk -v a="$d1" -v b="$d2" 'BEGIN { printf "%.2f", a / b }') |" \
    "$(compile_of "$tmp/fuse.out") | $(compile_of "$tmp/fuse--no-fuse.out") | $k1 / $k2 |"
done
echo

echo "## sgemm, one thread (GFLOP/s, C[m,p] = A[m,k] B[k,p])"
echo
header="| m x k x p | dlcc | OpenBLAS (auto kernel) | dlcc / OpenBLAS |"
rule="| --- | ---: | ---: | ---: |"
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  header="$header OpenBLAS (CORETYPE=$OPENBLAS_CORETYPE) |"
  rule="$rule ---: |"
fi
echo "$header"
echo "$rule"
# The square sizes of the GEMM goal, then the products of the benchmark
# models (a: A stored transposed, b: B): the MLP's layers and its backward
# products, LeNet-5's per-sample convolution products and filter gradients,
# the LSTM's per-step products, the Transformer's attention scores.
sizes="64x64x64 128x128x128 256x256x256 512x512x512 1024x1024x1024 64x784x256 64x256x128 64x128x10
  256x784x256 256x256x128 128x64x10a 64x128x256b 6x25x784 16x150x64 6x784x25b 16x64x150b
  32x64x512 32x128x512 64x32x64b"
[ $quick = 1 ] && sizes="64x64x64 256x256x256 64x784x256"
for s in $sizes; do
  layout=${s//[0-9x]/}
  IFS=x read -r m k p <<<"${s//[ab]/}"
  f="$tmp/mm_$s.nnl"
  case "$layout" in
    a) # C [m, p] = A^T D with A stored [k, m]: the batch dimension is k
      printf 'model mm {\n  input a : [N, %d]\n  input d : [N, %d]\n  out = transpose(a) @ d\n}\n' \
        "$m" "$p" >"$f"
      batch=$k ;;
    b)
      printf 'model mm {\n  input a : [N, %d]\n  param W : [%d, %d] = uniform(-1, 1)\n  out = a @ transpose(W)\n}\n' \
        "$k" "$p" "$k" >"$f"
      batch=$m ;;
    *)
      printf 'model mm {\n  input a : [N, %d]\n  param W : [%d, %d] = uniform(-1, 1)\n  out = a @ W\n}\n' \
        "$k" "$k" "$p" >"$f"
      batch=$m ;;
  esac
  gsteps=$(awk -v w="$m $k $p" 'BEGIN { split(w, d, " "); s = int(2e9 / (2 * d[1] * d[2] * d[3]));
    print (s < 20 ? 20 : s > 2000 ? 2000 : s) }')
  "$dlcc" bench "$f" --batch "$batch" --steps "$gsteps" --infer --threads 1 >"$tmp/mm.out"
  ms=$(median_of "$tmp/mm.out" inference)
  d=$(awk -v ms="$ms" -v m="$m" -v k="$k" -v p="$p" 'BEGIN { printf "%.1f", 2 * m * k * p / (ms * 1e6) }')
  o=$(OPENBLAS_NUM_THREADS=1 "${blas_env[@]}" "$py" "$torch_bench" sgemm "$m" "$k" "$p" 1 $layout)
  line="| $s | $d | $o | $(awk -v a="$d" -v b="$o" 'BEGIN { printf "%.2f", a / b }') |"
  if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
    line="$line $(OPENBLAS_NUM_THREADS=1 "$py" "$torch_bench" sgemm "$m" "$k" "$p" 1 $layout) |"
  fi
  echo "$line"
done
