"""How fast two runs of the demo recipe that differ only in rounding drift
apart: bench/accuracy/reference.py's SimCLR model and optimizer, the
same initial weights and the same batches of views, trained twice in fp32
with 1 and with 2 intra-op threads (the convolutions then sum in another
order: the first gradients differ by ~1e-6), and once under bf16 autocast.
Prints the SimCLR loss of each run per step and the relative distance of
the weights from the 1-thread run's.

  . .cache/env.sh && $SELFSUP_PYTHON bench/precision/divergence.py [--steps 40] [--base-width 16] [--small-stem]
"""
import argparse
import importlib.util
import os
import sys

import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "accuracy"))
import reference as R  # noqa: E402

# The demo recipe as bench/precision/bench.py has it (a sibling file, not a package).
_spec = importlib.util.spec_from_file_location("precision_bench", os.path.join(HERE, "bench.py"))
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
RECIPE = _bench.RECIPE


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", ".datasets", "selfsup-demo"))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--base-width", type=int, default=16)
    p.add_argument("--small-stem", action="store_true")
    a = p.parse_args()
    r = RECIPE
    args = argparse.Namespace(method="simclr", base_width=a.base_width, small_stem=a.small_stem, head_latent_size=r["head_latent_size"],
                              nce_size=r["nce_size"], nce_temperature=r["nce_temperature"])
    torch.manual_seed(0)
    x, y, _ = R.load_split(a.data, "train")
    tf = R.train_transform(r["size"], r["color_jitter_strength"], r["blur_prob"])
    b = r["batch_size"]
    batches = []
    for _ in range(a.steps):
        idx = torch.randint(0, len(y), (b,))
        views = [torch.stack([tf(Image.fromarray(x[i])) for i in idx]) for _ in range(2)]
        batches.append((*views, torch.from_numpy(y[idx.numpy()])))
    init = R.Net(args, 10).state_dict()
    base_lr, warmup = r["lr"] * b / 256, 23  # one warm-up epoch of the demo data (2,944 / 128 steps)
    runs = {}
    for name, threads, bf16 in [("fp32 1 thread", 1, False), ("fp32 2 threads", 2, False), ("bf16 1 thread", 1, True)]:
        torch.set_num_threads(threads)
        net = R.Net(args, 10)
        net.load_state_dict(init)
        net = net.to(memory_format=torch.channels_last)  # selfsup's layout; CPU bf16 is ~7x faster in it
        opt = R.sgd(net.online_parameters(), base_lr, r["weight_decay"])
        losses, weights = [], []
        for k, (v1, v2, labels) in enumerate(batches):
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            for g in opt.param_groups:
                g["lr"] = R.lr_at(base_lr, warmup, 12 * warmup, k)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                ssl, h1, h2 = net.ssl_loss(v1, v2, args)
                loss = ssl + F.cross_entropy(net.linear_classifier(torch.cat([h1, h2]).detach()), torch.cat([labels, labels]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(ssl.item())
            weights.append(torch.cat([p.detach().flatten() for p in net.backbone.parameters()]).clone())
        runs[name] = (losses, weights)
    ref = runs["fp32 1 thread"][1]
    print(f"{'step':>4}" + "".join(f"{n + ' loss':>20}{'weights Δ':>11}" for n in runs))
    for k in range(a.steps):
        cells = "".join(f"{l[k]:>20.4f}{((w[k] - ref[k]).norm() / ref[k].norm()).item():>11.1e}" for l, w in runs.values())
        print(f"{k + 1:>4}{cells}")


if __name__ == "__main__":
    main()
