"""torch.autocast side of tests/precision_test.ts's gradient agreement:
selfsup's initial weights loaded into bench/accuracy/reference.py's model
(ResNet-18 at selfsup's base width and stem, SimCLR head, online
classifier), one SimCLR forward and backward on a batch of views, once in
fp32 and once under torch.autocast(bfloat16), in selfsup's layout
(channels_last).

  make <weights> <inputs> <out> <base width> <small stem 0|1>
      draws the views into <inputs>, writes both sides' gradients to <out>
      (fp32.<name>, bf16.<name>)
  compare <out> <selfsup bf16 gradients>
      JSON {name: {"self_fp32": |s-f|/|f|, "torch_fp32": |t-f|/|f|, "self_torch": |s-t|/|t|, "scale": |f|}}
      for the loss and each gradient (s: selfsup bf16, t: torch bf16, f: torch fp32)
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

import st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "accuracy"))
import reference  # noqa: E402


class Args:
    method, head_latent_size, nce_temperature = "simclr", 0, 0.1


def make(weights_path, inputs_path, out_path, width, small_stem):
    w = st.load(weights_path)
    a = Args()
    a.base_width, a.small_stem = int(width), small_stem == "1"
    a.head_latent_size, a.nce_size = w["head.0.weight"].shape[0], w["head.3.weight"].shape[0]
    classes = w["linear_classifier.weight"].shape[0]
    g = torch.Generator().manual_seed(7)
    b = 32
    # Images that differ in content, brightness and contrast (uniform noise
    # gives every image nearly the same features, which BN then amplifies).
    def views():
        coarse = F.interpolate(torch.rand(b, 3, 4, 4, generator=g), size=32, mode="bilinear", align_corners=False)
        fine = torch.rand(b, 3, 32, 32, generator=g)
        scale, shift = torch.rand(b, 1, 1, 1, generator=g), torch.rand(b, 1, 1, 1, generator=g)
        return ((0.8 * coarse + 0.2 * fine - 0.5) * scale + shift).clamp(0, 1)
    v1, v2 = views(), views()
    labels = torch.randint(0, classes, (b,), generator=g)
    st.save({"view1": v1, "view2": v2, "labels": labels}, inputs_path)
    v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    out = {}
    for precision in ("fp32", "bf16"):
        net = reference.Net(a, classes)
        net.load_state_dict(w, strict=True)
        net = net.to(memory_format=torch.channels_last).train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            ssl, h1, h2 = net.ssl_loss(v1, v2, a)
            logits = net.linear_classifier(torch.cat([h1, h2]).detach())
            loss = ssl + F.cross_entropy(logits, torch.cat([labels, labels]))
        loss.backward()
        out[f"{precision}.loss"] = loss.detach().float()
        for name, p in net.named_parameters():
            out[f"{precision}.grad.{name}"] = p.grad.float().contiguous()
    st.save(out, out_path)


def compare(out_path, native_path):
    t, s = st.load(out_path), st.load(native_path)
    rel = lambda x, y: ((x.double() - y.double()).norm() / y.double().norm().clamp_min(1e-30)).item()
    report = {}
    for k in [k for k in s if k == "loss" or k.startswith("grad.")]:
        f, b = t[f"fp32.{k}"], t[f"bf16.{k}"]
        report[k] = {"self_torch": rel(s[k], b), "torch_fp32": rel(b, f), "self_fp32": rel(s[k], f), "scale": f.double().norm().item()}
    print(json.dumps(report))


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"make": lambda: make(*sys.argv[2:7]), "compare": lambda: compare(*sys.argv[2:4])}[sys.argv[1]]()
