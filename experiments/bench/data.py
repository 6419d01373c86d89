"""Data pipeline throughput: images/s of the first epoch (decode + resize, filling the cache)
and of later epochs (served from the memory cache), with and without the cache.

    PYTHONPATH=. python experiments/bench/data.py [--dataset elpv] [--image-size 256]
        [--workers 0 2] [--epochs 3]

Default data: ELPV (2,224 real 300x300 PNGs shipped with elpv-dataset; nothing to download).
The first epoch includes AnomalyDataModule.setup(), which decodes everything once with threads.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from omegaconf import OmegaConf

from adlab.data import AnomalyDataModule
from adlab.data.synthetic import ensure_tree


def run(dataset: dict, image_size: int, workers: int, cache: str, epochs: int) -> dict:
    started = time.perf_counter()
    dm = AnomalyDataModule(dataset={**dataset, "cache": cache}, image_size=image_size,
                           batch_size=32, eval_batch_size=32, num_workers=workers)  # fmt: skip
    dm.setup()
    setup_s = time.perf_counter() - started
    loader = dm.train_dataloader()
    rates = []
    for epoch in range(epochs):
        t = time.perf_counter()
        n = sum(len(batch["path"]) for batch in loader)
        seconds = time.perf_counter() - t + (setup_s if epoch == 0 else 0.0)
        rates.append(n / seconds)
    return {"cache": cache, "workers": workers, "images": n, "setup_s": round(setup_s, 2),
            "first_epoch_img_s": round(rates[0], 1),
            "later_epochs_img_s": round(sum(rates[1:]) / max(1, len(rates) - 1), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="elpv", choices=["elpv", "synthetic"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    dataset = OmegaConf.to_container(OmegaConf.load(f"conf/dataset/{args.dataset}.yaml"))
    if args.dataset == "synthetic":
        dataset["root"] = tempfile.mkdtemp()
        t = time.perf_counter()
        ensure_tree(__import__("pathlib").Path(dataset["root"]), dataset)
        print(json.dumps({"synthetic_generation_s": round(time.perf_counter() - t, 3)}))
    for cache in ("memory", "none"):
        for workers in args.workers:
            print(json.dumps(run(dataset, args.image_size, workers, cache, args.epochs)))


if __name__ == "__main__":
    main()
