#!/usr/bin/env python3
"""Reference outputs for the photo-index tests, from ONNX Runtime + PIL + HF tokenizers
(independent of Glimpse's decoder, resizer, tokenizer and tract).

    python tools/reference_photos.py models/fashion-clip fixtures/photos/reference.json

For the demo model and every image in fixtures/images/fashion and fixtures/photos:
tag probabilities over the Fashion-MNIST classes (prompt "a photo of a {}.", softmax at the
bundle's logit scale, as glimpse's tagger does) and text-query cosines.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import clip_preprocess  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["a photo of a sneaker", "a photo of a bag", "trousers", "a dress"]


def main(bundle, out):
    bundle = Path(bundle)
    m = json.loads((bundle / "glimpse.json").read_text())
    vis = ort.InferenceSession(str(bundle / m["vision"]["graph"]))
    txt = ort.InferenceSession(str(bundle / m["text"]["graph"]))
    tok = Tokenizer.from_file(str(bundle / m["tokenizer"]))
    classes = json.loads((bundle / "eval.json").read_text())["classes"]

    def embed_text(t):
        ids = np.array([tok.encode(t).ids], dtype=np.int64)
        e = txt.run([m["text"]["output"]], {m["text"]["input"]: ids})[0][0]
        return e / np.linalg.norm(e)

    images = sorted((ROOT / "fixtures/images/fashion").glob("*.png")) + sorted((ROOT / "fixtures/photos").glob("*.jpg"))
    pix = np.stack([clip_preprocess(p, m["image_size"]) for p in images])
    emb = vis.run([m["vision"]["output"]], {m["vision"]["input"]: pix})[0]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.stack([embed_text(f"a photo of a {c}.") for c in classes])
    logits = emb @ labels.T * m["logit_scale"]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    queries = np.stack([embed_text(q) for q in QUERIES])
    ref = {
        "model": str(bundle.relative_to(ROOT)) if bundle.is_absolute() else str(bundle),
        "vocabulary": classes,
        "images": [str(p.relative_to(ROOT)) for p in images],
        "tag_probabilities": probs.round(6).tolist(),
        "queries": QUERIES,
        "query_cosines": (queries @ emb.T).round(6).tolist(),
    }
    Path(out).write_text(json.dumps(ref, indent=1) + "\n")
    print(f"{len(images)} images, {len(QUERIES)} queries -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
