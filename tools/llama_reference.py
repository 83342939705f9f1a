"""Reference greedy decoding of a llama GGUF in plain numpy, for Glimpse's LLM parity test.

    python3 tools/llama_reference.py SmolLM2-135M-Instruct.Q4_1.gguf \
        models/smollm2-135m-instruct/tokenizer.json fixtures/smollm2/reference.json
    # ... fixtures/smollm2/reference_q4.json --q4; ... reference_q4_q8.json --q4 --q8

Independent of the ONNX graph tools/gguf_to_onnx.py writes: it reads the GGUF's weights in
llama.cpp's own layout (pairwise RoPE on the permuted query/key rows, no un-permuting), uses no
KV cache (every step recomputes the whole sequence) and grouped-query attention by repeating
heads. Records, for each of the first steps, the greedy token and the logits of the ten most
likely tokens and of a fixed spread of vocabulary ids.
"""

import argparse
import json

import numpy as np
from tokenizers import Tokenizer

from gguf_to_onnx import Gguf, dequantize_q4_0, llama_config, q4_0

PROMPT = "What is the capital of France?"
TEMPLATE = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope_pairs(x, positions, base):
    """llama.cpp's RoPE: rotates adjacent pairs (x0, x1), (x2, x3), ... of each head."""
    hd = x.shape[-1]
    inv = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = positions[:, None] * inv[None, :]                      # [s, hd/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]  # [s, 1, hd/2]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def q8_0(x):
    """llama.cpp's Q8_0 rounding of activations (`quantize_row_q8_0`), blocks of 32 along the
    last axis: d = max|x| / 127, codes round(x / d) half away from zero; returns codes · d."""
    blocks = x.reshape(*x.shape[:-1], -1, 32).astype(np.float32)
    d = np.abs(blocks).max(-1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    v = blocks * inv
    codes = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return (codes.astype(np.float64) * d).reshape(x.shape)


def forward(w, cfg, ids, q8=False):
    """Logits of the last position, float64 throughout (with `q8`, each weight product's
    input first rounded to Q8_0, as `MatMulNBits accuracy_level = 4` and llama.cpp do)."""
    r = q8_0 if q8 else (lambda x: x)
    s, hd, heads, kvh = len(ids), cfg["head_dim"], cfg["heads"], cfg["kv_heads"]
    pos = np.arange(s, dtype=np.float64)
    h = w["token_embd.weight"][ids]
    causal = np.triu(np.full((s, s), -np.inf), 1)
    for i in range(cfg["layers"]):
        b = f"blk.{i}."
        x = r(rms_norm(h, w[b + "attn_norm.weight"], cfg["rms_eps"]))
        q = rope_pairs((x @ w[b + "attn_q.weight"].T).reshape(s, heads, hd), pos, cfg["rope_base"])
        k = rope_pairs((x @ w[b + "attn_k.weight"].T).reshape(s, kvh, hd), pos, cfg["rope_base"])
        v = (x @ w[b + "attn_v.weight"].T).reshape(s, kvh, hd)
        k, v = (np.repeat(t, heads // kvh, axis=1) for t in (k, v))
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + causal
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", p, v).reshape(s, heads * hd)
        h = h + r(attn) @ w[b + "attn_output.weight"].T
        x = r(rms_norm(h, w[b + "ffn_norm.weight"], cfg["rms_eps"]))
        gate = x @ w[b + "ffn_gate.weight"].T
        h = h + r((gate / (1 + np.exp(-gate))) * (x @ w[b + "ffn_up.weight"].T)) @ w[
            b + "ffn_down.weight"].T
    h = r(rms_norm(h[-1], w["output_norm.weight"], cfg["rms_eps"]))
    return h @ w["head"].T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("tokenizer")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--q4", action="store_true",
                    help="requantise the matrix-product weights to Q4_0 first, as "
                         "tools/gguf_to_onnx.py does for decoder_model_merged_q4.onnx")
    ap.add_argument("--q8", action="store_true",
                    help="with --q4: round each weight product's input to Q8_0, as that "
                         "file's accuracy_level 4 asks")
    args = ap.parse_args()
    gg = Gguf(args.gguf)
    cfg = llama_config(gg)
    w = {name: gg.tensor(name) for name in gg.tensors}
    w["head"] = w.get("output.weight", w["token_embd.weight"])
    for name in list(w):
        if args.q4 and (name == "head" or name.endswith(
                tuple(f"{p}.weight" for p in ("attn_q", "attn_k", "attn_v", "attn_output",
                                                "ffn_gate", "ffn_up", "ffn_down")))):
            w[name] = dequantize_q4_0(*q4_0(w[name]))
        w[name] = w[name].astype(np.float64)
    tok = Tokenizer.from_file(args.tokenizer)
    ids = tok.encode(TEMPLATE.format(prompt=PROMPT), add_special_tokens=False).ids
    probe = np.linspace(0, cfg["vocab"] - 1, 16).astype(int).tolist()
    steps, seq = [], list(ids)
    for _ in range(args.steps):
        logits = forward(w, cfg, seq, q8=args.q8)
        top = np.argsort(-logits)[:10].tolist()
        steps.append({"token": top[0],
                      "top_ids": top, "top_logits": [float(logits[t]) for t in top],
                      "probe_logits": [float(logits[t]) for t in probe]})
        seq.append(top[0])
    text = tok.decode(seq[len(ids):])
    json.dump({"source": "tools/llama_reference.py (numpy float64, llama.cpp weight layout)"
               + (", weights requantised to Q4_0" if args.q4 else "")
               + (", activations rounded to Q8_0" if args.q8 else ""),
               "gguf": args.gguf.split("/")[-1], "prompt": PROMPT, "template": TEMPLATE,
               "prompt_ids": ids, "probe_ids": probe, "text": text, "steps": steps},
              open(args.out, "w"), indent=1)
    print(ids, repr(text))


if __name__ == "__main__":
    main()
