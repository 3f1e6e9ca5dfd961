"""PyTorch + torchvision run of the accuracy recipe (docs/ACCURACY.md), the
side the selfsup run is compared with.

  reference.py pretrain --method simclr|byol|supervised --data DIR --out DIR [recipe flags]
  reference.py evaluate --checkpoint DIR/backbone.pt --data DIR --out result.json
  reference.py raw --data DIR --out result.json     (linear classifier on raw pixels)

It mirrors what selfsup does for the same flags, written independently in
eager PyTorch: a torchvision-style ResNet whose channel counts are scaled by
--base-width (torchvision's own classes fix the width at 64), SimCLR's MLP
head with NT-Xent or BYOL's projector/predictor with an EMA target, the
online linear classifier trained on detached features beside the
self-supervised loss, SGD with momentum 0.9 and weight decay on >= 2-dim
tensors only, linear warm-up then a per-step cosine, the reference's
augmentations through torchvision transforms on PIL images in a
DataLoader, and one test pass per epoch. `evaluate` then scores the frozen
backbone the way `selfsup eval linear|knn` does: standardised features and
a linear classifier (SGD-momentum, cosine, 100 epochs), and a 200-NN
cosine vote with temperature 0.1.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms


# ---------------------------------------------------------------- data

def load_split(root, split):
    """An ImageFolder split decoded once into memory: uint8 [N, H, W, 3], labels."""
    d = os.path.join(root, split)
    classes = sorted(c for c in os.listdir(d) if os.path.isdir(os.path.join(d, c)))
    images, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(d, c))):
            with Image.open(os.path.join(d, c, f)) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(i)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


class Views(torch.utils.data.Dataset):
    """Two independently augmented views per image (or one plain view)."""

    def __init__(self, images, labels, transform, views):
        self.images, self.labels, self.transform, self.views = images, labels, transform, views

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        im = Image.fromarray(self.images[i])
        out = [self.transform(im) for _ in range(self.views)]
        return (*out, int(self.labels[i]))


def train_transform(size, jitter, blur_prob):
    """The reference's train pipeline (REFERENCE.md §3) at `size` pixels."""
    s = jitter
    ops = [
        transforms.RandomResizedCrop(size, antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
    ]
    if blur_prob > 0:
        k = int(0.1 * size) // 2 * 2 + 1
        ops.append(transforms.RandomApply([transforms.GaussianBlur(k, (0.1, 2.0))], p=blur_prob))
    ops.append(transforms.ToTensor())
    return transforms.Compose(ops)


def test_transform(size):
    return transforms.Compose([transforms.Resize((size, size), antialias=True), transforms.ToTensor()])


# ---------------------------------------------------------------- model

class Block(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18 without fc, channel counts w, 2w, 4w, 8w, with
    torchvision's initialisation; small_stem = 3x3/1 conv, no max-pool."""

    def __init__(self, w=64, small_stem=False):
        super().__init__()
        self.small_stem = small_stem
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False) if small_stem else nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        cin = w
        for li, planes in enumerate([w, 2 * w, 4 * w, 8 * w]):
            blocks = []
            for bi in range(2):
                blocks.append(Block(cin, planes, 2 if bi == 0 and li > 0 else 1))
                cin = planes
            setattr(self, f"layer{li + 1}", nn.Sequential(*blocks))
        self.features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if not self.small_stem:
            x = F.max_pool2d(x, 3, 2, 1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def mlp(cin, hidden, out, final_bn):
    layers = [nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out)]
    if final_bn:
        layers.append(nn.BatchNorm1d(out))
    return nn.Sequential(*layers)


def nt_xent(z1, z2, tau):
    """SimCLR's loss as the reference writes it (REFERENCE.md §2.3), one replica."""
    e1, e2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    b = e1.shape[0]
    labels = torch.arange(b)
    mask = torch.eye(b) * 1e9
    aa, bb = e1 @ e1.t() / tau - mask, e2 @ e2.t() / tau - mask
    ab, ba = e1 @ e2.t() / tau, e2 @ e1.t() / tau
    la = F.cross_entropy(torch.cat([ab, aa], 1), labels, reduction="none")
    lb = F.cross_entropy(torch.cat([ba, bb], 1), labels, reduction="none")
    return (la + lb).mean()


def byol_regression(p, z):
    """The paper's per-sample 2 − 2·cos, mean over the batch."""
    return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(1)).mean()


