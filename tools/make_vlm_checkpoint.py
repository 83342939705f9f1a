"""A tiny seeded checkpoint directory in MobileVLM v2's layout, its export, and PyTorch
references: the fixture of tools/export_vlm.py's test (tests/vlm.rs).

    python3 tools/make_vlm_checkpoint.py fixtures/mobilevlm-tiny

Writes under OUT:
  checkpoint/   config.json (MobileVLM V2's keys), model.safetensors (float16, MobileVLM's
                parameter names: LLaMA `model.*` and `lm_head`, `model.mm_projector.*` of its
                LDPNetV2Projector, `model.vision_tower.vision_tower.*` of a CLIPVisionModel),
                tokenizer.json (byte-level BPE trained on a few sentences; bos <s>, eos </s>)
  bundle/       `tools/export_vlm.py checkpoint bundle`
  photo.png     fixtures/images/franz-kafka.jpg at 48 x 36
  pixels.npy, image_embeds.npy   photo.png padded to a square on the mean colour
                (`image_aspect_ratio: "pad"`) and preprocessed with PIL; its image tokens
  reference.json  the prompt's ids as MobileVLM builds them (`tokenizer_image_token`: the prompt
                split at `<image>`, pieces tokenised apart, -200 where the image goes), the
                logits after the prompt, and up to 8 greedy tokens (while the top two logits are 0.05
                apart)
The references come from transformers' LlamaForCausalLM and CLIPVisionModel and a functional
LDPv2 written from MobileVLM's parameter names, not from the exporter's modules.
Shapes: vision width 64, 3 layers, 48 px, patch 2 (the real 24 x 24 grid); LLaMA width 64,
2 layers, 4 heads over 2 key/value heads; vocabulary 400.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

TOOLS = pathlib.Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
from pixels import clip_preprocess, expand2square  # noqa: E402

QUESTION = "What is in the image?"
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
# What the tokenizer learns its merges from.
CORPUS = """A photo of a man in a dark suit and a white shirt, looking at the camera.
The image shows a portrait in black and white, an old photograph of a writer.
USER: Describe this image. ASSISTANT: A man with short dark hair stands in front of a wall.
What is the capital of France? The capital of France is Paris.
Photos on the device are tagged, searched and captioned without a network."""
STEPS = 8
MARGIN = 0.05
IMAGE_TOKEN = -200  # MobileVLM's IMAGE_TOKEN_INDEX


def seeded(model, seed):
    """Matrices ~ N(0, 1/fan_in), norm gains 1 + N(0, 0.1), other vectors N(0, 0.1);
    embeddings N(0, 1): every parameter shows in the output, logits are far from flat."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "embed_tokens" in name:
                p.copy_(noise)
            elif p.dim() > 1:
                p.copy_(noise / np.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * noise + (1.0 if "norm" in name and "weight" in name else 0.0))


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([SYSTEM, QUESTION] + CORPUS.split("\n"), trainer)
    return tok


def ldpv2(w, x):
    """MobileVLM's LDPNetV2Projector from its parameter names: MLP, 2x2 average pool, PEG."""
    p = "model.mm_projector."
    x = F.linear(x, w[p + "mlp.mlp.0.weight"], w[p + "mlp.mlp.0.bias"])
    x = F.linear(F.gelu(x), w[p + "mlp.mlp.2.weight"], w[p + "mlp.mlp.2.bias"])
    b, n, c = x.shape
    side = int(n ** 0.5)
    x = F.adaptive_avg_pool2d(x.permute(0, 2, 1).reshape(b, c, side, side), (12, 12))
    x = x + F.conv2d(x, w[p + "peg.peg.0.weight"], w[p + "peg.peg.0.bias"], padding=1, groups=c)
    return x.flatten(2).transpose(1, 2)


