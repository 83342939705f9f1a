"""Export a MobileVLM (v1, v2) or LLaVA-1.5 checkpoint directory to a Glimpse vision-language
bundle, in one step.

    python3 tools/export_vlm.py CHECKPOINT OUT [--vision-tower DIR] [--q4-only]

CHECKPOINT is a directory as the MobileVLM and LLaVA repositories save one:
  config.json         LLaMA fields plus `mm_projector_type` (ldpnet, ldpnetv2, mlp2x_gelu),
                      `mm_vision_select_layer`, `mm_vision_select_feature`, `image_aspect_ratio`
  *.safetensors or pytorch_model*.bin
                      `model.*` / `lm_head.weight` (the language model), `model.mm_projector.*`,
                      and `model.vision_tower.vision_tower.*` when the vision tower was saved too
  tokenizer.json, or tokenizer.model (converted by transformers; needs sentencepiece)
--vision-tower DIR: a local copy of the checkpoint's `mm_vision_tower` (e.g.
openai/clip-vit-large-patch14-336) for checkpoints that do not hold its weights. Without it the
tower's shape is read from its weights, with OpenAI CLIP's 64-wide heads and quick-GELU.

Writes the bundle `glimpse::VisionLanguageModel` loads:
  onnx/vision_encoder.onnx   pixel_values -> image_features: layer `mm_vision_select_layer`'s
                             patch tokens (class token dropped)
  onnx/projector.onnx        image_features -> image_embeds (tools/make_projectors.py's modules
                             with the checkpoint's weights)
  onnx/embed_tokens.onnx, onnx/decoder_model_merged.onnx, onnx/decoder_model_merged_q4.onnx
                             the language model, as tools/gguf_to_onnx.py writes it
  tokenizer.json, preprocessor_config.json, llm.json (MobileVLM's and LLaVA-1.5's "v1"
                             conversation around `<image>` and `{prompt}`)
Needs torch, transformers, safetensors, onnx (requirements.txt). Never needed at run time.
"""

import argparse
import json
import pathlib
import shutil
import sys
import tempfile

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gguf_to_onnx import save_language_model  # noqa: E402
from make_projectors import GRID, PROJECTORS  # noqa: E402
from make_vlm import SelectedLayer, export_vision_half, preprocessor_config  # noqa: E402

VISION = "model.vision_tower.vision_tower."
PROJECTOR = "model.mm_projector."
# MobileVLM's and LLaVA-1.5's "v1" / "vicuna_v1" conversation.
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")


def load_weights(ckpt):
    """The checkpoint's tensors by name, float32."""
    files = sorted(ckpt.glob("*.safetensors"))
    weights = {}
    if files:
        from safetensors.torch import load_file
        for f in files:
            weights.update(load_file(f))
    else:
        files = sorted(ckpt.glob("pytorch_model*.bin"))
        if not files:
            raise SystemExit(f"{ckpt}: no *.safetensors or pytorch_model*.bin")
        for f in files:
            weights.update(torch.load(f, map_location="cpu", weights_only=True))
    return {k: v.float() for k, v in weights.items()}


def llama_config(c):
    """tools/gguf_to_onnx.py's config from a checkpoint's config.json."""
    if c.get("rope_scaling"):
        raise SystemExit(f"rope_scaling {c['rope_scaling']} is not supported")
    heads, hidden = c["num_attention_heads"], c["hidden_size"]
    head_dim = c.get("head_dim") or hidden // heads
    if head_dim * heads != hidden:
        raise SystemExit(f"heads x head_dim = {heads} x {head_dim} is not the width {hidden}")
    return {
        "layers": c["num_hidden_layers"], "hidden": hidden, "heads": heads,
        "kv_heads": c.get("num_key_value_heads") or heads, "head_dim": head_dim,
        "ffn": c["intermediate_size"], "rope_base": float(c.get("rope_theta", 10000.0)),
        "rms_eps": float(c["rms_norm_eps"]), "context": c["max_position_embeddings"],
        "vocab": c["vocab_size"],
    }


class LlamaWeights:
    """The language model's tensors (Hugging Face names) as numpy arrays."""

    def __init__(self, weights):
        self.weights = weights

    def __contains__(self, name):
        return name in self.weights

    def __getitem__(self, name):
        return self.weights[name].numpy()