class Net(nn.Module):
    def __init__(self, a, classes):
        super().__init__()
        self.method = a.method
        self.backbone = ResNet18(a.base_width, a.small_stem)
        f = self.backbone.features
        if a.method == "simclr":
            self.head = mlp(f, a.head_latent_size, a.nce_size, True)
        elif a.method == "byol":
            self.head = mlp(f, a.head_latent_size, a.projection_size, False)
            self.predictor = mlp(a.projection_size, a.head_latent_size, a.projection_size, False)
        self.linear_classifier = nn.Linear(f, classes)
        self.target = None
        if a.method == "byol":
            # Target = copy of backbone + projector (parameters and BN buffers).
            self.target = nn.ModuleDict({"backbone": ResNet18(a.base_width, a.small_stem), "head": mlp(f, a.head_latent_size, a.projection_size, False)})
            self.target["backbone"].load_state_dict(self.backbone.state_dict())
            self.target["head"].load_state_dict(self.head.state_dict())
            for p in self.target.parameters():
                p.requires_grad_(False)

    def online_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("target.")]

    @torch.no_grad()
    def update_target(self, tau):
        for t, o in [(self.target["backbone"], self.backbone), (self.target["head"], self.head)]:
            for pt, po in zip(t.parameters(), o.parameters()):
                pt.mul_(tau).add_(po, alpha=1 - tau)

    def ssl_loss(self, v1, v2, a):
        h1, h2 = self.backbone(v1), self.backbone(v2)
        if self.method == "simclr":
            loss = nt_xent(self.head(h1), self.head(h2), a.nce_temperature)
        else:
            p1, p2 = self.predictor(self.head(h1)), self.predictor(self.head(h2))
            with torch.no_grad():
                t1 = self.target["head"](self.target["backbone"](v1))
                t2 = self.target["head"](self.target["backbone"](v2))
            loss = byol_regression(p1, t2) + byol_regression(p2, t1)
        return loss, h1, h2


# ---------------------------------------------------------------- schedules

def lr_at(base, warmup, total, k):
    if k < warmup:
        return base * (k + 1) / warmup
    t = min(1.0, (k - warmup) / max(1, total - warmup))
    return base * 0.5 * (1 + math.cos(math.pi * t))


def byol_tau(base, k, total):
    t = min(k, total) / max(1, total)
    return 1 - (1 - base) * (math.cos(math.pi * t) + 1) / 2


