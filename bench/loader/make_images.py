"""Writes an ImageFolder of JPEGs shaped like ImageNet's: <out>/train/<class>/<n>.jpg.

  python make_images.py <out> [--count 1000] [--classes 10] [--seed 0]

Sizes follow ImageNet's common shapes (most are 500x375, 375x500 or
500x333, some larger); the content is a smooth random colour field with
edges and sensor-like noise, so that files are ~100 kB at quality 90,
close to ImageNet's average (~110 kB). Deterministic for a seed.
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

# (width, height) and their weights: ImageNet's train set is dominated by 500-px-wide photos.
SHAPES = [((500, 375), 40), ((375, 500), 15), ((500, 333), 15), ((333, 500), 5), ((500, 400), 5),
          ((640, 480), 8), ((800, 600), 4), ((1024, 768), 3), ((400, 300), 5)]


def photo(rng, w, h):
    low = rng.random((6, 8, 3)) * 255
    img = Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        box = [x0, y0, x0 + rng.integers(10, w // 2), y0 + rng.integers(10, h // 2)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 14, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    shapes, weights = zip(*SHAPES)
    probs = np.array(weights) / sum(weights)
    total = 0
    for i in range(a.count):
        w, h = shapes[rng.choice(len(shapes), p=probs)]
        folder = os.path.join(a.out, "train", f"class{i % a.classes:03d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:06d}.jpg")
        photo(rng, w, h).save(path, quality=90)
        total += os.path.getsize(path)
    print(f"{a.count} JPEGs, {total / a.count / 1000:.0f} kB on average, in {a.out}/train")


if __name__ == "__main__":
    main()
