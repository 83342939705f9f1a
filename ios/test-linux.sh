#!/usr/bin/env bash
# Builds this Swift package and runs its tests on Linux, in the Debian trixie chroot that
# .ci/install-swift sets up, against a built libglimpse_ffi.so.
# Usage: ios/test-linux.sh <dir holding libglimpse_ffi.so>
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
lib_dir="$(cd "${1:?directory of libglimpse_ffi.so}" && pwd)"
ROOT=${SWIFT_CHROOT:-/opt/trixie}
mnt="$ROOT/glimpse"
mkdir -p "$mnt/repo" "$mnt/lib"
cleanup() {
  umount "$mnt/lib" 2>/dev/null || true
  umount "$mnt/repo" 2>/dev/null || true
  umount "$ROOT/dev" 2>/dev/null || true
  umount "$ROOT/proc" 2>/dev/null || true
}
trap cleanup EXIT
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
mount --bind "$repo" "$mnt/repo"
mount --bind "$lib_dir" "$mnt/lib"
chroot "$ROOT" /bin/bash -c "cd /glimpse/repo/ios && \
  LD_LIBRARY_PATH=/glimpse/lib swift test --scratch-path /tmp/glimpse-swift-build \
    -Xlinker -L/glimpse/lib -Xlinker -rpath -Xlinker /glimpse/lib"
