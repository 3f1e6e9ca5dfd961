"""DDP's communication hidden behind the backward pass, selfsup vs
PyTorch, two replicas on this machine (Gloo on CPU).

    . .cache/env.sh && $SELFSUP_PYTHON bench/dist/bench.py [--steps 12] [--configs 8x32,16x32,32x64]

For each configuration (batch per replica x image px, resnet18 SimCLR,
1 thread per replica) it runs native/benches/dist_overlap.rs (selfsup, on
c10d's Reducer) and torch_overlap.py (torch DDP) as two processes each,
and prints medians: local = forward + backward without communication,
ddp = the same through DDP, comm = DDP's buckets all-reduced alone,
hidden = (local + comm - ddp) / comm, the share of communication that
cost no time. Negative: DDP cost more than compute and communication
one after the other.
"""
import argparse
import json
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def selfsup_binary():
    out = subprocess.run(
        ["cargo", "bench", "--no-run", "--bench", "dist_overlap", "--message-format=json"],
        cwd=os.path.join(ROOT, "native"), capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("target", {}).get("name") == "dist_overlap" and msg.get("executable"):
            return msg["executable"]
    sys.exit("bench/dist: cargo built no dist_overlap executable")


def pair(command, args, timeout=1200):
    port = free_port()
    procs = [subprocess.Popen(command + [str(r), "2", str(port)] + args, stdout=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    if any(p.returncode for p in procs):
        sys.exit(f"bench/dist: {' '.join(command)} failed (exit codes {[p.returncode for p in procs]})")
    return json.loads(outs[0].strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--configs", default="8x32,16x32,32x64", help="batch-per-replica x image-size, comma-separated")
    o = ap.parse_args()
    binary = selfsup_binary()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'batch x px':>10} | {'impl':8} | {'local ms':>9} | {'ddp ms':>9} | {'comm ms':>8} | {'hidden':>7} | buckets MB")
    for cfg in o.configs.split(","):
        batch, size = cfg.split("x")
        args = [f"steps={o.steps}", f"batch={batch}", f"size={size}", "threads=1"]
        for impl, cmd in [("selfsup", [binary]), ("pytorch", [sys.executable, os.path.join(HERE, "torch_overlap.py")])]:
            r = pair(cmd, args)
            print(f"{cfg:>10} | {impl:8} | {r['local_ms']:9.1f} | {r['ddp_ms']:9.1f} | {r['comm_ms']:8.1f} | {100 * r['hidden']:6.0f}% | {r['buckets_mb']}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
