"""Single-node com.microsoft GroupQueryAttention graphs, in the forms Glimpse runs as its own
op, and ONNX Runtime's outputs for them: the attention op's parity fixture.

    python3 tools/make_attention.py fixtures/attention

Forms: query, key and value apart or packed in the query; RoPE in the graph before the node
(`do_rotary` 0) or inside it (1, with `cos_cache` / `sin_cache`). Cases: a prompt, a token
after a cache, several tokens after a cache. Inputs are seeded; the outputs are ONNX
Runtime's (CPU); the rotary tables are the converter's. Needs numpy, onnx, onnxruntime, gguf
(requirements.txt, requirements-llm.txt).
"""

import argparse
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from gguf_to_onnx import rotary_tables

HEADS, KV_HEADS, D, POSITIONS = 4, 2, 16, 12  # ORT wants head_size % 16 == 0
CASES = [(0, 5), (5, 1), (6, 3)]  # (past, tokens)


def graph(packed, rotary):
    width, kv_width = HEADS * D, KV_HEADS * D
    value = helper.make_tensor_value_info
    step = [("query", width + 2 * kv_width if packed else width)]
    if not packed:
        step += [("key", kv_width), ("value", kv_width)]
    inputs = [value(n, TensorProto.FLOAT, [1, "sequence", w]) for n, w in step]
    inputs += [value(n, TensorProto.FLOAT, [1, KV_HEADS, "past", D])
               for n in ("past_key", "past_value")]
    inits = []
    nodes = [
        # The lengths GroupQueryAttention takes, from the shapes (as tools/gguf_to_onnx.py).
        helper.make_node("Shape", ["past_key"], ["past_shape"]),
        helper.make_node("Shape", ["query"], ["step_shape"]),
        helper.make_node("Gather", ["past_shape", "two"], ["past_len"], axis=0),
        helper.make_node("Gather", ["step_shape", "one"], ["step_len"], axis=0),
        helper.make_node("Add", ["past_len", "step_len"], ["total64"]),
        helper.make_node("Cast", ["total64"], ["total"], to=TensorProto.INT32),
        helper.make_node("Sub", ["total", "one32"], ["last"]),
        helper.make_node("Reshape", ["last", "shape1"], ["seqlens"]),
    ]
    inits += [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in [
        ("two", 2, np.int64), ("one", 1, np.int64), ("one32", 1, np.int32),
        ("shape1", [1], np.int64)]]
    names = ["query", "" if packed else "key", "" if packed else "value", "past_key",
             "past_value", "seqlens", "total"]
    attrs = dict(domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS, scale=0.3)
    if rotary:
        cos, sin = rotary_tables({"head_dim": D, "rope_base": 10000.0, "context": POSITIONS})
        inits += [numpy_helper.from_array(cos, "cos_cache"),
                  numpy_helper.from_array(sin, "sin_cache")]
        names += ["cos_cache", "sin_cache"]
        attrs["do_rotary"] = 1
    nodes.append(helper.make_node("GroupQueryAttention", names,
                                  ["attention", "present_key", "present_value"], **attrs))
    outputs = [value("attention", TensorProto.FLOAT, [1, "sequence", width])]
    outputs += [value(n, TensorProto.FLOAT, [1, KV_HEADS, "total", D])
                for n in ("present_key", "present_value")]
    model = helper.make_model(
        helper.make_graph(nodes, "attention", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="glimpse tools/make_attention.py")
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    out = pathlib.Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    reference = {}
    for packed in (False, True):
        for rotary in (False, True):
            name = f"gqa{'_packed' if packed else ''}{'_rotary' if rotary else ''}"
            model = graph(packed, rotary)
            onnx.save(model, out / f"{name}.onnx")
            session = ort.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
            cases = []
            for past, s in CASES:
                feeds = {i.name: rng.standard_normal(
                    [d if isinstance(d, int) else {"sequence": s, "past": past}[d]
                     for d in (x.dim_value or x.dim_param for x in i.type.tensor_type.shape.dim)]
                ).astype(np.float32) for i in model.graph.input}
                results = session.run(None, feeds)
                cases.append({
                    "past": past, "tokens": s,
                    "inputs": {k: v.ravel().tolist() for k, v in feeds.items()},
                    "outputs": {o.name: r.ravel().tolist()
                                for o, r in zip(model.graph.output, results)},
                })
            reference[name] = cases
    (out / "reference.json").write_text(json.dumps(
        {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": D, "cases": reference}) + "\n")
    print(f"wrote {out}: {', '.join(reference)}")


if __name__ == "__main__":
    main()
