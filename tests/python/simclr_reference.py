"""PyTorch reference for selfsup's SimCLR parity test.

  make <weights> <inputs> <reference>   load selfsup's initial weights into
      torchvision's resnet18 + the reference programs' head, classifier and
      NT-Xent (written from REFERENCE.md §2.2-2.6), draw a batch, write it
      to <inputs> and the loss and gradients to <reference>
  compare <reference> <native>          print JSON {name: max|a-b|/max|b|}
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import st
from algorithms_reference import nt_xent


class SimCLR(nn.Module):
    def __init__(self, classes, latent, nce):
        super().__init__()
        self.backbone = torchvision.models.resnet18()
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(512, latent), nn.BatchNorm1d(latent), nn.ReLU(), nn.Linear(latent, nce), nn.BatchNorm1d(nce))
        self.linear_classifier = nn.Linear(512, classes)


def make(weights_path, inputs_path, ref_path):
    w = st.load(weights_path)
    classes = w["linear_classifier.weight"].shape[0]
    latent, nce = w["head.0.weight"].shape[0], w["head.3.weight"].shape[0]
    model = SimCLR(classes, latent, nce)
    model.load_state_dict(w, strict=True)
    model.train()
    g = torch.Generator().manual_seed(1234)
    b = 16
    v1 = torch.rand(b, 3, 32, 32, generator=g)
    v2 = torch.rand(b, 3, 32, 32, generator=g)
    labels = torch.randint(0, classes, (b,), generator=g)
    st.save({"view1": v1, "view2": v2, "labels": labels}, inputs_path)
    tau = float(sys.argv[5]) if len(sys.argv) > 5 else 0.1
    layout = sys.argv[6] if len(sys.argv) > 6 else "contiguous"
    losses_and_gradients(model, v1, v2, labels, lambda z1, z2: nt_xent(z1, z2, tau), layout, ref_path)


def losses_and_gradients(model, v1, v2, labels, ssl_loss, layout, ref_path):
    """What selfsup's debug_gradients writes, for a model with `backbone`,
    `head` and `linear_classifier`: the SSL loss of the two views' heads,
    the online classifier's cross-entropy on the detached features, their
    sum, and the gradient of every parameter."""
    if layout == "channels_last":
        # selfsup's default layout: conv weights and views NHWC in memory.
        model = model.to(memory_format=torch.channels_last)
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    h1, h2 = model.backbone(v1), model.backbone(v2)
    ssl = ssl_loss(model.head(h1), model.head(h2))
    logits = model.linear_classifier(torch.cat([h1, h2]).detach())
    ce = F.cross_entropy(logits, torch.cat([labels, labels]))
    loss = ssl + ce
    loss.backward()
    out = {"loss": loss.detach(), "ssl_loss": ssl.detach(), "linear_loss": ce.detach()}
    for name, p in model.named_parameters():
        out["grad." + name] = p.grad
    st.save(out, ref_path)


def compare(ref_path, native_path):
    import json

    print(json.dumps(st.report(ref_path, native_path)))


if __name__ == "__main__":
    torch.set_num_threads(2)
    {"make": lambda: make(*sys.argv[2:5]), "compare": lambda: compare(*sys.argv[2:4])}[sys.argv[1]]()
