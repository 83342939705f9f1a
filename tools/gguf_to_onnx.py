"""Convert a llama-architecture GGUF (e.g. SmolLM2-135M-Instruct) into a Glimpse LLM bundle.

    python3 tools/gguf_to_onnx.py SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2-135m-instruct

The bundle follows the transformers.js decoder layout:
  onnx/embed_tokens.onnx           input_ids [batch, sequence] -> inputs_embeds [batch, sequence, d]
  onnx/decoder_model_merged.onnx   inputs_embeds, position_ids, past_key_values.{i}.key/.value
                                   [batch, kv_heads, past, head_dim] -> logits, present.{i}.key/.value
  onnx/decoder_model_merged_q4.onnx  the same with its matrix products' weights in llama.cpp's
                                   Q4_0 (com.microsoft MatMulNBits, bits 4, blocks of 32) and
                                   accuracy_level 4: activations rounded to 8 bits, int8
                                   arithmetic, as llama.cpp computes Q4_0
                                   Attention: one com.microsoft GroupQueryAttention node a layer,
                                   as ONNX Runtime's model builder writes decoders: queries, keys
                                   and values from one product (packed), RoPE inside the op
                                   (do_rotary, cos_cache / sin_cache tables over the context)
  tokenizer.json                   Hugging Face format, built from the GGUF's vocabulary and merges
  llm.json                         chat template, stop tokens, cache shapes

Weights are dequantised to float32 (gguf's own dequantiser); the q4 variant requantises them
with llama.cpp's Q4_0 rounding, so llama.cpp can run the very same 4-bit weights. llama.cpp stores the query and key
projections permuted for its pairwise RoPE; they are permuted back to Hugging Face's layout
(rotate-half RoPE), as transformers' checkpoints hold them.
Needs: numpy, onnx, gguf (see requirements-llm.txt). Nothing else.
"""

import argparse
import json
import pathlib

import gguf
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from external_data import save_external

OPSET = 17


class Gguf:
    """The fields and float32 tensors of a GGUF file."""

    def __init__(self, path):
        self.reader = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}

    def field(self, key, default=None):
        f = self.reader.fields.get(key)
        return default if f is None else f.contents()

    def tensor(self, name):
        t = self.tensors[name]
        return np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)


def llama_config(g):
    arch = g.field("general.architecture")
    if arch != "llama":
        raise SystemExit(f"unsupported architecture {arch!r}: this converter reads llama GGUFs")
    p = f"{arch}."
    heads = int(g.field(p + "attention.head_count"))
    d = int(g.field(p + "embedding_length"))
    return {
        "layers": int(g.field(p + "block_count")),
        "hidden": d,
        "heads": heads,
        "kv_heads": int(g.field(p + "attention.head_count_kv", heads)),
        "head_dim": d // heads,
        "ffn": int(g.field(p + "feed_forward_length")),
        "rope_base": float(g.field(p + "rope.freq_base", 10000.0)),
        "rms_eps": float(g.field(p + "attention.layer_norm_rms_epsilon")),
        "context": int(g.field(p + "context_length")),
        "vocab": len(g.field("tokenizer.ggml.tokens")),
    }


