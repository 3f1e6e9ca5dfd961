"""PyTorch reference for selfsup's VICReg parity test: the model as the
authors build it (facebookresearch/vicreg main_vicreg.py: the backbone, the
expander of Linear-BN-ReLU blocks with biases and a last Linear without),
selfsup's online classifier on the detached features, and the loss of
methods_reference.py (written from the paper's Algorithm 1).

  make <weights> <inputs> <reference> <widths> <sim> <std> <cov> <layout>
      load selfsup's initial weights into torchvision's resnet18 + that
      expander and classifier, draw a batch, write it to <inputs> and the
      loss and gradients of every parameter to <reference>
  compare <reference> <native>   print JSON {errors: {name: {rel, abs, scale}}, unmatched}
"""
import json
import sys

import torch
import torch.nn as nn

import st
from methods_reference import vicreg_loss
from simclr_reference import losses_and_gradients
from step_reference import projector, resnet18


class VICReg(nn.Module):
    def __init__(self, widths, classes):
        super().__init__()
        self.backbone = resnet18()
        self.head = projector([512, *map(int, widths.split("-"))], hidden_bias=True)
        self.linear_classifier = nn.Linear(512, classes)


def make(weights_path, inputs_path, ref_path, widths, sim, std, cov, layout):
    w = st.load(weights_path)
    model = VICReg(widths, w["linear_classifier.weight"].shape[0])
    model.load_state_dict(w, strict=True)
    model.train()
    g = torch.Generator().manual_seed(4321)
    b = 16
    v1, v2 = torch.rand(b, 3, 32, 32, generator=g), torch.rand(b, 3, 32, 32, generator=g)
    labels = torch.randint(0, model.linear_classifier.out_features, (b,), generator=g)
    st.save({"view1": v1, "view2": v2, "labels": labels}, inputs_path)
    ssl_loss = lambda z1, z2: vicreg_loss(z1, z2, float(sim), float(std), float(cov))
    losses_and_gradients(model, v1, v2, labels, ssl_loss, layout, ref_path)


if __name__ == "__main__":
    torch.set_num_threads(2)
    if sys.argv[1] == "make":
        make(*sys.argv[2:10])
    else:
        print(json.dumps(st.report(sys.argv[2], sys.argv[3])))
