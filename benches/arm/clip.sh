#!/usr/bin/env bash
# CLIP image towers on ARM without ARM hardware: guest instructions executed per image under
# qemu-user, counted by the TCG plugin (benches/arm/insn_count.c), for Glimpse, for plain tract
# on the same file (Glimpse with GLIMPSE_RAW_TRACT=1: tract's own operators, none of
# Glimpse's passes or kernels) and for ONNX Runtime's own manylinux aarch64 wheel, one thread,
# for each emulated CPU. Instructions are a deterministic proxy for time: they see the work, not
# memory stalls or clock speed, and count a NEON instruction as one.
#
#   bash benches/arm/clip.sh            # prints the markdown table on stdout, progress on stderr
#   bash benches/arm/clip.sh --write    # ...and appends it to BENCHMARKS.md (date, CPUs)
#   bash benches/arm/clip.sh --setup    # only the chroot (and the models if missing)
#
# Environment:
#   ARM_CPUS      qemu CPUs to measure                 (default "cortex-a76 cortex-a53")
#   IMAGES_SHORT  images of the short run              (default 1)
#   IMAGES_LONG   images of the long run               (default 3)
#   ORT_BUNDLE    the CLIP bundle                      (default models/clip-vit-b32-random;
#                 built with tools/make_fixtures.py + tools/quantize.py when missing)
#   ARM_CHROOT    the arm64 Debian chroot              (default target/arm-chroot)
#   GLIMPSE_BENCH, BUILD_GLIMPSE: as for benches/arm/run.sh
#
# What is measured (per CPU and model): I(N) is a whole run (ORT: benches/arm/ort_image.py's
# Python start, imports, session creation, one warm-up image, N images; Glimpse and tract:
# `glimpse-bench speed --only image`, its load, one warm-up image, N images); per image is
# (I(N2) - I(N1)) / (N2 - N1), so everything but the images cancels. Glimpse's f16 row
# (`--precision auto`: f16 arithmetic where the CPU has it) is on CPUs with FEAT_FP16 only.
#
# How ORT runs: the pinned onnxruntime (tools/requirements.txt, the x86 comparison's version)
# from PyPI, in an arm64 Debian bookworm chroot built here (debootstrap --foreign, the second
# stage under binfmt's qemu-user-static). It is counted with the host's dynamic qemu-aarch64
# (the static one cannot load plugins) and `-L CHROOT`, which looks absolute paths up in the
# chroot first. qemu 7.2 passes the host's x86 /proc/cpuinfo through, on which ORT's cpuinfo
# library segfaults, so an ARM one for the emulated CPU (its part number and Features line) is
# written to CHROOT/proc/cpuinfo, with sys/devices/system/cpu/{possible,present}, before each
# CPU's runs. ORT's kernel choice follows the HWCAPs qemu gives the emulated CPU (the A53's
# cpuinfo file on -cpu cortex-a76 still runs the SDOT kernels, same count within 0.05%); the
# SDOT/UDOT column (benches/arm/ort_image.py dot: the executed blocks of ORT's library,
# disassembled) says whether its int8 dot-product kernels ran.
#
# The int8 model is tools/quantize.py's: `quantize_dynamic` with its default operator types,
# as users run it (MatMulInteger with DynamicQuantizeLinear, and the patch embedding as
# ConvInteger).
#
# Whole run (2 CPUs, defaults, chroot and models present): ~15 min, most of it the fp32 runs
# (TCG emulates NEON floating point slowly). Once: the chroot ~6 min (its second stage under
# emulation), the models ~1 min once target/clip-tools-venv has tools/requirements.txt (torch
# pulls ~6 GB from PyPI: several minutes more).
set -euo pipefail
shopt -s inherit_errexit    # a failing qemu run inside $(...) stops the script too
cd "$(dirname "$0")/../.."

