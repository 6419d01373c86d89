"""Speed and memory of D24FAD at the paper's setting (WRN50, 128 px, random weights).

    PYTHONPATH=. .venv/bin/python experiments/d24fad/bench.py --batch 16 --shots 2 4 8

Prints, per k: a full training step (teacher + decoder on the query and once per support index,
learn-to-weight, SSD + 0.1 TSD, backward, Adam); then test throughput against a stored k-shot
support set and the memory the stored support features take per support image. Timings are the
fastest of --steps calls after a warm-up (--median: the median).
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch

from adlab.methods.d24fad import D24FAD
from adlab.models.fusion.identity import LastTap
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder
from experiments.bench.timing import timed as time_calls


def timed(fn, steps: int, median: bool) -> float:
    """Fastest (median: median) of `steps` calls after a warm-up call (oneDNN primitives)."""
    times = time_calls(fn, steps, 1)
    return statistics.median(times) if median else min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--shots", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--median", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    method = D24FAD(
        TimmEncoder("wide_resnet50_2", [1, 2, 3, 4]),
        functools.partial(LastTap),
        functools.partial(ReverseDecoder),
        optimizer={"lr": 1e-4, "betas": [0.5, 0.999]},
    ).to(dev)
    opt = method.configure_optimizers()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    size, batch = args.size, args.batch
    print(f"{args.device}, batch {batch} x {size}px, {args.threads} threads")
    for k in args.shots:
        data = {
            "image": torch.rand(batch, 3, size, size, device=dev),
            "support": torch.rand(batch, k, 3, size, size, device=dev),
        }

        def step(data: dict = data) -> None:
            method.train()
            opt.zero_grad()
            method.training_loss(data)["loss"].backward()
            opt.step()
            sync()

        print(f"k={k}: training step {timed(step, args.steps, args.median):.2f} s")
    method.eval()
    for k in args.shots:
        with torch.no_grad():
            method.model.set_references(torch.rand(k, 3, size, size, device=dev))
            images = torch.rand(batch, 3, size, size, device=dev)
            seconds = timed(lambda x=images: (method.model(x), sync()), args.steps, args.median)
        stored = sum(v.numel() * v.element_size() for v in method.model.references().values())
        print(f"k={k}: test {batch / seconds:.1f} images/s; support features "
              f"{stored / k / 2**20:.2f} MiB per support image")  # fmt: skip


if __name__ == "__main__":
    main()
