#!/usr/bin/env bash
# setup.sh - install what dlcc needs (Debian 12), build it, and train the
# example model end to end.
#
#   bash tools/setup.sh             install + build + train lang/examples/xor.nnl
#   bash tools/setup.sh --no-run    install + build only
#
# Run it as root on a fresh machine (it uses apt-get), or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake flex bison llvm-19-dev llvm-19-tools zlib1g-dev libedit-dev)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build=${DLCC_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)"

if [ "${1:-}" != "--no-run" ]; then
  echo
  echo "== dlcc train lang/examples/xor.nnl"
  "$build"/dlcc train lang/examples/xor.nnl --save "$build"/xor.safetensors
  echo
  echo "== dlcc run lang/examples/xor.nnl --load $build/xor.safetensors"
  "$build"/dlcc run lang/examples/xor.nnl --load "$build"/xor.safetensors
fi