def main():
    out = pathlib.Path(sys.argv[1])
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    tok.save(str(ckpt / "tokenizer.json"))
    config = {
        "architectures": ["MobileLlamaForCausalLM"], "model_type": "mobilevlm",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": tok.get_vocab_size(),
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "torch_dtype": "float16",
        "mm_projector_type": "ldpnetv2", "mm_hidden_size": 64, "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "image_aspect_ratio": "pad", "mm_use_im_start_end": False,
    }
    llama = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items()
                                            if not k.startswith("mm_")})).eval()
    seeded(llama, 7)
    tower = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=1,
        image_size=48, patch_size=2, hidden_act="quick_gelu")).eval()
    seeded(tower, 2)
    g = torch.Generator().manual_seed(3)
    proj = {"mlp.mlp.0.weight": torch.randn(64, 64, generator=g) / 8,
            "mlp.mlp.0.bias": 0.1 * torch.randn(64, generator=g),
            "mlp.mlp.2.weight": torch.randn(64, 64, generator=g) / 8,
            "mlp.mlp.2.bias": 0.1 * torch.randn(64, generator=g),
            "peg.peg.0.weight": torch.randn(64, 1, 3, 3, generator=g) / 3,
            "peg.peg.0.bias": 0.1 * torch.randn(64, generator=g)}
    weights = dict(llama.state_dict())
    # The tower's names as MobileVLM's checkpoints (transformers 4) hold them.
    weights |= {"model.vision_tower.vision_tower.vision_model." + k.removeprefix("vision_model."): v
                for k, v in tower.state_dict().items()}
    weights |= {"model.mm_projector." + k: v for k, v in proj.items()}
    weights = {k: v.half().contiguous() for k, v in weights.items()}
    save_file(weights, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    # References from the float16 weights as saved, in float32.
    w = {k: v.float() for k, v in weights.items()}
    llama.load_state_dict({k: v for k, v in w.items() if not k.startswith("model.vision_tower.")
                           and not k.startswith("model.mm_projector.")})
    tower.load_state_dict({name: w["model.vision_tower.vision_tower.vision_model."
                                   + name.removeprefix("vision_model.")]
                           for name in tower.state_dict()})
    # A lossless 48 x 36 photo: padding to 48 x 48 is the only resampling-free step left, so
    # Glimpse's pixels are PIL's to the last bit and `ask` meets the greedy reference.
    photo = Image.open(ROOT / "fixtures/images/franz-kafka.jpg").convert("RGB")
    photo.resize((48, 36), Image.BICUBIC).save(out / "photo.png")
    image = expand2square(Image.open(out / "photo.png").convert("RGB"))
    pixels = torch.from_numpy(clip_preprocess(image, 48)[None])
    with torch.no_grad():
        features = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        image_embeds = ldpv2(w, features)

        # MobileVLM's prompt (conversation "v1") and tokenizer_image_token.
        prompt = f"{SYSTEM} USER: <image>\n{QUESTION} ASSISTANT:"
        chunks = [tok.encode(c, add_special_tokens=False).ids for c in prompt.split("<image>")]
        ids = [config["bos_token_id"]] + chunks[0] + [IMAGE_TOKEN] + chunks[1]
        at = ids.index(IMAGE_TOKEN)
        embed = llama.get_input_embeddings()
        embeds = torch.cat([embed(torch.tensor([ids[:at]])), image_embeds,
                            embed(torch.tensor([ids[at + 1:]]))], dim=1)
        logits, greedy, margins = None, [], []
        for _ in range(STEPS):
            step = llama(inputs_embeds=embeds).logits[0, -1]
            logits = step if logits is None else logits
            top = step.topk(2)
            greedy.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            embeds = torch.cat([embeds, embed(top.indices[:1])[None]], dim=1)
    # Greedy steps whose top two logits are close would hang on rounding: the reference stops
    # before the first one.
    close = next((i for i, m in enumerate(margins) if m < MARGIN), len(margins))
    greedy, margins = greedy[:close], margins[:close]
    np.save(out / "pixels.npy", pixels.numpy())
    np.save(out / "image_embeds.npy", np.ascontiguousarray(image_embeds.numpy()))
    (out / "reference.json").write_text(json.dumps({
        "question": QUESTION, "prompt_ids": ids, "logits": [round(float(x), 6) for x in logits],
        "greedy": greedy, "margins": [round(m, 4) for m in margins]}) + "\n")
    print("greedy", greedy, "margins", [round(m, 4) for m in margins])
    subprocess.run([sys.executable, str(TOOLS / "export_vlm.py"), str(ckpt), str(out / "bundle")],
                   check=True)


if __name__ == "__main__":
    main()
