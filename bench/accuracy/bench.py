"""Accuracy on Fashion-MNIST: selfsup and the PyTorch reference script run
the same recipe (docs/ACCURACY.md) side by side, then both frozen backbones
are scored with a linear classifier and a 200-NN vote; a supervised run of
the same backbone and raw pixels give the scale. Prints one table.

  . .cache/env.sh && $SELFSUP_PYTHON -u bench/accuracy/bench.py [--epochs 5]            # 2-core CPU recipe
  . .cache/env.sh && $SELFSUP_PYTHON -u bench/accuracy/bench.py --preset gpu [--from IDX-DIR]   # one GPU

A preset is a recipe plus how to run it (recipe.py). The gpu preset first
chooses its hyper-parameters on a held-out 10 % of train (selfsup runs of a
small grid, all at once, scored on the held-out images; --select stops
there), then pre-trains each method on all of train in selfsup and in
PyTorch one run at a time (so each wall time is its own) and scores on
test. Results, logs and checkpoints go to --out (default
.cache/accuracy/<preset or epochs>); a finished step is not redone when the
bench is started again with the same --out. plot.py draws the curves.
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
sys.path.insert(0, HERE)
import recipe  # noqa: E402


def deno():
    return os.path.join(ROOT, "tools", "deno", "node_modules", ".bin", "deno")


def selfsup_cmd(args):
    return [deno(), "run", "--quiet", "--allow-all", os.path.join(ROOT, "cli", "main.ts"), *args]


def reference_cmd(args):
    return [PY, "-u", os.path.join(HERE, "reference.py"), *args]


class Job:
    """A child process with its wall time; output to a log file."""

    def __init__(self, name, cmd, log):
        self.name, self.cmd, self.log = name, cmd, log
        self.proc, self.seconds = None, None

    def start(self):
        self.start_time = time.time()
        with open(self.log + ".cmd", "w") as f:
            f.write(shlex.join(self.cmd) + "\n")
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, cwd=ROOT)

    def finished(self):
        """True once the process has exited (its wall time then taken);
        a failed one ends the bench with the tail of its log."""
        rc = self.proc.poll()
        if rc is None:
            return False
        self.seconds = time.time() - self.start_time
        if rc != 0:
            tail = open(self.log).read()[-2000:]
            sys.exit(f"{self.name} failed (exit {rc}); its log {self.log} ends:\n{tail}")
        return True


def run_jobs(jobs, at_once):
    """Runs (key, job) pairs, at most `at_once` at a time (0: all), and
    yields each as it exits, its wall time taken when it exited."""
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and (at_once == 0 or len(running) < at_once):
            key, j = waiting.pop(0)
            j.start()
            running.append((key, j))
        for key, j in list(running):
            if j.finished():
                running.remove((key, j))
                yield key, j
        time.sleep(0.5)


def load(path):
    with open(path) as f:
        return json.load(f)


def save(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(path + ".tmp", path)


def sidecar(models, uid):
    names = [n for n in os.listdir(models) if n.startswith(f"{uid}_") and n.endswith(".last.json")]
    if len(names) != 1:
        sys.exit(f"expected one {uid} checkpoint in {models}, found {names}")
    return os.path.join(models, names[0])


def parse_eval(text):
    # "linear evaluation (online weights, resnet18): top-1 88.12 %, top-5 99.01 %"
    line = [l for l in text.splitlines() if "evaluation (" in l][-1]
    top1 = float(line.split("top-1 ")[1].split(" %")[0])
    top5 = float(line.split("top-5 ")[1].split(" %")[0])
    return top1, top5


def score_selfsup(a, models, uid, data):
    """`selfsup eval linear` and `knn` of a run's last checkpoint on `data`."""
    r, side = {}, sidecar(models, uid)
    for kind in ["linear", "knn"]:
        t0 = time.time()
        args = ["eval", kind, "--checkpoint", side, "--data-dir", data, "--workers-per-replica", str(a.workers)]
        out = subprocess.run(selfsup_cmd(args + (["--no-cuda"] if a.device == "cpu" else [])), capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"selfsup eval {kind} failed: {out.stdout[-1000:]}{out.stderr[-1000:]}")
        r[f"{kind}_top1"], r[f"{kind}_top5"] = parse_eval(out.stdout)
        r[f"{kind}_eval_seconds"] = time.time() - t0
    r["checkpoint"] = os.path.relpath(side, ROOT)
    return r


