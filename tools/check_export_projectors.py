"""Checks tools/export_vlm.py's projector name maps for MobileVLM v1 (`ldpnet`) and LLaVA-1.5
(`mlp2x_gelu`) against modules built the way those checkpoints' are: from torchvision's
InvertedResidual and SqueezeExcitation and timm's LayerNormAct2d (MobileVLM's LDPBlock) and
an nn.Sequential. Seeded weights, named as those modules name them, load into the exporter's
projector, which must give the same output. (`ldpnetv2` is checked end to end by
tools/make_vlm_checkpoint.py and tests/vlm.rs.)

    cd tools && python3 check_export_projectors.py     # needs torchvision, timm
"""
import pathlib
import sys
from functools import partial

import torch
from timm.layers.norm_act import LayerNormAct2d
from torch import nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
from torchvision.ops.misc import SqueezeExcitation

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from export_vlm import PROJECTOR, projector  # noqa: E402
from make_projectors import GRID, randomise  # noqa: E402

VISION, HIDDEN = 32, 48


class LdpV1(nn.Module):
    """MobileVLM v1's projector as its checkpoints name it: `model.mlp.*`, `model.mb_block.*`."""

    def __init__(self):
        super().__init__()
        ln = partial(LayerNormAct2d, act_layer=None)
        se = partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)
        c = HIDDEN
        block = [InvertedResidual(InvertedResidualConfig(c, 3, c, c, True, "HS", s, 1, 1), ln, se)
                 for s in (1, 2)]
        self.model = nn.Module()
        self.model.mlp = nn.Sequential(nn.Identity(), nn.Linear(VISION, c), nn.GELU(),
                                       nn.Linear(c, c))
        self.model.mb_block = nn.Sequential(nn.Identity(), *block)

    def forward(self, x):
        x = self.model.mlp(x).permute(0, 2, 1).reshape(1, HIDDEN, GRID, GRID)
        return self.model.mb_block(x).flatten(2).permute(0, 2, 1)


x = torch.randn(1, GRID * GRID, VISION, generator=torch.Generator().manual_seed(0))
mlp = nn.Sequential(nn.Linear(VISION, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN))
for kind, ref in [("ldpnet", LdpV1()), ("mlp2x_gelu", mlp)]:
    randomise(ref, 5)
    weights = {PROJECTOR + k: v for k, v in ref.eval().state_dict().items()}
    config = {"mm_projector_type": kind, "mm_hidden_size": VISION, "hidden_size": HIDDEN}
    ours = projector(weights, config).eval()
    with torch.no_grad():
        a, b = ref(x), ours(x)
    err = float((a - b).abs().max())
    print(kind, tuple(a.shape), "max abs difference", err)
    assert err <= 1e-6, kind
