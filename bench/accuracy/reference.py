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

--device cuda runs it as a PyTorch user would on a GPU: pinned batches
copied without blocking, cuDNN's autotuner, channels_last, metrics read
back once an epoch; --precision bf16|fp16 wraps the forward pass and
losses in torch.autocast (weights, optimizer and the EMA update stay
fp32), fp16 with torch.amp.GradScaler.
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
    labels = torch.arange(b, device=e1.device)
    mask = torch.eye(b, device=e1.device) * 1e9
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
            # One fused kernel per group instead of two per tensor (the GPU
            # would otherwise wait on ~250 tiny launches a step).
            pt, po = list(t.parameters()), list(o.parameters())
            torch._foreach_mul_(pt, tau)
            torch._foreach_add_(pt, po, alpha=1 - tau)

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

def device_of(a):
    """The torch device of --device, with cuDNN's autotuner on a GPU (as
    torch.backends.cudnn.benchmark in a PyTorch training script)."""
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("reference.py: --device cuda, but torch sees no GPU; use --device cpu")
        torch.backends.cudnn.benchmark = True
    return torch.device(a.device)


def autocast(a):
    """torch.autocast to bf16 or fp16 for --precision bf16|fp16, else a no-op."""
    low = torch.float16 if a.precision == "fp16" else torch.bfloat16
    return torch.autocast(a.device, dtype=low, enabled=a.precision != "fp32")


def hits(logits, y):
    """Top-1 hits as a device tensor, read back once an epoch (a .item()
    per step would make the host wait for the GPU every step)."""
    return (logits.argmax(1) == y).sum()


def pretrain(a):
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.set_num_threads(a.threads)
    dev = device_of(a)
    gpu = dev.type == "cuda"
    # On a GPU, convolutions read channels_last fastest (selfsup lays its
    # weights and views out so as well); on the CPU the layout is left as it
    # was measured unless --channels-last (CPU bf16 convolutions on AVX2 run
    # ~7x faster in it).
    layout = torch.channels_last if gpu or a.channels_last else torch.contiguous_format
    os.makedirs(a.out, exist_ok=True)
    t_load = time.time()
    xtr, ytr, classes = load_split(a.data, "train")
    xte, yte, _ = load_split(a.data, "test")
    t_load = time.time() - t_load
    views = 1 if a.method == "supervised" else 2
    train = torch.utils.data.DataLoader(
        Views(xtr, ytr, train_transform(a.size, a.color_jitter_strength, a.blur_prob), views),
        batch_size=a.batch_size, shuffle=True, drop_last=True, num_workers=a.workers,
        persistent_workers=a.workers > 0, pin_memory=gpu)
    test = torch.utils.data.DataLoader(Views(xte, yte, test_transform(a.size), 1), batch_size=a.batch_size, num_workers=a.workers,
                                       pin_memory=gpu)
    net = Net(a, len(classes)).to(dev, memory_format=layout)
    params = net.online_parameters()
    base_lr = a.lr * a.batch_size / 256
    opt = sgd(params, base_lr, a.weight_decay)
    # fp16: a dynamic loss scale, as a PyTorch user would (a no-op otherwise).
    scaler = torch.amp.GradScaler(a.device, enabled=a.precision == "fp16")
    steps_per_epoch = len(train)
    if steps_per_epoch == 0:
        sys.exit(f"reference.py: {len(ytr)} train images make no batch of --batch-size {a.batch_size}; lower --batch-size")
    total = a.epochs * steps_per_epoch
    warmup = a.warmup * steps_per_epoch
    log = open(os.path.join(a.out, "metrics.jsonl"), "w")
    put = lambda x: x.to(dev, non_blocking=True, memory_format=layout) if x.dim() == 4 else x.to(dev, non_blocking=True)
    k = 0
    t0 = time.time()
    for epoch in range(a.epochs):
        net.train()
        loss_sum, hit_sum, seen, n = torch.zeros((), device=dev), torch.zeros((), device=dev), 0, 0
        for batch in train:
            batch = [put(x) for x in batch]
            labels = batch[-1]
            lr = lr_at(base_lr, warmup, total, k)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast(a):
                if a.method == "supervised":
                    h = net.backbone(batch[0])
                    logits = net.linear_classifier(h)
                    loss = F.cross_entropy(logits, labels)
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
            loss_sum += loss.detach().float()
            hit_sum += hits(logits.detach(), labels)
            seen += len(labels)
            n += 1
            if k % a.log_every == 0:
                log.write(json.dumps({"split": "train", "epoch": epoch + 1, "step": k, "loss": loss.item(), "lr": lr, "seconds": time.time() - t0}) + "\n")
                log.flush()
        net.eval()
        with torch.no_grad(), autocast(a):
            test_hits, tn = torch.zeros((), device=dev), 0
            for x, y in test:
                x, y = put(x), put(y)
                test_hits += hits(net.linear_classifier(net.backbone(x)), y)
                tn += len(y)
        rec = {"split": "epoch", "epoch": epoch + 1, "step": k, "train_loss": loss_sum.item() / n, "train_top1": 100.0 * hit_sum.item() / seen,
               "test_top1": 100.0 * test_hits.item() / tn, "seconds": time.time() - t0}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(f"[{a.method}] epoch {epoch + 1}/{a.epochs} | loss {rec['train_loss']:.4f} | online test top-1 {rec['test_top1']:.2f} % | {rec['seconds']:.0f} s", flush=True)
    seconds = time.time() - t0
    state = {k_: v.to("cpu", memory_format=torch.contiguous_format) for k_, v in net.backbone.state_dict().items()}
    torch.save({"backbone": state, "base_width": a.base_width, "small_stem": a.small_stem, "size": a.size}, os.path.join(a.out, "backbone.pt"))
    summary = {"method": a.method, "train_seconds": seconds, "load_seconds": t_load, "epochs": a.epochs, "steps": k,
               "images_per_second": k * a.batch_size / seconds, "online_test_top1": rec["test_top1"],
               "device": torch.cuda.get_device_name(dev) if gpu else "cpu", "precision": a.precision}
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
    fc = nn.Linear(xtr.shape[1], classes).to(xtr.device)
    opt = sgd(list(fc.parameters()), lr, wd)
    n = len(ytr)
    total = epochs * math.ceil(n / batch)
    k = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(xtr.device)
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
        scores = torch.zeros(len(q), classes, device=q.device).scatter_add_(1, ytr[idx], (sim / t).exp())
        for j, v in enumerate(topk(scores, yte[s:s + 1024])):
            hits[j] += v * len(q) / 100
    return [100 * h / len(yte) for h in hits]


