"""Vision-language projectors with seeded weights, exported to ONNX with reference outputs.

    python3 tools/make_projectors.py tiny fixtures/projectors     # committed test fixtures
    python3 tools/make_projectors.py real models/projectors       # MobileVLM's shapes (~100 MB)

Each projector maps CLIP ViT patch features `image_features` [1, 576, vision_width] (24 x 24
patches, CLS dropped) to the language model's input embeddings `image_embeds` [1, tokens, hidden]:
  ldp       MobileVLM v1 LDP: Linear-GELU-Linear, then two MobileNetV3 inverted-residual blocks
            (depthwise 3x3, LayerNorm, Hardswish, squeeze-excite with Hardsigmoid, 1x1 project),
            the second with stride 2: 576 -> 144 tokens.
  ldpv2     MobileVLM v2: Linear-GELU-Linear, 2x2 average pool to 12 x 12, PEG (3x3 depthwise
            conv added back): 576 -> 144 tokens.
  mlp2x_gelu  LLaVA-1.5: Linear-GELU-Linear: 576 -> 576 tokens.
Written: `input.npy` (seeded features) and per projector `<name>.onnx` and `<name>_output.npy`
(PyTorch's output on that input). Real shapes: vision width 1024 (ViT-L/14@336), hidden 2048
(MobileLLaMA-1.4B); tiny: 32 and 48.
"""

import argparse
import pathlib

import numpy as np
import torch
from torch import nn

GRID = 24  # ViT-L/14 at 336 px: 24 x 24 patches


def make_divisible(v, divisor=8):
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (MobileVLM's LayerNormAct2d without act)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        sq = make_divisible(c // 4)
        self.fc1, self.fc2 = nn.Conv2d(c, sq, 1), nn.Conv2d(sq, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.fc2(nn.functional.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block, expansion 1: depthwise conv, LN, Hardswish, SE, 1x1 conv, LN."""

    def __init__(self, c, stride):
        super().__init__()
        self.stride = stride
        self.dw = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)
        self.ln1 = LayerNorm2d(c)
        self.se = SqueezeExcite(c)
        self.project = nn.Conv2d(c, c, 1, bias=False)
        self.ln2 = LayerNorm2d(c)

    def forward(self, x):
        y = nn.functional.hardswish(self.ln1(self.dw(x)))
        y = self.ln2(self.project(self.se(y)))
        return x + y if self.stride == 1 else y


def mlp(vision, hidden):
    return nn.Sequential(nn.Linear(vision, hidden), nn.GELU(), nn.Linear(hidden, hidden))


def to_map(x):
    b, n, c = x.shape
    return x.permute(0, 2, 1).reshape(b, c, GRID, GRID)


def to_tokens(x):
    return x.flatten(2).transpose(1, 2)


class Ldp(nn.Module):
    def __init__(self, vision, hidden):
        super().__init__()
        self.mlp = mlp(vision, hidden)
        self.blocks = nn.Sequential(InvertedResidual(hidden, 1), InvertedResidual(hidden, 2))

    def forward(self, x):
        return to_tokens(self.blocks(to_map(self.mlp(x))))


class LdpV2(nn.Module):
    def __init__(self, vision, hidden):
        super().__init__()
        self.mlp = mlp(vision, hidden)
        self.pool = nn.AdaptiveAvgPool2d((GRID // 2, GRID // 2))
        self.peg = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    def forward(self, x):
        x = self.pool(to_map(self.mlp(x)))
        return to_tokens(x + self.peg(x))


class Mlp2xGelu(nn.Module):
    def __init__(self, vision, hidden):
        super().__init__()
        self.mlp = mlp(vision, hidden)

    def forward(self, x):
        return self.mlp(x)


PROJECTORS = {"ldp": Ldp, "ldpv2": LdpV2, "mlp2x_gelu": Mlp2xGelu}
SHAPES = {"tiny": (32, 48), "real": (1024, 2048)}


def randomise(model, seed):
    """Seeded weights: matrices and kernels ~ N(0, 1/fan_in); biases ~ N(0, 0.1); LayerNorm
    gains ~ 1 + N(0, 0.1), so every parameter shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() > 1:
                p.copy_(noise / np.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * noise + (1.0 if ".ln" in f".{name}" and "weight" in name else 0.0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("size", choices=SHAPES)
    ap.add_argument("out")
    args = ap.parse_args()
    vision, hidden = SHAPES[args.size]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, GRID * GRID, vision, generator=torch.Generator().manual_seed(0))
    np.save(out / "input.npy", x.numpy())
    for seed, (name, cls) in enumerate(PROJECTORS.items(), start=1):
        torch.manual_seed(seed)
        model = cls(vision, hidden).eval()
        randomise(model, seed)
        with torch.no_grad():
            y = model(x)
        torch.onnx.export(model, (x,), out / f"{name}.onnx", input_names=["image_features"],
                          output_names=["image_embeds"], opset_version=17, dynamo=False)
        np.save(out / f"{name}_output.npy", np.ascontiguousarray(y.numpy()))
        print(name, tuple(x.shape), "->", tuple(y.shape))


if __name__ == "__main__":
    main()