def q4_0(w):
    """llama.cpp's Q4_0 (`quantize_row_q4_0_ref`) of a [n, k] weight, blocks of 32 along k:
    codes 0..15 and one f16 scale per block, w ~ (code - 8) * scale."""
    n, k = w.shape
    blocks = w.reshape(n, k // 32, 32).astype(np.float32)
    pick = np.abs(blocks).argmax(-1)[..., None]
    d = np.take_along_axis(blocks, pick, -1) / np.float32(-8)       # signed max / -8
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    codes = np.minimum(15, np.trunc(blocks * inv + np.float32(8.5))).astype(np.uint8)
    return codes, d[..., 0].astype(np.float16)


def dequantize_q4_0(codes, scales):
    n, blocks, _ = codes.shape
    w = (codes.astype(np.float32) - 8) * scales.astype(np.float32)[..., None]
    return w.reshape(n, blocks * 32)


def unpermute(w, heads):
    """Undo llama.cpp's query/key row permutation (pairwise RoPE -> rotate-half RoPE)."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


# Hugging Face LLaMA names -> GGUF names.
GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


class GgufWeights:
    """A GGUF's LLaMA tensors by their Hugging Face names, in Hugging Face's layout: what
    `decoder_model` and `embed_model` read (tools/export_vlm.py gives them a checkpoint's)."""

    def __init__(self, gg, cfg):
        self.gg, self.cfg = gg, cfg

    def _name(self, name):
        if name in GGUF_NAMES:
            return GGUF_NAMES[name]
        _, _, i, module = name.split(".", 3)
        module, _, kind = module.rpartition(".")
        return f"blk.{i}.{GGUF_LAYER_NAMES[module]}.{kind}"

    def __contains__(self, name):
        return self._name(name) in self.gg.tensors

    def __getitem__(self, name):
        w = self.gg.tensor(self._name(name))
        if name.endswith("q_proj.weight"):
            return unpermute(w, self.cfg["heads"])
        if name.endswith("k_proj.weight"):
            return unpermute(w, self.cfg["kv_heads"])
        return w


class Graph:
    """A small ONNX graph builder: unique names, initialisers, nodes. `q4` stores the
    matrix-product weights as Q4_0 in com.microsoft MatMulNBits nodes."""

    def __init__(self, q4=False):
        self.nodes, self.inits, self.count, self.q4 = [], [], 0, q4

    def const(self, value, name=None, dtype=np.float32):
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values):
        return self.const(values, dtype=np.int64)

    def op(self, kind, *inputs, outputs=1, name=None, **attrs):
        self.count += 1
        outs = [name or f"{kind.lower()}{self.count}"] if outputs == 1 else [
            f"{kind.lower()}{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, inputs, outputs, name):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets,
                                  producer_name="glimpse tools/gguf_to_onnx.py")
        onnx.checker.check_model(model, full_check=False)
        return model


def rms_norm(g, x, weight, eps):
    mean = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
    inv = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean, g.const(eps))))
    return g.op("Mul", g.op("Mul", x, inv), g.const(weight))


def linear(g, x, weight, name=None):
    """x @ weight.T for a [out, in] weight: stored transposed, or as Q4_0 MatMulNBits."""
    if not g.q4:
        return g.op("MatMul", x, g.const(np.ascontiguousarray(weight.T)), name=name)
    n, k = weight.shape
    codes, scales = q4_0(weight)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)  # [n, k/32, 16]
    return g.op("MatMulNBits", x, g.const(packed, dtype=np.uint8),
                g.const(scales.astype(np.float32).reshape(-1)), name=name,
                domain="com.microsoft", K=k, N=n, bits=4, block_size=32,
                # int8 arithmetic (activations rounded to Q8_0), as llama.cpp runs Q4_0
                accuracy_level=4)


def rotary_tables(cfg):
    """RoPE's cos and sin for every position the context holds, `[context, head_dim / 2]`
    (GroupQueryAttention's `cos_cache` / `sin_cache`): angles in float32 as transformers
    computes them, their cos and sin correctly rounded."""
    hd = cfg["head_dim"]
    inv_freq = (1.0 / cfg["rope_base"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    angles = np.arange(cfg["context"], dtype=np.float32)[:, None] * inv_freq.astype(np.float32)
    angles = angles.astype(np.float64)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def decoder_model(w, cfg, q4=False):
    """The decoder graph of the LLaMA weights `w` (Hugging Face names and layout)."""
    g = Graph(q4)
    d, hd, heads, kvh = cfg["hidden"], cfg["head_dim"], cfg["heads"], cfg["kv_heads"]
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "sequence", d]),
        # Positions follow the cache (query i at past + i): the attention op rotates by those.
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch", "sequence", cfg["vocab"]])]
    cos, sin = (g.const(t, name=n) for t, n in zip(rotary_tables(cfg), ("cos_cache", "sin_cache")))
    # GroupQueryAttention's lengths (batch 1): keys after this step, and that minus one.
    total = g.op("Cast", g.op("Add", g.op("Gather", g.op("Shape", "past_key_values.0.key"),
                                         g.ints(2), axis=0),
                              g.op("Gather", g.op("Shape", "inputs_embeds"), g.ints(1), axis=0)),
                 to=TensorProto.INT32)
    seqlens = g.op("Reshape", g.op("Sub", total, g.const(1, dtype=np.int32)), g.ints([1]))

    h = "inputs_embeds"
    for i in range(cfg["layers"]):
        b = f"model.layers.{i}."
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        for name in (past_k, past_v):
            inputs.append(helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["batch", kvh, "past_sequence", hd]))
        x = rms_norm(g, h, w[b + "input_layernorm.weight"], cfg["rms_eps"])

        # Queries, keys and values from one product; ONNX Runtime's causal attention over a
        # cache (com.microsoft) rotates queries and keys (rotate-half RoPE at positions
        # past + i) and appends this step's keys and values to the cache (`present`).
        qkv = linear(g, x, np.concatenate([w[b + f"self_attn.{p}_proj.weight"]
                                           for p in ("q", "k", "v")]))
        present_k, present_v = f"present.{i}.key", f"present.{i}.value"
        attn = f"attention{i}"
        g.nodes.append(helper.make_node(
            "GroupQueryAttention", [qkv, "", "", past_k, past_v, seqlens, total, cos, sin],
            [attn, present_k, present_v], domain="com.microsoft", num_heads=heads,
            kv_num_heads=kvh, scale=float(1.0 / np.sqrt(hd)), do_rotary=1))
        for name in (present_k, present_v):
            outputs.append(helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["batch", kvh, "total_sequence", hd]))
        h = g.op("Add", h, linear(g, attn, w[b + "self_attn.o_proj.weight"]))

        x = rms_norm(g, h, w[b + "post_attention_layernorm.weight"], cfg["rms_eps"])
        gate = linear(g, x, w[b + "mlp.gate_proj.weight"])
        up = linear(g, x, w[b + "mlp.up_proj.weight"])
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
        h = g.op("Add", h, linear(g, act, w[b + "mlp.down_proj.weight"]))

    h = rms_norm(g, h, w["model.norm.weight"], cfg["rms_eps"])
    head = "lm_head.weight" if "lm_head.weight" in w else "model.embed_tokens.weight"
    linear(g, h, w[head], name="logits")
    return g.model(inputs, outputs, "decoder")


