"""Benchmark the selective scan at VMamba-Tiny v0 stage-1 shapes (one SS2D call: 4 directions x
192 channels = 768, length 64*64 = 4096 at 256 px, d_state 16), CPU, float32, no grad.

    PYTHONPATH=. .venv/bin/python experiments/bench/scan.py [--chunks 32 64 128] [--no-ref]

Each configuration runs in its own subprocess so that the peak resident memory one call adds
(ru_maxrss after the first call minus before it) is measured cleanly; time is the best of
--repeats calls after that first one.
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

from adlab.models.teachers.selective_scan import selective_scan, selective_scan_ref


def inputs(batch: int, channels: int, length: int, d_state: int, groups: int = 4):
    """Random inputs shaped like VMamba v0 stage 1 (B and C grouped per scan direction)."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, channels, length, generator=g)
    delta = torch.randn(batch, channels, length, generator=g) - 2.0
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)
    B = torch.randn(batch, groups, d_state, length, generator=g)
    C = torch.randn(batch, groups, d_state, length, generator=g)
    D = torch.ones(channels)
    bias = torch.rand(channels, generator=g)
    return u, delta, A, B, C, D, bias


def measure(args: argparse.Namespace) -> dict:
    """Run one configuration in this process: peak MB of the first call, best seconds after."""
    torch.set_num_threads(args.threads)
    u, delta, A, B, C, D, bias = inputs(args.batch, args.channels, args.length, args.d_state)
    kw = dict(D=D, delta_bias=bias, delta_softplus=True)
    if args.single == "ref":
        call = lambda: selective_scan_ref(u, delta, A, B, C, **kw)  # noqa: E731
        repeats = 1
    else:
        call = lambda: selective_scan(u, delta, A, B, C, **kw, chunk_size=args.chunk)  # noqa: E731
        repeats = args.repeats
    with torch.no_grad():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0, c0 = time.perf_counter(), time.process_time()
        out = call()
        first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        cpu0 = time.process_time()
        best = first if args.single == "ref" else float("inf")
        for _ in range(repeats if args.single != "ref" else 0):
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / repeats if args.single != "ref" else first_cpu
        ref = selective_scan_ref(
            u[..., :256], delta[..., :256], A, B[..., :256], C[..., :256], **kw
        )
        err = (out[..., :256] - ref).abs().max().item()  # first 256 steps vs the reference
    return {"seconds": best, "peak_mb": peak, "max_abs_diff_first_256": err, "cpu_s": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ref", action="store_true", help="skip the slow sequential reference")
    parser.add_argument("--single", choices=["ref", "fast"], help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(measure(args)))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes skew wall times)")
    print(
        f"shapes: batch {args.batch}, channels {args.channels}, length {args.length}, "
        f"d_state {args.d_state}, threads {args.threads}; full state (B, D, L, N) would be "
        f"{args.batch * args.channels * args.length * args.d_state * 4 / 2**20:.0f} MB"
    )
    base = [sys.executable, __file__] + [
        f"--batch={args.batch}", f"--channels={args.channels}", f"--length={args.length}",
        f"--d-state={args.d_state}", f"--repeats={args.repeats}", f"--threads={args.threads}",
    ]  # fmt: skip

    def run(*extra: str) -> dict:
        done = subprocess.run(base + list(extra), capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    ref_s = None
    if not args.no_ref:
        r = run("--single=ref")
        ref_s = r["seconds"]
        print(
            f"ref (sequential): {ref_s:.3f} s/call (cpu {r['cpu_s']:.3f} s), "
            f"peak +{r['peak_mb']:.0f} MB"
        )
    for chunk in args.chunks:
        r = run("--single=fast", f"--chunk={chunk}")
        line = (
            f"fast chunk {chunk:5d}: {r['seconds']:.3f} s/call (cpu {r['cpu_s']:.3f} s), "
            f"peak +{r['peak_mb']:.0f} MB, "
            f"max |diff| vs ref {r['max_abs_diff_first_256']:.1e}"
        )
        if ref_s is not None:
            line += f", speed-up x{ref_s / r['seconds']:.1f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
