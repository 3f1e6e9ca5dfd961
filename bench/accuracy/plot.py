"""Draws the accuracy benchmark's curves to a PNG: per method, the
self-supervised training loss and the online classifier's test top-1 by
epoch, selfsup (its metrics.jsonl) beside the PyTorch reference (its
metrics.jsonl), so the two runs of one recipe can be compared at a glance.

  . .cache/env.sh && $SELFSUP_PYTHON bench/accuracy/plot.py [--out-dir .cache/accuracy/5ep] [--png docs/accuracy-fmnist.png]
  $SELFSUP_PYTHON bench/accuracy/plot.py --out-dir .cache/accuracy/gpu --png docs/accuracy-fmnist-gpu.png

Needs matplotlib (`$SELFSUP_PYTHON -m pip install matplotlib`); the
benchmark itself does not.
"""
import argparse
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def selfsup_curves(run_dir):
    """(epochs, train loss, online test top-1) from selfsup's metrics.jsonl."""
    by_tag = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            by_tag.setdefault(r["tag"], []).append(r["value"])
    # train_loss / test_top1 are written once per epoch, in order.
    loss, top1 = by_tag.get("train_loss", []), by_tag.get("test_top1", [])
    return list(range(1, len(loss) + 1)), loss, top1


def reference_curves(out_dir):
    epochs, loss, top1 = [], [], []
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["split"] == "epoch":
                epochs.append(r["epoch"])
                loss.append(r["train_loss"])
                top1.append(r["test_top1"])
    return epochs, loss, top1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=os.path.join(ROOT, ".cache", "accuracy", "5ep"))
    p.add_argument("--png", default=os.path.join(ROOT, "docs", "accuracy-fmnist.png"))
    p.add_argument("--methods", default="simclr,byol")
    a = p.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        sys.exit("plot.py needs matplotlib: $SELFSUP_PYTHON -m pip install matplotlib")
    methods = a.methods.split(",")
    fig, axes = plt.subplots(2, len(methods), figsize=(5.5 * len(methods), 7), squeeze=False)
    for col, m in enumerate(methods):
        runs = glob.glob(os.path.join(a.out_dir, "runs", f"fmnist-{m}_*"))
        if len(runs) != 1:
            sys.exit(f"expected one selfsup run fmnist-{m}_* under {a.out_dir}/runs, found {len(runs)}")
        s = selfsup_curves(runs[0])
        t = reference_curves(os.path.join(a.out_dir, f"pytorch-{m}"))
        for row, (idx, label) in enumerate([(1, "train loss (SSL + online classifier)"), (2, "online classifier test top-1 (%)")]):
            ax = axes[row][col]
            marks = len(s[0]) <= 20  # markers only where they stay readable
            ax.plot(s[0], s[idx], "o-" if marks else "-", label="selfsup")
            ax.plot(t[0], t[idx], "s--" if marks else "--", label="PyTorch reference")
            ax.set_title(f"{m.upper() if m == 'byol' else 'SimCLR'}: {label}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
    results = os.path.join(a.out_dir, "results.json")
    if os.path.exists(results):
        meta = json.load(open(results)).get("_meta", {})
        epochs = meta.get("epochs", "?")
        epochs = ", ".join(f"{m} {e}" for m, e in epochs.items()) if isinstance(epochs, dict) else epochs
        fig.suptitle(f"Fashion-MNIST, ResNet-18 width {meta.get('base_width', '?')}, epochs {epochs}, "
                     f"batch {meta.get('batch_size', '?')}, {meta.get('precision', 'fp32')}, {meta.get('device_name', 'CPU')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(a.png, dpi=90)
    print(f"wrote {os.path.relpath(a.png, ROOT)}")


if __name__ == "__main__":
    main()
