"""Reference greedy decoding of a llama GGUF in plain numpy, for Glimpse's LLM parity test.

    python3 tools/llama_reference.py SmolLM2-135M-Instruct.Q4_1.gguf \
        models/smollm2-135m-instruct/tokenizer.json fixtures/smollm2/reference.json

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


def forward(w, cfg, ids):
    """Logits of the last position, float64 throughout."""
    s, hd, heads, kvh = len(ids), cfg["head_dim"], cfg["heads"], cfg["kv_heads"]
    pos = np.arange(s, dtype=np.float64)
    h = w["token_embd.weight"][ids]
    causal = np.triu(np.full((s, s), -np.inf), 1)
    for i in range(cfg["layers"]):
        b = f"blk.{i}."
        x = rms_norm(h, w[b + "attn_norm.weight"], cfg["rms_eps"])
        q = rope_pairs((x @ w[b + "attn_q.weight"].T).reshape(s, heads, hd), pos, cfg["rope_base"])
        k = rope_pairs((x @ w[b + "attn_k.weight"].T).reshape(s, kvh, hd), pos, cfg["rope_base"])
        v = (x @ w[b + "attn_v.weight"].T).reshape(s, kvh, hd)
        k, v = (np.repeat(t, heads // kvh, axis=1) for t in (k, v))
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + causal
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", p, v).reshape(s, heads * hd)
        h = h + attn @ w[b + "attn_output.weight"].T
        x = rms_norm(h, w[b + "ffn_norm.weight"], cfg["rms_eps"])
        gate = x @ w[b + "ffn_gate.weight"].T
        h = h + ((gate / (1 + np.exp(-gate))) * (x @ w[b + "ffn_up.weight"].T)) @ w[
            b + "ffn_down.weight"].T
    h = rms_norm(h[-1], w["output_norm.weight"], cfg["rms_eps"])
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
        logits = forward(w, cfg, seq)
        top = np.argsort(-logits)[:10].tolist()
        steps.append({"token": top[0],
                      "top_ids": top, "top_logits": [float(logits[t]) for t in top],
                      "probe_logits": [float(logits[t]) for t in probe]})
        seq.append(top[0])
    text = tok.decode(seq[len(ids):])
    json.dump({"source": "tools/llama_reference.py (numpy float64, llama.cpp weight layout)"
               + (", weights requantised to Q4_0" if args.q4 else ""),
               "gguf": args.gguf.split("/")[-1], "prompt": PROMPT, "template": TEMPLATE,
               "prompt_ids": ids, "probe_ids": probe, "text": text, "steps": steps},
              open(args.out, "w"), indent=1)
    print(ids, repr(text))


if __name__ == "__main__":
    main()
