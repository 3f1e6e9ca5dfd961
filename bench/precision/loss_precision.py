"""How far the losses' gradients move from float64 when the losses run
under torch.autocast (their matmuls and normalisations in bf16/fp16, as
torch leaves them on the CPU) versus selfsup's policy (embeddings from the
reduced-precision network, losses in fp32 with autocast suspended).

  . .cache/env.sh && $SELFSUP_PYTHON bench/precision/loss_precision.py

Embeddings are the demo's shapes (batch 128, 128-d for NT-Xent at τ 0.1,
128-d for BYOL's 2 − 2·cos), with positives at cosine ~0.3 (early in
training) and ~0.9 (late). Prints the relative error of the gradient with
respect to the embeddings and of the loss, median over 5 draws.
"""
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "accuracy"))
import reference  # noqa: E402


def l2(x):
    return x * torch.rsqrt(torch.clamp((x ** 2).sum(-1, keepdim=True), min=1e-12))


def nt_xent(z1, z2):
    """The reference's NT-Xent (bench/accuracy/reference.py) at the demo's τ 0.1."""
    return reference.nt_xent(z1, z2, 0.1)


def byol(p, z):
    return (2 - 2 * (l2(p) * l2(z)).sum(-1)).mean()


def pair(g, b, d, cos):
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    noise = torch.randn(b, d, generator=g, dtype=torch.float64)
    return z1, cos * z1 + (1 - cos ** 2) ** 0.5 * noise


def grads(loss, z1, z2, mode, low):
    """Loss and d loss / d (z1, z2) in float64 for one policy."""
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    if mode == "fp64":
        l = loss(a, b)
    elif mode == "fp32":
        l = loss(a.float(), b.float())
    else:
        # The embeddings come out of the network in the reduced type.
        ra, rb = a.to(low), b.to(low)
        if mode == "torch autocast":
            with torch.autocast("cpu", dtype=low):
                l = loss(ra, rb)
        else:  # selfsup: autocast suspended, losses on fp32 copies
            l = loss(ra.float(), rb.float())
    g = torch.autograd.grad(l, [a, b])
    return l.double(), torch.cat([x.flatten() for x in g]).double()


def main():
    torch.manual_seed(0)
    modes = ["fp32", "torch autocast", "selfsup"]
    print(f"{'loss':<10}{'cos':>5}{'dtype':>10}  " + "".join(f"{m + ' grad':>22}{m + ' loss':>22}" for m in modes))
    for name, loss in [("NT-Xent", nt_xent), ("BYOL", byol)]:
        for cos in (0.3, 0.9):
            for low in (torch.bfloat16, torch.float16):
                rows = {m: ([], []) for m in modes}
                for seed in range(5):
                    g = torch.Generator().manual_seed(seed)
                    z1, z2 = pair(g, 128, 128, cos)
                    l0, g0 = grads(loss, z1, z2, "fp64", low)
                    for m in modes:
                        l, gr = grads(loss, z1, z2, m, low)
                        rows[m][0].append(((gr - g0).norm() / g0.norm()).item())
                        rows[m][1].append(abs((l - l0) / l0).item())
                cells = "".join(f"{statistics.median(rows[m][0]):>22.2e}{statistics.median(rows[m][1]):>22.2e}" for m in modes)
                print(f"{name:<10}{cos:>5}{str(low).replace('torch.', ''):>10}  {cells}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