@torch.no_grad()
def features(net, images, size, dev, batch=256):
    """fp32 features of the test transform's images (as `selfsup eval`)."""
    net.eval()
    tf = test_transform(size)
    out = []
    for i in range(0, len(images), batch):
        x = torch.stack([tf(Image.fromarray(im)) for im in images[i:i + batch]])
        out.append(net(x.to(dev)))
    return torch.cat(out)


def evaluate(a):
    torch.set_num_threads(a.threads)
    dev = device_of(a)
    ck = torch.load(a.checkpoint)
    net = ResNet18(ck["base_width"], ck["small_stem"])
    net.load_state_dict(ck["backbone"])
    net.to(dev)
    size = a.size or ck.get("size", 28)
    xtr, ytr, classes = load_split(a.data, "train")
    xte, yte, _ = load_split(a.data, "test")
    t0 = time.time()
    ftr, fte = features(net, xtr, size, dev), features(net, xte, size, dev)
    ytr, yte = torch.from_numpy(ytr).to(dev), torch.from_numpy(yte).to(dev)
    lin = linear_probe(ftr, ytr, fte, yte, len(classes))
    nn_ = knn(ftr, ytr, fte, yte, len(classes))
    r = {"linear_top1": lin[0], "linear_top5": lin[1], "knn_top1": nn_[0], "knn_top5": nn_[1], "eval_seconds": time.time() - t0}
    with open(a.out, "w") as f:
        json.dump(r, f, indent=1)
    print(json.dumps(r))


def raw(a):
    """Scale: the same linear classifier and kNN on raw pixels (one grey channel)."""
    torch.set_num_threads(a.threads)
    dev = device_of(a)
    xtr, ytr, classes = load_split(a.data, "train")
    xte, yte, _ = load_split(a.data, "test")
    ftr = torch.from_numpy(xtr[..., 0].reshape(len(xtr), -1)).float().to(dev) / 255
    fte = torch.from_numpy(xte[..., 0].reshape(len(xte), -1)).float().to(dev) / 255
    ytr, yte = torch.from_numpy(ytr).to(dev), torch.from_numpy(yte).to(dev)
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
    t.add_argument("--print-args", action="store_true", help="print the parsed settings as JSON and exit")
    e = sub.add_parser("evaluate")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--size", type=int, help="resize size (default: the checkpoint's)")
    e.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("raw")
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--threads", type=int, default=1)
    for q in (t, e, r):
        q.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t.add_argument("--channels-last", action="store_true", help="channels_last weights and views on the CPU too (always on CUDA)")
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="bf16|fp16: forward and losses under torch.autocast; fp16 with torch.amp.GradScaler")
    a = p.parse_args()
    if a.cmd == "pretrain" and a.print_args:
        return print(json.dumps(vars(a)))
    {"pretrain": pretrain, "evaluate": evaluate, "raw": raw}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
