"""Accuracy on Fashion-MNIST: selfsup and the PyTorch reference script run
the same recipe (docs/ACCURACY.md) side by side, then both frozen backbones
are scored with a linear classifier and a 200-NN vote; a supervised run of
the same backbone and raw pixels give the scale. Prints one table.

  . .cache/env.sh && $SELFSUP_PYTHON -u bench/accuracy/bench.py [--epochs 5] [--methods simclr,byol]

Each pre-training process gets --threads intra-op threads and --workers
loader workers; the selfsup and PyTorch runs of all methods start together
(so they share the machine alike) unless --one-at-a-time. Results, logs and
checkpoints go to --out (default .cache/accuracy/<epochs>ep); a finished
step is not redone when the bench is started again with the same --out
(delete the folder to start over). plot.py draws the curves afterwards.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = sys.executable


def recipe(method, a):
    """The recipe's settings, as (selfsup flags, reference.py flags)."""
    common = {
        "size": 28, "base_width": a.base_width, "batch_size": a.batch_size, "epochs": a.epochs, "warmup": 1,
        "lr": a.lr, "weight_decay": 5e-4, "head_latent_size": 512, "color_jitter_strength": 0.5, "blur_prob": 0.0, "seed": 0,
    }
    features = 8 * a.base_width
    selfsup = [
        "--method", method, "--data-dir", a.data, "--image-size-override", "28", "--no-small-stem", "-a", "resnet18",
        "--base-width", str(a.base_width), "--representation-size", str(features),
        "--head-latent-size", "512", "--batch-size", str(a.batch_size), "--epochs", str(a.epochs), "--warmup", "1",
        "--optimizer", "momentum", "--lr", str(a.lr), "--weight-decay", "5e-4",
        "--color-jitter-strength", "0.5", "--blur-prob", "0", "--seed", "0",
        "--num-replicas", "1", "--threads", str(a.threads), "--workers-per-replica", str(a.workers), "--no-cuda",
        "--model-dir", os.path.join(a.out, "models"), "--log-dir", os.path.join(a.out, "runs"), "--uid", f"fmnist-{method}",
        "--no-resume", "--checkpoint-minutes", "0",
    ]
    ref = [
        "--method", method, "--data", a.data, "--size", "28", "--base-width", str(a.base_width),
        "--batch-size", str(a.batch_size), "--epochs", str(a.epochs), "--warmup", "1", "--lr", str(a.lr),
        "--weight-decay", "5e-4", "--head-latent-size", "512", "--color-jitter-strength", "0.5", "--blur-prob", "0",
        "--seed", "0", "--threads", str(a.threads), "--workers", str(a.workers),
    ]
    if method == "simclr":
        selfsup += ["--nce-size", "128", "--nce-temperature", "0.5"]
        ref += ["--nce-size", "128", "--nce-temperature", "0.5"]
    elif method == "byol":
        selfsup += ["--projection-size", "128", "--base-decay", "0.99"]
        ref += ["--projection-size", "128", "--base-decay", "0.99"]
    return selfsup, ref, common


def deno():
    return os.path.join(ROOT, "tools", "deno", "node_modules", ".bin", "deno")


def selfsup_cmd(args):
    return [deno(), "run", "--quiet", "--allow-all", os.path.join(ROOT, "cli", "main.ts"), *args]


class Job:
    """A child process with its wall time; output to a log file."""

    def __init__(self, name, cmd, log):
        self.name, self.cmd, self.log = name, cmd, log
        self.start = time.time()
        with open(log + ".cmd", "w") as f:
            f.write(shlex.join(cmd) + "\n")
        self.proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)
        self.seconds = None

    def finished(self):
        """True once the process has exited (its wall time then taken);
        a failed one ends the bench with the tail of its log."""
        rc = self.proc.poll()
        if rc is None:
            return False
        self.seconds = time.time() - self.start
        if rc != 0:
            tail = open(self.log).read()[-2000:]
            sys.exit(f"{self.name} failed (exit {rc}); its log {self.log} ends:\n{tail}")
        return True


