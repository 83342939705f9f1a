"""A seeded CLIP ViT-L/14@336 "mmproj" GGUF for llama.cpp's CLIP encoder (tools/mtmd/clip.cpp).

    /work/cache/llamacpp-venv/bin/python tools/make_mmproj.py /tmp/mmproj-f32.gguf
    /work/cache/llamacpp-venv/bin/python tools/make_mmproj.py /tmp/mmproj-f16.gguf --f16
    /work/cache/llamacpp-venv/bin/python tools/make_mmproj.py /tmp/mmproj-q8.gguf --q8

For benchmarking only (benches/compare_mmproj.py): llama.cpp's vision encoder on the same shapes
as Glimpse's seeded ViT-L/14@336 tower (tools/make_vlm.py real); no trained weights exist here.
Random normal weights (numpy default_rng(0), std 0.02; LayerNorm gains 1). Layout as LLaVA-1.5's
mmproj: 336 px, patch 14, width 1024, 16 heads, FFN 4096, eps 1e-5, quick_gelu (no
`clip.use_gelu`), pre-LN, no post-LN, LLaVA "mlp" projector (mm.0 -> GELU -> mm.2) to
--out-width (576 = SmolLM2-135M). Features are the penultimate layer's patch tokens, as in
LLaVA / MobileVLM (HF `hidden_states[-2][:, 1:]`): the last of --layers blocks is not written,
block_count = layers - 1 and `clip.vision.feature_layer` = [layers - 1], so clip.cpp runs
exactly layers - 1 blocks (without that key it would stop one block earlier, at n_layer - 1).
Weights f32 (the patch conv too), or --f16 for 2-D/4-D weights as llama.cpp's usual mmproj,
or --q8 for 2-D weights in Q8_0 (the patch conv f16), llama.cpp's 8-bit form.
"""

import argparse

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, quants

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE, PATCH, WIDTH, HEADS, FFN, EPS = 336, 14, 1024, 16, 4096, 1e-5


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--out-width", type=int, default=576, help="projector output width")
    ap.add_argument("--layers", type=int, default=24, help="ViT depth (features from layers - 1)")
    ap.add_argument("--f16", action="store_true", help="f16 weight matrices (default f32)")
    ap.add_argument("--q8", action="store_true", help="Q8_0 weight matrices, f16 patch conv")
    args = ap.parse_args()
    assert args.layers >= 2, "the penultimate layer needs at least 2 layers"
    blocks = args.layers - 1
    rng = np.random.default_rng(0)

    w = GGUFWriter(args.out, arch="clip")
    w.add_name("glimpse-seeded-clip-vit-l-14-336")
    w.add_description("image encoder for LLaVA (seeded random weights, benchmark only)")
    w.add_file_type(7 if args.q8 else 1 if args.f16 else 0)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", IMAGE)
    w.add_uint32("clip.vision.patch_size", PATCH)
    w.add_uint32("clip.vision.embedding_length", WIDTH)
    w.add_uint32("clip.vision.feed_forward_length", FFN)
    w.add_uint32("clip.vision.projection_dim", 768)  # CLIP's, required but unused by "mlp"
    w.add_uint32("clip.vision.attention.head_count", HEADS)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", EPS)
    w.add_uint32("clip.vision.block_count", blocks)
    w.add_array("clip.vision.feature_layer", [blocks])
    w.add_array("clip.vision.image_mean", CLIP_MEAN)
    w.add_array("clip.vision.image_std", CLIP_STD)
    w.add_bool("clip.use_gelu", False)  # False = quick_gelu, as CLIP ViT-L/14

    def add(name, *shape, fill=None):  # numpy shape (out, in); GGUF stores it reversed
        if fill is None:
            t = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        else:
            t = np.full(shape, fill, dtype=np.float32)
        if args.q8 and name.endswith(".weight") and t.ndim == 2:
            q = quants.quantize(t, GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)
            return
        if (args.f16 or args.q8) and name.endswith(".weight") and t.ndim >= 2:
            t = t.astype(np.float16)
        w.add_tensor(name, t)

    n_pos = (IMAGE // PATCH) ** 2 + 1
    add("v.patch_embd.weight", WIDTH, 3, PATCH, PATCH)  # conv, no bias (as CLIP)
    add("v.class_embd", WIDTH)
    add("v.position_embd.weight", n_pos, WIDTH)
    add("v.pre_ln.weight", WIDTH, fill=1.0)
    add("v.pre_ln.bias", WIDTH, fill=0.0)
    for i in range(blocks):
        p = f"v.blk.{i}."
        for n in ("attn_q", "attn_k", "attn_v", "attn_out"):
            add(p + n + ".weight", WIDTH, WIDTH)
            add(p + n + ".bias", WIDTH)
        for n in ("ln1", "ln2"):
            add(p + n + ".weight", WIDTH, fill=1.0)
            add(p + n + ".bias", WIDTH, fill=0.0)
        add(p + "ffn_up.weight", FFN, WIDTH)  # fc1
        add(p + "ffn_up.bias", FFN)
        add(p + "ffn_down.weight", WIDTH, FFN)  # fc2
        add(p + "ffn_down.bias", WIDTH)
    add("mm.0.weight", args.out_width, WIDTH)
    add("mm.0.bias", args.out_width)
    add("mm.2.weight", args.out_width, args.out_width)
    add("mm.2.bias", args.out_width)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{args.out}: {blocks} of {args.layers} blocks, {'q8_0' if args.q8 else 'f16' if args.f16 else 'f32'}, "
          f"{(IMAGE // PATCH) ** 2} tokens x {args.out_width}")


if __name__ == "__main__":
    main()
