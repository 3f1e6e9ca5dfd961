"""PyTorch reference for selfsup's MoCo v3 one-step parity test, written
from the paper's Algorithm 1 and the authors' ResNet model and LARS
(facebookresearch/moco-v3, docs/METHODS.md).

  make <weights> <inputs> <grads> <after> <lr> <m> <wd> <tau>
      load selfsup's initial weights (online network, classifier and the
      momentum encoder) into torchvision's resnet18 and the authors' MLPs,
      draw two views and labels, write them (with lr and m) to <inputs>;
      take one step: loss and gradients to <grads>, then the authors' LARS
      update and the momentum update, every weight and buffer to <after>
  compare <reference> <native>   print JSON {name: max|a-b|/max|b|}

Everything runs in float64, as the selfsup trainer of the test.
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import st
from methods_reference import moco_v3_loss


def mlp(layers, input_dim, hidden, output, last_bn):
    """The authors' `_build_mlp`: bias-free Linears, BN and ReLU between
    them, and after the last a BN without γ, β when `last_bn`."""
    out = []
    for i in range(layers):
        a = input_dim if i == 0 else hidden
        b = output if i == layers - 1 else hidden
        out.append(nn.Linear(a, b, bias=False))
        if i < layers - 1:
            out += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            out.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*out)


def resnet18():
    r = torchvision.models.resnet18()
    r.fc = nn.Identity()
    return r


class Encoder(nn.Module):
    def __init__(self, hidden, dim):
        super().__init__()
        self.backbone = resnet18()
        self.head = mlp(2, 512, hidden, dim, True)


class MoCoV3(nn.Module):
    """MoCo_ResNet: projector with a last BN, predictor without; the
    momentum encoder (backbone + projector) under `target`, and selfsup's
    online linear classifier on detached features."""

    def __init__(self, classes, hidden, dim):
        super().__init__()
        self.backbone = resnet18()
        self.head = mlp(2, 512, hidden, dim, True)
        self.predictor = mlp(2, dim, hidden, dim, False)
        self.linear_classifier = nn.Linear(512, classes)
        self.target = Encoder(hidden, dim)


@torch.no_grad()
def lars_first_step(params, lr, wd, momentum=0.9, eta=0.001):
    """The first step of the authors' LARS (moco/optimizer.py): parameters
    with ndim > 1 get weight decay and the trust ratio η‖w‖/‖g‖; then
    heavy-ball momentum from a zero buffer."""
    for p in params:
        g = p.grad
        if p.ndim > 1:
            g = g.add(p, alpha=wd)
            pn, gn = torch.norm(p), torch.norm(g)
            one = torch.ones_like(pn)
            g = g.mul(torch.where(pn > 0.0, torch.where(gn > 0, eta * pn / gn, one), one))
        mu = torch.zeros_like(p).mul_(momentum).add_(g)
        p.add_(mu, alpha=-lr)


def make(weights_path, inputs_path, grads_path, after_path, lr, m, wd, tau):
    torch.set_default_dtype(torch.float64)
    w = st.load(weights_path)
    classes = w["linear_classifier.weight"].shape[0]
    hidden, dim = w["head.0.weight"].shape[0], w["head.3.weight"].shape[0]
    model = MoCoV3(classes, hidden, dim).double()
    model.load_state_dict(w, strict=True)
    model.train()
    g = torch.Generator().manual_seed(4321)
    b = 8
    v1 = torch.rand(b, 3, 32, 32, generator=g, dtype=torch.float64)
    v2 = torch.rand(b, 3, 32, 32, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (b,), generator=g)
    st.save({"view1": v1, "view2": v2, "labels": labels, "lr": torch.tensor(lr), "tau": torch.tensor(m)}, inputs_path)
    h1, h2 = model.backbone(v1), model.backbone(v2)
    q1, q2 = model.predictor(model.head(h1)), model.predictor(model.head(h2))
    with torch.no_grad():
        t = model.target
        k1, k2 = t.head(t.backbone(v1)), t.head(t.backbone(v2))
    ssl = moco_v3_loss(q1, q2, k1, k2, tau)
    logits = model.linear_classifier(torch.cat([h1, h2]).detach())
    ce = F.cross_entropy(logits, torch.cat([labels, labels]))
    loss = ssl + ce
    loss.backward()
    out = {"loss": loss.detach(), "ssl_loss": ssl.detach(), "linear_loss": ce.detach()}
    online = [(n, p) for n, p in model.named_parameters() if not n.startswith("target.")]
    for n, p in online:
        out["grad." + n] = p.grad
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("target.")), "the momentum encoder gets no gradient"
    st.save(out, grads_path)
    lars_first_step([p for _, p in online], lr, wd)
    # The momentum update (the authors' _update_momentum_encoder): parameters only.
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, p in params.items():
            if n.startswith("target."):
                p.mul_(m).add_(params[n[len("target.") :]], alpha=1.0 - m)
    st.save(model.state_dict(), after_path)


def compare(ref_path, native_path):
    print(json.dumps(st.report(ref_path, native_path)))


if __name__ == "__main__":
    torch.set_num_threads(2)
    a = sys.argv
    if a[1] == "make":
        make(*a[2:6], *map(float, a[6:10]))
    else:
        compare(a[2], a[3])