def finish_in_order(jobs):
    """Yields (key, job) as each job exits, its wall time taken when it
    exited (not when a wait on an earlier-started job returned)."""
    left = list(jobs)
    while left:
        for key, j in list(left):
            if j.finished():
                left.remove((key, j))
                yield key, j
        time.sleep(0.5)


def done(path):
    return os.path.exists(path)


def load(path):
    with open(path) as f:
        return json.load(f)


def save(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def sidecar(a, method):
    d = os.path.join(a.out, "models")
    names = [n for n in os.listdir(d) if n.startswith(f"fmnist-{method}_") and n.endswith(".last.json")]
    if len(names) != 1:
        sys.exit(f"expected one fmnist-{method} checkpoint in {d}, found {names}")
    return os.path.join(d, names[0])


def parse_eval(text):
    # "linear evaluation (online weights, resnet18): top-1 88.12 %, top-5 99.01 %"
    line = [l for l in text.splitlines() if "evaluation (" in l][-1]
    top1 = float(line.split("top-1 ")[1].split(" %")[0])
    top5 = float(line.split("top-5 ")[1].split(" %")[0])
    return top1, top5


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(ROOT, ".datasets", "fashion-mnist"))
    p.add_argument("--methods", default="simclr,byol")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--base-width", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.06)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--one-at-a-time", action="store_true", help="run the pre-trainings one after another")
    p.add_argument("--no-baselines", action="store_true", help="skip the supervised and raw-pixel rows")
    a = p.parse_args()
    a.data = os.path.abspath(a.data)
    a.out = os.path.abspath(a.out or os.path.join(ROOT, ".cache", "accuracy", f"{a.epochs}ep"))
    os.makedirs(a.out, exist_ok=True)
    if not os.path.isdir(os.path.join(a.data, "train")):
        print(f"[accuracy] converting Fashion-MNIST to {a.data}", flush=True)
        subprocess.run(selfsup_cmd(["data", "fashion-mnist", a.data]), check=True)
    methods = [m for m in a.methods.split(",") if m]
    load1 = os.getloadavg()
    print(f"[accuracy] load before: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} on {os.cpu_count()} CPUs; out {a.out}", flush=True)
    results_path = os.path.join(a.out, "results.json")
    results = load(results_path) if done(results_path) else {}

    # 1. Pre-training: selfsup and the reference, every method, together.
    jobs = []
    for m in methods:
        s_flags, r_flags, _ = recipe(m, a)
        if f"selfsup-{m}" not in results:
            jobs.append((f"selfsup-{m}", Job(f"selfsup {m}", selfsup_cmd(s_flags), os.path.join(a.out, f"selfsup-{m}.log"))))
        if f"pytorch-{m}" not in results:
            out = os.path.join(a.out, f"pytorch-{m}")
            jobs.append((f"pytorch-{m}", Job(f"pytorch {m}", [PY, "-u", os.path.join(HERE, "reference.py"), "pretrain", *r_flags, "--out", out], out + ".log")))
        if a.one_at_a_time:
            for key, j in finish_in_order(jobs):
                results[key] = {"train_seconds": j.seconds}
                save(results_path, results)
            jobs = []
    if not a.no_baselines and "pytorch-supervised" not in results:
        _, r_flags, _ = recipe("supervised", a)
        out = os.path.join(a.out, "pytorch-supervised")
        jobs.append(("pytorch-supervised", Job("pytorch supervised", [PY, "-u", os.path.join(HERE, "reference.py"), "pretrain", *r_flags, "--out", out], out + ".log")))
    for key, j in finish_in_order(jobs):
        results[key] = {"train_seconds": j.seconds}
        print(f"[accuracy] {j.name}: pre-trained in {j.seconds:.0f} s", flush=True)
        save(results_path, results)
    load2 = os.getloadavg()

    # 2. Frozen-backbone evaluation, one at a time.
    for m in methods:
        r = results[f"selfsup-{m}"]
        if "linear_top1" not in r:
            side = sidecar(a, m)
            for kind in ["linear", "knn"]:
                t0 = time.time()
                out = subprocess.run(selfsup_cmd(["eval", kind, "--checkpoint", side, "--data-dir", a.data, "--workers-per-replica", str(a.workers), "--no-cuda"]),
                                     capture_output=True, text=True, cwd=ROOT)
                if out.returncode != 0:
                    sys.exit(f"selfsup eval {kind} failed: {out.stdout[-1000:]}{out.stderr[-1000:]}")
                r[f"{kind}_top1"], r[f"{kind}_top5"] = parse_eval(out.stdout)
                r[f"{kind}_eval_seconds"] = time.time() - t0
            r["checkpoint"] = os.path.relpath(side, ROOT)
            save(results_path, results)
        r = results[f"pytorch-{m}"]
        if "linear_top1" not in r:
            d = os.path.join(a.out, f"pytorch-{m}")
            ev = os.path.join(d, "eval.json")
            subprocess.run([PY, os.path.join(HERE, "reference.py"), "evaluate", "--checkpoint", os.path.join(d, "backbone.pt"), "--data", a.data, "--out", ev,
                            "--threads", str(a.threads)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            r.update(load(ev))
            r.update({k: v for k, v in load(os.path.join(d, "summary.json")).items() if k in ("images_per_second", "online_test_top1")})
            save(results_path, results)
    if not a.no_baselines:
        r = results["pytorch-supervised"]
        if "test_top1" not in r:
            r["test_top1"] = load(os.path.join(a.out, "pytorch-supervised", "summary.json"))["online_test_top1"]
            save(results_path, results)
        if "raw-pixels" not in results:
            ev = os.path.join(a.out, "raw.json")
            subprocess.run([PY, os.path.join(HERE, "reference.py"), "raw", "--data", a.data, "--out", ev, "--threads", str(a.threads)],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            results["raw-pixels"] = load(ev)
            save(results_path, results)
    results["_meta"] = {"epochs": a.epochs, "batch_size": a.batch_size, "base_width": a.base_width, "lr": a.lr, "threads": a.threads,
                        "workers": a.workers, "load_before": load1, "load_after_pretraining": load2, "cpus": os.cpu_count()}
    save(results_path, results)

    # 3. The table.
    print()
    print(f"Fashion-MNIST, ResNet-18 (base width {a.base_width}, 28 px), {a.epochs} epochs, batch {a.batch_size}, "
          f"{a.threads} thread(s) + {a.workers} loader worker(s) per run, CPU")
    print(f"{'method':<11}{'selfsup linear':>16}{'selfsup kNN':>13}{'PyTorch linear':>16}{'PyTorch kNN':>13}{'selfsup s':>11}{'PyTorch s':>11}{'speed-up':>10}")
    for m in methods:
        s, t = results[f"selfsup-{m}"], results[f"pytorch-{m}"]
        print(f"{m:<11}{s['linear_top1']:>15.2f}%{s['knn_top1']:>12.2f}%{t['linear_top1']:>15.2f}%{t['knn_top1']:>12.2f}%"
              f"{s['train_seconds']:>11.0f}{t['train_seconds']:>11.0f}{t['train_seconds'] / s['train_seconds']:>9.2f}x")
    if not a.no_baselines:
        print(f"supervised (PyTorch, same backbone and epochs): test top-1 {results['pytorch-supervised']['test_top1']:.2f} % "
              f"in {results['pytorch-supervised']['train_seconds']:.0f} s")
        print(f"raw pixels: linear {results['raw-pixels']['linear_top1']:.2f} %, kNN {results['raw-pixels']['knn_top1']:.2f} %")
    print(f"load: {load1[0]:.2f} before, {load2[0]:.2f} after pre-training; results in {os.path.relpath(results_path, ROOT)}")


if __name__ == "__main__":
    main()
