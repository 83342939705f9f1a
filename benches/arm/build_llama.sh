#!/usr/bin/env bash
# Cross-builds llama.cpp for aarch64 Linux twice, and our driver benches/arm/llama_decode.c
# against each build, as static programs for benches/arm/run.sh to count under qemu-user:
#
#   target/arm-peers/llama_decode-cortex-a76   -march=armv8.2-a+dotprod+fp16 (Cortex-A76)
#   target/arm-peers/llama_decode-cortex-a53   -march=armv8-a (Cortex-A53, plain NEON)
#
# llama.cpp's source is the copy inside PyPI's llama-cpp-python sdist (vendor/llama.cpp), the
# same version BENCHMARKS.md's x86 comparisons ran. Needs PyPI once and Debian's cross
# compilers (installed here if missing). Idempotent: libraries already built are kept, and the
# driver is rebuilt only when its source is newer.
# Two cores: ~6 min per build (the CPU backend's quantisation files dominate).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=0.3.36                  # llama-cpp-python; its llama.cpp is what gets built
out=target/arm-peers
src=$out/llama-cpp-python-$version/vendor/llama.cpp
jobs=${JOBS:-$(nproc)}

# Which builds: NAME=GGML_CPU_ARM_ARCH (the -march value ggml's CMake passes to the compiler
# when GGML_NATIVE is off: ggml/src/ggml-cpu/CMakeLists.txt).
builds=(
  "cortex-a76=armv8.2-a+dotprod+fp16"
  "cortex-a53=armv8-a"
)

# Cross compilers and cmake.
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v cmake >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    cmake g++-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi

# The source: llama-cpp-python's sdist. `--no-binary llama-cpp-python` (not `:all:`) so that
# pip's metadata step can use wheels of the build tools instead of compiling cmake itself.
if [ ! -f "$src/CMakeLists.txt" ]; then
  mkdir -p "$out"
  sdist=$out/llama_cpp_python-$version.tar.gz
  if [ ! -f "$sdist" ]; then
    pip download --quiet --disable-pip-version-check --no-deps \
      --no-binary llama-cpp-python "llama-cpp-python==$version" -d "$out"
  fi
  tar xzf "$sdist" -C "$out"
  # The sdist unpacks as llama_cpp_python-VERSION.
  rm -rf "$out/llama-cpp-python-$version"
  mv "$out/llama_cpp_python-$version" "$out/llama-cpp-python-$version"
fi

for b in "${builds[@]}"; do
  name=${b%%=*}
  arch=${b#*=}
  build=$PWD/$out/build-$name
  driver=$out/llama_decode-$name
  # The libraries, once. Only the library: no tools, tests, examples, server, HTTP.
  # GGML_NATIVE off so that the -march comes from GGML_CPU_ARM_ARCH and not the x86 host; one
  # CPU variant, static.
  if [ ! -f "$build/src/libllama.a" ]; then
    echo "building llama.cpp for $name (-march=$arch) in $build"
    cmake -S "$PWD/$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
      -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
      -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH="$arch" \
      -DBUILD_SHARED_LIBS=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
      -DGGML_CCACHE=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_BUILD_APP=OFF >"$build.cmake.log" 2>&1
    cmake --build "$build" --target llama -j "$jobs" >"$build.build.log" 2>&1
  fi
  # The driver, same -march, linked statically (so qemu needs no aarch64 sysroot); again
  # whenever its source is newer.
  if [ -x "$driver" ] && [ "$driver" -nt benches/arm/llama_decode.c ]; then
    echo "$driver exists"
    continue
  fi
  aarch64-linux-gnu-gcc -O2 -march="$arch" -I"$src/include" -I"$src/ggml/include" \
    -c benches/arm/llama_decode.c -o "$build/llama_decode.o"
  # Its output to a log, shown if it fails: the linker warns that ggml's backend loader calls
  # dlopen in a static program (never called here).
  if ! aarch64-linux-gnu-g++ -static -o "$driver.partial" "$build/llama_decode.o" \
    "$build/src/libllama.a" "$build/ggml/src/libggml.a" "$build/ggml/src/libggml-cpu.a" \
    "$build/ggml/src/libggml-base.a" -lpthread -lm >"$build.link.log" 2>&1; then
    cat "$build.link.log" >&2
    exit 1
  fi
  mv "$driver.partial" "$driver"
  echo "built $driver"
done