setup_only=0
write=0
for arg in "$@"; do
  case $arg in
    --setup) setup_only=1 ;;
    --write) write=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (--setup, --write)" >&2; exit 2 ;;
  esac
done

cpus=${ARM_CPUS:-cortex-a76 cortex-a53}
n1=${IMAGES_SHORT:-1}
n2=${IMAGES_LONG:-3}
bundle=${ORT_BUNDLE:-models/clip-vit-b32-random}
chroot=${ARM_CHROOT:-target/arm-chroot}
work=target/arm-insn
suite=bookworm
mirror=http://deb.debian.org/debian
# The versions the x86 side uses (tools/requirements.txt).
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" tools/requirements.txt; }
ort_version=$(pin onnxruntime)
numpy_version=$(pin numpy)
[ -n "$ort_version" ] && [ -n "$numpy_version" ] || { echo "no onnxruntime/numpy pins in tools/requirements.txt" >&2; exit 1; }
mkdir -p "$work"

glimpse=${GLIMPSE_BENCH:-target/aarch64-unknown-linux-gnu/release/glimpse-bench}
# shellcheck source=benches/arm/common.sh
. benches/arm/common.sh   # step, build_plugin, build_glimpse, count, json, ratio, giga

# ---- Host tools: debootstrap, qemu-user (dynamic, for plugins) and -static (binfmt). ----
host_tools() {
  local need=()
  for p in debootstrap qemu-user qemu-user-static binfmt-support gcc binutils-aarch64-linux-gnu; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # binfmt_misc: in a container nothing mounts it. The F flag (qemu-user-static's default)
  # opens the interpreter now, so it also runs inside the chroot.
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64
  fi
  grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || { echo "binfmt qemu-aarch64 not enabled" >&2; exit 1; }
}

# ---- The arm64 chroot with python3 and the pinned onnxruntime. Idempotent. ----
# Mounted only while the second stage and pip run (debootstrap mounts and unmounts /proc
# itself); -L later needs a plain directory at CHROOT/proc for the fake cpuinfo.
unmount_chroot() {
  local m
  for m in proc sys dev/pts dev; do
    if mountpoint -q "$chroot/$m" 2>/dev/null; then umount "$chroot/$m" || umount -l "$chroot/$m"; fi
  done
}
# CHROOT/proc as an empty plain directory: debootstrap's first stage in a container leaves a
# symlink to the host's /proc there (never write through that), an earlier run the fake cpuinfo.
clear_proc() {
  if [ -L "$chroot/proc" ]; then rm "$chroot/proc"; fi
  mkdir -p "$chroot/proc"
  if ! mountpoint -q "$chroot/proc"; then rm -f "$chroot/proc/cpuinfo"; fi
}
build_chroot() {
  local python=$chroot/usr/bin/python3
  if [ -e "$chroot" ] && [ ! -e "$chroot/debootstrap/debootstrap" ] && [ ! -x "$python" ]; then
    echo "$chroot: an interrupted first stage; starting again" >&2
    unmount_chroot
    rm -rf --one-file-system "$chroot"
  fi
  if [ ! -e "$chroot" ]; then
    mkdir -p "$(dirname "$chroot")"
    debootstrap --arch=arm64 --foreign --variant=minbase \
      --include=python3,python3-pip,ca-certificates "$suite" "$chroot" "$mirror"
  fi
  if [ -e "$chroot/debootstrap/debootstrap" ]; then
    clear_proc
    trap unmount_chroot EXIT
    chroot "$chroot" /debootstrap/debootstrap --second-stage
    unmount_chroot
    trap - EXIT
  fi
  # pip inside: the host's pip configuration and CA bundle, and its resolver configuration.
  if ! grep -qx "$ort_version $numpy_version" "$chroot/.glimpse-ort" 2>/dev/null; then
    cp /etc/resolv.conf "$chroot/etc/resolv.conf"
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$chroot/etc/pip.conf"
    cp /etc/ssl/certs/ca-certificates.crt "$chroot/etc/ssl/certs/ca-certificates.crt"
    clear_proc
    trap unmount_chroot EXIT
    mount -t proc proc "$chroot/proc"
    # Debian's Python is "externally managed"; this chroot exists for ORT alone.
    chroot "$chroot" env PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_FIND_LINKS= \
      python3 -m pip install --quiet --no-cache-dir --break-system-packages --root-user-action=ignore \
      "onnxruntime==$ort_version" "numpy==$numpy_version"
    unmount_chroot
    trap - EXIT
    echo "$ort_version $numpy_version" >"$chroot/.glimpse-ort"
  fi
  echo "chroot $chroot: $(cat "$chroot/etc/debian_version"), onnxruntime $ort_version, numpy $numpy_version"
}

