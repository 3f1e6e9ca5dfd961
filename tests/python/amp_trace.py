"""torch.autocast's dtype policy on selfsup's model, layer by layer.

  amp_trace.py <simclr|byol|mocov3|barlowtwins|vicreg> <bf16|fp16> <out.json> [cpu|cuda]

Builds the same small model selfsup's `amp_trace` debug entry builds
(torchvision's resnet18 without fc, the reference programs' heads, MoCo
v3's bias-free ones, Barlow Twins' projector or VICReg's expander, the
online linear classifier), runs one training forward and the losses, as
the reference programs (MoCo v3, Barlow Twins, VICReg: the authors') write
them, inside torch.autocast(device, dtype),
and writes the dtype of every layer's output in execution order:
{"trace": [[kind, dtype], ...]}. Kinds are selfsup's trace names: conv,
bn, relu, maxpool, avgpool, linear (forward hooks on the modules) and
normalize, similarity, cross_entropy, regression, cross_correlation,
covariance (the loss steps).
"""
import copy
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from step_reference import projector

KINDS = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.BatchNorm1d: "bn", nn.ReLU: "relu", nn.MaxPool2d: "maxpool",
         nn.AdaptiveAvgPool2d: "avgpool", nn.Linear: "linear"}
TRACE = []


def note(kind, t):
    TRACE.append([kind, str(t.dtype).replace("torch.", "")])
    return t


def hooked(module):
    for m in module.modules():
        if type(m) in KINDS:
            m.register_forward_hook(lambda m, i, o: note(KINDS[type(m)], o))
    return module


def mlp(cin, hidden, out, final_bn, moco=False):
    """The reference programs' heads; `moco`: MoCo v3's, without biases and
    with a last BN without affine parameters."""
    layers = [nn.Linear(cin, hidden, bias=not moco), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out, bias=not moco)]
    return nn.Sequential(*layers, *([nn.BatchNorm1d(out, affine=not moco)] if final_bn else []))


def l2_normalize(x):
    # The reference programs' objective.py form, as selfsup's losses.rs.
    return note("normalize", x * torch.rsqrt(torch.clamp((x ** 2).sum(-1, keepdim=True), min=1e-12)))


def nt_xent(z1, z2, tau=0.1):
    e1, e2 = l2_normalize(z1), l2_normalize(z2)
    b = e1.shape[0]
    labels = torch.arange(b, device=e1.device)
    mask = F.one_hot(labels, b) * 1e9
    sim = lambda a, c: note("similarity", a @ c.t() / tau)
    aa, bb, ab, ba = sim(e1, e1) - mask, sim(e2, e2) - mask, sim(e1, e2), sim(e2, e1)
    la = note("cross_entropy", F.cross_entropy(torch.cat([ab, aa], 1), labels, reduction="none"))
    lb = note("cross_entropy", F.cross_entropy(torch.cat([ba, bb], 1), labels, reduction="none"))
    return (la + lb).mean()


def moco_ctr(q, k, tau=0.1):
    logits = note("similarity", l2_normalize(q) @ l2_normalize(k).t() / tau)
    return note("cross_entropy", F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))) * 2 * tau


def regression(p, z):
    return note("regression", (2 - 2 * (l2_normalize(p) * l2_normalize(z)).sum(-1)).mean())


def vicreg(z1, z2):
    # facebookresearch/vicreg's loss (weights 25, 25, 1), each view's
    # covariance matrix traced as selfsup's losses.rs traces it.
    inv = F.mse_loss(z1, z2)
    terms = []
    for z in (z1, z2):
        z = z - z.mean(0)
        cov = note("covariance", z.t() @ z / (z.shape[0] - 1))
        std = torch.sqrt(torch.diagonal(cov) + 1e-4)
        off = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
        terms.append(F.relu(1 - std).mean() / 2 * 25 + off / z.shape[1])
    return 25 * inv + terms[0] + terms[1]


def barlow_twins(z1, z2, lambd=0.005):
    # facebookresearch/barlowtwins' loss: each view standardised as its
    # BatchNorm1d(affine=False) does, then the cross-correlation.
    standardise = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    c = note("cross_correlation", standardise(z1).t() @ standardise(z2) / z1.shape[0])
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    return on_diag + lambd * (c.pow(2).sum() - torch.diagonal(c).pow(2).sum())


def main(method, precision, out, device="cpu"):
    torch.manual_seed(1)
    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    moco = method == "mocov3"
    # selfsup's amp_trace builds Barlow Twins and VICReg with --projector-widths 32-32-16.
    projected = method in ("barlowtwins", "vicreg")
    head = projector([512, 32, 32, 16], method == "vicreg") if projected else mlp(512, 32, 16, method != "byol", moco)
    classifier = nn.Linear(512, 4)
    predictor = mlp(16, 32, 16, False, moco) if method in ("byol", "mocov3") else None
    target = (copy.deepcopy(backbone), copy.deepcopy(head)) if predictor is not None else None
    for m in [backbone, head, classifier, predictor, *(target or [])]:
        if m is not None:
            hooked(m).train().to(device)
    x = torch.rand(4, 3, 16, 16, device=device)
    v1, v2, y = x, x.flip(3), torch.arange(4, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.autocast(device, dtype=dtype):
        if method == "simclr":
            h1, h2 = backbone(v1), backbone(v2)
            nt_xent(head(h1), head(h2))
        elif projected:
            # One view after the other through backbone and projector, as the authors' forward (and selfsup's).
            h1 = backbone(v1)
            z1 = head(h1)
            h2 = backbone(v2)
            (vicreg if method == "vicreg" else barlow_twins)(z1, head(h2))
        else:
            h1, p1 = (lambda h: (h, predictor(head(h))))(backbone(v1))
            h2, p2 = (lambda h: (h, predictor(head(h))))(backbone(v2))
            with torch.no_grad():
                z1t, z2t = target[1](target[0](v1)), target[1](target[0](v2))
            if moco:
                moco_ctr(p1, z2t)
                moco_ctr(p2, z1t)
            else:
                regression(p1, z2t)
                regression(p2, z1t)
        logits = classifier(torch.cat([h1, h2]).detach())
        note("cross_entropy", F.cross_entropy(logits, torch.cat([y, y])))
    with open(out, "w") as f:
        json.dump({"trace": TRACE}, f)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:5])
