"""Every method on the demo recipe: `selfsup demo --method M` (ResNet-18 at
base width 16 with the 3x3 stem, 32-px shapes, batch 128, 12 epochs,
SGD-momentum, CPU) for each method with its own defaults, then the run's
online linear probe (test top-1 at the last epoch, from the run's log) and
`selfsup eval knn` / `selfsup eval linear` of its last checkpoint. One
table of test top-1 per method, with each run's wall time.

  . .cache/env.sh && $SELFSUP_PYTHON -u bench/methods/bench.py
  . .cache/env.sh && $SELFSUP_PYTHON -u bench/methods/bench.py --methods barlowtwins,vicreg --set projector-widths=1024-1024-1024

Runs go one at a time (each wall time is its own). A finished run is kept
in --out (default .cache/methods/e<epochs>) and not redone when the bench
starts again. --set FLAG=VALUE adds a flag to the runs of the methods that
take it (e.g. narrower projectors on a small CPU; the table's title says
which). Every method selfsup has runs unless --methods names some.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "accuracy"))
from bench import Job, deno, load, run_jobs, save, score_selfsup, selfsup_cmd  # noqa: E402  (bench/accuracy/bench.py)


def methods():
    """Every method selfsup has (train/config.ts METHODS), in its order."""
    code = 'import { METHOD_NAMES } from "./train/config.ts"; console.log(METHOD_NAMES.join(","));'
    out = subprocess.run([deno(), "eval", "--quiet", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return out.strip().split(",")


def flags_of(method):
    """The flags `selfsup train --method M --print-config` accepts for M: its resolved keys."""
    out = subprocess.run(selfsup_cmd(["train", "--method", method, "--print-config"]), capture_output=True, text=True, cwd=ROOT, check=True)
    cfg = json.loads(out.stdout)
    return {re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), k) for k in cfg.get("config", cfg)}


def probe_top1(log):
    """The online linear classifier's test top-1 at the last epoch (the demo's result line)."""
    lines = [l for l in open(log).read().splitlines() if "test accuracy of the online linear classifier" in l]
    if not lines:
        sys.exit(f"no online-probe accuracy in {log}")
    return float(lines[-1].split("top-1 ")[1].split(" %")[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", help="comma-separated (default: every method selfsup has)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE", help="a flag for the methods that take it")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args()
    names = [m for m in (a.methods or "").split(",") if m] or methods()
    sets = [s.split("=", 1) for s in a.set]
    if any(len(s) != 2 for s in sets):
        p.error("--set needs FLAG=VALUE, e.g. projector-widths=1024-1024-1024")
    out = os.path.abspath(a.out or os.path.join(ROOT, ".cache", "methods", f"e{a.epochs}"))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.json")
    results = load(path) if os.path.exists(path) else {}
    data = os.path.join(ROOT, ".datasets", "selfsup-demo")
    jobs, runs = [], {}
    for m in names:
        extra = [x for k, v in sets if k in flags_of(m) for x in (f"--{k}", v)]
        key = " ".join([m, *extra])
        if key in results:
            continue
        models = os.path.join(out, m, "models")
        cmd = selfsup_cmd(["demo", "--method", m, "--epochs", str(a.epochs), "--uid", f"methods-{m}", "--no-resume",
                           "--model-dir", models, "--log-dir", os.path.join(out, m, "runs"), *extra])
        runs[key] = (m, models)
        jobs.append((key, Job(key, cmd, os.path.join(out, f"{m}.log"))))
    scoring = argparse.Namespace(workers=a.workers, device="cpu")  # what score_selfsup reads
    for key, job in run_jobs(jobs, 1):
        m, models = runs[key]
        r = {"method": m, "probe_top1": probe_top1(job.log), "seconds": job.seconds, "load": os.getloadavg()[0]}
        r.update(score_selfsup(scoring, models, f"methods-{m}", data))
        results[key] = r
        save(path, results)
        print(f"[methods] {key}: probe {r['probe_top1']:.2f} %, kNN {r['knn_top1']:.2f} %, linear {r['linear_top1']:.2f} % "
              f"({r['seconds']:.0f} s)", flush=True)
    title = f"demo recipe, {a.epochs} epochs, CPU" + (f"; {', '.join('--' + k + ' ' + v for k, v in sets)} where it applies" if sets else "")
    print(f"\n{title} ({os.uname().nodename}, {os.cpu_count()} cores)\n")
    print("| method (flags) | online probe top-1 | kNN top-1 (k 200) | linear eval top-1 | pre-training time |")
    print("|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {key} | {r['probe_top1']:.1f} % | {r['knn_top1']:.1f} % | {r['linear_top1']:.1f} % | {r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
