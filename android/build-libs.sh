#!/usr/bin/env bash
# Builds libglimpse_ffi.so for each Android ABI into glimpse/src/main/jniLibs with cargo-ndk.
# Needs an Android NDK (ANDROID_NDK_HOME) and the Rust targets:
#   rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
#   cargo install cargo-ndk --version 4.1.2 --locked
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
: "${ANDROID_NDK_HOME:?set ANDROID_NDK_HOME to an Android NDK}"
cargo ndk --platform 24 -t arm64-v8a -t armeabi-v7a -t x86_64 \
  -o "$here/glimpse/src/main/jniLibs" build --profile dist --locked -p glimpse-bindings
ls -l "$here"/glimpse/src/main/jniLibs/*/libglimpse_ffi.so