def embed_model(w, cfg):
    g = Graph()
    table = g.const(w["model.embed_tokens.weight"], name="embed_tokens.weight")
    g.nodes.append(helper.make_node("Gather", [table, "input_ids"], ["inputs_embeds"], axis=0))
    return g.model(
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT,
                                       ["batch", "sequence", cfg["hidden"]])],
        "embed_tokens")


def tokenizer_json(gg):
    """Hugging Face tokenizer.json for a GGUF `gpt2` (byte-level BPE) vocabulary."""
    if gg.field("tokenizer.ggml.model") != "gpt2":
        raise SystemExit("only byte-level BPE (tokenizer.ggml.model = gpt2) vocabularies are read")
    pre = gg.field("tokenizer.ggml.pre")
    if pre not in ("smollm", "gpt2", "default"):
        raise SystemExit(f"pre-tokenizer {pre!r} is not mapped yet")
    tokens = gg.field("tokenizer.ggml.tokens")
    types = gg.field("tokenizer.ggml.token_type")
    control = [i for i, t in enumerate(types) if t in (3, 4)]  # CONTROL, USER_DEFINED
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    pre_tokenizer = byte_level if pre != "smollm" else {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i in control],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": list(gg.field("tokenizer.ggml.merges"))},
    }


def manifest(gg, cfg):
    tokens = gg.field("tokenizer.ggml.tokens")
    eos = int(gg.field("tokenizer.ggml.eos_token_id"))
    stops = sorted({eos} | {i for i, t in enumerate(tokens) if t in ("<|im_end|>", "<|endoftext|>")})
    return {
        "type": "llm",
        # The bare ChatML turn: the GGUF's own template adds a default system turn, which makes
        # SmolLM2-135M answer worse (see ../shared/models.md).
        "chat_template": "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
        "stop_tokens": stops,
        "layers": cfg["layers"],
        "kv_heads": cfg["kv_heads"],
        "head_dim": cfg["head_dim"],
        "hidden": cfg["hidden"],
        "vocab": cfg["vocab"],
        "context": cfg["context"],
    }


def save_language_model(w, cfg, out, q4_only=False):
    """Writes `onnx/embed_tokens.onnx` and the decoder graphs of the weights `w` under `out`."""
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    # Weights in external data (`<graph>.onnx_data`): loads hold them once.
    save_external(embed_model(w, cfg), out / "onnx" / "embed_tokens.onnx")
    if not q4_only:
        save_external(decoder_model(w, cfg), out / "onnx" / "decoder_model_merged.onnx")
    # transformers.js names a 4-bit variant `<graph>_q4.onnx`.
    save_external(decoder_model(w, cfg, q4=True), out / "onnx" / "decoder_model_merged_q4.onnx")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--q4-only", action="store_true",
                    help="skip the float32 decoder (four times the 4-bit one's size)")
    args = ap.parse_args()
    gg = Gguf(args.gguf)
    cfg = llama_config(gg)
    out = pathlib.Path(args.out)
    save_language_model(GgufWeights(gg, cfg), cfg, out, args.q4_only)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(gg), ensure_ascii=False))
    (out / "llm.json").write_text(json.dumps(manifest(gg, cfg), indent=2) + "\n")
    print(f"wrote {out}: {cfg}")


if __name__ == "__main__":
    main()
