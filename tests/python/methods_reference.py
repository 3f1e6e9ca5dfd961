"""PyTorch references for MoCo v3, Barlow Twins and VICReg losses, written
from the papers' pseudo-code (Algorithm 1 of each; docs/METHODS.md lists the
sources and where the authors' code differs from the paper).

Each loss takes the embeddings of the two views of the *global* batch. The
authors' multi-replica forms are written out too (a list of per-replica
tensors standing for the replicas), so that a test can check that selfsup's
gathered computation equals the single-process one.

  loss <spec.json> <inputs> <reference>   draw random embeddings for the loss
      named in spec["loss"] (mocoV3, barlowTwins, vicreg), write them and
      PyTorch's loss and input gradients (safetensors, as st.py writes)
  selfcheck                               checks the references against
      each other (global == per-replica forms, known values); prints JSON
"""
import json
import sys

import torch
import torch.nn.functional as F


def off_diagonal(x):
    """The off-diagonal elements of a square matrix, flattened (both
    authors' repositories use this reshaping trick)."""
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


# MoCo v3 (Chen, Xie, He 2021, Algorithm 1) ---------------------------------


def moco_v3_ctr(q, k, tau, offset=0):
    """ctr(q, k): InfoNCE of this replica's queries against every key of the
    global batch (k gathered, no gradient through it), scaled by 2τ.
    `offset` is where this replica's rows start in k."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    logits = q @ k.t() / tau
    labels = torch.arange(q.shape[0]) + offset
    return F.cross_entropy(logits, labels) * (2 * tau)


def moco_v3_loss(q1, q2, k1, k2, tau):
    """Symmetrised: ctr(q1, k2) + ctr(q2, k1); the keys come from the
    momentum encoder and carry no gradient."""
    return moco_v3_ctr(q1, k2.detach(), tau) + moco_v3_ctr(q2, k1.detach(), tau)


def moco_v3_replicas(q1s, q2s, k1s, k2s, tau):
    """The authors' distributed form: each replica's loss on its queries and
    the gathered keys, averaged over replicas (DDP's gradient average)."""
    k1, k2 = torch.cat(k1s).detach(), torch.cat(k2s).detach()
    losses, o = [], 0
    for q1, q2 in zip(q1s, q2s):
        losses.append(moco_v3_ctr(q1, k2, tau, o) + moco_v3_ctr(q2, k1, tau, o))
        o += q1.shape[0]
    return torch.stack(losses).mean()


# Barlow Twins (Zbontar et al. 2021, Algorithm 1) ---------------------------


def batch_standardise(z, eps=1e-5):
    """BatchNorm1d(affine=False) in training mode, as the authors' code
    normalises (biased variance, ε = 1e-5; the paper's pseudo-code divides
    by the unbiased std without ε)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def barlow_twins_loss(z1, z2, lambd):
    """Σ_i (1 − c_ii)² + λ Σ_{i≠j} c_ij², c the cross-correlation of the
    batch-standardised embeddings."""
    n = z1.shape[0]
    c = batch_standardise(z1).t() @ batch_standardise(z2) / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def barlow_twins_replicas(z1s, z2s, lambd, eps=1e-5):
    """The authors' form: SyncBN statistics over all replicas, each replica's
    c divided by the global batch, summed over replicas (all_reduce).
    The sum here is autograd-aware: the gradient is the global-batch one,
    not the authors' 1/replicas of it (docs/METHODS.md)."""
    z1, z2 = torch.cat(z1s), torch.cat(z2s)
    n = z1.shape[0]
    m1, v1 = z1.mean(0), z1.var(0, unbiased=False)
    m2, v2 = z2.mean(0), z2.var(0, unbiased=False)
    c = sum(((a - m1) / torch.sqrt(v1 + eps)).t() @ ((b - m2) / torch.sqrt(v2 + eps)) / n for a, b in zip(z1s, z2s))
    return (torch.diagonal(c) - 1).pow(2).sum() + lambd * off_diagonal(c).pow(2).sum()


# VICReg (Bardes, Ponce, LeCun 2022, Algorithm 1) ---------------------------


def vicreg_terms(z1, z2, gamma=1.0, eps=1e-4):
    """(invariance, variance, covariance) of the global batch: MSE; mean
    hinge on the std (unbiased variance), the two views' halves summed as
    the authors' code does (the paper sums without halving); squared
    off-diagonal covariances over D, both views."""
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)
    a, b = z1 - z1.mean(0), z2 - z2.mean(0)
    std_a, std_b = torch.sqrt(a.var(0) + eps), torch.sqrt(b.var(0) + eps)
    var = F.relu(gamma - std_a).mean() / 2 + F.relu(gamma - std_b).mean() / 2
    cov_a, cov_b = a.t() @ a / (n - 1), b.t() @ b / (n - 1)
    cov = off_diagonal(cov_a).pow(2).sum() / d + off_diagonal(cov_b).pow(2).sum() / d
    return inv, var, cov


def vicreg_loss(z1, z2, sim=25.0, std=25.0, cov=1.0):
    i, v, c = vicreg_terms(z1, z2)
    return sim * i + std * v + cov * c


