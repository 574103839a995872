#!/usr/bin/env bash
# lit.sh - run the RUN: lines of one test file, LLVM lit style.
#
#   # RUN: %dlcc emit ir %s | FileCheck %s
#
# Substitutions: %s the test file, %ckpt_check the checkpoint checker, %pty_drive the
# pseudo-terminal driver, %S its directory, %t a scratch path
# unique to the test, %dlcc the compiler, %cc the C compiler, %dlrt_lib the
# runtime library, %dlrt_inc its header directory, %root the source tree.
# LLVM's FileCheck and `not` come first on PATH.  A line ending in \ continues.
# A test whose lines contain REQUIRES: ptxas is skipped (exit 77) when ptxas
# is not installed; REQUIRES: pty, when no pseudo-terminal can be opened;
# likewise REQUIRES: mnist, fashion-mnist, fortunes or a program's name.
set -u
test_file=$1
: "${DLCC:?}" "${LLVM_BIN:?}" "${DLCC_ROOT:?}"
export PATH="$LLVM_BIN:$PATH"
tmp_root=${DLCC_TEST_TMP:-${TMPDIR:-/tmp}/dlcc-tests}
mkdir -p "$tmp_root"
scratch=$(mktemp -d "$tmp_root/t.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

if grep -q 'REQUIRES: ptxas' "$test_file"; then
  PTXAS=${PTXAS:-$(command -v ptxas || ls /usr/local/cuda/bin/ptxas 2>/dev/null || true)}
  if [ -z "$PTXAS" ]; then
    echo "SKIPPED: ptxas (CUDA toolkit) is not installed"
    exit 77
  fi
  export PATH="$(dirname "$PTXAS"):$PATH"
fi

if grep -q 'REQUIRES: pty' "$test_file"; then
  if ! "${PTY_DRIVE:?}" --probe; then
    echo "SKIPPED: no pseudo-terminal"
    exit 77
  fi
fi
# Data sets that tools/setup.sh installs, and tools the tests call: a test
# that names one in a REQUIRES: line is skipped where it is missing.
data_root=${DLCC_DATA:-${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/dlcc}
for need in $(sed -n 's/.*REQUIRES: *//p' "$test_file"); do
  case "$need" in
    ptxas | pty) continue ;;
    mnist) have="$data_root/mnist/t10k-labels-idx1-ubyte" ;;
    fashion-mnist) have=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ;;
    fortunes) have=/usr/share/games/fortunes/fortunes ;;
    *) have=$(command -v "$need" || true) ;;
  esac
  if [ -z "$have" ] || [ ! -e "$have" ]; then
    echo "SKIPPED: $need is not installed (tools/setup.sh installs it)"
    exit 77
  fi
done

runs=()
cur=""
while IFS= read -r line; do
  case "$line" in
    *RUN:*) ;;
    *) continue ;;
  esac
  part=${line#*RUN:}
  if [[ "$part" == *\\ ]]; then
    cur+="${part%\\} "
    continue
  fi
  runs+=("$cur$part")
  cur=""
done < "$test_file"

if [ ${#runs[@]} -eq 0 ]; then
  echo "error: no RUN: lines in $test_file"
  exit 1
fi

sdir=$(cd "$(dirname "$test_file")" && pwd)
for cmd in "${runs[@]}"; do
  cmd=${cmd//%dlrt_lib/$DLRT_LIB}
  cmd=${cmd//%dlrt_inc/$DLRT_INC}
  cmd=${cmd//%ckpt_check/$CKPT_CHECK}
  cmd=${cmd//%pty_drive/${PTY_DRIVE:-pty_drive}}
  cmd=${cmd//%dlcc/$DLCC}
  cmd=${cmd//%cc/${CC:-cc}}
  cmd=${cmd//%root/$DLCC_ROOT}
  cmd=${cmd//%s/$test_file}
  cmd=${cmd//%S/$sdir}
  cmd=${cmd//%t/$scratch/t}
  echo "RUN: $cmd"
  if ! (cd "$scratch" && bash -o pipefail -c "$cmd"); then
    echo "FAILED: $cmd"
    exit 1
  fi
done
exit 0
