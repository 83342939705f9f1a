#!/usr/bin/env bash
# Compiles the Kotlin API (generated bindings + wrapper) and its tests with kotlinc, then
# runs them on the JVM through JNA against a built libglimpse_ffi.so.
# Usage: android/test-jvm.sh <dir holding libglimpse_ffi.so>   (needs .ci/install-kotlin)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lib_dir="$(cd "${1:?directory of libglimpse_ffi.so}" && pwd)"
KOTLIN=${KOTLIN_HOME:-/opt/kotlinc}
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cp="/usr/share/java/jna.jar:/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar"
cp="$cp:$KOTLIN/lib/kotlinx-coroutines-core-jvm.jar:$KOTLIN/lib/kotlin-test.jar:$KOTLIN/lib/kotlin-test-junit.jar"
src="$here/glimpse/src"
# Bitmaps.kt needs the Android SDK; everything else is plain Kotlin/JVM.
"$KOTLIN/bin/kotlinc" -nowarn -cp "$cp" -d "$out/test.jar" \
  "$src/main/kotlin/dev/glimpse/ffi/glimpse_ffi.kt" "$src/main/kotlin/dev/glimpse/Glimpse.kt" \
  "$src/test/kotlin/dev/glimpse/GlimpseTest.kt"
java -Djna.library.path="$lib_dir" -Dglimpse.root="$here/.." \
  -cp "$out/test.jar:$cp:$KOTLIN/lib/kotlin-stdlib.jar" org.junit.runner.JUnitCore dev.glimpse.GlimpseTest
