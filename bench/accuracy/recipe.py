"""The accuracy benchmark's recipes as data (docs/ACCURACY.md says why each
value is what it is), the command lines one recipe becomes on each side,
and the derived data folders (held-out split, smoke-test subsets).

A recipe is a flat dict of settings named as reference.py's flags; FLAGS
maps each to its selfsup and reference.py flag, so both programs are given
the same numbers from one place.
"""
import os
import random

# The shared settings. `epochs` may be a number or {method: number}; `grid`
# lists, per method, the values --select tries (each key a setting).
PRESETS = {
    # Sized for 2 CPU cores (the 5- and 15-epoch results in docs/BENCHMARKS.md).
    "cpu": {
        "size": 28, "small_stem": False, "base_width": 32, "batch_size": 256, "epochs": 5, "warmup": 1,
        "lr": 0.06, "weight_decay": 5e-4, "color_jitter_strength": 0.5, "blur_prob": 0.0, "seed": 0,
        "precision": "fp32",
        "simclr": {"head_latent_size": 512, "nce_size": 128, "nce_temperature": 0.5},
        "byol": {"head_latent_size": 512, "projection_size": 128, "base_decay": 0.99},
        "supervised": {"head_latent_size": 512},
        "device": "cpu", "threads": 1, "workers": 1, "jobs": 0, "grid": {},
    },
    # One H100/H200-class GPU: ResNet-18 at full width with the small stem at
    # 32 px; epochs sized so each method's pre-training takes about 8 minutes
    # at the measured ~11,000 img/s (SimCLR; BYOL's step costs ~1.3x).
    "gpu": {
        "size": 32, "small_stem": True, "base_width": 64, "batch_size": 512,
        "epochs": {"simclr": 80, "byol": 60, "supervised": 80}, "warmup": 5,
        "lr": 0.06, "weight_decay": 5e-4, "color_jitter_strength": 0.5, "blur_prob": 0.0, "seed": 0,
        "precision": "bf16",
        "simclr": {"head_latent_size": 512, "nce_size": 128, "nce_temperature": 0.5},
        "byol": {"head_latent_size": 4096, "projection_size": 256, "base_decay": 0.99},
        "supervised": {"head_latent_size": 512},
        "device": "cuda", "threads": 4, "workers": 12, "jobs": 1,
        "grid": {
            "simclr": {"lr": [0.06, 0.12], "nce_temperature": [0.2, 0.5]},
            "byol": {"lr": [0.06, 0.12], "base_decay": [0.99, 0.996]},
        },
    },
}

METHODS = ("simclr", "byol")

# setting -> (selfsup flag, reference.py flag); None = the setting is a switch.
FLAGS = {
    "size": ("--image-size-override", "--size"),
    "small_stem": ("--small-stem", "--small-stem"),
    "base_width": ("--base-width", "--base-width"),
    "batch_size": ("--batch-size", "--batch-size"),
    "epochs": ("--epochs", "--epochs"),
    "warmup": ("--warmup", "--warmup"),
    "lr": ("--lr", "--lr"),
    "weight_decay": ("--weight-decay", "--weight-decay"),
    "color_jitter_strength": ("--color-jitter-strength", "--color-jitter-strength"),
    "blur_prob": ("--blur-prob", "--blur-prob"),
    "seed": ("--seed", "--seed"),
    "precision": ("--precision", "--precision"),
    "head_latent_size": ("--head-latent-size", "--head-latent-size"),
    "nce_size": ("--nce-size", "--nce-size"),
    "nce_temperature": ("--nce-temperature", "--nce-temperature"),
    "projection_size": ("--projection-size", "--projection-size"),
    "base_decay": ("--base-decay", "--base-decay"),
}
SWITCHES = {"small_stem"}


def settings(preset, method, overrides=None):
    """The recipe of one pre-training: the preset's shared settings, its
    method's, then `overrides` (chosen hyper-parameters, flags given)."""
    p = PRESETS[preset]
    s = {k: v for k, v in p.items() if k in FLAGS}
    s.update(p[method])
    if isinstance(s["epochs"], dict):
        s["epochs"] = s["epochs"][method]
    s.update({k: v for k, v in (overrides or {}).items() if v is not None})
    # selfsup refuses a warm-up as long as the run (short smoke runs).
    s["warmup"] = min(s["warmup"], s["epochs"] - 1)
    return s


