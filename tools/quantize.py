#!/usr/bin/env python3
"""Quantise a bundle's ONNX towers to int8, writing `<graph>_quantized.onnx` beside each
graph (the name transformers.js uses; `glimpse --quantized` and `LoadOptions::quantized`
pick them up).

  python tools/quantize.py models/fashion-clip                 # dynamic int8 (ORT quantize_dynamic)
  python tools/quantize.py DIR --reduce-range                  # dynamic int8, 7-bit weights
  python tools/quantize.py DIR --qdq per-tensor|per-channel    # static QDQ, calibrated on noise

Dynamic int8 is what transformers.js ships: weights int8 (MatMulInteger; ConvInteger for a
ViT's patch embedding, with ONNX Runtime's default operator types, which this keeps unless
`--op-types` narrows them), activations quantised at run time. `--reduce-range` keeps the weights within ±64 (ORT's `reduce_range`):
on x86-64 with AVX2 but not VNNI, ORT's and Glimpse's byte products are then exact, and
Glimpse's faster; speed and accuracy: BENCHMARKS.md. QDQ files exist for tests: per-channel
QDQ is the form tract 0.23 reads wrongly (per-tensor), which Glimpse must handle.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static


def graphs(bundle):
    manifest = bundle / "glimpse.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        return [bundle / m[t]["graph"] for t in ("vision", "text") if t in m]
    # CLIP towers (`*_model.onnx`) and a VLM's vision encoder (its projector stays f32).
    return sorted([*(bundle / "onnx").glob("*_model.onnx"), *(bundle / "onnx").glob("vision_encoder.onnx")])


class NoiseReader(CalibrationDataReader):
    """Seeded calibration inputs shaped from the graph's declared inputs (batch 1, sequence 8)."""

    def __init__(self, path, n=16):
        model = onnx.load(str(path))
        inits = {i.name for i in model.graph.initializer}
        rng = np.random.RandomState(0)
        self.items = []
        for _ in range(n):
            feed = {}
            for inp in model.graph.input:
                if inp.name in inits:
                    continue
                t = inp.type.tensor_type
                dims = [d.dim_value if d.dim_value > 0 else (1 if i == 0 else 8) for i, d in enumerate(t.shape.dim)]
                if t.elem_type == onnx.TensorProto.FLOAT:
                    feed[inp.name] = rng.randn(*dims).astype(np.float32)
                else:
                    ids = rng.randint(1, 49405, size=dims).astype(np.int64)
                    ids[:, 0], ids[:, -1] = 49406, 49407
                    feed[inp.name] = ids
            self.items.append(feed)
        self.it = iter(self.items)

    def get_next(self):
        return next(self.it, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--qdq", choices=["per-tensor", "per-channel"], help="static QDQ instead of dynamic int8")
    ap.add_argument("--reduce-range", action="store_true", help="dynamic int8 with weights within ±64 (7 bits)")
    ap.add_argument("--suffix", default="_quantized", help="output name suffix (default: _quantized)")
    ap.add_argument("--op-types", nargs="+", metavar="OP",
                    help="dynamic int8 of these operator types only (default: ONNX Runtime's own default, "
                         "Conv included, as users' quantize_dynamic calls make them)")
    args = ap.parse_args()
    for g in graphs(args.bundle):
        out = g.with_name(g.stem + args.suffix + ".onnx")
        if args.qdq:
            quantize_static(str(g), str(out), NoiseReader(g), quant_format=QuantFormat.QDQ,
                            per_channel=args.qdq == "per-channel", weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, op_types_to_quantize=["MatMul", "Gemm", "Conv"])
        else:
            quantize_dynamic(str(g), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=args.op_types,
                             reduce_range=args.reduce_range)
        print(f"{out}: {out.stat().st_size / 1e6:.1f} MB (from {g.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
