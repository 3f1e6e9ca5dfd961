"""Mixed precision against fp32 and against PyTorch's autocast, on the demo
recipe: selfsup (`selfsup train` with the demo's settings) and the PyTorch
script of the same recipe (bench/accuracy/reference.py: bf16 under
torch.autocast, fp16 with torch.amp.GradScaler too), SimCLR and BYOL,
each precision, several seeds; one table of the online linear
classifier's test top-1 (mean ± std over seeds) and wall time per run.

  . .cache/env.sh && $SELFSUP_PYTHON -u bench/precision/bench.py                  # CPU: fp32, bf16; seeds 0,1,2
  . .cache/env.sh && $SELFSUP_PYTHON -u bench/precision/bench.py --device cuda --precisions fp32,bf16,fp16   # GPU

Runs go one at a time, so each wall time is its own; each finished run is
kept in --out (default .cache/precision/<device>-<stem>-w<width>-e<epochs>)
and not redone when the bench starts again, so an interrupted table
resumes. --seeds, --methods, --impls, --precisions, --epochs, --stem and
--base-width pick a part or a cheaper variant of the table, --set KEY=VALUE
changes a recipe setting (the table's title says which).
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "accuracy"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench import Job, load, reference_cmd, run_jobs, save, selfsup_cmd  # noqa: E402  (bench/accuracy/bench.py)
import measure  # noqa: E402

# The demo recipe (cli/presets.ts DEMO): ResNet-18 at base width 16 with the
# 3x3 stem at 32 px, batch 128, 12 epochs, SGD-momentum at lr 0.05·128/256
# with 1 warm-up epoch then a cosine, weight decay 5e-4, colour jitter 1.0,
# blur 0.5; SimCLR with a 512-128 head at τ 0.1; BYOL with a 512-128
# projector and predictor and a target decay from 0.99.
RECIPE = {"size": 32, "batch_size": 128, "epochs": 12, "warmup": 1, "lr": 0.05, "weight_decay": 5e-4,
          "head_latent_size": 512, "nce_size": 128, "nce_temperature": 0.1, "projection_size": 128, "base_decay": 0.99,
          "color_jitter_strength": 1.0, "blur_prob": 0.5}


def commands(a, impl, method, precision, seed, out):
    """The run's command line (selfsup or reference.py, the same numbers)."""
    r = dict(RECIPE, epochs=a.epochs, **a.recipe)
    common = {"--batch-size": r["batch_size"], "--epochs": r["epochs"], "--warmup": r["warmup"], "--lr": r["lr"],
              "--weight-decay": r["weight_decay"], "--head-latent-size": r["head_latent_size"],
              "--color-jitter-strength": r["color_jitter_strength"], "--blur-prob": r["blur_prob"], "--seed": seed,
              "--precision": precision, "--base-width": a.base_width, "--threads": a.threads}
    if method == "simclr":
        common.update({"--nce-size": r["nce_size"], "--nce-temperature": r["nce_temperature"]})
    else:
        common.update({"--projection-size": r["projection_size"], "--base-decay": r["base_decay"]})
    flat = [str(x) for kv in common.items() for x in kv]
    if impl == "selfsup":
        return selfsup_cmd([
            "train", "--method", method, "--data-dir", a.data, "--num-replicas", "1", "-a", "resnet18",
            "--representation-size", str(8 * a.base_width), "--image-size-override", str(r["size"]),
            "--optimizer", "momentum", "--workers-per-replica", str(a.workers), "--model-dir", os.path.join(out, "models"),
            "--log-dir", os.path.join(out, "runs"), "--uid", "precision", "--no-resume", "--checkpoint-minutes", "0",
            "--small-stem" if a.stem == "small" else "--no-small-stem", *flat, *(["--no-cuda"] if a.device == "cpu" else []),
        ])
    return reference_cmd([
        "pretrain", "--method", method, "--data", a.data, "--out", out, "--size", str(r["size"]),
        "--workers", str(a.workers), "--device", a.device, "--channels-last", *(["--small-stem"] if a.stem == "small" else []), *flat,
    ])


def top1(impl, log, out):
    """The online classifier's test top-1 at the last epoch."""
    if impl == "pytorch":
        return load(os.path.join(out, "summary.json"))["online_test_top1"]
    line = [l for l in open(log).read().splitlines() if l.startswith("test accuracy of the online linear classifier")][-1]
    return float(line.split("top-1 ")[1].split(" %")[0])


