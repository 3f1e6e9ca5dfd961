"""PyTorch's side of bench/dist: the same SimCLR step as
native/benches/dist_overlap.rs, on torchvision's resnet18 + the reference's
head under torch's DistributedDataParallel (Gloo, CPU), timed the same way.

    python bench/dist/torch_overlap.py <rank> <world> <port> [key=value ...]

Prints one JSON line (rank 0) of medians in ms: local (forward + backward
under no_sync), ddp (the same with DDP's all-reduces), comm (DDP's buckets
all-reduced alone), and the share of comm hidden behind backward.
"""
import datetime
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.distributed.nn
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def l2n(x):
    return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-12))


def nt_xent(z1, z2, tau, rank, world):
    """The reference's NT-Xent, negatives gathered from every replica (with gradient, as selfsup)."""
    e1, e2 = l2n(z1), l2n(z2)
    f1 = torch.cat(torch.distributed.nn.all_gather(e1), 0) if world > 1 else e1
    f2 = torch.cat(torch.distributed.nn.all_gather(e2), 0) if world > 1 else e2
    labels = torch.arange(e1.shape[0]) + rank * e1.shape[0]
    masks = F.one_hot(labels, f1.shape[0]).float()
    aa = e1 @ f1.t() / tau - masks * 1e9
    bb = e2 @ f2.t() / tau - masks * 1e9
    ab = e1 @ f2.t() / tau
    ba = e2 @ f1.t() / tau
    la = F.cross_entropy(torch.cat([ab, aa], 1), labels, reduction="none")
    lb = F.cross_entropy(torch.cat([ba, bb], 1), labels, reduction="none")
    return (la + lb).mean()


class SimCLR(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet18()
        self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(nn.Linear(512, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 128), nn.BatchNorm1d(128))
        self.linear_classifier = nn.Linear(512, 10)

    def forward(self, v1, v2):
        h1, h2 = self.backbone(v1), self.backbone(v2)
        return self.head(h1), self.head(h2), self.linear_classifier(torch.cat([h1, h2]).detach())


def main():
    rank, world, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    kv = dict(a.split("=", 1) for a in sys.argv[4:])
    steps, batch, size = int(kv.get("steps", 12)), int(kv.get("batch", 32)), int(kv.get("size", 64))
    torch.set_num_threads(int(kv.get("threads", 1)))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    model = nn.parallel.DistributedDataParallel(SimCLR())
    n = batch * 3 * size * size
    gen = lambda k: torch.sin(torch.arange(n, dtype=torch.float32) * (0.01 + k + rank)).view(batch, 3, size, size)
    v1, v2, labels = gen(0.1), gen(0.2), torch.arange(batch) % 10

    def step():
        z1, z2, logits = model(v1, v2)
        loss = nt_xent(z1, z2, 0.1, rank, world) + F.cross_entropy(logits, torch.cat([labels, labels]))
        model.zero_grad()
        loss.backward()

    def timed(fn):
        dist.barrier()
        t = time.perf_counter()
        fn()
        dist.barrier()
        return (time.perf_counter() - t) * 1e3

    local, ddp, comm = [], [], []
    for s in range(steps):
        with model.no_sync():
            t_local = timed(step)
        t_ddp = timed(step)
        sizes = [b.buffer().numel() * b.buffer().element_size() for b in model.reducer._get_zeros_like_grad_buckets()]
        buckets = [torch.zeros(b // 4) for b in sizes]
        t_comm = timed(lambda: [dist.all_reduce(b) for b in buckets])
        if s >= 2:
            local.append(t_local)
            ddp.append(t_ddp)
            comm.append(t_comm)
    l, d, c = statistics.median(local), statistics.median(ddp), statistics.median(comm)
    if rank == 0:
        print(json.dumps({
            "impl": "pytorch", "world": world, "batch": batch, "size": size, "arch": "resnet18", "threads": torch.get_num_threads(),
            "local_ms": l, "ddp_ms": d, "comm_ms": c, "hidden": max(-1.0, min(1.0, (l + c - d) / c)),
            "buckets_mb": [round(b / 2**20, 1) for b in sizes],
        }))
    # Every rank leaves together: a rank still talking to the store after
    # rank 0 (its server) exited would wait for the timeout.
    dist.barrier()


if __name__ == "__main__":
    main()