def grid(preset, method, fixed=()):
    """The hyper-parameter combinations --select tries for `method`, as
    dicts; settings fixed on the command line are left out of the grid."""
    axes = [(k, v) for k, v in PRESETS[preset]["grid"].get(method, {}).items() if k not in fixed]
    combos = [{}]
    for k, values in axes:
        combos = [{**c, k: v} for c in combos for v in values]
    return combos


def _flags(s, side):
    out = []
    for key, flags in FLAGS.items():
        if key not in s:
            continue
        flag = flags[side]
        if key in SWITCHES:
            # selfsup gives images <= 64 px the small stem by default: say "no" explicitly.
            out += [flag] if s[key] else (["--no-" + flag[2:]] if side == 0 else [])
        else:
            out += [flag, str(s[key])]
    return out


def selfsup_flags(method, s, data, out, uid, device, threads, workers):
    """`selfsup train` flags for the recipe `s`; runs and checkpoints under `out`."""
    flags = ["--method", method, "--data-dir", data, "-a", "resnet18", "--representation-size", str(8 * s["base_width"]),
             "--optimizer", "momentum", *_flags(s, 0),
             "--num-replicas", "1", "--threads", str(threads), "--workers-per-replica", str(workers),
             "--model-dir", os.path.join(out, "models"), "--log-dir", os.path.join(out, "runs"), "--uid", uid,
             "--no-resume", "--checkpoint-minutes", "0"]
    return flags + (["--no-cuda"] if device == "cpu" else [])


def reference_flags(method, s, data, out, device, threads, workers):
    """`reference.py pretrain` flags for the same recipe."""
    return ["--method", method, "--data", data, *_flags(s, 1), "--device", device,
            "--threads", str(threads), "--workers", str(workers), "--out", out]


# ---------------------------------------------------------------- data folders

def _files(split_dir):
    """{class: sorted image file names} of an ImageFolder split."""
    return {c: sorted(os.listdir(os.path.join(split_dir, c))) for c in sorted(os.listdir(split_dir))
            if os.path.isdir(os.path.join(split_dir, c))}


def _pick(files, count, seed):
    """A class-stratified random pick: {class: (picked, rest)} with about
    `count` picked in all, the same for the same seed."""
    total = sum(len(v) for v in files.values())
    rng = random.Random(seed)
    out = {}
    for c, names in files.items():
        names = names[:]
        rng.shuffle(names)
        k = round(count * len(names) / total)
        out[c] = (sorted(names[:k]), sorted(names[k:]))
    return out


def _link(src_split, picks, dst_split):
    for c, names in picks.items():
        os.makedirs(os.path.join(dst_split, c), exist_ok=True)
        for n in names:
            os.symlink(os.path.join(src_split, c, n), os.path.join(dst_split, c, n))


def derived_folder(data, dst, held_out=0.0, train_images=0, test_images=0, seed=0):
    """An ImageFolder of symbolic links into `data` (both programs follow
    them), made once: `train_images` > 0 keeps that many train images and
    `test_images` test images (smoke tests); `held_out` > 0 moves that
    fraction of train into test/ in place of the real test split (--select).
    Returns `dst`."""
    if os.path.isdir(os.path.join(dst, "test")):
        return dst
    tmp = dst + ".tmp"
    if os.path.isdir(tmp):
        import shutil
        shutil.rmtree(tmp)
    train = _files(os.path.join(data, "train"))
    if train_images:
        train = {c: kept for c, (kept, _) in _pick(train, train_images, seed).items()}
    if held_out:
        split = _pick(train, held_out * sum(len(v) for v in train.values()), seed + 1)
        _link(os.path.join(data, "train"), {c: rest for c, (_, rest) in split.items()}, os.path.join(tmp, "train"))
        _link(os.path.join(data, "train"), {c: picked for c, (picked, _) in split.items()}, os.path.join(tmp, "test"))
    else:
        _link(os.path.join(data, "train"), train, os.path.join(tmp, "train"))
        test = _files(os.path.join(data, "test"))
        if test_images:
            test = {c: kept for c, (kept, _) in _pick(test, test_images, seed).items()}
        _link(os.path.join(data, "test"), test, os.path.join(tmp, "test"))
    os.replace(tmp, dst)
    return dst
