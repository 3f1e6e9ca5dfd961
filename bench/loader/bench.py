"""Loader benchmark: selfsup's native loader vs torchvision's DataLoader on
the same JPEGs with the same number of workers, printed side by side.

  python bench/loader/bench.py [--data DIR] [--count 1000] [--workers 1,2] [--batch 64] [--size 224]

Run it through the project's environment (./selfsup sets it up):
  . .cache/env.sh && $SELFSUP_PYTHON bench/loader/bench.py

Each configuration runs in its own process, timed from loader creation to
the last batch of 2 epochs (worker start-up included, as in training; the
import of torch / loading of libtorch excluded); each script also reports
the CPU time its process and workers spent, which the load of other
processes on the machine does not change. A sampler adds up the resident
memory (RSS, and PSS, which splits pages shared between processes fairly)
of the process and all its children every 20 ms and keeps the peak. Files
are read once before timing, so every run reads from the page cache.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def memory_kb(pid):
    """(RSS, PSS) in kB of one process, 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


def run(cmd):
    """Runs cmd, returning its JSON line plus peak RSS and PSS (MB) of its process tree."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = [0, 0]

    def sample():
        while proc.poll() is None:
            totals = [sum(v) for v in zip(*(memory_kb(p) for p in tree(proc.pid)))] or [0, 0]
            peak[0], peak[1] = max(peak[0], totals[0]), max(peak[1], totals[1])
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    out, err = proc.communicate()
    t.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    result["rss_mb"], result["pss_mb"] = peak[0] / 1024, peak[1] / 1024
    return result


def warm_page_cache(data):
    for dirpath, _, files in os.walk(data):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                fh.read()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.path.join(ROOT, ".datasets", "bench-loader"))
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration, interleaved; medians are reported")
    a = p.parse_args()
    if not os.path.isdir(os.path.join(a.data, "train")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_images.py"), a.data, "--count", str(a.count)], check=True)
    warm_page_cache(a.data)
    load_before = os.getloadavg()[0]
    deno = os.path.join(ROOT, "tools", "deno", "node_modules", ".bin", "deno")
    common = ["--batch", str(a.batch), "--size", str(a.size), "--epochs", str(a.epochs)]
    rows = []
    for w in [int(x) for x in a.workers.split(",")]:
        ws = ["--workers", str(w)]
        tv = [sys.executable, os.path.join(HERE, "torchvision_loader.py"), a.data, *ws, *common]
        commands = {
            "torchvision, reference (2 decodes)": tv + ["--mode", "reference"],
            "torchvision, 1 decode, uint8": tv + ["--mode", "decode-once"],
            "selfsup": [deno, "run", "-A", "--quiet", os.path.join(HERE, "selfsup_loader.ts"), a.data, *ws, *common],
        }
        runs = {name: [] for name in commands}
        for _ in range(a.repeat):
            for name, cmd in commands.items():
                runs[name].append(run(cmd))
        med = lambda xs: statistics.median(xs)
        results = {
            name: {
                "sps": med([r["samples_per_s"] for r in rs]),
                "cpu_ms": med([1000 * r["cpu_seconds"] / r["samples"] for r in rs]),
                "rss": max(r["rss_mb"] for r in rs),
                "pss": max(r["pss_mb"] for r in rs),
            }
            for name, rs in runs.items()
        }
        ref, best = (results[k]["sps"] for k in list(commands)[:2])
        for name, r in results.items():
            rows.append((w, name, r["sps"], r["sps"] / ref, r["sps"] / best, r["cpu_ms"], r["rss"], r["pss"]))
    print(f"\n{a.count} JPEGs in {a.data}, batch {a.batch}, {a.size} px, {a.epochs} epochs, "
          f"{os.cpu_count()} CPUs, load average before: {load_before:.1f}; medians of {a.repeat} runs")
    print("samples/s: images per second, each with two RandomResizedCrop views (torchvision also flips them)\n")
    print("| workers | loader | samples/s | vs reference | vs 1-decode torchvision | CPU ms / sample | peak RSS (MB) | peak PSS (MB) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w, name, sps, vs_ref, vs_best, cpu, rss, pss in rows:
        print(f"| {w} | {name} | {sps:.0f} | {vs_ref:.2f}x | {vs_best:.2f}x | {cpu:.2f} | {rss:.0f} | {pss:.0f} |")


if __name__ == "__main__":
    main()
