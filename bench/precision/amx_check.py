"""Does CPU bf16 training turn NaN on this CPU, in PyTorch itself, and
where first? For CPUs with AMX (amx_bf16, amx_tile), where selfsup refuses
--precision bf16 at libtorch's AVX-512 kernel level (README, "Mixed
precision"); this development machine has no AMX, so the answer there is
unknown.

  . .cache/env.sh && $SELFSUP_PYTHON bench/precision/amx_check.py

Runs the model of tests/precision_test.ts "a short CPU bf16 run" (ResNet-18,
32-16 head, batch 16 at 16 px, SGD-momentum lr 0.01) for 10 steps under
torch.autocast("cpu", bfloat16), channels_last as selfsup, once at the
default kernel level and once with ATEN_CPU_CAPABILITY=avx2 (each in its
own process: the level is fixed at libtorch's first kernel), and prints
per run the losses and the first layer output or gradient that held
inf/NaN. If the default level fails and avx2 does not, PyTorch has the
fault too and the refusal stands; if neither fails, the refusal can go.
"""
import json
import os
import subprocess
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def step_run():
    torch.manual_seed(1)
    import torchvision
    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    head = nn.Sequential(nn.Linear(512, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16), nn.BatchNorm1d(16))
    classifier = nn.Linear(512, 10)
    mods = nn.ModuleDict({"backbone": backbone, "head": head, "classifier": classifier}).to(memory_format=torch.channels_last)
    first = []

    def watch(name):
        def hook(m, i, o):
            if not first and isinstance(o, torch.Tensor) and not torch.isfinite(o).all():
                first.append(f"forward output of {name} ({type(m).__name__})")
        return hook
    for name, m in mods.named_modules():
        if len(list(m.children())) == 0:
            m.register_forward_hook(watch(name))
    opt = torch.optim.SGD(mods.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    losses = []
    for k in range(10):
        x = torch.rand(16, 3, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,), generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h1, h2 = backbone(x), backbone(x.flip(3))
            z1, z2 = F.normalize(head(h1).float(), dim=1), F.normalize(head(h2).float(), dim=1)
            sim = z1 @ z2.t() / 0.1
            loss = F.cross_entropy(sim, torch.arange(16)) + F.cross_entropy(classifier(torch.cat([h1, h2]).detach()).float(), torch.cat([y, y]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not first:
            bad = [n for n, p in mods.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
            if bad:
                first.append(f"gradient of {bad[0]} at step {k + 1}")
        opt.step()
        losses.append(loss.item())
    return {"capability": torch.backends.cpu.get_cpu_capability(), "losses": losses, "first_non_finite": first[0] if first else None}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(min(4, os.cpu_count()))
        print(json.dumps(step_run()))
        return
    flags = open("/proc/cpuinfo").read().split("flags", 1)[-1].split("\n", 1)[0].split()
    print("CPU flags:", " ".join(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f"))) or "no AMX/AVX-512")
    for env in [{}, {"ATEN_CPU_CAPABILITY": "avx2"}]:
        out = subprocess.run([sys.executable, __file__, "--child"], env={**os.environ, **env}, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-500:]}
        print(json.dumps({"env": env, **r}))


if __name__ == "__main__":
    main()
