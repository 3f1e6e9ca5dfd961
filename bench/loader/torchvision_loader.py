"""torchvision's side of the loader benchmark: a DataLoader over the same
ImageFolder, with the reference programs' train transform up to the flip.

  python torchvision_loader.py <data-dir> --workers W [--batch 64] [--size 224] [--epochs 2]
                               [--mode reference|decode-once]

reference:   what jramapuram/SimCLR does (REFERENCE.md §3.2-3.3): each sample
             decodes its file twice, RandomResizedCrop + RandomHorizontalFlip
             + ToTensor per view; workers re-forked every epoch.
decode-once: the best torchvision can do with the same ops: one decode, two
             RandomResizedCrop + flip, uint8 tensors (PILToTensor) like selfsup.

Prints one JSON line: {"samples", "seconds", "samples_per_s", "cpu_seconds"}
(a sample is one image with its two views; CPU time of this process and its
workers while loading, start-up and imports excluded).
"""
import argparse
import json
import resource
import time

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


class TwoViews(ImageFolder):
    """Two independently augmented views of each image, decoded `decodes` times (2 = the reference)."""

    def __init__(self, root, transform, decodes):
        super().__init__(root, transform=transform)
        self.decodes = decodes

    def __getitem__(self, i):
        path, label = self.samples[i]
        if self.decodes == 2:
            return self.transform(self.loader(path)), self.transform(self.loader(path)), label
        img = self.loader(path)
        return self.transform(img), self.transform(img), label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--mode", choices=["reference", "decode-once"], default="reference")
    a = p.parse_args()
    last = T.ToTensor() if a.mode == "reference" else T.PILToTensor()
    transform = T.Compose([T.RandomResizedCrop(a.size), T.RandomHorizontalFlip(), last])
    data = TwoViews(f"{a.data_dir}/train", transform, 2 if a.mode == "reference" else 1)
    loader = DataLoader(data, batch_size=a.batch, shuffle=True, num_workers=a.workers, drop_last=True)
    samples, t0, cpu0 = 0, time.perf_counter(), cpu_seconds()
    for _ in range(a.epochs):
        for v1, v2, labels in loader:
            samples += len(labels)
    secs = time.perf_counter() - t0
    # Workers exit (and are reaped) at the end of each epoch, so RUSAGE_CHILDREN holds their time.
    cpu = cpu_seconds() - cpu0
    print(json.dumps({"samples": samples, "seconds": secs, "samples_per_s": samples / secs, "cpu_seconds": cpu}))


def cpu_seconds():
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, [resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN]))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
