"""torchvision references for selfsup's data pipeline (tests/data_parity_test.ts).

  crop_stats <JSON [[native.safetensors, width, height], ...]>
      RandomResizedCrop.get_params drawn as often as selfsup's boxes: per
      image size, JSON two-sample KS statistics of area fraction, log aspect
      ratio and relative position, the KS critical value, fallback rates
  param_stats <native.safetensors> <strength>
      the reference train transform's photometric draws (flip, RandomApply
      of ColorJitter, its factors and op order, RandomGrayscale, RandomApply
      of GaussianBlur and its sigma) as torchvision makes them, as often as
      selfsup's parameter vectors: JSON rates of each coin, KS statistics
      of each factor, the largest gap between the 24 op orders' frequencies
  ops_make <dir> / ops_compare <dir>
      inputs and torchvision.transforms.functional outputs of each colour
      op, blur and solarize for per-image factors; then JSON {op: max|a-b|}
  apply_make <dir> / apply_compare <dir>
      uint8 images and parameter vectors (native/src/augment/mod.rs layout);
      the whole photometric pipeline composed from torchvision ops per image
  resize_compare <image> <boxes JSON> <JSON {size: native.safetensors}>
      crop + resize(antialias=True) by PIL and by torchvision tensors vs selfsup
  images_make <dir>
      PIL writes images in awkward modes (CMYK JPEG, 16-bit, palette, ...)
  decode_compare <JSON {image: native.safetensors}>
      PIL's Image.open(p).convert("RGB") vs selfsup's decode, per image
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

import st

# native/src/augment/mod.rs parameter layout
FLIP, JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE, ORDER, GRAY, BLUR, SIGMA, SOLARIZE = range(11)
NPARAMS = 11


def ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def box_features(boxes, w, h):
    top, left, bh, bw = (boxes[:, i].astype(np.float64) for i in range(4))
    # Relative position within the free range; 0.5 when the box spans the image.
    rel = lambda pos, free: np.where(free > 0, pos / np.maximum(free, 1), 0.5)
    return {
        "area": bh * bw / (w * h),
        "log_ratio": np.log(bw / bh),
        "top": rel(top, h - bh),
        "left": rel(left, w - bw),
    }


def fallback_box(w, h, ratio=(3 / 4, 4 / 3)):
    """RandomResizedCrop.get_params' centre crop after 10 failed tries (torchvision's code)."""
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def crop_stats(cases):
    out = []
    for native_path, w, h in json.loads(cases):
        ours = st.load(native_path)["boxes"].numpy()
        torch.manual_seed(0)
        img = torch.empty(3, h, w)
        theirs = np.array([T.RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(len(ours))])
        fo, ft = box_features(ours, w, h), box_features(theirs, w, h)
        fallback = np.array(fallback_box(w, h))
        rate = lambda b: float(np.mean((b == fallback).all(axis=1)))
        s = {k: ks(fo[k], ft[k]) for k in fo}
        s["critical"] = 1.949 * math.sqrt(2 / len(ours))  # c(alpha) sqrt((n+m)/(nm)), alpha = 0.001
        s["fallback_ours"], s["fallback_torchvision"] = rate(ours), rate(theirs)
        s["area_min"], s["area_max"] = float(fo["area"].min()), float(fo["area"].max())
        out.append(s)
    print(json.dumps(out))


def param_stats(native_path, strength):
    ours = st.load(native_path)["params"].numpy()
    n, s = len(ours), float(strength)
    torch.manual_seed(0)
    cj = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    rows = []
    for _ in range(n):
        # The same calls, in the same order, as the transforms' forward passes.
        flip = float(torch.rand(1) < 0.5)  # RandomHorizontalFlip
        jitter = float(not 0.8 < torch.rand(1))  # RandomApply(p=0.8)
        order, b, c, sat, h = T.ColorJitter.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue)
        gray = float(torch.rand(1) < 0.2)  # RandomGrayscale
        blur = float(not 0.5 < torch.rand(1))  # RandomApply(p=0.5)
        sigma = T.GaussianBlur.get_params(0.1, 2.0)
        rows.append((flip, jitter, b, c, sat, h, tuple(order.tolist()), gray, blur, sigma))
    theirs = {k: np.array([r[i] for r in rows]) for i, k in enumerate(["flip", "jitter", "b", "c", "s", "h", "order", "gray", "blur", "sigma"]) if k != "order"}
    mine = {"flip": ours[:, FLIP], "jitter": ours[:, JITTER], "b": ours[:, BRIGHTNESS], "c": ours[:, CONTRAST], "s": ours[:, SATURATION],
            "h": ours[:, HUE], "gray": ours[:, GRAY], "blur": ours[:, BLUR], "sigma": ours[:, SIGMA]}
    out = {"rate_" + k: [float(mine[k].mean()), float(theirs[k].mean())] for k in ("flip", "jitter", "gray", "blur")}
    out.update({"ks_" + k: ks(mine[k], theirs[k]) for k in ("b", "c", "s", "h", "sigma")})
    out["critical"] = 1.949 * math.sqrt(2 / n)  # alpha = 0.001
    freq = lambda orders: {p: orders.count(p) / n for p in set(orders)}
    fo, ft = freq([tuple(permutation(int(k))) for k in ours[:, ORDER]]), freq([r[6] for r in rows])
    out["orders"] = [len(fo), len(ft)]
    out["order_gap"] = max(abs(fo.get(p, 0) - ft.get(p, 0)) for p in set(fo) | set(ft))
    print(json.dumps(out))


def natural_images(n, h, w, seed):
    """Smooth colour fields plus noise, in [0, 1]: saturated and grey regions both occur."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return (smooth + 0.08 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)


