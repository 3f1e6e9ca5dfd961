"""PyTorch's side of bench/step: selfsup's training step written in eager
PyTorch, timed on one fixed batch.

  python bench/step/torch_step.py --method simclr|byol [--arch resnet18] [--small-stem]
         [--batch 64] [--size 32] [--threads 2] [--device cpu|cuda]
         [--precision fp32|fp16|bf16] [--channels-last] [--warmup 2] [--steps 8]

The step is the one native/src/trainer.rs runs after its views are made:

- torchvision's ResNet without fc; --small-stem swaps conv1 for a 3x3
  stride-1 conv (no bias, kaiming_normal fan_out) and drops the max-pool,
  as native/src/nn/resnet.rs;
- SimCLR: head Linear·BN1d·ReLU·Linear·BN1d, NT-Xent (tests/python/
  algorithms_reference.py, with its labels on the device); BYOL: projector
  and predictor Linear·BN1d·ReLU·Linear, a target copy of backbone and
  projector run in train mode under no_grad with its own BN buffers, the
  paper's loss, and the target's EMA (lerp) after the optimizer step;
- the linear classifier on both views' detached features, its
  cross-entropy added to the loss, top-1/top-5;
- zero_grad, backward, LARS over SGD-momentum (weight decay and trust
  ratio on ndim >= 2 only, eta 0.001, eps 0: the parity test's LARS,
  with the "both norms > 0" test done on the device so that it does not
  wait for the GPU), lr and weight decay as selfsup's defaults;
- the five metrics read back to the host (selfsup returns them every step).

fp16 runs under autocast with a GradScaler (unscaled before LARS, the step
skipped on overflow), bf16 under autocast alone; either way the losses run
in fp32 with autocast suspended, as selfsup's policy (native/src/amp.rs).
--sgd picks torch.optim.SGD's code path (selfsup uses torch's fused SGD
kernel); the default is what eager PyTorch code gets. A step is timed from its
forward to its metrics on the host (which waits for the GPU). Prints one
JSON line: medians over the steps after the warm-up.
"""
import argparse
import copy
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
from algorithms_reference import byol_regression, l2n  # noqa: E402

FEATURES = {"resnet18": 512, "resnet34": 512}


def backbone(arch, small_stem):
    net = getattr(torchvision.models, arch)()
    net.fc = nn.Identity()
    if small_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    return net


def mlp(i, hidden, out, final_bn):
    layers = [nn.Linear(i, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out)]
    return nn.Sequential(*layers, *([nn.BatchNorm1d(out)] if final_bn else []))


def nt_xent(z1, z2, tau):
    """algorithms_reference.nt_xent (one replica), its labels on z1's device."""
    e1, e2 = l2n(z1), l2n(z2)
    labels = torch.arange(e1.shape[0], device=e1.device)
    masks = F.one_hot(labels, e1.shape[0]).to(e1.dtype)
    aa = e1 @ e1.t() / tau - masks * 1e9
    bb = e2 @ e2.t() / tau - masks * 1e9
    ab = e1 @ e2.t() / tau
    ba = e2 @ e1.t() / tau
    la = F.cross_entropy(torch.cat([ab, aa], 1), labels, reduction="none")
    lb = F.cross_entropy(torch.cat([ba, bb], 1), labels, reduction="none")
    return (la + lb).mean()


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        f = FEATURES.get(a.arch, 2048)
        self.method = a.method
        self.backbone = backbone(a.arch, a.small_stem)
        if a.method == "simclr":
            self.head = mlp(f, a.head_latent_size or 1024, 128, True)
        else:
            hidden = a.head_latent_size or 4096
            self.head = mlp(f, hidden, 256, False)
            self.predictor = mlp(256, hidden, 256, False)
        self.linear_classifier = nn.Linear(f, a.classes)

    def make_target(self):
        """BYOL's target: a copy of backbone and projector, never trained."""
        self.target = nn.ModuleDict({"backbone": copy.deepcopy(self.backbone), "head": copy.deepcopy(self.head)})
        self.target.requires_grad_(False)
        self.pairs = [(t, o) for t, o in zip(self.target.parameters(), [*self.backbone.parameters(), *self.head.parameters()])]

    def losses(self, v1, v2, labels):
        """Under the caller's autocast; the losses themselves in fp32 with
        autocast suspended, as selfsup's (native/src/amp.rs)."""
        h1, h2 = self.backbone(v1), self.backbone(v2)
        if self.method == "simclr":
            z1, z2 = self.head(h1), self.head(h2)
        else:
            p1, p2 = self.predictor(self.head(h1)), self.predictor(self.head(h2))
            with torch.no_grad():
                z1 = self.target["head"](self.target["backbone"](v1))
                z2 = self.target["head"](self.target["backbone"](v2))
        logits = self.linear_classifier(torch.cat([h1, h2]).detach())
        targets = torch.cat([labels, labels])
        with torch.autocast(v1.device.type, enabled=False):
            if self.method == "simclr":
                ssl = nt_xent(z1.float(), z2.float(), 0.1)
            else:
                ssl = byol_regression(p1.float(), z2.float(), "paper") + byol_regression(p2.float(), z1.float(), "paper")
            ce = F.cross_entropy(logits.float(), targets)
        top = logits.detach().float().topk(5, 1).indices == targets[:, None]
        top1, top5 = top[:, :1].sum() * 100.0 / len(targets), top.sum() * 100.0 / len(targets)
        return ssl + ce, ssl, ce, top1, top5

    @torch.no_grad()
    def update_target(self, tau):
        for t, o in self.pairs:
            t.lerp_(o, 1 - tau)


