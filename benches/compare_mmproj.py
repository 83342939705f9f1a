"""Time llama.cpp's CLIP vision encoder (mtmd, via llama-cpp-python) on one image.

    /work/cache/llamacpp-venv/bin/python tools/make_mmproj.py /tmp/mmproj-f32.gguf
    /work/cache/llamacpp-venv/bin/python benches/compare_mmproj.py /tmp/mmproj-f32.gguf --threads 1

No language model: the mmproj is loaded alone (text_model = NULL) and the image is tokenized as a
single bitmap part, so no vocabulary is needed. Decoding and preprocessing (resize to 336,
normalize) happen once, in tokenization; encode_ms times only mtmd_encode_chunk (ViT + projector),
after one untimed warm-up encode. Prints JSON on stdout; llama.cpp logs to stderr.
"""

import argparse
import ctypes
import json
import pathlib
import statistics
import time

import numpy as np
from gguf import GGUFReader
import llama_cpp.mtmd_cpp as mtmd

IMAGE = pathlib.Path(__file__).resolve().parent.parent / "fixtures/images/franz-kafka.jpg"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mmproj")
    ap.add_argument("--image", default=str(IMAGE))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads = False, args.threads
    params.warmup, params.print_timings = False, False
    ctx = mtmd.mtmd_init_from_file(args.mmproj.encode(), None, params)
    assert ctx, "mtmd_init_from_file failed"
    bitmap = mtmd.mtmd_helper_bitmap_init_from_file(ctx, args.image.encode(), False)
    assert bitmap, f"cannot load {args.image}"
    part = mtmd.mtmd_input_part(text=None, bitmap=bitmap)
    parts = (ctypes.POINTER(mtmd.mtmd_input_part) * 1)(ctypes.pointer(part))
    chunks = mtmd.mtmd_input_chunks_init()
    assert mtmd.mtmd_tokenize_from_parts(ctx, chunks, parts, 1, False) == 0
    assert mtmd.mtmd_input_chunks_size(chunks) == 1
    chunk = mtmd.mtmd_input_chunks_get(chunks, 0)
    tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
    width = next(int(t.shape[0]) for t in GGUFReader(args.mmproj).tensors if t.name == "mm.2.bias")

    times = []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        assert mtmd.mtmd_encode_chunk(ctx, chunk) == 0
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    embd = np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(tokens * width,))
    assert np.isfinite(embd).all(), "non-finite embeddings"

    mtmd.mtmd_input_chunks_free(chunks)
    mtmd.mtmd_bitmap_free(bitmap)
    mtmd.mtmd_free(ctx)
    print(json.dumps({"mmproj": args.mmproj, "threads": args.threads,
                      "encode_ms": [round(t, 1) for t in times],
                      "median_ms": round(statistics.median(times), 1),
                      "tokens": tokens, "width": width}))


if __name__ == "__main__":
    main()
