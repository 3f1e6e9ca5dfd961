"""PyTorch references for selfsup's algorithm parity tests.

  loss <spec.json> <inputs> <reference>     draw random inputs for a loss,
      write them and PyTorch's loss and input gradients
  optimizer <spec.json> <inputs> <reference>  draw parameters and gradients,
      run torch.optim (wrapped in LARS as optimizers/lars.py does) and write
      the parameters after every step
  backbone <arch> <native>                  load selfsup's backbone state into
      torchvision's model and compare names, shapes, dtypes, features and
      BN statistics; prints a JSON report
  compare <reference> <native>              prints the tensor comparison
"""
import json
import sys

import torch
import torch.nn.functional as F
import torchvision

import st


def l2n(x):
    return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-12))


def nt_xent(z1, z2, tau, z1_all=None, z2_all=None, offset=0):
    """SimCLR/objective.py, with the gathered tensors passed in."""
    e1, e2 = l2n(z1), l2n(z2)
    f1 = l2n(z1_all) if z1_all is not None else e1
    f2 = l2n(z2_all) if z2_all is not None else e2
    labels = torch.arange(e1.shape[0]) + offset
    masks = F.one_hot(labels, f1.shape[0]).float()
    aa = e1 @ f1.t() / tau - masks * 1e9
    bb = e2 @ f2.t() / tau - masks * 1e9
    ab = e1 @ f2.t() / tau
    ba = e2 @ f1.t() / tau
    la = F.cross_entropy(torch.cat([ab, aa], 1), labels, reduction="none")
    lb = F.cross_entropy(torch.cat([ba, bb], 1), labels, reduction="none")
    return (la + lb).mean()


def byol_regression(p, z, norm):
    if norm == "paper":  # BYOL paper: 2 - 2 cos, per sample
        return (2 - 2 * (F.normalize(p, dim=-1) * F.normalize(z, dim=-1)).sum(-1)).mean()
    return (-2 * (p * z).sum(-1) / (p.norm() * z.norm())).mean()  # BYOL/objective.py


def loss(spec, inputs_path, ref_path):
    g = torch.Generator().manual_seed(spec.get("seed", 0))
    b, d = spec["batch"], spec["dim"]
    if spec["loss"] == "ntXent":
        names = ["z1", "z2"]
        if spec.get("offset") is not None:
            names += ["z1_all", "z2_all"]
        shapes = {"z1": (b, d), "z2": (b, d), "z1_all": (spec.get("replicas", 1) * b, d), "z2_all": (spec.get("replicas", 1) * b, d)}
    else:
        names = ["p1", "p2", "z1t", "z2t"]
        shapes = {n: (b, d) for n in names}
    x = {n: torch.randn(*shapes[n], generator=g) for n in names}
    if spec.get("offset") is not None:
        # The local rows are part of the gathered tensors, as after an all-gather.
        o = spec["offset"]
        x["z1_all"][o : o + b] = x["z1"]
        x["z2_all"][o : o + b] = x["z2"]
    st.save(x, inputs_path)
    leaves = {n: t.clone().requires_grad_(True) for n, t in x.items()}
    if spec["loss"] == "ntXent":
        value = nt_xent(leaves["z1"], leaves["z2"], spec["temperature"], leaves.get("z1_all"), leaves.get("z2_all"), spec.get("offset") or 0)
    else:
        p1, p2, z1, z2 = (leaves[n] for n in names)
        value = byol_regression(p1, z2.detach(), spec["norm"]) + byol_regression(p2, z1.detach(), spec["norm"])
    value.backward()
    out = {"loss": value.detach()}
    for n, t in leaves.items():
        out["grad." + n] = t.grad if t.grad is not None else torch.zeros_like(t)
    st.save(out, ref_path)


class LARS:
    """optimizers/lars.py of the reference programs (REFERENCE.md §2.8): add
    weight decay, rescale by the trust ratio (groups with ignore=False),
    then step the inner optimizer with weight decay temporarily 0."""

    def __init__(self, inner, eps=0.0, trust_coef=0.001):
        self.inner, self.eps, self.trust_coef = inner, eps, trust_coef

    @torch.no_grad()
    def step(self):
        for group in self.inner.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"] > 0:
                    p.grad.add_(p, alpha=group["weight_decay"])
                if group["ignore"] is False:
                    wn, gn = p.norm(), p.grad.norm()
                    if wn > 0 and gn > 0:
                        p.grad.mul_(self.trust_coef * wn / (gn + self.eps))
        saved = [g["weight_decay"] for g in self.inner.param_groups]
        for g in self.inner.param_groups:
            g["weight_decay"] = 0
        self.inner.step()
        for g, wd in zip(self.inner.param_groups, saved):
            g["weight_decay"] = wd