def sgd(params, lr, wd):
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return torch.optim.SGD([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=lr, momentum=0.9)


def topk(logits, y, ks=(1, 5)):
    top = logits.topk(max(ks), 1).indices
    return [100.0 * (top[:, :k] == y[:, None]).any(1).float().mean().item() for k in ks]


# ---------------------------------------------------------------- pretraining

def pretrain(a):
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    t_load = time.time()
    xtr, ytr, classes = load_split(a.data, "train")
    xte, yte, _ = load_split(a.data, "test")
    t_load = time.time() - t_load
    views = 1 if a.method == "supervised" else 2
    train = torch.utils.data.DataLoader(
        Views(xtr, ytr, train_transform(a.size, a.color_jitter_strength, a.blur_prob), views),
        batch_size=a.batch_size, shuffle=True, drop_last=True, num_workers=a.workers,
        persistent_workers=a.workers > 0)
    test = torch.utils.data.DataLoader(Views(xte, yte, test_transform(a.size), 1), batch_size=a.batch_size, num_workers=a.workers)
    dev = torch.device(a.device)
    net = Net(a, len(classes)).to(dev)
    if a.channels_last:
        # selfsup's default layout (conv weights and views NHWC); CPU bf16
        # convolutions are many times faster in it.
        net = net.to(memory_format=torch.channels_last)
    layout = torch.channels_last if a.channels_last else torch.contiguous_format
    to_dev = lambda t: t.to(dev, non_blocking=True, memory_format=layout) if t.dim() == 4 else t.to(dev, non_blocking=True)
    # Mixed precision as torch AMP code does it: forward and losses under
    # autocast; fp16 with a GradScaler.
    low = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
    autocast = lambda: torch.autocast(dev.type, dtype=low, enabled=low is not None)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.precision == "fp16")
    params = net.online_parameters()
    base_lr = a.lr * a.batch_size / 256
    opt = sgd(params, base_lr, a.weight_decay)
    steps_per_epoch = len(train)
    total = a.epochs * steps_per_epoch
    warmup = a.warmup * steps_per_epoch
    log = open(os.path.join(a.out, "metrics.jsonl"), "w")
    k = 0
    t0 = time.time()
    for epoch in range(a.epochs):
        net.train()
        sums, n = [0.0, 0.0], 0
        for batch in train:
            batch = [to_dev(t) for t in batch]
            labels = batch[-1]
            lr = lr_at(base_lr, warmup, total, k)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast():
                if a.method == "supervised":
                    h = net.backbone(batch[0])
                    logits = net.linear_classifier(h)
                    loss = F.cross_entropy(logits, labels)
                    ssl = loss
                else:
                    ssl, h1, h2 = net.ssl_loss(batch[0], batch[1], a)
                    logits = net.linear_classifier(torch.cat([h1, h2]).detach())
                    labels = torch.cat([labels, labels])
                    loss = ssl + F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if a.method == "byol":
                net.update_target(byol_tau(a.base_decay, k, total))
            k += 1
            sums[0] += loss.item()
            sums[1] += topk(logits.detach(), labels, (1,))[0]
            n += 1
            if k % a.log_every == 0:
                log.write(json.dumps({"split": "train", "epoch": epoch + 1, "step": k, "loss": loss.item(), "lr": lr, "seconds": time.time() - t0}) + "\n")
                log.flush()
        net.eval()
        with torch.no_grad():
            tl, tt, tn = 0.0, 0.0, 0
            for x, y in test:
                x, y = to_dev(x), to_dev(y)
                with autocast():
                    logits = net.linear_classifier(net.backbone(x))
                tt += topk(logits.float(), y, (1,))[0] * len(y)
                tn += len(y)
        rec = {"split": "epoch", "epoch": epoch + 1, "step": k, "train_loss": sums[0] / n, "train_top1": sums[1] / n,
               "test_top1": tt / tn, "seconds": time.time() - t0}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(f"[{a.method}] epoch {epoch + 1}/{a.epochs} | loss {rec['train_loss']:.4f} | online test top-1 {rec['test_top1']:.2f} % | {rec['seconds']:.0f} s", flush=True)
    seconds = time.time() - t0
    backbone = {k: v.cpu().contiguous() for k, v in net.backbone.state_dict().items()}
    torch.save({"backbone": backbone, "base_width": a.base_width, "small_stem": a.small_stem}, os.path.join(a.out, "backbone.pt"))
    summary = {"method": a.method, "precision": a.precision, "device": a.device, "train_seconds": seconds, "load_seconds": t_load, "epochs": a.epochs, "steps": k,
               "images_per_second": k * a.batch_size / seconds, "online_test_top1": rec["test_top1"]}
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


# ---------------------------------------------------------------- evaluation

def standardise(xtr, xte):
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp_min(1e-6)
    return (xtr - mean) / std, (xte - mean) / std


