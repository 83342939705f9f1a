#!/usr/bin/env bash
# Assembles a vision-language bundle from a language model bundle and a vision half
# (vision_encoder.onnx, projector.onnx, preprocessor_config.json), linking the large files:
#   bash tools/vlm_bundle.sh models/smollm2-135m-instruct fixtures/vlm-tiny models/vlm-tiny-smollm2
# The image goes before the question in the bare ChatML turn (override with a 4th argument).
set -euo pipefail
llm=$(realpath "$1"); vision=$(realpath "$2"); out=$3
template=${4:-$'<|im_start|>user\n<image>\n{prompt}<|im_end|>\n<|im_start|>assistant\n'}
mkdir -p "$out/onnx"
for f in "$llm"/onnx/*.onnx; do ln -sf "$f" "$out/onnx/"; done
ln -sf "$llm/tokenizer.json" "$out/tokenizer.json"
ln -sf "$vision/onnx/vision_encoder.onnx" "$vision/onnx/projector.onnx" "$out/onnx/"
ln -sf "$vision/preprocessor_config.json" "$out/preprocessor_config.json"
python3 - "$llm/llm.json" "$out/llm.json" "$template" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["image_chat_template"] = sys.argv[3]
open(sys.argv[2], "w").write(json.dumps(m, indent=2) + "\n")
PY
echo "wrote $out"