def make_optimizer(name, groups, lr):
    full = name.lower().strip()
    is_lars = "lars" in full
    base = full.split("_")[-1] if is_lars else full
    # main.py's choices with torch's defaults ("momentum" is SGD with 0.9)
    make = {
        "sgd": lambda: torch.optim.SGD(groups, lr=lr, foreach=False),
        "momentum": lambda: torch.optim.SGD(groups, lr=lr, momentum=0.9, foreach=False),
        "adam": lambda: torch.optim.Adam(groups, lr=lr, foreach=False),
        "adamw": lambda: torch.optim.AdamW(groups, lr=lr, foreach=False),
        "rmsprop": lambda: torch.optim.RMSprop(groups, lr=lr, foreach=False),
        "adadelta": lambda: torch.optim.Adadelta(groups, lr=lr, foreach=False),
    }[base]()
    return LARS(make, eps=0.0) if is_lars else make


def optimizer(spec, inputs_path, ref_path):
    g = torch.Generator().manual_seed(spec.get("seed", 0))
    shapes = {"conv.weight": (6, 3, 3, 3), "fc.weight": (5, 7), "fc.bias": (5,), "bn.weight": (6,), "bn.bias": (6,)}
    params = {n: torch.randn(*s, generator=g) for n, s in shapes.items()}
    grads = [{n: torch.randn(*s, generator=g) for n, s in shapes.items()} for _ in range(spec["steps"])]
    if spec.get("zeroGradient"):  # a zero gradient exercises the trust ratio's fallback
        grads[0]["fc.weight"].zero_()
    data = {"param." + n: t for n, t in params.items()}
    for k, gk in enumerate(grads):
        data.update({f"grad{k}.{n}": t for n, t in gk.items()})
    st.save(data, inputs_path)
    live = {n: t.clone().requires_grad_(True) for n, t in params.items()}
    # helpers/layers.py add_weight_decay: 1-d tensors in a no-decay group
    decay = [p for p in live.values() if p.dim() > 1]
    no_decay = [p for p in live.values() if p.dim() == 1]
    groups = [
        {"params": no_decay, "weight_decay": 0.0, "ignore": True},
        {"params": decay, "weight_decay": spec["weightDecay"], "ignore": False},
    ]
    opt = make_optimizer(spec["optimizer"], groups, spec["lr"])
    out = {}
    for k, gk in enumerate(grads):
        for n, p in live.items():
            p.grad = gk[n].clone()
        opt.step()
        out.update({f"step{k}.{n}": p.detach().clone() for n, p in live.items()})
    st.save(out, ref_path)


def backbone(arch, native_path):
    nat = st.load(native_path)
    with torch.device("meta"):  # no init work: every tensor comes from selfsup
        model = getattr(torchvision.models, arch)()
    model.fc = torch.nn.Identity()
    ref_state = model.state_dict()
    state = {k[len("state.") :]: v for k, v in nat.items() if k.startswith("state.")}
    layout = {
        "missing": sorted(set(ref_state) - set(state)),
        "unexpected": sorted(set(state) - set(ref_state)),
        "mismatched": sorted(
            k for k in set(ref_state) & set(state) if ref_state[k].shape != state[k].shape or ref_state[k].dtype != state[k].dtype
        ),
    }
    model.load_state_dict(state, strict=True, assign=True)
    images = st.load(native_path.replace(".out.", ".in."))["images"]
    with torch.no_grad():
        model.eval()
        feats_eval = model(images)
        model.train()
        feats_train = model(images)
    # BN buffers after the train-mode pass: momentum, unbiased variance, count
    after = {"after." + k: v for k, v in model.state_dict().items() if k.split(".")[-1] in BUFFERS}
    ref = {"features.eval": feats_eval, "features.train": feats_train, **after}
    ref_path = native_path.replace(".out.", ".ref.")
    st.save(ref, ref_path)
    print(json.dumps({"layout": layout, **st.report(ref_path, native_path, ignore=("state.",))}))


BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


if __name__ == "__main__":
    torch.set_num_threads(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "loss":
        loss(json.loads(args[0]), args[1], args[2])
    elif cmd == "optimizer":
        optimizer(json.loads(args[0]), args[1], args[2])
    elif cmd == "backbone":
        backbone(args[0], args[1])
    elif cmd == "compare":
        print(json.dumps(st.report(args[0], args[1])))
