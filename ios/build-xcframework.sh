#!/usr/bin/env bash
# macOS only: builds GlimpseFFI.xcframework (static libraries for iOS devices, the iOS
# simulator and macOS, with the generated header and module map) for Package.swift.
#   rustup target add aarch64-apple-ios aarch64-apple-ios-sim aarch64-apple-darwin x86_64-apple-darwin
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
for target in aarch64-apple-ios aarch64-apple-ios-sim aarch64-apple-darwin x86_64-apple-darwin; do
  cargo build --profile dist --locked -p glimpse-bindings --target "$target"
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/headers" "$work/macos"
cp "$here/Sources/GlimpseFFI/GlimpseFFI.h" "$work/headers/"
cat > "$work/headers/module.modulemap" <<'MAP'
module GlimpseFFI {
    header "GlimpseFFI.h"
    export *
}
MAP
lipo -create target/aarch64-apple-darwin/dist/libglimpse_ffi.a \
  target/x86_64-apple-darwin/dist/libglimpse_ffi.a -output "$work/macos/libglimpse_ffi.a"
rm -rf "$here/GlimpseFFI.xcframework"
xcodebuild -create-xcframework \
  -library target/aarch64-apple-ios/dist/libglimpse_ffi.a -headers "$work/headers" \
  -library target/aarch64-apple-ios-sim/dist/libglimpse_ffi.a -headers "$work/headers" \
  -library "$work/macos/libglimpse_ffi.a" -headers "$work/headers" \
  -output "$here/GlimpseFFI.xcframework"
echo "built $here/GlimpseFFI.xcframework"
