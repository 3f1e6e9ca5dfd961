"""Training step benchmark: selfsup's step vs the same step in eager
PyTorch (same libtorch, model, batch, precision and recipe), SimCLR and
BYOL, printed side by side.

  . .cache/env.sh && $SELFSUP_PYTHON bench/step/bench.py                 # CPU: resnet18, small stem, 32 px
  . .cache/env.sh && $SELFSUP_PYTHON bench/step/bench.py --device cuda   # GPU: resnet50, 224 px, fp32/fp16/bf16

Both sides lay out conv weights and views channels_last (selfsup's
default; --channels-last no turns it off on both).

Each side runs in its own process on one fixed batch (selfsup: the bench
hooks of native/src/bench.rs, via selfsup_step.ts, in the library built
with the `testing` feature (scripts/build-testing.sh, run first); PyTorch:
torch_step.py),
so that the loader is not measured; steps after the warm-up are timed and
their median reported. Runs alternate between the two sides, --repeat
times, and the table gives the medians, and the fastest single step of
all runs ("best": on a machine shared with other work, the step least
disturbed by it). img/s counts images (each with its
two views). CPU s / step is the CPU time of the process's threads per step,
which load from other processes changes less than the wall time. Peak RSS
is the process's (sampled, see bench/measure.py), GPU MB what nvidia-smi
lists for it (the CUDA context and the caching allocator's reserve
included); torch's max_memory_allocated is printed for the PyTorch side.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import measure  # noqa: E402

GPU_DEFAULTS = {"arch": "resnet50", "size": 224, "batch": 256, "precisions": "fp32,fp16,bf16", "warmup": 5, "steps": 30}
CPU_DEFAULTS = {"arch": "resnet18", "size": 32, "batch": 32, "precisions": "fp32", "warmup": 2, "steps": 6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--methods", default="simclr,byol")
    ap.add_argument("--arch", help="default: resnet18 on cpu, resnet50 on cuda")
    ap.add_argument("--small-stem", choices=["yes", "no"], help="default: yes on cpu, no on cuda")
    ap.add_argument("--size", type=int, help="image px; default 32 on cpu, 224 on cuda")
    ap.add_argument("--batch", type=int, help="default 32 on cpu, 256 on cuda")
    ap.add_argument("--precisions", help="comma-separated fp32,fp16,bf16; default fp32 on cpu, all three on cuda")
    ap.add_argument("--channels-last", choices=["yes", "no"], default="yes",
                    help="conv weights and views channels_last on both sides (default: yes, selfsup's default)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() if os.cpu_count() and os.cpu_count() <= 16 else 16,
                    help="intra-op threads of both sides (default: the CPUs, at most 16)")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--repeat", type=int, default=3, help="runs per side and configuration, alternating; medians are reported")
    a = ap.parse_args()
    cuda = a.device == "cuda"
    d = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    if cuda:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
        if probe.stdout.strip() != "True":
            sys.exit("bench/step: --device cuda needs a GPU, and torch sees none on this machine")
    arch = a.arch or d["arch"]
    small = (a.small_stem or ("no" if cuda else "yes")) == "yes"
    channels_last = a.channels_last == "yes"
    size, batch = a.size or d["size"], a.batch or d["batch"]
    warmup, steps = a.warmup if a.warmup is not None else d["warmup"], a.steps or d["steps"]
    precisions = (a.precisions or d["precisions"]).split(",")
    # The bench hooks are in the testing library only (ffi/symbols.ts).
    testing_lib = measure.testing_lib("bench/step")
    v = measure.versions()
    print(f"machine: {measure.machine()}")
    print(f"versions: torch {v['torch']}, torchvision {v['torchvision']}, selfsup {v['selfsup']}")
    print(f"before: {measure.load()}", flush=True)
    common = ["--arch", arch, "--batch", str(batch), "--size", str(size), "--threads", str(a.threads), "--device", a.device,
              "--warmup", str(warmup), "--steps", str(steps)] + (["--small-stem"] if small else []) + (["--channels-last"] if channels_last else [])
    rows, notes = [], []
    for method in a.methods.split(","):
        for prec in precisions:
            args = common + ["--method", method, "--precision", prec]
            sides = {
                "selfsup": ["env", f"SELFSUP_NATIVE_LIB={testing_lib}", measure.DENO, "run", "-A", "--quiet", os.path.join(HERE, "selfsup_step.ts"), *args],
                "pytorch": [sys.executable, os.path.join(HERE, "torch_step.py"), *args],
            }
            runs = {k: [] for k in sides}
            for r in range(a.repeat):
                for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                    if runs[name] is None:
                        continue
                    try:
                        runs[name].append(measure.run(sides[name], gpu=cuda))
                    except measure.Failed as e:
                        notes.append(f"{method} {prec} {name}: not measured: {str(e).split(': ', 1)[-1]}")
                        runs[name] = None
                    print(f"  {method} {prec} {name} run {r + 1}: "
                          + (f"{runs[name][-1]['ms_per_step']:.0f} ms/step" if runs[name] else "failed"), flush=True)
            rows.append((method, prec, {k: summarise(rs) for k, rs in runs.items()}))
    print(f"after: {measure.load()}\n")
    stem = ", small stem" if small else ""
    print(f"{arch}{stem}, batch {batch}, {size} px, {a.device}, {a.threads} threads, "
          f"{'channels_last, ' if channels_last else ''}median of {steps} steps after {warmup} warm-up, {a.repeat} runs per side\n")
    print("| method | precision | impl | img/s | ms / step | vs PyTorch | best ms / step | vs PyTorch, best | CPU s / step "
          "| FFI µs / step | round trip µs | train_step ms | peak RSS MB | GPU MB |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for method, prec, res in rows:
        ref = res["pytorch"]
        for name, r in res.items():
            if r is None:
                print(f"| {method} | {prec} | {name} | not measured | | | | | | | | | | |")
                continue
            ratio = f"{r['img_per_s'] / ref['img_per_s']:.2f}x" if ref else "—"
            best = f"{ref['ms_best'] / r['ms_best']:.2f}x" if ref else "—"
            ffi = lambda k: f"{r[k]:.0f}" if r.get(k) is not None else "—"
            train_step = f"{r['train_step_ms']:.0f}" if r.get("train_step_ms") is not None else "—"
            gpu = f"{r['gpu_mb']:.0f}" if r.get("gpu_mb") else "—"
            print(f"| {method} | {prec} | {name} | {r['img_per_s']:.1f} | {r['ms_per_step']:.0f} | {ratio} | {r['ms_best']:.0f} | {best} "
                  f"| {r['cpu_s_per_step']:.2f} "
                  f"| {ffi('ffi_overhead_us')} | {ffi('round_trip_us')} | {train_step} | {r['rss_mb']:.0f} | {gpu} |")
    for method, prec, res in rows:
        r = res["pytorch"]
        if r and r.get("gpu_max_allocated_mb"):
            print(f"\n{method} {prec}: torch.cuda.max_memory_allocated {r['gpu_max_allocated_mb']:.0f} MB (PyTorch)")
    for n in notes:
        print(f"\n{n}")
    print("\nper-run ms/step:")
    for method, prec, res in rows:
        for name, r in res.items():
            if r:
                print(f"  {method} {prec} {name}: {r['runs']}")


def summarise(rs):
    """Medians over runs (peaks: the largest)."""
    if not rs:
        return None
    med = lambda k: statistics.median(r[k] for r in rs) if all(r.get(k) is not None for r in rs) else None
    out = {k: med(k) for k in ("ms_per_step", "cpu_s_per_step", "ffi_overhead_us", "round_trip_us", "train_step_ms", "gpu_max_allocated_mb")}
    out["img_per_s"] = rs[0]["batch"] / (out["ms_per_step"] / 1e3)
    out["ms_best"] = min(r["ms_min"] for r in rs)
    out["rss_mb"] = max(r["rss_mb"] for r in rs)
    out["gpu_mb"] = max(r.get("gpu_mb", 0) for r in rs)
    out["runs"] = [round(r["ms_per_step"]) for r in rs]
    return out


if __name__ == "__main__":
    main()