def reference_run(a, sub, out, args):
    subprocess.run(reference_cmd([sub, *args, "--out", out, "--threads", str(a.threads), "--device", a.device]),
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return load(out)


def device_name(a):
    """The GPU's name (refusing --device cuda without one), else the CPU's."""
    if a.device == "cuda":
        out = subprocess.run([PY, "-c", "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"],
                             capture_output=True, text=True)
        if not out.stdout.strip():
            sys.exit("--device cuda: torch sees no GPU here; use --device cpu (and --preset cpu for a recipe sized for CPUs)")
        return out.stdout.strip()
    cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][:1]
    return f"{cpu[0] if cpu else 'CPU'} ({os.cpu_count()} CPUs)"


def prepare_data(a):
    """The ImageFolder the runs use: converted from the IDX files when
    missing, or a class-stratified subset of it with --limit-images."""
    if not os.path.isdir(os.path.join(a.data, "train")):
        print(f"[accuracy] converting Fashion-MNIST to {a.data}", flush=True)
        if subprocess.run(selfsup_cmd(["data", "fashion-mnist", a.data, *(["--from", a.idx] if a.idx else [])])).returncode != 0:
            sys.exit(f"could not make {a.data} (the line above says why); --from <folder> gives the IDX files")
    if not a.limit_images:
        return a.data
    return recipe.derived_folder(a.data, os.path.join(a.out, "data"), train_images=a.limit_images, test_images=max(a.limit_images // 6, 10))


def overrides(a):
    """Settings given on the command line (None: the preset's)."""
    return {"epochs": a.epochs, "batch_size": a.batch_size, "base_width": a.base_width, "lr": a.lr, "precision": a.precision}


def select(a, data, results, path):
    """Each method's grid, pre-trained by selfsup on 90 % of train and scored
    on the held-out 10 %; returns {method: chosen settings}."""
    held = recipe.derived_folder(data, os.path.join(a.out, "select", "data"), held_out=0.1)
    runs = results.setdefault("select", {})
    out = os.path.join(a.out, "select")
    combos = {m: recipe.grid(a.preset, m, fixed=[k for k, v in overrides(a).items() if v is not None]) for m in a.methods}
    todo = [(m, i, c) for m in a.methods for i, c in enumerate(combos[m]) if len(combos[m]) > 1 and f"{m}-{i}" not in runs]
    share = max(1, len(todo))
    jobs = []
    for m, i, c in todo:
        s = recipe.settings(a.preset, m, {**overrides(a), **c})
        flags = recipe.selfsup_flags(m, s, held, out, f"select-{m}-{i}", a.device, max(1, a.threads // share), max(1, a.workers // share))
        jobs.append(((m, i, c), Job(f"selfsup {m} {c} (selection)", selfsup_cmd(flags), os.path.join(out, f"selfsup-{m}-{i}.log"))))
    os.makedirs(out, exist_ok=True)
    if jobs:
        print(f"[accuracy] selection: {len(jobs)} selfsup pre-trainings on 90 % of train, all at once", flush=True)
    for (m, i, c), j in run_jobs(jobs, 0):
        print(f"[accuracy] selection {m} {c}: pre-trained in {j.seconds:.0f} s", flush=True)
        runs[f"{m}-{i}"] = {"method": m, "params": c, "train_seconds": j.seconds, **score_selfsup(a, os.path.join(out, "models"), f"select-{m}-{i}", held)}
        save(path, results)
    chosen = {}
    for m in a.methods:
        tried = [runs[f"{m}-{i}"] for i in range(len(combos[m]))] if len(combos[m]) > 1 else []
        chosen[m] = max(tried, key=lambda r: r["linear_top1"])["params"] if tried else {}
    return chosen


def final(a, data, results, path, chosen):
    """Pre-training on all of train (selfsup and PyTorch, each method, the
    supervised baseline), `--jobs` at a time, then scoring on test."""
    jobs = []
    for m in a.methods:
        s = recipe.settings(a.preset, m, {**overrides(a), **chosen.get(m, {})})
        if "selfsup" in a.programs and f"selfsup-{m}" not in results:
            flags = recipe.selfsup_flags(m, s, data, a.out, f"fmnist-{m}", a.device, a.threads, a.workers)
            jobs.append((f"selfsup-{m}", Job(f"selfsup {m}", selfsup_cmd(flags), os.path.join(a.out, f"selfsup-{m}.log"))))
        if "pytorch" in a.programs and f"pytorch-{m}" not in results:
            out = os.path.join(a.out, f"pytorch-{m}")
            flags = recipe.reference_flags(m, s, data, out, a.device, a.threads, a.workers)
            jobs.append((f"pytorch-{m}", Job(f"pytorch {m}", reference_cmd(["pretrain", *flags]), out + ".log")))
    if a.baselines and "pytorch-supervised" not in results:
        out = os.path.join(a.out, "pytorch-supervised")
        flags = recipe.reference_flags("supervised", recipe.settings(a.preset, "supervised", overrides(a)), data, out, a.device, a.threads, a.workers)
        jobs.append(("pytorch-supervised", Job("pytorch supervised", reference_cmd(["pretrain", *flags]), out + ".log")))
    for key, j in run_jobs(jobs, a.jobs):
        results[key] = {"train_seconds": j.seconds}
        print(f"[accuracy] {j.name}: pre-trained in {j.seconds:.0f} s", flush=True)
        save(path, results)
    load_after = os.getloadavg()

    # Frozen-backbone scoring, one at a time.
    for m in a.methods:
        r = results.get(f"selfsup-{m}")
        if r is not None and "linear_top1" not in r:
            r.update(score_selfsup(a, os.path.join(a.out, "models"), f"fmnist-{m}", data))
            save(path, results)
        r = results.get(f"pytorch-{m}")
        if r is not None and "linear_top1" not in r:
            d = os.path.join(a.out, f"pytorch-{m}")
            r.update(reference_run(a, "evaluate", os.path.join(d, "eval.json"), ["--checkpoint", os.path.join(d, "backbone.pt"), "--data", data]))
            r.update({k: v for k, v in load(os.path.join(d, "summary.json")).items() if k in ("images_per_second", "online_test_top1")})
            save(path, results)
    if a.baselines:
        r = results["pytorch-supervised"]
        if "test_top1" not in r:
            r["test_top1"] = load(os.path.join(a.out, "pytorch-supervised", "summary.json"))["online_test_top1"]
        if "raw-pixels" not in results:
            results["raw-pixels"] = reference_run(a, "raw", os.path.join(a.out, "raw.json"), ["--data", data])
        save(path, results)
    return load_after


def pct(r, key):
    return f"{r[key]:.2f} %" if r and key in r else "—"


def secs(r):
    return f"{r['train_seconds']:.0f}" if r and "train_seconds" in r else "—"


def print_selection(results, methods):
    runs = [r for r in results.get("select", {}).values() if r["method"] in methods]
    if not runs:
        return
    print("Selection (selfsup; pre-trained on 90 % of train, scored on the held-out 10 %):")
    print(f"{'method':<8}{'settings':<34}{'linear':>10}{'kNN':>10}{'s':>7}")
    for r in runs:
        c = ", ".join(f"{k} {v}" for k, v in r["params"].items())
        print(f"{r['method']:<8}{c:<34}{pct(r, 'linear_top1'):>10}{pct(r, 'knn_top1'):>10}{secs(r):>7}")
    print(f"chosen: {json.dumps(results.get('chosen', {}))}")


def print_table(a, results, meta):
    print()
    print_selection(results, a.methods)
    ep = ", ".join(f"{m} {recipe.settings(a.preset, m, overrides(a))['epochs']}" for m in a.methods)
    s0 = recipe.settings(a.preset, a.methods[0], overrides(a))
    print(f"Fashion-MNIST, ResNet-18 (base width {s0['base_width']}, {'small stem' if s0['small_stem'] else 'torchvision stem'}, "
          f"{s0['size']} px), epochs: {ep}, batch {s0['batch_size']}, {s0['precision']}, {meta['device_name']}, "
          f"{a.threads} thread(s) + {a.workers} loader worker(s) per run, {'all at once' if a.jobs == 0 else f'{a.jobs} at a time'}")
    grids = {m: recipe.PRESETS[a.preset]["grid"].get(m) for m in a.methods}
    for m in a.methods:
        s = recipe.settings(a.preset, m, {**overrides(a), **results.get("chosen", {}).get(m, {})})
        how = "chosen on the held-out 10 % of train" if results.get("chosen", {}).get(m) else "the preset's"
        print(f"{m}: " + ", ".join(f"{k} {s[k]}" for k in (grids[m] or {"lr": 0})) + f" ({how})")
    print(f"{'method':<8}{'selfsup linear':>16}{'selfsup kNN':>13}{'PyTorch linear':>16}{'PyTorch kNN':>13}{'lin. diff':>11}{'selfsup s':>11}{'PyTorch s':>11}{'speed-up':>10}")
    for m in a.methods:
        s, t = results.get(f"selfsup-{m}"), results.get(f"pytorch-{m}")
        both = s and t and "linear_top1" in s and "linear_top1" in t
        diff = f"{s['linear_top1'] - t['linear_top1']:+.2f}" if both else "—"
        speed = f"{t['train_seconds'] / s['train_seconds']:.2f}x" if both else "—"
        print(f"{m:<8}{pct(s, 'linear_top1'):>16}{pct(s, 'knn_top1'):>13}{pct(t, 'linear_top1'):>16}{pct(t, 'knn_top1'):>13}"
              f"{diff:>11}{secs(s):>11}{secs(t):>11}{speed:>10}")
    if a.baselines:
        sup = results["pytorch-supervised"]
        print(f"supervised (PyTorch, same backbone, one view): test top-1 {sup['test_top1']:.2f} % in {sup['train_seconds']:.0f} s")
        print(f"raw pixels: linear {results['raw-pixels']['linear_top1']:.2f} %, kNN {results['raw-pixels']['knn_top1']:.2f} %")
    print(f"load: {meta['load_before'][0]:.2f} before, {meta['load_after_pretraining'][0]:.2f} after pre-training; "
          f"results in {os.path.join(a.out, 'results.json')}")


def arguments():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(recipe.PRESETS), default="cpu", help="the recipe and how it runs (default: cpu)")
    p.add_argument("--select", action="store_true", help="only choose the hyper-parameters on the held-out 10 %% of train")
    p.add_argument("--no-select", action="store_true", help="skip the selection: the preset's own hyper-parameters (a quicker, weaker check)")
    p.add_argument("--data", default=os.path.join(ROOT, ".datasets", "fashion-mnist"), help="Fashion-MNIST as an ImageFolder (made when missing)")
    p.add_argument("--from", dest="idx", help="folder with the four IDX files (.gz) to make --data from (default: Debian's dataset-fashion-mnist)")
    p.add_argument("--methods", default="simclr,byol")
    p.add_argument("--programs", default="selfsup,pytorch", help="which sides to run (the table shows — for the other)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: the preset's")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on cuda, fp32 on cpu")
    for flag in ["--epochs", "--batch-size", "--base-width", "--threads", "--workers"]:
        p.add_argument(flag, type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, help="base lr per 256 images (default: the preset's, or chosen by the selection)")
    p.add_argument("--jobs", type=int, help="pre-trainings at once, 0 = all (default: cpu all, gpu 1)")
    p.add_argument("--limit-images", type=int, default=0, help="smoke test: N train and N/6 test images, class-stratified")
    p.add_argument("--out")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip the supervised and raw-pixel rows")
    p.add_argument("--print-recipe", action="store_true", help="print each pre-training's two command lines as JSON and exit")
    a = p.parse_args()
    preset = recipe.PRESETS[a.preset]
    for k in ["device", "threads", "workers", "jobs"]:
        if getattr(a, k) is None:
            setattr(a, k, preset[k])
    if a.precision is None:
        a.precision = "bf16" if a.device == "cuda" else "fp32"
    a.methods = [m for m in a.methods.split(",") if m]
    a.programs = [x for x in a.programs.split(",") if x]
    for m in a.methods:
        if m not in recipe.METHODS:
            p.error(f"--methods: unknown method {m!r}; use simclr and/or byol")
    for x in a.programs:
        if x not in ("selfsup", "pytorch"):
            p.error(f"--programs: unknown program {x!r}; use selfsup and/or pytorch")
    if a.select and a.no_select:
        p.error("--select and --no-select exclude each other")
    a.baselines = a.baselines and "pytorch" in a.programs and not a.select
    a.data = os.path.abspath(a.data)
    if a.idx and not os.path.isdir(a.idx):
        p.error(f"--from {a.idx} is not a folder; give the folder holding Fashion-MNIST's four IDX files")
    a.idx = a.idx and os.path.abspath(a.idx)
    name = f"{a.epochs or preset['epochs']}ep" if a.preset == "cpu" else a.preset + (f"-{a.epochs}ep" if a.epochs else "")
    a.out = os.path.abspath(a.out or os.path.join(ROOT, ".cache", "accuracy", name + (f"-{a.limit_images}img" if a.limit_images else "")))
    return a


def print_recipe(a):
    out = {}
    for m in [*a.methods, "supervised"]:
        s = recipe.settings(a.preset, m, overrides(a))
        out[m] = {"settings": s, "grid": recipe.grid(a.preset, m, fixed=[k for k, v in overrides(a).items() if v is not None]),
                  "pytorch": recipe.reference_flags(m, s, a.data, os.path.join(a.out, f"pytorch-{m}"), a.device, a.threads, a.workers)}
        if m != "supervised":
            out[m]["selfsup"] = recipe.selfsup_flags(m, s, a.data, a.out, f"fmnist-{m}", a.device, a.threads, a.workers)
    print(json.dumps(out, indent=1))


def main():
    a = arguments()
    if a.print_recipe:
        return print_recipe(a)
    name = device_name(a)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "results.json")
    results = load(path) if os.path.exists(path) else {}
    # A folder holds one recipe: continuing it with other settings would mix two.
    key = {"preset": a.preset, "overrides": overrides(a), "limit_images": a.limit_images, "device": a.device, "selected": not a.no_select}
    if results.get("_recipe", key) != key:
        sys.exit(f"--out {a.out} holds results of other settings ({json.dumps(results['_recipe'])}); delete it or choose another --out")
    results["_recipe"] = key
    data = prepare_data(a)
    load_before = os.getloadavg()
    print(f"[accuracy] {name}; load {load_before[0]:.2f} on {os.cpu_count()} CPUs; out {a.out}", flush=True)

    chosen = {} if a.no_select else select(a, data, results, path)
    results["chosen"] = {**results.get("chosen", {}), **chosen}
    save(path, results)
    if a.select:
        return print_selection(results, a.methods)
    load_after = final(a, data, results, path, chosen)
    results["_meta"] = {"preset": a.preset, "epochs": {m: recipe.settings(a.preset, m, overrides(a))["epochs"] for m in a.methods},
                        "batch_size": recipe.settings(a.preset, a.methods[0], overrides(a))["batch_size"],
                        "base_width": recipe.settings(a.preset, a.methods[0], overrides(a))["base_width"],
                        "precision": recipe.settings(a.preset, a.methods[0], overrides(a))["precision"],
                        "device_name": name, "threads": a.threads, "workers": a.workers, "jobs": a.jobs,
                        "load_before": load_before, "load_after_pretraining": load_after, "cpus": os.cpu_count()}
    save(path, results)
    print_table(a, results, results["_meta"])


if __name__ == "__main__":
    main()
