"""Seconds per training iteration of URD vs RD4AD (random weights, random batches), one process.

    PYTHONPATH=. .venv/bin/python experiments/urd/bench.py --size 256 --batch 8 --steps 4

An iteration is one batch: RD4AD's one optimiser step, URD's teacher step and student step.
The first iteration is dropped (warm-up); the median of the rest is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from adlab.compose import build_method
from adlab.data.batch import collate
from adlab.paths import CONF_DIR


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._t0)


def batches(size: int, batch: int, steps: int) -> DataLoader:
    items = [
        {
            "image": torch.randn(3, size, size),
            "augmented": torch.randn(3, size, size),
            "synthetic_mask": (torch.rand(1, size, size) > 0.9).float(),
            "label": 0,
            "path": f"{i}.png",
            "category": "",
        }
        for i in range(batch * steps)
    ]
    return DataLoader(items, batch_size=batch, collate_fn=collate)


def seconds_per_iteration(method_name: str, overrides: list[str], args) -> float:
    with initialize_config_dir(CONF_DIR, version_base=None):
        cfg = compose(
            "config",
            overrides=[
                f"method={method_name}",
                f"image_size={args.size}",
                "method_name=bench",
                "run_name=bench",
                *overrides,
            ],
        )
    method = build_method(cfg)
    timer = StepTimer()
    loader = batches(args.size, args.batch, args.steps)
    trainer = pl.Trainer(
        **method.trainer_arguments(len(loader)) if method.iterations else {"max_epochs": 1},
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(method, train_dataloaders=loader)
    return statistics.median(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, {args.size} px, batch {args.batch}")
    rd4ad = seconds_per_iteration("rd4ad", ["teacher.pretrained=false"], args)
    print(f"RD4AD: {rd4ad:.2f} s per iteration")
    urd = seconds_per_iteration(
        "urd", ["teacher.expert.pretrained=false", f"method.iterations={args.steps}"], args
    )
    print(f"URD:   {urd:.2f} s per iteration ({urd / rd4ad:.2f}x RD4AD)")


if __name__ == "__main__":
    main()
