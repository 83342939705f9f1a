"""Reference image preprocessing with PIL + numpy only (no torch): what the preprocessing
tests compare Glimpse's decoder and resizer against.

    python3 tools/pixels.py padded fixtures/images/padded.npy

`clip_preprocess` is openai/CLIP's (shortest side to `size`, bicubic; centre crop; normalise).
`expand2square` is LLaVA's and MobileVLM's `image_aspect_ratio: "pad"` (transformers'
`LlavaImageProcessor(do_pad=True)`): the image pasted onto a square of its longer side, offset
by half the difference rounded down, on the mean colour (`int(mean * 255)` per channel), before
CLIP's preprocessing. `padded` writes the padding test's reference: fixtures/images/gradient.png
cut to 300 x 179 (wide, an odd difference), then the same turned 90 degrees clockwise (tall), both
padded and preprocessed at 64 px.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
ROOT = Path(__file__).resolve().parent.parent


def clip_preprocess(image, size):
    """CLIP's preprocessing of a path or PIL image, as openai/CLIP does it: CHW float32."""
    img = (Image.open(image) if isinstance(image, (str, Path)) else image).convert("RGB")
    w, h = img.size
    if w < h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    a = np.asarray(img, dtype=np.float32)[top : top + size, left : left + size] / 255.0
    a = (a - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    return a.transpose(2, 0, 1).astype(np.float32)


def expand2square(img, mean=CLIP_MEAN):
    """LLaVA's square padding on the mean colour."""
    w, h = img.size
    side = max(w, h)
    out = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def padded(out):
    wide = Image.open(ROOT / "fixtures/images/gradient.png").convert("RGB").crop((0, 0, 300, 179))
    tall = wide.transpose(Image.Transpose.ROTATE_270)   # 90 degrees clockwise
    pixels = np.stack([clip_preprocess(expand2square(i), 64) for i in (wide, tall)])
    np.save(out, pixels)
    print(out, pixels.shape)


if __name__ == "__main__":
    {"padded": padded}[sys.argv[1]](*sys.argv[2:])
