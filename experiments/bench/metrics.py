"""Speed, agreement and memory of adlab.metrics against anomalib's AUPRO and torchmetrics' AUROC.

Set-up (anomalib is never a dependency of adlab; it lives in a throwaway environment):

    python3 -m venv /work/bench-env
    /work/bench-env/bin/pip install -c /work/main/constraints.txt \\
        torch==2.14.1 torchvision==0.29.1 anomalib==2.7.0
    /work/bench-env/bin/pip install -e /work/main   # or run with PYTHONPATH=/work/main

Run (the anomalib column is skipped with a message where anomalib is not installed):

    cd /work/main && PYTHONPATH=/work/main /work/bench-env/bin/python experiments/bench/metrics.py
    cd /work/main && PYTHONPATH=/work/main .venv/bin/python experiments/bench/metrics.py

It times, on the same maps (default 400 maps of 256x256 with a few blob regions each), adlab's
aupro vs anomalib.metrics.aupro._AUPRO and adlab's pixel_auroc vs torchmetrics' exact BinaryAUROC,
checks that the values agree, prints the ratios, and then measures the peak resident memory of a
fresh process that streams --memory-maps maps through AnomalyEvaluator and computes every metric.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage


def make_batch(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noisy float32 maps and bool masks; about half the images have 1-4 elliptic blobs."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        if rng.random() < 0.5:
            continue
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 64, size / 10, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    noise = rng.random((n, size, size), dtype=np.float32)
    maps = ndimage.gaussian_filter(noise, sigma=(0, 4, 4)) + 0.05 * rng.random(
        (n, size, size), dtype=np.float32
    )
    signal = ndimage.gaussian_filter(masks.astype(np.float32), sigma=(0, 3, 3))
    return (maps + 0.15 * signal * rng.uniform(0.2, 1.0, (n, 1, 1))).astype(np.float32), masks


def best_time(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    """(fastest wall time in seconds, value) over repeats."""
    times, value = [], float("nan")
    for _ in range(repeats):
        t = time.perf_counter()
        value = float(fn())
        times.append(time.perf_counter() - t)
    return min(times), value


def anomalib_aupro(maps: np.ndarray, masks: np.ndarray) -> Callable[[], float] | None:
    try:
        from anomalib.metrics.aupro import _AUPRO
    except ImportError as err:
        print(f"anomalib: not installed ({err}); skipping its column (see the docstring set-up).")
        return None
    preds, target = torch.from_numpy(maps), torch.from_numpy(masks.astype(np.uint8))

    def run() -> float:
        metric = _AUPRO(fpr_limit=0.3)
        metric.update(preds, target)
        return metric.compute().item()

    return run


def torchmetrics_auroc(maps: np.ndarray, masks: np.ndarray, validate: bool) -> Callable[[], float]:
    from torchmetrics.classification import BinaryAUROC

    preds, target = torch.from_numpy(maps).flatten(), torch.from_numpy(masks).flatten().long()

    def run() -> float:
        metric = BinaryAUROC(thresholds=None, validate_args=validate)
        metric.update(preds, target)
        return metric.compute().item()

    return run


def evaluator_all(maps: np.ndarray, masks: np.ndarray, batch: int = 32) -> Callable[[], float]:
    from adlab.metrics import AnomalyEvaluator

    labels = masks.reshape(len(masks), -1).any(1).astype(np.int64)
    scores = maps.reshape(len(maps), -1).max(1)

    def run() -> float:
        ev = AnomalyEvaluator()
        for a in range(0, len(maps), batch):
            s = slice(a, a + batch)
            ev.update(maps[s], scores[s], labels[s], masks[s])
        return ev.compute()["aupro"]

    return run


def speed(args: argparse.Namespace) -> None:
    from adlab.metrics import aupro, label_regions, pixel_auroc

    rng = np.random.default_rng(args.seed)
    maps, masks = make_batch(rng, args.maps, args.size)
    n_regions = label_regions(masks)[1]
    print(
        f"data: {args.maps} maps of {args.size}x{args.size} float32, {n_regions} regions, "
        f"{masks.mean():.2%} anomalous pixels; torch threads {torch.get_num_threads()}"
    )
    t_ours, v_ours = best_time(lambda: aupro(maps, masks, 0.3), args.repeats)
    print(f"adlab aupro                      {t_ours:8.3f} s   value {v_ours:.8f}")
    run_anomalib = anomalib_aupro(maps, masks)
    if run_anomalib is not None:
        t_ref, v_ref = best_time(run_anomalib, args.ref_repeats)
        diff = abs(v_ours - v_ref)
        print(f"anomalib 2.7 _AUPRO              {t_ref:8.3f} s   value {v_ref:.8f}")
        print(
            f"  -> aupro speed-up {t_ref / t_ours:.1f}x, |difference| {diff:.2e} "
            f"({'OK' if diff <= 1e-4 else 'FAIL'}: within 1e-4)"
        )
    t_auc, v_auc = best_time(lambda: pixel_auroc(maps, masks), args.repeats)
    print(f"adlab pixel_auroc                {t_auc:8.3f} s   value {v_auc:.10f}")
    for validate in (True, False):
        t_tm, v_tm = best_time(torchmetrics_auroc(maps, masks, validate), args.ref_repeats)
        print(
            f"torchmetrics BinaryAUROC (exact, validate_args={validate!s:5}) {t_tm:8.3f} s   "
            f"value {v_tm:.10f}"
        )
        print(
            f"  -> pixel_auroc speed-up {t_tm / t_auc:.1f}x, |difference| {abs(v_tm - v_auc):.2e}"
        )
    t_ev, v_ev = best_time(evaluator_all(maps, masks), args.repeats)
    print(f"adlab AnomalyEvaluator, 7 metrics, batches of 32: {t_ev:.3f} s (aupro {v_ev:.8f})")


def peak_rss_gib() -> float:
    """High-water resident memory of this process (VmHWM; ru_maxrss survives exec, so not that)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory(args: argparse.Namespace) -> None:
    """Stream maps through AnomalyEvaluator in this fresh process; print peak RSS."""
    from adlab.metrics import AnomalyEvaluator

    rng = np.random.default_rng(args.seed)
    base = peak_rss_gib()
    ev = AnomalyEvaluator()
    t = time.perf_counter()
    for a in range(0, args.memory_maps, 50):
        maps, masks = make_batch(rng, min(50, args.memory_maps - a), args.size)
        ev.update(maps, maps.reshape(len(maps), -1).max(1), masks.any((1, 2)), masks)
    t_update = time.perf_counter() - t
    t = time.perf_counter()
    res = ev.compute()
    t_compute = time.perf_counter() - t
    peak = peak_rss_gib()
    data_gib = args.memory_maps * args.size**2 * 4 / 2**30
    print(
        f"memory: {args.memory_maps} maps of {args.size}x{args.size} "
        f"({data_gib:.2f} GiB as float32) through AnomalyEvaluator: peak RSS {peak:.2f} GiB "
        f"(process baseline {base:.2f} GiB); update loop incl. data generation {t_update:.1f} s, "
        f"compute {t_compute:.2f} s; aupro {res['aupro']:.6f}, pixel_auroc {res['pixel_auroc']:.6f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="adlab timings: best of")
    parser.add_argument("--ref-repeats", type=int, default=1, help="anomalib/torchmetrics: best of")
    parser.add_argument("--memory-maps", type=int, default=2000, help="0 skips the memory run")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.memory_only:
        memory(args)
        return
    speed(args)
    if args.memory_maps:
        cmd = [
            sys.executable,
            __file__,
            "--memory-only",
            f"--memory-maps={args.memory_maps}",
            f"--size={args.size}",
            f"--seed={args.seed}",
        ]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
