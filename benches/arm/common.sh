# Shared by benches/arm/run.sh (language model vs llama.cpp) and benches/arm/clip.sh (image
# towers vs ONNX Runtime): sourced, not run. Expects `set -euo pipefail`, the repository as the
# working directory, and `work` (where the plugin and the outputs go) set.

# step NAME CMD...: runs CMD as one named step, its output on stderr (stdout is the table),
# and prints its wall time there.
step() {
  local name=$1 start=$SECONDS
  shift
  echo "== $name" >&2
  "$@" >&2
  echo "== $name: $((SECONDS - start)) s" >&2
}

# The instruction-counting TCG plugin (benches/arm/insn_count.c), for the host's qemu-aarch64.
build_plugin() {
  gcc -shared -fPIC -O2 -Wall -o "$work/insn_count.so" benches/arm/insn_count.c
}

# The aarch64 glimpse-bench counted: $glimpse, cross-built (release) unless BUILD_GLIMPSE=0.
build_glimpse() {
  bash .ci/install-arm       # Debian's rustc-web with its aarch64 std, the cross gcc, qemu-user
  if [ "${BUILD_GLIMPSE:-1}" = 1 ]; then
    # cargo decides what is stale; when nothing is, this takes seconds.
    cargo +deb-web build --release --locked --target aarch64-unknown-linux-gnu -p glimpse-benches
  fi
  [ -x "$glimpse" ] || { echo "no $glimpse" >&2; exit 1; }
  # Not rebuilt here: say so if sources are newer than the binary (it may be another tree's).
  if [ "${BUILD_GLIMPSE:-1}" != 1 ] && [ -n "$(find runtime benches/src Cargo.lock -newer "$glimpse" -print -quit)" ]; then
    echo "warning: sources newer than $glimpse: it may not be this tree's Glimpse" >&2
  fi
}

# count CPU OUT PROGRAM ARGS...: runs the aarch64 program under qemu-user on CPU with the
# plugin, its stdout to OUT; prints the executed guest instructions. QEMU_ARGS (words) go to
# qemu first (`-L CHROOT`); BLOCKS=PATH writes per-block counts there (benches/arm/symbols.py).
count() {
  local cpu=$1 out=$2 plugin="$work/insn_count.so,out=$2.count"
  shift 2
  [ -n "${BLOCKS:-}" ] && plugin="$plugin,blocks=$BLOCKS"
  rm -f "$out.count"
  # shellcheck disable=SC2086 # QEMU_ARGS are words
  qemu-aarch64 ${QEMU_ARGS:-} -cpu "$cpu" -plugin "$plugin" "$@" >"$out"
  read -r _ n <"$out.count"
  echo "$n"
}

# json FILE KEY: a field of a JSON file, lists as comma-separated numbers.
json() {
  python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(",".join(map(str, v)) if isinstance(v, list) else v)' "$1" "$2"
}

# ratio A B [DIGITS]: A / B.
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, a / b }'; }
# millions N: N as millions, one decimal ("141.8 M"); giga N: as billions ("1.43 G").
millions() { awk -v n="$1" 'BEGIN { printf "%.1f M", n / 1e6 }'; }
giga() { awk -v n="$1" 'BEGIN { printf "%.3f G", n / 1e9 }'; }

# The line every table opens with: qemu's version and the Glimpse binary counted.
provenance() {
  echo "Guest instructions under qemu-user $(qemu-aarch64 --version | head -1 | sed 's/.*version //'), one thread;"
  echo "Glimpse: $glimpse built $(date -u -r "$glimpse" '+%F %H:%M UTC') (tree at $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
}
