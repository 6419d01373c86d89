"""Benchmark VMamba-Tiny v0 (random weights) forward on CPU: seconds per image and peak memory.

    PYTHONPATH=. .venv/bin/python experiments/bench/vmamba.py [--batches 1 8] [--impls fast ref]

float32, torch.no_grad, eval mode, 256 px, torch.set_num_threads(2) by default. Each
(impl, batch) runs in its own subprocess: peak memory is the growth of ru_maxrss over the first
forward (model and input already allocated); time is the best of --repeats forwards after it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from adlab.models.teachers.vmamba import VMambaEncoder


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    enc = VMambaEncoder(args.variant, scan_impl=args.impl).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    repeats = args.repeats if args.impl == "fast" else 0
    with torch.no_grad():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0, c0 = time.perf_counter(), time.process_time()
        enc(x)
        best, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            enc(x)
            wall = time.perf_counter() - t0
            if wall < best:
                best, cpu = wall, time.process_time() - c0
    return {"s_per_image": best / args.batch, "cpu_s_per_image": cpu / args.batch, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="vanilla_vmamba_tiny")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--impls", nargs="+", default=["fast", "ref"], choices=["fast", "ref"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="fast", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(measure(args)))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes skew wall times)")
    print(f"{args.variant}, {args.size} px, float32, no_grad, {args.threads} threads")
    for impl in args.impls:
        for batch in args.batches:
            if impl == "ref" and batch > 1:
                continue  # the sequential scan's per-image cost does not depend on the batch
            cmd = [
                sys.executable, __file__, "--single", f"--batch={batch}", f"--impl={impl}",
                f"--variant={args.variant}", f"--size={args.size}", f"--repeats={args.repeats}",
                f"--threads={args.threads}",
            ]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"scan {impl:4s} batch {batch}: {r['s_per_image']:.3f} s/image "
                f"(cpu {r['cpu_s_per_image']:.3f} s/image), peak +{r['peak_mb']:.0f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
