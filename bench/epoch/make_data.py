"""Writes the epoch benchmark's data set: an ImageFolder of small JPEGs,
<out>/train/<class>/<n>.jpg and <out>/test/<class>/<n>.jpg.

  python make_data.py <out> [--train 512] [--test 128] [--px 32] [--classes 10] [--seed 0]

Square images of --px pixels with the content of bench/loader/make_images.py
(a smooth random colour field with shapes and sensor-like noise), JPEG
quality 90. Deterministic for a seed.
"""
import argparse
import importlib.util
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("make_images", os.path.join(HERE, "..", "loader", "make_images.py"))
make_images = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_images)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=512)
    p.add_argument("--test", type=int, default=128)
    p.add_argument("--px", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.px < 22:
        p.error("--px must be at least 22 (the shapes of make_images.py need room)")
    rng = np.random.default_rng(a.seed)
    total = 0
    for split, count in (("train", a.train), ("test", a.test)):
        for i in range(count):
            folder = os.path.join(a.out, split, f"class{i % a.classes:03d}")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{i:06d}.jpg")
            make_images.photo(rng, a.px, a.px).save(path, quality=90)
            total += os.path.getsize(path)
    print(f"{a.train} + {a.test} JPEGs of {a.px} px, {total / (a.train + a.test) / 1000:.1f} kB on average, in {a.out}")


if __name__ == "__main__":
    main()