class LARS:
    """tests/python/algorithms_reference.LARS over SGD(momentum=0.9), the
    trust ratio's fallback to 1 taken with torch.where."""

    def __init__(self, model, lr, wd, eta=0.001, eps=0.0, impl="default"):
        trainable = [p for n, p in model.named_parameters() if not n.startswith("target.")]
        self.decay = [p for p in trainable if p.dim() > 1]
        no_decay = [p for p in trainable if p.dim() <= 1]
        self.wd, self.eta, self.eps = wd, eta, eps
        # impl: torch's default code path (foreach on CUDA, one tensor at a
        # time on the CPU), or foreach / fused explicitly.
        kw = {"foreach": impl == "foreach", "fused": impl == "fused"} if impl != "default" else {}
        self.inner = torch.optim.SGD([{"params": no_decay}, {"params": self.decay}], lr=lr, momentum=0.9, **kw)

    @torch.no_grad()
    def adapt(self):
        for p in self.decay:
            if p.grad is None:
                continue
            g = p.grad.add_(p, alpha=self.wd)
            wn, gn = p.norm(), g.norm()
            trust = torch.where((wn > 0) & (gn > 0), self.eta * wn / (gn + self.eps), torch.ones_like(wn))
            g.mul_(trust)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["simclr", "byol"], required=True)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--small-stem", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--head-latent-size", type=int, default=0, help="0: the method's default (simclr 1024, byol 4096)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--sgd", choices=["default", "foreach", "fused"], default="default",
                    help="torch.optim.SGD's code path (default: torch's choice)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("torch_step.py: --device cuda, but torch sees no GPU")
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = Model(a).to(dev, memory_format=fmt).train()
    if a.method == "byol":
        model.make_target()
    lr, wd, tau = 0.3 * a.batch / 256, 1e-6, 0.996
    opt = LARS(model, lr, wd, impl=a.sgd)
    amp = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[a.precision]
    scaler = torch.amp.GradScaler(dev.type) if a.precision == "fp16" else None
    # Smooth random colour fields in [0, 1] (the views are fixed; their content only has to be image-like).
    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(0, 6, a.size)
    freq = torch.rand(2, a.batch, 3, 1, 1, 2, generator=g) * 3
    views = [(0.5 + 0.3 * torch.sin(f[..., 0] * grid[:, None] + f[..., 1] * grid[None, :])).clamp(0, 1) for f in freq]
    v1, v2 = (v.to(dev).contiguous(memory_format=fmt) for v in views)
    labels = (torch.arange(a.batch) % a.classes).to(dev)

    def step():
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss, ssl, ce, top1, top5 = model.losses(v1, v2, labels)
        opt.inner.zero_grad()
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt.inner)
        else:
            loss.backward()
        opt.adapt()
        if scaler:
            scaler.step(opt.inner)
            scaler.update()
        else:
            opt.inner.step()
        if a.method == "byol":
            model.update_target(tau)
        return torch.stack([t.detach().float() for t in (loss, ssl, ce, top1, top5)]).tolist()

    times, cpu, first = [], 0.0, None
    for s in range(a.warmup + a.steps):
        c0 = cpu_seconds()
        t0 = time.perf_counter()
        m = step()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        first = first or m
        if s >= a.warmup:
            times.append(dt)
            cpu += cpu_seconds() - c0
    ms = 1e3 * statistics.median(times)
    print(json.dumps({
        "impl": "pytorch", "method": a.method, "arch": a.arch, "batch": a.batch, "size": a.size,
        "device": a.device, "precision": a.precision, "channels_last": a.channels_last,
        "threads": torch.get_num_threads(), "steps": a.steps,
        "ms_per_step": ms, "img_per_s": a.batch / (ms / 1e3), "ms_min": 1e3 * min(times), "ms_max": 1e3 * max(times),
        "cpu_s_per_step": cpu / a.steps, "ms_each": [round(1e3 * t, 1) for t in times], "first_loss": first[0], "last_loss": m[0],
        "sgd": a.sgd,
        "gpu_max_allocated_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
    }))


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    main()
