"""PyTorch reference for selfsup's one-step parity tests of MoCo v3, Barlow
Twins and VICReg: the models as the authors build them
(facebookresearch/moco-v3, facebookresearch/barlowtwins,
facebookresearch/vicreg; docs/METHODS.md), the losses of
methods_reference.py (written from the papers' pseudo-code), the authors'
LARS, and for MoCo v3 the momentum update.

  make <weights> <inputs> <grads> <after> <settings.json>
      load selfsup's initial weights (online network, classifier and, for
      MoCo v3, the momentum encoder) into torchvision's resnet18 and the
      authors' heads, draw two views and labels, write them (with the
      learning rate and momentum) to <inputs>; take one step: loss and
      gradients to <grads>, then the LARS update (and the momentum update),
      every weight and buffer to <after>. settings.json holds the trainer
      config's keys: method, lr, weightDecay, momentum (MoCo v3's m),
      nceTemperature, offDiagonalWeight, invarianceWeight, varianceWeight,
      covarianceWeight; the heads' widths come from the weights.
  compare <reference> <native>   print JSON {errors: {name: {rel, abs, scale}}, unmatched}

Everything runs in float64, as the selfsup trainer of the test, so that
any difference is summation order.
"""
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import st
from methods_reference import barlow_twins_loss, moco_v3_loss, vicreg_loss


def mlp(layers, input_dim, hidden, output, last_bn):
    """MoCo v3's `_build_mlp`: bias-free Linears, BN and ReLU between
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


def projector(widths, hidden_bias):
    """Barlow Twins' projector (`hidden_bias` False: no Linear has a bias)
    and VICReg's expander (True: the hidden Linears have one): (Linear, BN,
    ReLU) for each hidden width, then a Linear without bias."""
    layers = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [nn.Linear(a, b, bias=hidden_bias), nn.BatchNorm1d(b), nn.ReLU(True)]
    layers.append(nn.Linear(widths[-2], widths[-1], bias=False))
    return nn.Sequential(*layers)


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

    def ssl_loss(self, v1, v2, h1, h2, s):
        q1, q2 = self.predictor(self.head(h1)), self.predictor(self.head(h2))
        with torch.no_grad():
            t = self.target
            k1, k2 = t.head(t.backbone(v1)), t.head(t.backbone(v2))
        return moco_v3_loss(q1, q2, k1, k2, s["nceTemperature"])


class Projected(nn.Module):
    """Barlow Twins and VICReg: backbone, projector under `head`, and
    selfsup's online linear classifier."""

    def __init__(self, classes, widths, hidden_bias, loss):
        super().__init__()
        self.backbone = resnet18()
        self.head = projector(widths, hidden_bias)
        self.linear_classifier = nn.Linear(512, classes)
        self.loss = loss

    def ssl_loss(self, v1, v2, h1, h2, s):
        return self.loss(self.head(h1), self.head(h2), s)


def build(method, w):
    """The method's model with the head sizes of selfsup's weights `w`."""
    classes = w["linear_classifier.weight"].shape[0]
    if method == "mocov3":
        return MoCoV3(classes, w["head.0.weight"].shape[0], w["head.3.weight"].shape[0])
    # The projector's Linears are at 0, 3, 6, … of the nn.Sequential.
    linears = sorted(int(k.split(".")[1]) for k in w if k.startswith("head.") and k.endswith(".weight") and w[k].ndim == 2)
    widths = [512] + [w[f"head.{i}.weight"].shape[0] for i in linears]
    if method == "barlowtwins":
        return Projected(classes, widths, False, lambda z1, z2, s: barlow_twins_loss(z1, z2, s["offDiagonalWeight"]))
    assert method == "vicreg", method
    loss = lambda z1, z2, s: vicreg_loss(z1, z2, s["invarianceWeight"], s["varianceWeight"], s["covarianceWeight"])
    return Projected(classes, widths, True, loss)


@torch.no_grad()
def lars_first_step(params, lr, wd, momentum=0.9, eta=0.001):
    """The first step of the authors' LARS (the same in all three
    repositories): parameters with ndim > 1 get weight decay and the trust
    ratio η‖w‖/‖g‖; then heavy-ball momentum from a zero buffer."""
    for p in params:
        g = p.grad
        if p.ndim > 1:
            g = g.add(p, alpha=wd)
            pn, gn = torch.norm(p), torch.norm(g)
            one = torch.ones_like(pn)
            g = g.mul(torch.where(pn > 0.0, torch.where(gn > 0, eta * pn / gn, one), one))
        mu = torch.zeros_like(p).mul_(momentum).add_(g)
        p.add_(mu, alpha=-lr)


def make(weights_path, inputs_path, grads_path, after_path, settings):
    s = json.loads(settings)
    torch.set_default_dtype(torch.float64)
    w = st.load(weights_path)
    model = build(s["method"], w).double()
    model.load_state_dict(w, strict=True)
    model.train()
    g = torch.Generator().manual_seed(4321)
    b = 8
    v1 = torch.rand(b, 3, 32, 32, generator=g, dtype=torch.float64)
    v2 = torch.rand(b, 3, 32, 32, generator=g, dtype=torch.float64)
    labels = torch.randint(0, model.linear_classifier.out_features, (b,), generator=g)
    # selfsup's debug step reads the learning rate as "lr" and the momentum as "tau".
    m = s.get("momentum", 1.0)
    st.save({"view1": v1, "view2": v2, "labels": labels, "lr": torch.tensor(s["lr"]), "tau": torch.tensor(m)}, inputs_path)
    h1, h2 = model.backbone(v1), model.backbone(v2)
    ssl = model.ssl_loss(v1, v2, h1, h2, s)
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
    lars_first_step([p for _, p in online], s["lr"], s["weightDecay"])
    # MoCo v3's momentum update (the authors' _update_momentum_encoder): parameters only.
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, p in params.items():
            if n.startswith("target."):
                p.mul_(m).add_(params[n[len("target.") :]], alpha=1.0 - m)
    st.save(model.state_dict(), after_path)


if __name__ == "__main__":
    torch.set_num_threads(2)
    a = sys.argv
    if a[1] == "make":
        make(*a[2:7])
    else:
        print(json.dumps(st.report(a[2], a[3])))
