"""PyTorch's side of bench/epoch: one epoch of the reference programs'
training on an ImageFolder, a torchvision DataLoader feeding the step of
bench/step/torch_step.py, then a pass over the test split.

  python bench/epoch/torch_epoch.py <data-dir> --method simclr|byol [--arch resnet18] [--small-stem]
         [--batch 32] [--size 32] [--workers 2] [--threads 2] [--epochs 1] [--decodes 2] [--channels-last]

Train transform per view (REFERENCE.md §3.3, with selfsup's blur σ, see
docs/REFERENCE-DEVIATIONS.md #8): RandomResizedCrop(size) ·
RandomHorizontalFlip · RandomApply(ColorJitter(0.8, 0.8, 0.8, 0.2), p=0.8)
· RandomGrayscale(0.2) · RandomApply(GaussianBlur(k, σ ~ U[0.1, 2]), p=0.5)
· ToTensor, k = int(0.1·size) made odd. Each sample decodes its file
--decodes times (2: the reference's MultiAugmentImageFolder; 1: both views
from one decode, as selfsup). DataLoader: shuffle, drop_last, --workers
processes (re-forked every epoch), pin_memory on CUDA. Test: Resize((size,
size)) · ToTensor, eval mode, the image as both views, as selfsup.

Prints one JSON line: train and test seconds (worker start-up included),
images trained, losses.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "step"))
from torch_step import LARS, Model, nt_xent  # noqa: E402
from algorithms_reference import byol_regression  # noqa: E402  (torch_step put tests/python on the path)


class TwoViews(ImageFolder):
    """[view1, view2, label], the file decoded `decodes` times."""

    def __init__(self, root, transform, decodes):
        super().__init__(root, transform=transform)
        self.decodes = decodes

    def __getitem__(self, i):
        path, label = self.samples[i]
        img = self.loader(path)
        return self.transform(img), self.transform(self.loader(path) if self.decodes == 2 else img), label


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--method", choices=["simclr", "byol"], required=True)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--small-stem", action="store_true")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--decodes", type=int, choices=[1, 2], default=2)
    ap.add_argument("--head-latent-size", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", action="store_true", help="conv weights and views channels_last (selfsup's default)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    k = int(0.1 * a.size) // 2 * 2 + 1
    train_tf = T.Compose([
        T.RandomResizedCrop(a.size),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5),
        T.ToTensor(),
    ])
    test_tf = T.Compose([T.Resize((a.size, a.size)), T.ToTensor()])
    train = TwoViews(os.path.join(a.data_dir, "train"), train_tf, a.decodes)
    test = ImageFolder(os.path.join(a.data_dir, "test"), test_tf)
    a.classes = len(train.classes)
    pin = dev.type == "cuda"
    train_loader = DataLoader(train, batch_size=a.batch, shuffle=True, num_workers=a.workers, drop_last=True, pin_memory=pin)
    test_loader = DataLoader(test, batch_size=a.batch, shuffle=False, num_workers=a.workers, pin_memory=pin)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = Model(a).to(dev, memory_format=fmt).train()
    if a.method == "byol":
        model.make_target()
    # A constant learning rate: its value does not change the work of a step.
    base_lr, wd, base_tau = 0.3 * a.batch / 256, 1e-6, 0.996
    opt = LARS(model, base_lr, wd)
    out = {"impl": "pytorch", "method": a.method, "decodes": a.decodes, "train_s": 0.0, "test_s": 0.0, "images": 0, "steps": 0}
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        for v1, v2, labels in train_loader:
            v1, v2 = (v.to(dev, non_blocking=True).contiguous(memory_format=fmt) for v in (v1, v2))
            labels = labels.to(dev, non_blocking=True)
            loss, ssl, ce, top1, top5 = model.losses(v1, v2, labels)
            opt.inner.zero_grad()
            loss.backward()
            opt.adapt()
            opt.inner.step()
            if a.method == "byol":
                model.update_target(base_tau)
            m = torch.stack([t.detach().float() for t in (loss, ssl, ce, top1, top5)]).tolist()
            out.setdefault("first_loss", m[0])
            out["last_loss"] = m[0]
            out["images"] += len(labels)
            out["steps"] += 1
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out["train_s"] += time.perf_counter() - t0
        t1 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            for x, labels in test_loader:
                x, labels = x.to(dev).contiguous(memory_format=fmt), labels.to(dev)
                h = model.backbone(x)
                if a.method == "simclr":
                    z = model.head(h)
                    ssl = nt_xent(z, z, 0.1)
                else:
                    p = model.predictor(model.head(h))
                    zt = model.target["head"](model.target["backbone"](x))
                    ssl = byol_regression(p, zt, "paper") * 2
                logits = model.linear_classifier(h)
                (ssl + F.cross_entropy(logits, labels)).item()
        out["test_s"] += time.perf_counter() - t1
    out["img_per_s"] = out["images"] / out["train_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