# write_cpuinfo CPU: the ARM /proc/cpuinfo and CPU lists qemu -L shows the guest for CPU (4
# cores, as a Raspberry Pi 5 or 3 reports them).
write_cpuinfo() {
  local features part variant revision
  case $1 in
    cortex-a76)
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
      part=0xd0b variant=0x4 revision=1 ;;
    cortex-a53)
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
      part=0xd03 variant=0x0 revision=4 ;;
    *) echo "write_cpuinfo: no cpuinfo for $1 (cortex-a76, cortex-a53)" >&2; exit 1 ;;
  esac
  clear_proc
  if mountpoint -q "$chroot/proc"; then echo "$chroot/proc is mounted" >&2; exit 1; fi
  mkdir -p "$chroot/sys/devices/system/cpu"
  {
    for i in 0 1 2 3; do
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\n' "$i" "$features"
      printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %d\n\n' \
        "$variant" "$part" "$revision"
    done
  } >"$chroot/proc/cpuinfo"
  echo 0-3 >"$chroot/sys/devices/system/cpu/possible"
  echo 0-3 >"$chroot/sys/devices/system/cpu/present"
}

# ---- The models: tools/make_fixtures.py's ViT-B/32 with random weights, its dynamic int8. ----
build_models() {
  local venv=target/clip-tools-venv
  if [ -f "$bundle/onnx/vision_model.onnx" ] && [ -f "$bundle/onnx/vision_model_quantized.onnx" ]; then
    echo "$bundle: present"
    return
  fi
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, transformers, open_clip' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r tools/requirements.txt    # torch pulls ~5 GB of CUDA wheels
  fi
  [ -f "$bundle/onnx/vision_model.onnx" ] || "$venv/bin/python" tools/make_fixtures.py vit-b32 "$bundle"
  "$venv/bin/python" tools/quantize.py "$bundle"
}

total_start=$SECONDS
step "host tools (debootstrap, qemu-user, binfmt)" host_tools
step "arm64 chroot with onnxruntime $ort_version ($chroot)" build_chroot
step "models ($bundle)" build_models
[ "$setup_only" = 1 ] && { echo "== setup: $((SECONDS - total_start)) s" >&2; exit 0; }
step "plugin" build_plugin

step "plugin" build_plugin
step "Glimpse's cross-build" build_glimpse

# ort CPU OUT N MODEL: ort_image.py on MODEL with N counted images (its JSON line to OUT, ORT's
# mappings to OUT.maps, per-block counts to OUT.blocks); prints the executed instructions.
ort() {
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 QEMU_ARGS="-L $chroot" BLOCKS=$2.blocks \
    count "$1" "$2" "$chroot/usr/bin/python3" benches/arm/ort_image.py run "$4" --images "$3" \
    --maps "$2.maps"
}
# glimpse_run CPU OUT N [ARGS...]: glimpse-bench's image tower, N counted images.
glimpse_run() {
  local cpu=$1 out=$2 n=$3
  shift 3
  count "$cpu" "$out" "$glimpse" speed "$bundle" --only image --threads 1 --iters "$n" "$@"
}
# per_image NAME CMD ARGS...: CMD's count per image (CMD CPU OUT N ARGS... for N1 and N2).
per_image() {
  local name=$1 cmd=$2 i1 i2
  shift 2
  i1=$("$cmd" "$cpu" "$work/$cpu-$name-n1.json" "$n1" "$@")
  i2=$("$cmd" "$cpu" "$work/$cpu-$name-n2.json" "$n2" "$@")
  echo $(((i2 - i1) / (n2 - n1)))
}