def vicreg_replicas(z1s, z2s, sim=25.0, std=25.0, cov=1.0):
    """The authors' form: invariance per replica (averaged by DDP),
    variance and covariance on the gathered embeddings."""
    inv = torch.stack([F.mse_loss(a, b) for a, b in zip(z1s, z2s)]).mean()
    _, v, c = vicreg_terms(torch.cat(z1s), torch.cat(z2s))
    return sim * inv + std * v + cov * c


# Command line ----------------------------------------------------------------


def draw(spec):
    g = torch.Generator().manual_seed(spec.get("seed", 0))
    b, d = spec["batch"], spec["dim"]
    names = ["q1", "q2", "k1", "k2"] if spec["loss"] == "mocoV3" else ["z1", "z2"]
    x = {n: torch.randn(b, d, generator=g) for n in names}
    if spec["loss"] == "mocoV3" and spec.get("offset") is not None:
        # Every replica's keys, this replica's among them at `offset`, as
        # after an all-gather.
        o, n = spec["offset"], spec["replicas"] * b
        for k in ("k1", "k2"):
            x[k + "_all"] = torch.randn(n, d, generator=g)
            x[k + "_all"][o : o + b] = x[k]
    return x


def value(spec, x):
    if spec["loss"] == "mocoV3":
        t, o = spec["temperature"], spec.get("offset")
        if o is not None:
            return moco_v3_ctr(x["q1"], x["k2_all"].detach(), t, o) + moco_v3_ctr(x["q2"], x["k1_all"].detach(), t, o)
        return moco_v3_loss(x["q1"], x["q2"], x["k1"], x["k2"], t)
    if spec["loss"] == "barlowTwins":
        return barlow_twins_loss(x["z1"], x["z2"], spec["lambd"])
    if spec["loss"] == "vicreg":
        return vicreg_loss(x["z1"], x["z2"], spec.get("sim", 25.0), spec.get("std", 25.0), spec.get("cov", 1.0))
    raise SystemExit(f"unknown loss {spec['loss']!r}")


def loss(spec, inputs_path, ref_path):
    import st

    x = draw(spec)
    st.save(x, inputs_path)
    leaves = {n: t.clone().requires_grad_(True) for n, t in x.items()}
    v = value(spec, leaves)
    v.backward()
    out = {"loss": v.detach()}
    for n, t in leaves.items():
        out["grad." + n] = t.grad if t.grad is not None else torch.zeros_like(t)
    st.save(out, ref_path)


def selfcheck():
    """Global-batch forms against the per-replica (authors') forms, plus
    values the definitions fix; returns {check: max relative error}."""
    g = torch.Generator().manual_seed(0)
    r, b, d = 3, 8, 16
    z1, z2 = torch.randn(r * b, d, generator=g), torch.randn(r * b, d, generator=g)
    split = lambda t: list(t.split(b))
    rel = lambda a, c: float((a - c).abs().max() / c.abs().max().clamp_min(1e-12))

    def grads(f, *xs):
        leaves = [x.clone().requires_grad_(True) for x in xs]
        f(*leaves).backward()
        return torch.cat([x.grad.flatten() for x in leaves])

    out = {}
    out["barlow: replicas == global (value)"] = rel(barlow_twins_replicas(split(z1), split(z2), 5e-3), barlow_twins_loss(z1, z2, 5e-3))
    out["barlow: replicas == global (grad)"] = rel(
        grads(lambda a, c: barlow_twins_replicas(split(a), split(c), 5e-3), z1, z2), grads(lambda a, c: barlow_twins_loss(a, c, 5e-3), z1, z2)
    )
    # Identical views whose features are zero-mean, unit-variance and
    # uncorrelated (a Sylvester-Hadamard matrix without its all-ones column):
    # c = I, so the loss is 0 up to BN's ε.
    h = torch.ones(1, 1)
    for _ in range(6):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    out["barlow: c = I gives 0"] = float(barlow_twins_loss(h[:, 1:], h[:, 1:], 5e-3).abs())
    out["vicreg: replicas == global (value)"] = rel(vicreg_replicas(split(z1), split(z2)), vicreg_loss(z1, z2))
    out["vicreg: replicas == global (grad)"] = rel(grads(lambda a, c: vicreg_replicas(split(a), split(c)), z1, z2), grads(vicreg_loss, z1, z2))
    k1, k2 = torch.randn(r * b, d, generator=g), torch.randn(r * b, d, generator=g)
    # Each replica's mean over its own rows, averaged: the global mean.
    out["mocov3: replicas == global (value)"] = rel(moco_v3_replicas(split(z1), split(z2), split(k1), split(k2), 1.0), moco_v3_loss(z1, z2, k1, k2, 1.0))
    # At τ → large the logits are equal: CE = log N, loss = 2 · 2τ · log N.
    tau = 1e6
    out["mocov3: chance value"] = rel(moco_v3_loss(z1, z2, k1, k2, tau), torch.log(torch.tensor(float(r * b))) * 4 * tau)
    return out


if __name__ == "__main__":
    torch.set_num_threads(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "loss":
        loss(json.loads(args[0]), args[1], args[2])
    elif cmd == "selfcheck":
        res = selfcheck()
        print(json.dumps(res, indent=1))
        bad = {k: v for k, v in res.items() if not v < 1e-5}
        if bad:
            raise SystemExit(f"selfcheck failed: {bad}")