def fmt(values):
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(a, results, methods, precisions, seeds):
    cell = lambda i, m, pr, f: [results[k][f] for k in (f"{i}/{m}/{pr}/{s}" for s in seeds) if k in results]
    secs = lambda v: f"{statistics.mean(v):.0f}" if v else "—"
    changed = "".join(f", {k} {v}" for k, v in a.recipe.items())
    print(f"\ndemo recipe{changed}, {a.epochs} epochs, ResNet-18 width {a.base_width}, {a.stem} stem, 32 px, batch 128, on {a.device}: "
          f"online linear classifier test top-1 %, mean ± std over seeds {','.join(map(str, seeds))}; seconds per run")
    print(f"{'method':<8}{'precision':<11}{'selfsup':>14}{'PyTorch':>14}{'selfsup s':>11}{'PyTorch s':>11}")
    for m in methods:
        for pr in precisions:
            s_t, p_t = cell("selfsup", m, pr, "top1"), cell("pytorch", m, pr, "top1")
            print(f"{m:<8}{pr:<11}{fmt(s_t):>14}{fmt(p_t):>14}"
                  f"{secs(cell('selfsup', m, pr, 'seconds')):>11}{secs(cell('pytorch', m, pr, 'seconds')):>11}")
    print(f"{measure.machine()}; {measure.load()}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--data", default=os.path.join(ROOT, ".datasets", "selfsup-demo"))
    p.add_argument("--methods", default="simclr,byol")
    p.add_argument("--impls", default="selfsup,pytorch")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    p.add_argument("--base-width", type=int, default=16)
    p.add_argument("--stem", choices=["small", "torchvision"], default="small",
                   help="small: the demo's 3x3 stem; torchvision: 7x7/2 and max-pool (the old demo, ~8x cheaper at 32 px)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads per run")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"change a recipe setting ({', '.join(k for k in RECIPE if k != 'epochs')}), e.g. nce_temperature=0.5")
    p.add_argument("--out")
    a = p.parse_args()
    a.recipe = {}
    for kv in a.set:
        k, _, v = kv.partition("=")
        if k not in RECIPE or k == "epochs" or not v:
            sys.exit(f"bench/precision: --set {kv}: expected KEY=VALUE with KEY one of {', '.join(k for k in RECIPE if k != 'epochs')}")
        a.recipe[k] = type(RECIPE[k])(v)
    tag = "".join(f"-{k}{v}" for k, v in sorted(a.recipe.items()))
    a.data = os.path.abspath(a.data)
    a.out = os.path.abspath(a.out or os.path.join(ROOT, ".cache", "precision", f"{a.device}-{a.stem}-w{a.base_width}-e{a.epochs}{tag}"))
    os.makedirs(a.out, exist_ok=True)
    precisions = a.precisions.split(",")
    if a.device == "cpu" and "fp16" in precisions:
        sys.exit("bench/precision: fp16 is for GPUs (selfsup refuses it on the CPU); use --precisions fp32,bf16")
    if a.device == "cuda" and subprocess.run([sys.executable, "-c", "import torch; assert torch.cuda.is_available()"]).returncode:
        sys.exit("bench/precision: --device cuda, but torch sees no GPU; use --device cpu")
    if not os.path.isdir(os.path.join(a.data, "train")):
        print(f"[precision] writing the demo data set to {a.data}", flush=True)
        subprocess.run(selfsup_cmd(["data", "demo", a.data]), check=True, cwd=ROOT)
    methods, impls, seeds = a.methods.split(","), a.impls.split(","), [int(s) for s in a.seeds.split(",")]
    path = os.path.join(a.out, "results.json")
    results = load(path) if os.path.exists(path) else {}
    print(f"[precision] {measure.machine()}; {measure.load()}; out {a.out}", flush=True)
    jobs = []
    for s in seeds:
        for m in methods:
            for pr in precisions:
                for i in impls:
                    key = f"{i}/{m}/{pr}/{s}"
                    if key not in results:
                        out = os.path.join(a.out, key.replace("/", "-"))
                        jobs.append((key, Job(key, commands(a, i, m, pr, s, out), out + ".log")))
    for key, job in run_jobs(jobs, 1):
        impl, out = key.split("/")[0], job.log[:-len(".log")]
        results[key] = {"top1": top1(impl, job.log, out), "seconds": job.seconds, "load": os.getloadavg()[0]}
        save(path, results)
        print(f"[precision] {key}: test top-1 {results[key]['top1']:.2f} % in {job.seconds:.0f} s", flush=True)
    table(a, results, methods, precisions, seeds)


if __name__ == "__main__":
    main()
