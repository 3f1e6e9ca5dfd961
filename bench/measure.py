"""What bench/step and bench/epoch measure around a command: its JSON
result line, its wall and CPU time, and the peak memory of its process
tree (the sampler of bench/loader/bench.py: RSS and PSS summed over the
process and its children every 20 ms; with `gpu`, the GPU memory
nvidia-smi lists for those processes, every 0.5 s).
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DENO = os.path.join(ROOT, "tools", "deno", "node_modules", ".bin", "deno")


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


def gpu_mb(pids):
    """GPU memory (MiB) nvidia-smi lists for these processes."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    used = 0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) in pids and parts[1].isdigit():
            used += int(parts[1])
    return used


class Failed(Exception):
    def __init__(self, cmd, code, err):
        super().__init__(f"{' '.join(cmd)} exited with {code}: {err.strip().splitlines()[-1] if err.strip() else ''}")
        self.code, self.err = code, err


def run(cmd, gpu=False, cwd=ROOT, env=None, json_line=True):
    """Runs cmd; returns its last stdout line as JSON (else {}) plus wall_s and
    cpu_s (user + system time of the process and the children it reaped,
    e.g. DataLoader workers), rss_mb and pss_mb, the peaks of its process
    tree, and with `gpu`, gpu_mb. Raises Failed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    peak = {"rss": 0, "pss": 0, "gpu": 0}
    done = threading.Event()

    def sample():
        last_gpu = 0.0
        while not done.is_set():
            pids = tree(proc.pid)
            totals = [sum(v) for v in zip(*(memory_kb(p) for p in pids))] or [0, 0]
            peak["rss"], peak["pss"] = max(peak["rss"], totals[0]), max(peak["pss"], totals[1])
            if gpu and time.monotonic() - last_gpu > 0.5:
                peak["gpu"] = max(peak["gpu"], gpu_mb(set(pids)))
                last_gpu = time.monotonic()
            done.wait(0.02)

    streams = {}
    readers = [threading.Thread(target=lambda k=k: streams.__setitem__(k, getattr(proc, k).read())) for k in ("stdout", "stderr")]
    sampler = threading.Thread(target=sample)
    for t in [sampler, *readers]:
        t.start()
    # wait4 rather than Popen.wait: it also gives this child's resource usage.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for t in [sampler, *readers]:
        t.join()
    out, err = streams.get("stdout", ""), streams.get("stderr", "")
    if proc.returncode != 0:
        raise Failed(cmd, proc.returncode, err)
    result = json.loads(out.strip().splitlines()[-1]) if json_line else {}
    result["wall_s"], result["cpu_s"] = wall, usage.ru_utime + usage.ru_stime
    result["rss_mb"], result["pss_mb"] = peak["rss"] / 1024, peak["pss"] / 1024
    if gpu:
        result["gpu_mb"] = peak["gpu"]
    result["stdout"] = out
    return result


def testing_lib(who):
    """The library with the bench hooks (scripts/build-testing.sh builds it,
    or finds it in a bundle); `who` names the caller in the exit message."""
    built = subprocess.run(["sh", os.path.join(ROOT, "scripts", "build-testing.sh")], capture_output=True, text=True)
    if built.returncode != 0:
        sys.exit(f"{who}: no library with the bench hooks: {built.stderr.strip()}")
    return built.stdout.strip().splitlines()[-1]


def machine():
    """One line: CPU model, cores, memory, load average, GPU."""
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = 0
    gpus = "no GPU"
    if shutil.which("nvidia-smi"):
        names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout
        gpus = ", ".join(n.strip() for n in names.splitlines() if n.strip()) or gpus
    return f"{model}, {os.cpu_count()} CPUs, {mem:.0f} GB RAM, {gpus}"


def load():
    return "load average %.2f, %.2f, %.2f (1, 5, 15 min)" % os.getloadavg()


def versions(python=sys.executable):
    """torch, torchvision and selfsup's commit."""
    out = subprocess.run([python, "-c", "import torch, torchvision; print(torch.__version__, torchvision.__version__)"],
                         capture_output=True, text=True).stdout.split()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return {"torch": out[0] if out else "?", "torchvision": out[1] if len(out) > 1 else "?",
            "selfsup": commit + ("+changes" if dirty else "")}
