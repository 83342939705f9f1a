#!/usr/bin/env python3
"""Photo indexing throughput: Glimpse vs a Python ONNX Runtime + PIL pipeline, same photos,
same model, same thread count, in one run.

  python tools/make_photos.py /tmp/photos200 --count 200 --size 4000x3000
  cargo build --release -p glimpse-benches
  python benches/compare_index.py models/clip-vit-b32-random /tmp/photos200 [--threads 2]

The Python pipeline is the usual one: PIL decodes each JPEG in full, CLIP's preprocessing
(bicubic resize of the short side, centre crop, normalise), ORT embeds batches of 8 with
`--threads` intra-op threads. Two variants are timed as well, to show where the time goes:
`+draft` lets PIL decode at a reduced DCT scale (`Image.draft`), `+draft+pool` also overlaps
decoding with inference on a thread pool. Glimpse: `glimpse-bench index` (DCT-scaled decode,
`--threads` workers each decoding and embedding its own batches, SQLite commits included).
Model load time is excluded on both sides. Prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def preprocess(path, size, draft):
    img = Image.open(path)
    if draft:
        img.draft("RGB", (size, size))
    img = img.convert("RGB")
    w, h = img.size
    nw, nh = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    a = np.asarray(img, dtype=np.float32)[top : top + size, left : left + size] / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


def python_side(bundle, files, threads, draft, pool):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / "onnx" / "vision_model.onnx"), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    size = 224
    t = time.perf_counter()
    out = []
    batches = [files[i : i + 8] for i in range(0, len(files), 8)]
    if pool:
        with ThreadPoolExecutor(threads) as ex:
            for b in batches:
                px = np.stack(list(ex.map(lambda p: preprocess(p, size, draft), b)))
                out.append(sess.run(None, {name: px})[0])
    else:
        for b in batches:
            px = np.stack([preprocess(p, size, draft) for p in b])
            out.append(sess.run(None, {name: px})[0])
    secs = time.perf_counter() - t
    return len(files) / secs


def glimpse_side(bundle, photos, threads):
    exe = ROOT / "target" / "release" / "glimpse-bench"
    out = subprocess.run([str(exe), "index", str(bundle), str(photos), "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["skipped"] == 0, r
    return r["photos_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    files = sorted(str(p) for p in a.photos.glob("*.jpg"))
    runs = {"glimpse": [], "python": [], "python+draft": [], "python+draft+pool": []}
    for _ in range(a.rounds):  # interleaved, so machine noise hits both sides
        runs["glimpse"].append(glimpse_side(a.bundle, a.photos, a.threads))
        runs["python"].append(python_side(a.bundle, files, a.threads, False, False))
        runs["python+draft"].append(python_side(a.bundle, files, a.threads, True, False))
        runs["python+draft+pool"].append(python_side(a.bundle, files, a.threads, True, True))
    best = {k: max(v) for k, v in runs.items()}
    print(f"{len(files)} photos, {a.bundle.name}, {a.threads} threads, best of {a.rounds} interleaved rounds\n")
    print("| pipeline | photos/s | Glimpse ÷ it |")
    print("|---|---|---|")
    for k, v in best.items():
        print(f"| {k} | {v:.2f} | {best['glimpse'] / v:.2f}× |")


if __name__ == "__main__":
    main()
