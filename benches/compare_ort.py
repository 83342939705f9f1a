#!/usr/bin/env python3
"""Glimpse vs ONNX Runtime on the same ONNX files, same thread count, in one run.

  cargo build --release -p glimpse-benches
  python benches/compare_ort.py models/clip-vit-b32-random [--quantized] [--batch 1 8] [--threads 1] [--rounds 5]

Prints a Markdown table (ms per image, images/s, text ms, ratio Glimpse/ORT) for BENCHMARKS.md.
Both sides use --threads: ORT as intra-op threads; Glimpse splits an image batch over that
many runs of one plan, and a single image (or text) splits its matrix products over a pool of
that many threads.

With --rounds R the two sides alternate R times (which goes first alternating too): the times
are the medians over rounds, the ratios the medians of each round's ratio, so a shared
machine's slow spells land on both sides.
"""
import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent


def graph(bundle, tower, quantized):
    base = bundle / "onnx" / f"{tower}_model.onnx"
    q = base.with_name(f"{tower}_model_quantized.onnx")
    return q if quantized and q.exists() else base


def median_ms(iters, f):
    f()
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ms))


def ort_side(bundle, quantized, batch, threads, iters, tokens):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    v = ort.InferenceSession(str(graph(bundle, "vision", quantized)), so, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else batch for d in v.get_inputs()[0].shape]
    shape[0] = batch
    px = np.random.RandomState(0).randn(*shape).astype(np.float32)
    image = median_ms(iters, lambda: v.run(None, {v.get_inputs()[0].name: px}))
    t = ort.InferenceSession(str(graph(bundle, "text", quantized)), so, providers=["CPUExecutionProvider"])
    ids = np.array([[49406] + [320] * (tokens - 2) + [49407]], dtype=np.int64)
    feeds = {i.name: (ids if i.name == "input_ids" else np.ones_like(ids)) for i in t.get_inputs()}
    text = median_ms(iters, lambda: t.run(None, feeds))
    return image, text


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--quantized", action="store_true")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    exe = ROOT / "target" / "release" / "glimpse-bench"
    print(f"| model | precision | threads | batch | ORT ms/img | Glimpse ms/img | Glimpse img/s | ratio | "
          f"ORT text ms ({args.tokens} tok) | Glimpse text ms | text ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for batch in args.batch:
        cmd = [str(exe), "speed", str(args.bundle), "--batch", str(batch), "--iters", str(args.iters),
               "--tokens", str(args.tokens), "--threads", str(args.threads)] + (["--quantized"] if args.quantized else [])

        def glimpse_side():
            g = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            return g["image_ms_per_call"], g["text_ms"]

        def onnx_runtime_side():
            return ort_side(args.bundle, args.quantized, batch, args.threads, args.iters, args.tokens)

        rounds = []
        for r in range(args.rounds):
            if r % 2 == 0:
                o, g = onnx_runtime_side(), glimpse_side()
            else:
                g, o = glimpse_side(), onnx_runtime_side()
            rounds.append((o[0] / batch, g[0] / batch, o[1], g[1]))
        o_img, g_img, o_txt, g_txt = (float(np.median([x[i] for x in rounds])) for i in range(4))
        ratio = float(np.median([x[1] / x[0] for x in rounds]))
        text_ratio = float(np.median([x[3] / x[2] for x in rounds]))
        print(f"| {args.bundle.name} | {'int8' if args.quantized else 'fp32'} | {args.threads} | {batch} | {o_img:.1f} | "
              f"{g_img:.1f} | {1000 / g_img:.1f} | {ratio:.2f} | {o_txt:.1f} | "
              f"{g_txt:.1f} | {text_ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
