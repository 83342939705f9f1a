"""Regression graphs for inputs the fuzzers found hanging tract (see fuzz/README.md).

The tiny ViT's vision graph with its first LayerNormalization's `axis` set out of range:
tract 0.23.9 loops up to that axis while typing the graph. Usage:
    python tools/make_fuzz_fixtures.py fixtures
"""

import sys
from pathlib import Path

import onnx

CASES = {
    "onnx-layernorm-axis-huge.onnx": 2**62,
    "onnx-layernorm-axis-negative.onnx": -(2**40),
}


def main(root: Path) -> None:
    for name, axis in CASES.items():
        model = onnx.load(root / "clip-vit-tiny/onnx/vision_model.onnx")
        node = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
        next(a for a in node.attribute if a.name == "axis").i = axis
        onnx.save(model, root / "fuzz" / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