def linear_probe(xtr, ytr, xte, yte, classes, epochs=100, lr=0.1, wd=1e-4, batch=256, seed=0):
    """`selfsup eval linear`'s classifier: standardised features, Linear, SGD-momentum, per-step cosine."""
    xtr, xte = standardise(xtr, xte)
    g = torch.Generator().manual_seed(seed)
    fc = nn.Linear(xtr.shape[1], classes)
    opt = sgd(list(fc.parameters()), lr, wd)
    n = len(ytr)
    total = epochs * math.ceil(n / batch)
    k = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(fc(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p in opt.param_groups:
                p["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / total))
            opt.step()
            k += 1
    with torch.no_grad():
        return topk(fc(xte), yte)


def knn(xtr, ytr, xte, yte, classes, k=200, t=0.1):
    """`selfsup eval knn`: k nearest train features by cosine vote with exp(s / T)."""
    xtr, xte = F.normalize(xtr, dim=1), F.normalize(xte, dim=1)
    hits = [0.0, 0.0]
    for s in range(0, len(yte), 1024):
        q = xte[s:s + 1024]
        sim, idx = (q @ xtr.t()).topk(k, 1)
        scores = torch.zeros(len(q), classes).scatter_add_(1, ytr[idx], (sim / t).exp())
        for j, v in enumerate(topk(scores, yte[s:s + 1024])):
            hits[j] += v * len(q) / 100
    return [100 * h / len(yte) for h in hits]


@torch.no_grad()
def features(net, images, size, batch=256):
    net.eval()
    tf = test_transform(size)
    out = []
    for i in range(0, len(images), batch):
        x = torch.stack([tf(Image.fromarray(im)) for im in images[i:i + batch]])
        out.append(net(x))
    return torch.cat(out)


def evaluate(a):
    torch.set_num_threads(a.threads)
    ck = torch.load(a.checkpoint)
    net = ResNet18(ck["base_width"], ck["small_stem"])
    net.load_state_dict(ck["backbone"])
    xtr, ytr, classes = load_split(a.data, "train")
    xte, yte, _ = load_split(a.data, "test")
    t0 = time.time()
    ftr, fte = features(net, xtr, a.size), features(net, xte, a.size)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    lin = linear_probe(ftr, ytr, fte, yte, len(classes))
    nn_ = knn(ftr, ytr, fte, yte, len(classes))
    r = {"linear_top1": lin[0], "linear_top5": lin[1], "knn_top1": nn_[0], "knn_top5": nn_[1], "eval_seconds": time.time() - t0}
    with open(a.out, "w") as f:
        json.dump(r, f, indent=1)
    print(json.dumps(r))


def raw(a):
    """Scale: the same linear classifier and kNN on raw pixels (one grey channel)."""
    torch.set_num_threads(a.threads)
    xtr, ytr, classes = load_split(a.data, "train")
    xte, yte, _ = load_split(a.data, "test")
    ftr = torch.from_numpy(xtr[..., 0].reshape(len(xtr), -1)).float() / 255
    fte = torch.from_numpy(xte[..., 0].reshape(len(xte), -1)).float() / 255
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    lin = linear_probe(ftr, ytr, fte, yte, len(classes))
    nn_ = knn(ftr, ytr, fte, yte, len(classes))
    r = {"linear_top1": lin[0], "linear_top5": lin[1], "knn_top1": nn_[0], "knn_top5": nn_[1]}
    with open(a.out, "w") as f:
        json.dump(r, f, indent=1)
    print(json.dumps(r))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("pretrain")
    t.add_argument("--method", choices=["simclr", "byol", "supervised"], required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--size", type=int, default=28)
    t.add_argument("--base-width", type=int, default=32)
    t.add_argument("--small-stem", action="store_true")
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--warmup", type=int, default=1)
    t.add_argument("--lr", type=float, default=0.06)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--head-latent-size", type=int, default=512)
    t.add_argument("--nce-size", type=int, default=128)
    t.add_argument("--nce-temperature", type=float, default=0.5)
    t.add_argument("--projection-size", type=int, default=128)
    t.add_argument("--base-decay", type=float, default=0.99)
    t.add_argument("--color-jitter-strength", type=float, default=0.5)
    t.add_argument("--blur-prob", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype (fp16 with a GradScaler)")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--channels-last", action="store_true", help="NHWC weights and batches, as selfsup's default")
    e = sub.add_parser("evaluate")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--size", type=int, default=28)
    e.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("raw")
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    {"pretrain": pretrain, "evaluate": evaluate, "raw": raw}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
