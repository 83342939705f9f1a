"""A seeded MobileLLaMA-1.4B-shaped GGUF, for benchmarks only (no trained weights exist here).

    python3 tools/make_mobilellama.py SmolLM2-135M-Instruct.Q4_1.gguf mobilellama-1.4b-seeded.gguf
    python3 tools/gguf_to_onnx.py --q4-only mobilellama-1.4b-seeded.gguf models/mobilellama-1.4b-seeded

MobileLLaMA-1.4B's shapes (../shared/models.md): LLaMA, hidden 2048, FFN 5632, 24 layers,
16 heads (no grouped keys), vocabulary 32000, context 2048. Weights are normal with std 0.02
(LLaMA's initialiser), seeded, stored as llama.cpp's Q4_0 — requantising Q4_0 gives the same
blocks, so Glimpse (tools/gguf_to_onnx.py) and llama.cpp (benches/compare_llama_cpp.py) run
identical 4-bit weights. Norm weights are ones, stored f32.

The vocabulary is SmolLM2's byte-level BPE cut to its first 32000 tokens (and the merges that
stay inside them): MobileLLaMA's own SentencePiece vocabulary is not available here, and the
tokenizer does not change the work per token — the embedding table and output head are
32000 × 2048 as in MobileLLaMA. Speed figures only; the text it writes is noise.
Needs: numpy, gguf (tools/requirements-llm.txt).
"""

import argparse

import gguf
import numpy as np

from gguf_to_onnx import Gguf, q4_0

SHAPE = {"hidden": 2048, "ffn": 5632, "layers": 24, "heads": 16, "vocab": 32000, "context": 2048}


def vocabulary(src, size):
    """The first `size` tokens of a GGUF `gpt2` vocabulary and the merges that stay inside it."""
    tokens = list(src.field("tokenizer.ggml.tokens"))[:size]
    types = list(src.field("tokenizer.ggml.token_type"))[:size]
    known = set(tokens)
    merges = []
    for m in src.field("tokenizer.ggml.merges"):
        a, b = m.split(" ", 1)
        if a in known and b in known and a + b in known:
            merges.append(m)
    return tokens, types, merges


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vocab_gguf", help="a GGUF with a gpt2 (byte-level BPE) vocabulary, e.g. SmolLM2's")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    s = SHAPE
    src = Gguf(args.vocab_gguf)
    tokens, types, merges = vocabulary(src, s["vocab"])
    w = gguf.GGUFWriter(args.out, arch="llama")
    w.add_name("MobileLLaMA-1.4B-shaped (seeded)")
    w.add_context_length(s["context"])
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["heads"])
    w.add_rope_dimension_count(s["hidden"] // s["heads"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(src.field("tokenizer.ggml.pre"))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id),
                     ("padding", w.add_pad_token_id), ("unknown", w.add_unk_token_id)):
        token = src.field(f"tokenizer.ggml.{key}_token_id")
        if token is not None and int(token) < s["vocab"]:
            add(int(token))

    rng = np.random.default_rng(args.seed)

    def add_q4(name, rows, cols):
        weight = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)
        codes, scales = q4_0(weight)                         # [n, k/32, 32], [n, k/32]
        packed = codes[..., :16] | (codes[..., 16:] << 4)    # ggml: low nibbles first half
        blocks = np.concatenate([scales[..., None].view(np.uint8), packed], axis=-1)
        w.add_tensor(name, blocks.reshape(rows, -1), raw_dtype=gguf.GGMLQuantizationType.Q4_0)

    d, f = s["hidden"], s["ffn"]
    add_q4("token_embd.weight", s["vocab"], d)
    for i in range(s["layers"]):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.ones(d, np.float32))
        for m in ("attn_q", "attn_k", "attn_v", "attn_output"):
            add_q4(b + m + ".weight", d, d)
        w.add_tensor(b + "ffn_norm.weight", np.ones(d, np.float32))
        add_q4(b + "ffn_gate.weight", f, d)
        add_q4(b + "ffn_up.weight", f, d)
        add_q4(b + "ffn_down.weight", d, f)
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    add_q4("output.weight", s["vocab"], d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.out}: {s}, {len(merges)} merges")


if __name__ == "__main__":
    main()
