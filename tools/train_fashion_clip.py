#!/usr/bin/env python3
"""Train a small CLIP (HF CLIPModel architecture, real CLIP tokenizer) on Fashion-MNIST
with caption templates, and export it as a Glimpse bundle: the offline demo model, and
the only model here whose zero-shot accuracy means something (no trained CLIP weights
can be downloaded offline; see ../shared/models.md).

  apt-get install dataset-fashion-mnist      # or: apt-get download + dpkg -x
  python tools/train_fashion_clip.py models/fashion-clip

Seeded and deterministic on CPU; ~5 minutes on 2 cores. Writes the bundle (ONNX towers,
glimpse.json, tokenizer) plus `eval_*.npy` / `eval.json` (500 test images, labels and
the PyTorch model's predictions) and a few sample PNGs under fixtures/images/fashion/.
"""
import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import CLIP_MEAN, CLIP_STD, OPSET, ROOT, Tower  # noqa: E402

CLASSES = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
SYNONYMS = [
    ["t-shirt", "top", "tee"], ["trousers", "pants", "jeans"], ["pullover", "sweater", "jumper"],
    ["dress", "gown", "frock"], ["coat", "jacket", "overcoat"], ["sandal", "flip-flop", "open shoe"],
    ["shirt", "blouse", "button-up shirt"], ["sneaker", "trainer", "running shoe"], ["bag", "handbag", "purse"],
    ["ankle boot", "boot", "bootie"],
]
TEMPLATES = [
    "a photo of a {}.", "a {}.", "a picture of a {}.", "a black and white photo of a {}.",
    "a low resolution photo of a {}.", "a small photo of the {}.", "an image of a {}.", "a grayscale {}.",
    "a product photo of a {}.", "a close-up photo of the {}.",
]
IMAGE_SIZE = 28
CONTEXT = 16
N_EVAL = 500


def load_idx(path):
    data = gzip.open(path).read()
    if data[2] == 8 and data[3] == 3:
        n, h, w = np.frombuffer(data[4:16], dtype=">u4")
        return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, h, w)
    return np.frombuffer(data[8:], dtype=np.uint8)


def normalise(images):
    """uint8 N×28×28 grey -> N×3×28×28 CLIP-normalised (grey replicated to RGB, as decoding does)."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None].repeat(1, 3, 1, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def config():
    return CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=CONTEXT, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=4, hidden_act="quick_gelu"),
        projection_dim=64,
    )


def tokenize(tok, texts):
    ids = [tok(t, truncation=True, max_length=CONTEXT)["input_ids"] for t in texts]
    out = np.zeros((len(ids), max(len(i) for i in ids)), dtype=np.int64)
    for r, row in enumerate(ids):
        out[r, : len(row)] = row
    return torch.from_numpy(out)


def encode(model, pixels, ids):
    img = F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)
    txt = F.normalize(model.text_projection(model.text_model(input_ids=ids).pooler_output), dim=-1)
    return img, txt


def class_embeddings(model, tok):
    """Zero-shot classifier: each class's prompts (class name, every template) averaged."""
    rows = []
    for name in CLASSES:
        ids = tokenize(tok, [t.format(name) for t in TEMPLATES])
        e = F.normalize(model.text_projection(model.text_model(input_ids=ids).pooler_output), dim=-1)
        rows.append(F.normalize(e.mean(0), dim=-1))
    return torch.stack(rows)