rows=()
for cpu in $cpus; do
  write_cpuinfo "$cpu"
  for precision in fp32 int8 f16; do
    start=$SECONDS
    case $precision in
      fp32) model=$bundle/onnx/vision_model.onnx args=() ;;
      int8) model=$bundle/onnx/vision_model_quantized.onnx args=(--quantized) ;;
      f16)
        # Only where the CPU has f16 arithmetic (Auto would run f32 elsewhere).
        [ "$cpu" = cortex-a53 ] && continue
        model=$bundle/onnx/vision_model.onnx args=(--precision auto) ;;
    esac
    g=$(per_image "glimpse-$precision" glimpse_run "${args[@]}")
    if [ "$precision" = f16 ]; then
      want=$(json "$work/$cpu-glimpse-f16-n1.json" precision)
      [ "$want" = F16 ] || { echo "$cpu: --precision auto chose $want, not F16" >&2; exit 1; }
      rows+=("| $cpu | ViT-B/32 image, f16 (\`--precision auto\`) | $(giga "$g") | | | **$(ratio "$g" "$g_fp32")** of Glimpse's f32 | | |")
      continue
    fi
    t=$(GLIMPSE_RAW_TRACT=1 per_image "tract-$precision" glimpse_run "${args[@]}")
    o=$(per_image "ort-$precision" ort "$model")
    [ "$precision" = fp32 ] && g_fp32=$g
    base=$work/$cpu-ort-$precision
    kernels=$(python3 benches/arm/ort_image.py dot --chroot "$chroot" --per $((n2 - n1)) \
      "$base-n2.json.blocks" "$base-n2.json.maps" "$base-n1.json.blocks" "$base-n1.json.maps")
    sdot=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["sdot/udot"])' "$kernels")
    rows+=("| $cpu | ViT-B/32 image, $precision | $(giga "$g") | $(giga "$t") | $(giga "$o") | **$(ratio "$g" "$o")** | $(ratio "$t" "$o") | $sdot |")
    echo "== $cpu $precision: Glimpse $g, tract $t, ORT $o per image, $((SECONDS - start)) s" >&2
  done
done

table() {
  echo "CLIP ViT-B/32 image tower ($bundle), batch 1, images $n1→$n2 after one warm-up. ONNX Runtime"
  echo "$ort_version (PyPI manylinux aarch64 wheel, arm64 Debian $(cut -d. -f1 "$chroot/etc/debian_version") chroot; intra_op 1, inter_op 1,"
  echo "sequential); tract 0.23.9 through Glimpse with GLIMPSE_RAW_TRACT=1. Last column: SDOT/UDOT"
  echo "executed per image in ORT's library (its int8 dot-product kernels)."
  provenance
  echo
  echo "| CPU | work | Glimpse instr | tract instr | ORT instr | Glimpse/ORT | tract/ORT | ORT SDOT/UDOT |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
}
table
if [ "$write" = 1 ]; then
  {
    echo
    echo "### ARM instructions under qemu-user, CLIP image tower vs ONNX Runtime and tract ($(date +%F); $cpus)"
    echo
    echo "\`bash benches/arm/clip.sh --write\` (IMAGES_SHORT=$n1, IMAGES_LONG=$n2; $(git rev-parse --short HEAD 2>/dev/null || echo '?'))."
    echo
    table
  } >>BENCHMARKS.md
  echo "appended to BENCHMARKS.md" >&2
fi
echo "== total: $((SECONDS - total_start)) s" >&2