OPS = {
    "brightness": (lambda x, f, k: TF.adjust_brightness(x, f), (0.2, 1.8)),
    "contrast": (lambda x, f, k: TF.adjust_contrast(x, f), (0.2, 1.8)),
    "saturation": (lambda x, f, k: TF.adjust_saturation(x, f), (0.2, 1.8)),
    "hue": (lambda x, f, k: TF.adjust_hue(x, f), (-0.2, 0.2)),
    "grayscale": (lambda x, f, k: TF.rgb_to_grayscale(x, 1), (0, 1)),
    "blur": (lambda x, f, k: TF.gaussian_blur(x, [k, k], [f, f]), (0.1, 2.0)),
    "solarize": (lambda x, f, k: TF.solarize(x, 0.5), (0, 1)),
}


def ops_make(d):
    x = natural_images(6, 40, 48, 1)
    for i, (name, (op, (lo, hi))) in enumerate(OPS.items()):
        f = lo + (hi - lo) * torch.rand(6, generator=torch.Generator().manual_seed(i))
        k = 5
        ref = torch.stack([op(x[j], float(f[j]), k) for j in range(6)])
        st.save({"x": x, "factor": f}, os.path.join(d, f"in_{name}.safetensors"))
        st.save({"out": ref}, os.path.join(d, f"ref_{name}.safetensors"))
    print(json.dumps({"ops": list(OPS), "kernel": 5}))


def ops_compare(d):
    out = {}
    for name in OPS:
        ref = st.load(os.path.join(d, f"ref_{name}.safetensors"))["out"]
        nat = st.load(os.path.join(d, f"native_{name}.safetensors"))["out"]
        out[name] = float((ref - nat).abs().max()) if ref.shape == nat.shape else f"shape {list(nat.shape)} vs {list(ref.shape)}"
    print(json.dumps(out))