def train(args, tok):
    data = Path(args.data)
    xtr, ytr = load_idx(data / "train-images-idx3-ubyte.gz"), load_idx(data / "train-labels-idx1-ubyte.gz")
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    model = CLIPModel(config())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    steps = args.epochs * (len(xtr) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    # Every caption the sampler can draw, tokenised once.
    captions = [[t.format(s) for s in syn for t in TEMPLATES] for syn in SYNONYMS]
    cap_ids = [tokenize(tok, c) for c in captions]
    step, t0 = 0, time.time()
    for epoch in range(args.epochs):
        order = rng.permutation(len(xtr))
        for b in range(len(xtr) // args.batch):
            idx = order[b * args.batch : (b + 1) * args.batch]
            y = torch.from_numpy(ytr[idx].astype(np.int64))
            imgs = xtr[idx]
            # Light augmentation: random shift by up to 2 px and horizontal flip.
            dx, dy = rng.randint(-2, 3, size=2)
            imgs = np.roll(imgs, (dy, dx), axis=(1, 2))
            if rng.rand() < 0.5:
                imgs = imgs[:, :, ::-1]
            pick = [cap_ids[c][rng.randint(len(cap_ids[c]))] for c in y.tolist()]
            n = max(len(p) for p in pick)
            ids = torch.stack([F.pad(p, (0, n - len(p))) for p in pick])
            img, txt = encode(model, normalise(np.ascontiguousarray(imgs)), ids)
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
            # Captions of the same class are all positives: soft contrastive targets.
            same = (y[:, None] == y[None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.3f} "
                      f"scale {model.logit_scale.exp().item():.1f} {time.time() - t0:.0f}s", file=sys.stderr)
    return model.eval()


def save_eval(out, xte, yte, preds, acc):
    """The first 500 test images with labels and PyTorch's zero-shot predictions."""
    np.save(out / "eval_images.npy", xte[:N_EVAL])
    np.save(out / "eval_labels.npy", yte[:N_EVAL].astype(np.int64))
    np.save(out / "eval_torch_preds.npy", preds[:N_EVAL].astype(np.int64))
    (out / "eval.json").write_text(json.dumps({
        "classes": CLASSES, "templates": TEMPLATES, "torch_accuracy_10k": float(acc),
        "torch_accuracy_eval": float((preds[:N_EVAL] == yte[:N_EVAL]).mean()), "n_eval": N_EVAL,
    }, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok_dir = ROOT / "fixtures" / "clip-tokenizer"
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    model = train(args, tok)

    xte, yte = load_idx(Path(args.data) / "t10k-images-idx3-ubyte.gz"), load_idx(Path(args.data) / "t10k-labels-idx1-ubyte.gz")
    with torch.no_grad():
        cls = class_embeddings(model, tok)
        preds = []
        for b in range(0, len(xte), 500):
            img, _ = encode(model, normalise(xte[b : b + 500]), tokenize(tok, ["a"]))
            preds.append((img @ cls.T).argmax(-1).numpy())
        preds = np.concatenate(preds)
    acc = (preds == yte).mean()
    print(f"PyTorch zero-shot accuracy on the 10k test images: {acc:.4f}", file=sys.stderr)

    out = args.out
    (out / "onnx").mkdir(parents=True, exist_ok=True)

    def vision(pixel_values):
        return model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output)

    def text(input_ids):
        return model.text_projection(model.text_model(input_ids=input_ids).pooler_output)

    with torch.no_grad():
        torch.onnx.export(Tower(model, vision), (normalise(xte[:2]),), str(out / "onnx/vision_model.onnx"),
                          opset_version=OPSET, dynamo=False, input_names=["pixel_values"],
                          output_names=["image_embeds"], dynamic_axes={"pixel_values": {0: "batch"},
                                                                       "image_embeds": {0: "batch"}})
        torch.onnx.export(Tower(model, text), (tokenize(tok, ["a photo of a bag."]),),
                          str(out / "onnx/text_model.onnx"), opset_version=OPSET, dynamo=False,
                          input_names=["input_ids"], output_names=["text_embeds"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "text_embeds": {0: "batch"}})
    shutil.copy(tok_dir / "tokenizer.json", out / "tokenizer.json")
    scale = float(model.logit_scale.exp().clamp(max=100))
    (out / "glimpse.json").write_text(json.dumps({
        "name": "fashion-clip",
        "vision": {"graph": "onnx/vision_model.onnx", "input": "pixel_values", "output": "image_embeds"},
        "text": {"graph": "onnx/text_model.onnx", "input": "input_ids", "output": "text_embeds"},
        "tokenizer": "tokenizer.json",
        "context_length": CONTEXT,
        "image_size": IMAGE_SIZE,
        "mean": CLIP_MEAN,
        "std": CLIP_STD,
        "logit_scale": round(scale, 4),
    }, indent=2))
    save_eval(out, xte, yte, preds, acc)
    samples = ROOT / "fixtures" / "images" / "fashion"
    samples.mkdir(parents=True, exist_ok=True)
    for c, name in enumerate(CLASSES):
        i = int(np.nonzero(yte == c)[0][0])
        Image.fromarray(xte[i]).save(samples / f"{name.replace(' ', '-')}.png")
    print(f"{out}: logit scale {scale:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
