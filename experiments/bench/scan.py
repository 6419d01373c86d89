"""Benchmark the selective scan at VMamba-Tiny v0 stage-1 shapes (one SS2D call: 4 directions x
192 channels = 768, length 64*64 = 4096 at 256 px, d_state 16), CPU, float32, no grad.

    PYTHONPATH=. .venv/bin/python experiments/bench/scan.py [--threads 1 2] [--chunks 32 64 128]
        [--interleaved]

Each (implementation, threads, chunk) runs in its own subprocess, so the peak resident memory
one call adds (ru_maxrss after the first call minus before it) is measured cleanly. After one
warm-up call, --repeats calls are timed: wall time (median and min) and CPU time of the whole
process (time.process_time, all threads; median). On a machine shared with other jobs, wall
times are noisy and with 2 threads can be far worse than with 1 (a parallel op waits for the
descheduled thread); CPU time with 1 thread is the steadiest figure, and --interleaved
(reference and fast calls alternated in one process) gives the fairest ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
    """Run one configuration in this process (see the module docstring for what is timed)."""
    torch.set_num_threads(args.threads)
    u, delta, A, B, C, D, bias = inputs(args.batch, args.channels, args.length, args.d_state)
    kw = dict(D=D, delta_bias=bias, delta_softplus=True)
    if args.single == "ref":
        call = lambda: selective_scan_ref(u, delta, A, B, C, **kw)  # noqa: E731
    else:
        call = lambda: selective_scan(u, delta, A, B, C, **kw, chunk_size=args.chunk)  # noqa: E731
    walls, cpus = [], []
    with torch.no_grad():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = call()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        n = min(256, args.length)
        ref = selective_scan_ref(u[..., :n], delta[..., :n], A, B[..., :n], C[..., :n], **kw)
        err = (out[..., :n] - ref).abs().max().item()  # first n steps vs the reference
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "cpu_s": statistics.median(cpus),
        "peak_mb": peak,
        "max_abs_diff": err,
    }


def interleaved(args: argparse.Namespace, threads: int) -> None:
    """Alternate reference and fast calls in this one process and print both and their ratio:
    on a shared machine, separate processes can differ by 20-30% in CPU time, so this ratio is
    the fairest comparison."""
    torch.set_num_threads(threads)
    u, delta, A, B, C, D, bias = inputs(args.batch, args.channels, args.length, args.d_state)
    kw = dict(D=D, delta_bias=bias, delta_softplus=True)
    fns = {"ref": selective_scan_ref, "fast": selective_scan}
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for i in range(args.repeats + 1):
            for name, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn(u, delta, A, B, C, **kw)
                if i > 0:  # the first round warms up
                    walls[name].append(time.perf_counter() - t0)
                    cpus[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    low = {k: min(v) for k, v in walls.items()}
    for k in fns:
        print(
            f"{threads} thread(s) interleaved {k:4s}: wall median {med[k]:.3f} s, "
            f"min {low[k]:.3f} s, cpu {cpu[k]:.3f} s"
        )
    print(
        f"{threads} thread(s) interleaved speed-up: x{med['ref'] / med['fast']:.1f} (median "
        f"wall), x{low['ref'] / low['fast']:.1f} (min), x{cpu['ref'] / cpu['fast']:.1f} (cpu)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0], help="0: the default")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-ref", action="store_true", help="skip the slow sequential reference")
    parser.add_argument(
        "--interleaved", action="store_true", help="also alternate ref and fast in one process"
    )
    parser.add_argument("--single", choices=["ref", "fast", "interleaved"], help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single == "interleaved":
        interleaved(args, args.threads[0])
        return
    if args.single:
        args.threads, args.chunk = args.threads[0], args.chunk or None
        print(json.dumps(measure(args)))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes skew wall times)")
    full_mb = args.batch * args.channels * args.length * args.d_state * 4 / 2**20
    print(
        f"shapes: batch {args.batch}, channels {args.channels}, length {args.length}, "
        f"d_state {args.d_state}; the full state (B, D, L, N) would be {full_mb:.0f} MB"
    )
    base = [sys.executable, __file__] + [
        f"--batch={args.batch}", f"--channels={args.channels}", f"--length={args.length}",
        f"--d-state={args.d_state}",
    ]  # fmt: skip

    def run(threads: int, *extra: str) -> dict:
        cmd = base + [f"--threads={threads}"] + list(extra)
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    def fmt(r: dict) -> str:
        return (
            f"wall median {r['median_s']:.3f} s, min {r['min_s']:.3f} s, "
            f"cpu {r['cpu_s']:.3f} s, peak +{r['peak_mb']:.0f} MB"
        )

    for threads in args.threads:
        ref = None
        if not args.no_ref:
            ref = run(threads, "--single=ref", f"--repeats={max(1, args.repeats // 2)}")
            print(f"{threads} thread(s) ref (sequential): {fmt(ref)}", flush=True)
        for chunk in args.chunks:
            r = run(threads, "--single=fast", f"--chunk={chunk}", f"--repeats={args.repeats}")
            name = "default" if chunk == 0 else str(chunk)
            line = f"{threads} thread(s) fast chunk {name:>7s}: {fmt(r)}"
            line += f", max |diff| vs ref {r['max_abs_diff']:.1e}"
            if ref is not None:
                ratios = [ref[k] / r[k] for k in ("median_s", "min_s", "cpu_s")]
                line += "; speed-up x{:.1f} (median wall), x{:.1f} (min), x{:.1f} (cpu)".format(
                    *ratios
                )
            print(line, flush=True)
        if args.interleaved and not args.no_ref:  # in a child too, so the parent stays small
            cmd = base + [
                f"--threads={threads}",
                "--single=interleaved",
                f"--repeats={args.repeats}",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(done.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
