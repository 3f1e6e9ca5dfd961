"""End-to-end epoch benchmark: `selfsup train` for one epoch on an on-disk
JPEG ImageFolder vs the reference's PyTorch training (torchvision
DataLoader with the reference's augmentations, the same step), printed
side by side.

  . .cache/env.sh && $SELFSUP_PYTHON bench/epoch/bench.py    # --train 512 --px 32 --batch 32 --methods simclr,byol

The data set (make_data.py: --train + --test JPEGs of --px pixels) is
written once under .datasets/ and read before the runs, so every run reads
from the page cache. Both sides train resnet18 with the small stem (or
--arch, --small-stem no), batch --batch, --threads intra-op threads and
--workers loader workers (selfsup: threads; PyTorch: processes), then pass
over the test split. selfsup is the real command line (cli/main.ts train,
with TensorBoard logs and checkpoints written to a temporary folder, as
always); the PyTorch side is torch_epoch.py, channels_last like selfsup's
step unless --torch-channels-last no (the reference programs' layout).

Reported: the train pass (seconds from the loader's start to the last step,
as each side prints it) and images per second through it; the test pass;
the whole process (wall seconds from start to exit, and the CPU time of the
process and its loader workers); peak RSS and PSS of the process tree.
Runs alternate between the sides, --repeat times; medians are reported.

Pipeline efficiency (selfsup): the train pass's images per second over
the epochs after the first (cuDNN's algorithm search, allocator and page
cache warm-up fall in the first; all epochs when there is one), divided by
bench/step's images per second for the same configuration (its
selfsup_step.ts, run here: the step on one fixed batch, no loader), and
where the epochs' time went (the `time-0` lines of selfsup train: waiting
for data, copy, augmentation, step, read-back; device busy). 1.0 means the
loader and everything around the step cost nothing.

The GPU measurement of the data path (ResNet-50, 224 px, fp32 and bf16, 12
loader workers, 10,240 images decoded every epoch), about 4 minutes on one
H100-class GPU with 16 CPU cores:

  . .cache/env.sh && $SELFSUP_PYTHON -u bench/epoch/bench.py --device cuda --sides selfsup --methods simclr \
      --train 10240 --test 512 --px 256 --size 224 --arch resnet50 --small-stem no --batch 256 \
      --workers 12 --threads 12 --epochs 3 --in-memory never --precisions fp32,bf16
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import measure  # noqa: E402

SUMMARY = re.compile(r"^(train|test)-0\[Epoch (\d+)\]\[(\d+) samples\]\[([0-9.]+) sec\]", re.M)
STAGES = re.compile(r"^time-0\[Epoch (\d+)\]\[([0-9.]+) sec\]: data wait ([0-9.]+) \| copy ([0-9.]+) \| augment ([0-9.]+) "
                    r"\| step ([0-9.]+) \| read-back ([0-9.]+) \| test ([0-9.]+) \| checkpoint\+log ([0-9.]+) \| ([0-9.]+) img/s "
                    r"\| device busy ([0-9]+)%", re.M)
STAGE_KEYS = ["epoch_s", "data_wait", "copy", "augment", "step", "read_back", "test", "checkpoint_log", "img_per_s", "busy"]


def warm_page_cache(data):
    for dirpath, _, files in os.walk(data):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                fh.read()


def selfsup(a, method, precision, tmp):
    cmd = [measure.DENO, "run", "--quiet", "--allow-all", os.path.join(measure.ROOT, "cli", "main.ts"), "train",
           "--data-dir", a.data, "--method", method, "-a", a.arch, "--representation-size", features(a.arch),
           "--batch-size", str(a.batch), "--warmup", "0", "--image-size-override", str(a.size), "--epochs", str(a.epochs),
           "--workers-per-replica", str(a.workers), "--threads", str(a.threads), "--num-replicas", "1", "--seed", "0",
           "--precision", precision, "--in-memory", a.in_memory,
           "--model-dir", os.path.join(tmp, "models"), "--log-dir", os.path.join(tmp, "runs"), "--no-resume"]
    cmd += ["--small-stem"] if a.small_stem == "yes" else ["--no-small-stem"]
    cmd += ["--no-cuda"] if a.device == "cpu" else []
    r = measure.run(cmd, gpu=a.device == "cuda", json_line=False)
    lines = SUMMARY.findall(r["stdout"])
    r["train_s"] = sum(float(s) for kind, _, _, s in lines if kind == "train")
    r["test_s"] = sum(float(s) for kind, _, _, s in lines if kind == "test")
    r["images"] = sum(int(n) for kind, _, n, _ in lines if kind == "train")
    if not r["images"]:
        raise measure.Failed(cmd, 0, "no train summary line in its output")
    r["img_per_s"] = r["images"] / r["train_s"]
    # Steady state: the epochs after the first, whose start-up costs fall in the first.
    train = [(int(e), int(n), float(s)) for kind, e, n, s in lines if kind == "train"]
    steady = [t for t in train if t[0] > 1] or train
    r["steady_img_per_s"] = sum(n for _, n, _ in steady) / sum(s for _, _, s in steady)
    stages = [dict(zip(STAGE_KEYS, map(float, m[1:]))) | {"epoch": int(m[0])} for m in STAGES.findall(r["stdout"])]
    if not stages:
        raise measure.Failed(cmd, 0, "no time-0 stage line in its output")
    r["stages"] = [x for x in stages if x["epoch"] > 1] or stages
    return r


def features(arch):
    return "512" if arch in ("resnet18", "resnet34") else "2048"


def step_rate(a, lib, method, precision):
    """bench/step's selfsup side for the same configuration, on `lib` (the
    library with the bench hooks): images per second of the step alone."""
    cmd = ["env", f"SELFSUP_NATIVE_LIB={lib}", measure.DENO, "run", "-A", "--quiet", os.path.join(measure.ROOT, "bench", "step", "selfsup_step.ts"),
           "--method", method, "--arch", a.arch, "--batch", str(a.batch), "--size", str(a.size), "--threads", str(a.threads),
           "--device", a.device, "--precision", precision, "--channels-last",
           "--warmup", "5" if a.device == "cuda" else "2", "--steps", "30" if a.device == "cuda" else "6"]
    cmd += ["--small-stem"] if a.small_stem == "yes" else []
    return measure.run(cmd, gpu=a.device == "cuda")


def pytorch(a, method, decodes):
    cmd = [sys.executable, os.path.join(HERE, "torch_epoch.py"), a.data, "--method", method, "--arch", a.arch,
           "--batch", str(a.batch), "--size", str(a.size), "--workers", str(a.workers), "--threads", str(a.threads),
           "--epochs", str(a.epochs), "--decodes", str(decodes), "--device", a.device]
    cmd += ["--small-stem"] if a.small_stem == "yes" else []
    cmd += ["--channels-last"] if a.torch_channels_last == "yes" else []
    return measure.run(cmd, gpu=a.device == "cuda")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="default: .datasets/bench-epoch-<train>x<px>")
    ap.add_argument("--train", type=int, default=512, help="train images generated")
    ap.add_argument("--test", type=int, default=128, help="test images generated")
    ap.add_argument("--px", type=int, default=32, help="side of the generated images")
    ap.add_argument("--size", type=int, help="crop / resize size (default: --px)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--small-stem", choices=["yes", "no"], default="yes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is left out of the pipeline efficiency")
    ap.add_argument("--methods", default="simclr,byol")
    ap.add_argument("--precisions", default="fp32", help="selfsup's --precision values, comma-separated (PyTorch's side: fp32 only)")
    ap.add_argument("--in-memory", choices=["auto", "always", "never"], default="auto",
                    help="selfsup's --in-memory (never: every epoch decodes its files, as on a data set larger than RAM)")
    ap.add_argument("--sides", default="selfsup,pytorch", help="selfsup, pytorch or both")
    ap.add_argument("--decodes", default="2", help="PyTorch variants, comma-separated: 2 = the reference (each view decodes the file), 1 = one decode")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--torch-channels-last", choices=["yes", "no"], default="yes",
                    help="PyTorch side's layout (default: channels_last, as selfsup's step; the reference programs' is no)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side, alternating; medians are reported")
    a = ap.parse_args()
    a.size = a.size or a.px
    a.data = a.data or os.path.join(measure.ROOT, ".datasets", f"bench-epoch-{a.train}x{a.px}")
    sides = a.sides.split(",")
    if a.device == "cuda":
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
        if probe.stdout.strip() != "True":
            sys.exit("bench/epoch: --device cuda needs a GPU, and torch sees none on this machine")
    if not os.path.isdir(os.path.join(a.data, "train")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_data.py"), a.data, "--train", str(a.train),
                        "--test", str(a.test), "--px", str(a.px)], check=True)
    warm_page_cache(a.data)
    # The bench hooks are in the testing library only (ffi/symbols.ts): found
    # once, before any run, so that a missing one stops the bench at once.
    lib = measure.testing_lib("bench/epoch") if "selfsup" in sides else None
    v = measure.versions()
    print(f"machine: {measure.machine()}")
    print(f"versions: torch {v['torch']}, torchvision {v['torchvision']}, selfsup {v['selfsup']}")
    print(f"before: {measure.load()}", flush=True)
    rows, effs = [], []
    with tempfile.TemporaryDirectory(prefix="selfsup-bench-epoch-") as tmp:
        for method in a.methods.split(","):
            for prec in a.precisions.split(","):
                runs = {}
                if "selfsup" in sides:
                    runs["selfsup"] = lambda prec=prec: selfsup(a, method, prec, tmp)
                for d in (int(x) for x in a.decodes.split(",")) if "pytorch" in sides and prec == "fp32" else ():
                    runs[f"pytorch, {'reference (2 decodes)' if d == 2 else '1 decode'}"] = lambda d=d: pytorch(a, method, d)
                done = {k: [] for k in runs}
                for r in range(a.repeat):
                    for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                        done[name].append(runs[name]())
                        x = done[name][-1]
                        print(f"  {method} {prec} {name} run {r + 1}: train {x['train_s']:.1f} s, process {x['wall_s']:.1f} s", flush=True)
                rows.append((method, prec, done))
                if "selfsup" in done:
                    step = step_rate(a, lib, method, prec)
                    print(f"  {method} {prec} bench/step: {step['img_per_s']:.1f} img/s", flush=True)
                    effs.append((method, prec, done["selfsup"], step))
    print(f"after: {measure.load()}\n")
    print(f"{a.train} train + {a.test} test JPEGs of {a.px} px, {a.arch}{', small stem' if a.small_stem == 'yes' else ''}, "
          f"batch {a.batch}, {a.size} px, {a.epochs} epoch(s), {a.threads} threads, {a.workers} workers, {a.device}, "
          f"selfsup --in-memory {a.in_memory}, "
          f"PyTorch {'channels_last' if a.torch_channels_last == 'yes' else 'contiguous'} (selfsup: channels_last); "
          f"medians of {a.repeat} run(s)\n")
    print("| method | precision | impl | train s | img/s | vs PyTorch reference | test s | process s | process CPU s | peak RSS MB | peak PSS MB |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    for method, prec, runs in rows:
        ref_name = next((k for k in runs if k != "selfsup"), None)
        ref = med(runs[ref_name], "img_per_s") if ref_name else None
        for name, rs in runs.items():
            ips = med(rs, "img_per_s")
            vs = f"{ips / ref:.2f}x" if ref else "—"
            print(f"| {method} | {prec} | {name} | {med(rs, 'train_s'):.1f} | {ips:.1f} | {vs} | {med(rs, 'test_s'):.1f} "
                  f"| {med(rs, 'wall_s'):.1f} | {med(rs, 'cpu_s'):.1f} | {max(r['rss_mb'] for r in rs):.0f} | {max(r['pss_mb'] for r in rs):.0f} |")
    if effs:
        print("\nPipeline efficiency: selfsup's train pass (epochs after the first) against bench/step's step alone, "
              "and where the train pass's time went (seconds per epoch, medians)\n")
        print("| method | precision | train img/s | step img/s | efficiency | data wait s | copy s | augment s | step s | read-back s | device busy |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for method, prec, rs, step in effs:
            ips = med(rs, "steady_img_per_s")
            st = lambda k: statistics.median(x[k] for r in rs for x in r["stages"])
            print(f"| {method} | {prec} | {ips:.1f} | {step['img_per_s']:.1f} | {ips / step['img_per_s']:.2f} | {st('data_wait'):.2f} "
                  f"| {st('copy'):.2f} | {st('augment'):.2f} | {st('step'):.2f} | {st('read_back'):.2f} | {st('busy'):.0f}% |")


if __name__ == "__main__":
    main()
