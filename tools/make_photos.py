"""Make test and benchmark photos from scikit-image's sample images (public domain / CC0).

    python tools/make_photos.py fixtures/photos                # 8 small JPEGs (committed)
    python tools/make_photos.py /tmp/photos --count 200 --size 4000x3000   # benchmark set

Each photo is a seeded random crop / flip / brightness change of a sample, resized to the
given size (bicubic), saved as JPEG quality 92 with an EXIF DateTimeOriginal (one day apart,
from 2024-01-01) so date filters have something to filter. Deterministic for a given seed.
"""

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

import skimage.data

SOURCES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
           "hubble_deep_field.jpg", "retina.jpg", "camera.png", "grass.png", "brick.png",
           "coins.png", "page.png", "moon.png", "gravel.png", "ihc.png", "motorcycle_right.png"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    data = Path(os.path.dirname(skimage.data.__file__))
    rng = np.random.default_rng(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(a.count):
        name = SOURCES[i % len(SOURCES)]
        img = Image.open(data / name).convert("RGB")
        if i >= len(SOURCES):  # variations after the first pass over the samples
            sw, sh = img.size
            cw, ch = int(sw * rng.uniform(0.7, 1.0)), int(sh * rng.uniform(0.7, 1.0))
            x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
            img = img.crop((x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            img = Image.fromarray(np.clip(np.asarray(img) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        exif = Image.Exif()
        exif[0x8769] = {0x9003: f"2024:{1 + i // 28:02d}:{1 + i % 28:02d} 12:00:00"}  # DateTimeOriginal
        stem = Path(name).stem
        img.save(out / f"{i:03d}-{stem}.jpg", quality=92, exif=exif)
    print(f"{a.count} photos of {w}x{h} in {out}")


if __name__ == "__main__":
    main()
