#!/usr/bin/env bash
# Regenerates the Kotlin and Swift bindings from the built library (uniffi library mode) into
# the android/ and ios/ packages. Run after changing the exported API; the packages' tests
# fail with a checksum mismatch if the committed bindings and the library disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p glimpse-bindings --locked
cargo run -q -p glimpse-bindings --features cli --bin uniffi-bindgen --locked -- generate \
  --library target/debug/libglimpse_ffi.so --language kotlin --language swift \
  --out-dir target/uniffi --no-format
cp target/uniffi/dev/glimpse/ffi/glimpse_ffi.kt android/glimpse/src/main/kotlin/dev/glimpse/ffi/
cp target/uniffi/Glimpse.swift ios/Sources/Glimpse/
cp target/uniffi/GlimpseFFI.h ios/Sources/GlimpseFFI/
echo "bindings regenerated"
