"""The vision half of a MobileVLM-style bundle, seeded, with PyTorch reference outputs.

    python3 tools/make_vlm.py tiny fixtures/vlm-tiny     # committed test fixture (~1.5 MB)
    python3 tools/make_vlm.py real models/vlm-vision     # ViT-L/14@336 + LDPv2 at 2048 (~1.3 GB)

Writes `onnx/vision_encoder.onnx` (HF `CLIPVisionModel`: `pixel_values` -> `image_features`, the
penultimate layer's patch tokens, class token dropped, as MobileVLM and LLaVA take them),
`onnx/projector.onnx` (LDPv2 from tools/make_projectors.py, output width = the language model's
hidden size), `preprocessor_config.json`, and the references: `pixels.npy` (PIL's CLIP
preprocessing of fixtures/images/franz-kafka.jpg), `features.npy` and `image_embeds.npy`.
Also the encoder in int8 as `tools/quantize.py` makes it (ONNX Runtime `quantize_dynamic`:
`onnx/vision_encoder_quantized.onnx`) and ONNX Runtime's features from it, `features_int8.npy`.
Tiny: 48 px, patch 2 (the real 24 x 24 grid), width 32, 3 layers; projector to 576, SmolLM2's
width, so the bundle runs with the real SmolLM2 (tools/smollm2.sh). Real: ViT-L/14@336 (24
layers, width 1024), projector to 2048 (MobileLLaMA-1.4B).
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from pixels import CLIP_MEAN, CLIP_STD, clip_preprocess  # noqa: E402
from make_projectors import LdpV2, randomise  # noqa: E402

CONFIGS = {
    "tiny": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=2, image_size=48, patch_size=2), 576),
    "real": (dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, image_size=336, patch_size=14), 2048),
}


class SelectedLayer(torch.nn.Module):
    """A CLIP vision model's patch tokens after one layer (-2: the penultimate)."""

    def __init__(self, model, layer=-2):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, pixel_values):
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[self.layer][:, 1:]


def export_vision_half(encoder, projector, pixels, onnx_dir):
    """Writes `vision_encoder.onnx` (`pixel_values` -> `image_features`) and `projector.onnx`
    (`image_features` -> `image_embeds`), traced on `pixels`; returns both outputs."""
    with torch.no_grad():
        features = encoder(pixels)
        embeds = projector(features)
        for module, x, name, inp, outp in [
                (encoder, pixels, "vision_encoder", "pixel_values", "image_features"),
                (projector, features, "projector", "image_features", "image_embeds")]:
            torch.onnx.export(module, (x,), onnx_dir / f"{name}.onnx", input_names=[inp],
                              output_names=[outp], opset_version=17, dynamo=False)
    return features, embeds


def quantized_encoder(onnx_dir, pixels):
    """Writes `vision_encoder_quantized.onnx` as tools/quantize.py does; returns ONNX Runtime's
    features from it (graph optimisations off: the file's own arithmetic)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src, dst = onnx_dir / "vision_encoder.onnx", onnx_dir / "vision_encoder_quantized.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm", "Gather"])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(dst), opts, providers=["CPUExecutionProvider"])
    return session.run(["image_features"], {"pixel_values": pixels})[0]


def preprocessor_config(size):
    """OpenAI CLIP's preprocessing at `size` px, as transformers writes it."""
    return {
        "crop_size": {"height": size, "width": size}, "do_center_crop": True,
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3,
        "rescale_factor": 1 / 255, "size": {"shortest_edge": size}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("size", choices=CONFIGS)
    ap.add_argument("out")
    args = ap.parse_args()
    vision_cfg, hidden = CONFIGS[args.size]
    out = pathlib.Path(args.out)
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    encoder = SelectedLayer(CLIPVisionModel(CLIPVisionConfig(hidden_act="quick_gelu",
                                                           **vision_cfg))).eval()
    projector = LdpV2(vision_cfg["hidden_size"], hidden).eval()
    randomise(projector, 7)
    size = vision_cfg["image_size"]
    image = pathlib.Path(__file__).resolve().parent.parent / "fixtures/images/franz-kafka.jpg"
    pixels = torch.from_numpy(clip_preprocess(image, size)[None])
    features, embeds = export_vision_half(encoder, projector, pixels, out / "onnx")
    features_int8 = quantized_encoder(out / "onnx", pixels.numpy())
    for name, t in [("pixels", pixels), ("features", features), ("image_embeds", embeds),
                    ("features_int8", torch.from_numpy(features_int8))]:
        np.save(out / f"{name}.npy", np.ascontiguousarray(t.numpy()))
    (out / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_config(size), indent=2) + "\n")
    print(tuple(pixels.shape), "->", tuple(features.shape), "->", tuple(embeds.shape))


if __name__ == "__main__":
    main()