def vision_tower(weights, tower_dir):
    """The checkpoint's CLIP vision model, from `tower_dir` or from the weights it holds."""
    if tower_dir:
        return CLIPVisionModel.from_pretrained(tower_dir, dtype=torch.float32)
    # Checkpoints name the tower's tensors `vision_model.*` (transformers 4); transformers 5's
    # CLIPVisionModel names them without that prefix.
    state = {k[len(VISION):].removeprefix("vision_model."): v for k, v in weights.items()
             if k.startswith(VISION) and not k.endswith("position_ids")}
    if not state:
        raise SystemExit(f"the checkpoint holds no vision tower ({VISION}*): pass --vision-tower")
    width, _, patch, _ = state["embeddings.patch_embedding.weight"].shape
    positions = state["embeddings.position_embedding.weight"].shape[0]
    grid = round((positions - 1) ** 0.5)
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    config = CLIPVisionConfig(
        hidden_size=width, num_attention_heads=max(1, width // 64), num_hidden_layers=layers,
        intermediate_size=state["encoder.layers.0.mlp.fc1.weight"].shape[0],
        image_size=grid * patch, patch_size=patch, hidden_act="quick_gelu")
    model = CLIPVisionModel(config)
    prefix = "vision_model." if next(iter(model.state_dict())).startswith("vision_model.") else ""
    model.load_state_dict({prefix + k: v for k, v in state.items()}, strict=True)
    return model


def projector_names(kind):
    """The checkpoint's projector name prefixes -> tools/make_projectors.py's."""
    if kind == "ldpnetv2":
        return {"mlp.mlp.0.": "mlp.0.", "mlp.mlp.2.": "mlp.2.", "peg.peg.0.": "peg."}
    if kind == "mlp2x_gelu":
        return {"0.": "mlp.0.", "2.": "mlp.2."}
    if kind == "ldpnet":
        names = {"model.mlp.1.": "mlp.0.", "model.mlp.3.": "mlp.2."}
        for i in (0, 1):  # torchvision InvertedResidual: dw conv + LN, SE, 1x1 conv + LN
            src, dst = f"model.mb_block.{i + 1}.block.", f"blocks.{i}."
            names |= {src + "0.0.": dst + "dw.", src + "0.1.": dst + "ln1.",
                      src + "1.": dst + "se.", src + "2.0.": dst + "project.",
                      src + "2.1.": dst + "ln2."}
        return names
    raise SystemExit(f"mm_projector_type {kind!r}: ldpnet, ldpnetv2 or mlp2x_gelu are exported")


def projector(weights, config):
    kind = config.get("mm_projector_type", "linear")
    names = projector_names(kind)
    state = {}
    for key, value in weights.items():
        if key.startswith(PROJECTOR):
            key = key[len(PROJECTOR):]
            prefix = max((p for p in names if key.startswith(p)), key=len, default=None)
            if prefix is None:
                raise SystemExit(f"unexpected {kind} projector weight {PROJECTOR}{key}")
            state[names[prefix] + key[len(prefix):]] = value
    ours = {"ldpnet": "ldp", "ldpnetv2": "ldpv2"}.get(kind, kind)
    model = PROJECTORS[ours](config["mm_hidden_size"], config["hidden_size"])
    model.load_state_dict(state, strict=True)
    return model


def tokenizer_json(ckpt, out):
    if (ckpt / "tokenizer.json").exists():
        shutil.copy(ckpt / "tokenizer.json", out / "tokenizer.json")
        return
    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(ckpt, use_fast=True).save_pretrained(tmp)
        shutil.copy(pathlib.Path(tmp) / "tokenizer.json", out / "tokenizer.json")


def manifest(config, cfg, out):
    tokens = json.loads((out / "tokenizer.json").read_text())
    specials = {t["id"]: t["content"] for t in tokens.get("added_tokens", [])}
    bos = specials.get(config.get("bos_token_id", 1), "<s>")
    eos = config.get("eos_token_id", 2)
    turn = SYSTEM + " USER: {} ASSISTANT:"
    return {
        "type": "llm",
        "chat_template": bos + turn.format("{prompt}"),
        "image_chat_template": bos + turn.format("<image>\n{prompt}"),
        "stop_tokens": eos if isinstance(eos, list) else [eos],
        "layers": cfg["layers"], "kv_heads": cfg["kv_heads"], "head_dim": cfg["head_dim"],
        "hidden": cfg["hidden"], "vocab": cfg["vocab"], "context": cfg["context"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--vision-tower", help="local copy of the checkpoint's mm_vision_tower")
    ap.add_argument("--q4-only", action="store_true",
                    help="skip the float32 decoder (four times the 4-bit one's size)")
    args = ap.parse_args()
    ckpt, out = pathlib.Path(args.checkpoint), pathlib.Path(args.out)
    config = json.loads((ckpt / "config.json").read_text())
    if config.get("mm_vision_select_feature", "patch") != "patch":
        raise SystemExit("only mm_vision_select_feature \"patch\" (class token dropped) is read")
    weights = load_weights(ckpt)
    cfg = llama_config(config)

    tower = vision_tower(weights, args.vision_tower).eval()
    size = tower.config.image_size
    if (size // tower.config.patch_size) != GRID:
        raise SystemExit(f"the projector takes {GRID} x {GRID} patches, the tower gives "
                         f"{size // tower.config.patch_size}")
    encoder = SelectedLayer(tower, config.get("mm_vision_select_layer", -2)).eval()
    proj = projector(weights, config).eval()
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    export_vision_half(encoder, proj, torch.zeros(1, 3, size, size), out / "onnx")

    save_language_model(LlamaWeights(weights), cfg, out, args.q4_only)
    tokenizer_json(ckpt, out)
    (out / "llm.json").write_text(json.dumps(manifest(config, cfg, out), indent=2) + "\n")
    pre = preprocessor_config(size)
    if config.get("image_aspect_ratio"):
        pre["image_aspect_ratio"] = config["image_aspect_ratio"]
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    print(f"wrote {out}: vision {size} px, {config.get('mm_projector_type')}, {cfg}")


if __name__ == "__main__":
    main()