def permutation(k):
    """The k-th permutation of [0, 1, 2, 3], as native/src/augment/mod.rs numbers them."""
    pool, out = [0, 1, 2, 3], []
    for f in (6, 2, 1, 1):
        out.append(pool.pop(k // f))
        k %= f
    return out


def reference_pipeline(img, p, k):
    """One image [3,H,W] in [0,1] through the reference's photometric transform with fixed parameters."""
    if p[FLIP] > 0.5:
        img = TF.hflip(img)
    if p[JITTER] > 0.5:
        ops = [
            lambda x: TF.adjust_brightness(x, float(p[BRIGHTNESS])),
            lambda x: TF.adjust_contrast(x, float(p[CONTRAST])),
            lambda x: TF.adjust_saturation(x, float(p[SATURATION])),
            lambda x: TF.adjust_hue(x, float(p[HUE])),
        ]
        for op in permutation(int(p[ORDER])):
            img = ops[op](img)
    if p[GRAY] > 0.5:
        img = TF.rgb_to_grayscale(img, 3)
    if p[BLUR] > 0.5 and k > 1:
        img = TF.gaussian_blur(img, [k, k], [float(p[SIGMA])] * 2)
    if p[SOLARIZE] > 0.5:
        img = TF.solarize(img, 0.5)
    return img


def apply_make(d):
    n, size = 48, 64
    g = torch.Generator().manual_seed(7)
    images = (natural_images(n, size, size, 3) * 255).round()
    u = torch.rand(n, NPARAMS, generator=g)
    params = torch.zeros(n, NPARAMS)
    for col, prob in [(FLIP, 0.5), (JITTER, 0.8), (GRAY, 0.2), (BLUR, 0.5), (SOLARIZE, 0.3)]:
        params[:, col] = (u[:, col] < prob).float()
    params[:, BRIGHTNESS] = 0.2 + 1.6 * u[:, BRIGHTNESS]
    params[:, CONTRAST] = 0.2 + 1.6 * u[:, CONTRAST]
    params[:, SATURATION] = 0.2 + 1.6 * u[:, SATURATION]
    params[:, HUE] = -0.2 + 0.4 * u[:, HUE]
    params[:, ORDER] = torch.arange(n) % 24
    params[:, SIGMA] = 0.1 + 1.9 * u[:, SIGMA]
    k = (size // 10) // 2 * 2 + 1
    ref = torch.stack([reference_pipeline(images[i] / 255, params[i], k) for i in range(n)])
    st.save({"images": images, "params": params}, os.path.join(d, "in_apply.safetensors"))
    st.save({"out": ref}, os.path.join(d, "ref_apply.safetensors"))
    print(json.dumps({"images": n, "size": size, "kernel": k}))


def apply_compare(d):
    ref = st.load(os.path.join(d, "ref_apply.safetensors"))["out"]
    nat = st.load(os.path.join(d, "native_apply.safetensors"))["out"]
    diff = (ref - nat).abs()
    print(json.dumps({"max": float(diff.max()), "mean": float(diff.mean())}))


def resize_compare(image, boxes_json, natives_json):
    pil = Image.open(image).convert("RGB")
    tensor = TF.pil_to_tensor(pil)
    stats = {}
    for size, native_path in json.loads(natives_json).items():
        size, nat = int(size), st.load(native_path)["out"]
        for i, (top, left, h, w) in enumerate(json.loads(boxes_json)):
            via_pil = TF.pil_to_tensor(TF.resized_crop(pil, top, left, h, w, [size, size], T.InterpolationMode.BILINEAR))
            via_tensor = TF.resized_crop(tensor, top, left, h, w, [size, size], T.InterpolationMode.BILINEAR, antialias=True)
            for key, ref in [("pil", via_pil), ("tensor", via_tensor)]:
                d = (ref.float() - nat[i]).abs()
                stats[f"{key} {size}px box {i}"] = {"mean": float(d.mean()), "max": float(d.max())}
    print(json.dumps(stats))


def images_make(d):
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:60, 0:80]
    rgb = np.stack([(x * 3) % 256, (y * 4) % 256, ((x + y) * 2) % 256], -1).astype(np.uint8)
    noisy = np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8)
    made = {}

    def save(name, img, **kw):
        img.save(os.path.join(d, name), **kw)
        made[name] = img.mode

    save("rgb.jpg", Image.fromarray(noisy), quality=92)
    save("rgb.png", Image.fromarray(noisy))
    save("rgb.bmp", Image.fromarray(noisy))
    save("rgb.webp", Image.fromarray(noisy), lossless=True)
    save("gray.png", Image.fromarray(noisy[:, :, 0]))
    save("gray.jpg", Image.fromarray(noisy[:, :, 1]), quality=92)
    save("rgba.png", Image.fromarray(np.dstack([noisy, rng.integers(0, 256, (60, 80), dtype=np.uint8)])))
    save("palette.png", Image.fromarray(noisy).convert("P", palette=Image.ADAPTIVE, colors=64))
    save("cmyk.jpg", Image.fromarray(np.dstack([noisy, noisy[:, :, :1]]), mode="CMYK"), quality=95)
    save("gray16.png", Image.fromarray((noisy[:, :, 0].astype(np.uint16) * 257)))
    big = np.clip(np.kron(rgb, np.ones((40, 40, 1))) + rng.normal(0, 8, (2400, 3200, 3)), 0, 255).astype(np.uint8)
    save("large.jpg", Image.fromarray(big), quality=90)
    print(json.dumps(made))


def decode_compare(natives_json):
    stats = {}
    for image, native_path in json.loads(natives_json).items():
        ref = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).float()
        nat = st.load(native_path)["image"]
        if ref.shape != nat.shape:
            stats[image] = {"shape": [list(nat.shape), list(ref.shape)]}
            continue
        d = (ref - nat).abs()
        stats[image] = {"mean": float(d.mean()), "max": float(d.max())}
    print(json.dumps(stats))


if __name__ == "__main__":
    torch.set_num_threads(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "crop_stats": lambda: crop_stats(args[0]),
        "param_stats": lambda: param_stats(args[0], args[1]),
        "ops_make": lambda: ops_make(args[0]),
        "ops_compare": lambda: ops_compare(args[0]),
        "apply_make": lambda: apply_make(args[0]),
        "apply_compare": lambda: apply_compare(args[0]),
        "resize_compare": lambda: resize_compare(args[0], args[1], args[2]),
        "images_make": lambda: images_make(args[0]),
        "decode_compare": lambda: decode_compare(args[0]),
    }[cmd]()
