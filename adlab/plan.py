"""What a benchmark will cost before it is launched: jobs, images per job, measured time.

    python -m adlab.plan experiment=bench_medical [benchmark.roots.<set>=<folder> ...]
    python -m adlab.plan experiment=bench_industrial --no-time      # counts only

The jobs are the ones `python -m adlab.run -m` with the same arguments launches (the same
expansion, adlab.benchmark). Images come from the headers-only data check. Time is measured on
this machine: for each row and setting (image size, batch size), a few real training steps
(Lightning, the method's own optimisers) on random tensors with random weights, and one test
batch; then per job: steps x time per step (+ validation and test images x time per image).
Steps = epochs x ceil(train images / batch), or the method's iterations (URD).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from adlab.benchmark import Job, PlanError, needs_of, split_user_overrides
from adlab.data.presence import inspect, missing_report
from adlab.paths import CONF_DIR
from adlab.sweeper import plan_jobs, refuse_sweeps

SEED_KEYS = ("seed=", "sampler.seeds=", "bench=")


@dataclass
class Cost:
    """One job's images and estimated seconds (None: its data is missing)."""

    train: int | None
    steps: int | None
    valid: int
    test: int
    seconds: float | None


def random_weights(cfg: DictConfig) -> None:
    """Every teacher without downloads: pretrained false, VMamba weights null (timing only)."""

    def walk(node) -> None:
        for key in list(node.keys()):
            value = node[key]
            if key == "pretrained":
                node[key] = False
            elif key == "weights" and isinstance(value, str):
                node[key] = None
            elif OmegaConf.is_dict(value):
                walk(value)

    with open_dict(cfg):
        walk(cfg.teacher)


def random_batch(method, size: int, batch: int, shots: int) -> dict:
    """A batch with every key the method trains on, random pixels."""
    g = torch.Generator().manual_seed(0)
    out = {
        "image": torch.rand(batch, 3, size, size, generator=g),
        "label": torch.zeros(batch, dtype=torch.long),
        "path": [f"random{i}" for i in range(batch)],
    }
    keys = method.required_batch_keys
    if "support" in keys:
        out["support"] = torch.rand(batch, max(shots, 1), 3, size, size, generator=g)
    if "augmented" in keys:
        out["augmented"] = torch.rand(batch, 3, size, size, generator=g)
    if "synthetic_mask" in keys:
        out["synthetic_mask"] = (torch.rand(batch, 1, size, size, generator=g) > 0.9).float()
    return out


def measure(cfg: DictConfig, steps: int = 3) -> tuple[float, float]:
    """(seconds per training step, seconds per test image) of one job's config, measured: a
    Lightning fit of `steps` batches (the first one discarded as warm-up), then one test batch."""
    import pytorch_lightning as pl

    from adlab.compose import build_method

    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the table is the output

    random_weights(cfg)
    with open_dict(cfg):
        cfg.method_name, cfg.run_name = "plan", "plan"  # ${hydra:...} outside a Hydra run
    method = build_method(cfg)
    size, batch = int(cfg.data.crop_size or cfg.image_size), int(cfg.data.batch_size)
    shots = int(OmegaConf.select(cfg, "sampler.shots", default=0) or 0)
    data = [random_batch(method, size, batch, shots) for _ in range(steps)]
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            self.t = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            times.append(time.perf_counter() - self.t)

    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=steps, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Clock()], num_sanity_val_steps=0,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    trainer.fit(method, train_dataloaders=loader)
    method.eval()
    eval_batch = int(cfg.data.eval_batch_size)
    images = torch.rand(eval_batch, 3, size, size)
    if method.references_needed:
        method.set_references(torch.rand(max(shots, 1), 3, size, size))
    device = next(method.parameters()).device
    tic = time.perf_counter()
    method.predict_maps(images.to(device))
    per_image = (time.perf_counter() - tic) / eval_batch
    return statistics.median(times[1:] or times), per_image


def settings_key(job: Job) -> tuple:
    """Jobs that differ only by seed share their config (composed and measured once)."""
    return tuple(o for o in job.overrides if not o.startswith(SEED_KEYS))


def job_cost(cfg: DictConfig, job: Job, counts: dict, timing: tuple[float, float] | None) -> Cost:
    info = counts.get(job.needs[0])
    if info is None or "error" in info:
        return Cost(None, None, 0, 0, None)
    members = OmegaConf.select(cfg, "protocol.members", default=None)
    lodo = OmegaConf.select(cfg, "protocol.name", default="single") == "lodo"
    if lodo:
        others = [n for n in job.needs[1:] if n.dataset in (members or [])]
        train = sum(counts[n]["train"]["normal"] for n in others if "error" not in counts[n])
    elif OmegaConf.select(cfg, "sampler.name") == "kshot":
        train = int(cfg.sampler.shots)
    else:
        train = info["train"]["normal"]
    batch = int(cfg.data.batch_size)
    batches = max(1, train // batch if lodo else math.ceil(train / batch))
    iterations = OmegaConf.select(cfg, "method.iterations", default=None)
    epochs = math.ceil(iterations / batches) if iterations else int(cfg.trainer.max_epochs)
    steps = int(iterations) if iterations else epochs * batches
    valid = sum(info["valid"].values()) if cfg.get("select") == "best_val" else 0
    support_sets = len(cfg.sampler.seeds) if lodo else 1
    test = sum(info["test"].values()) * support_sets
    seconds = None
    if timing is not None:
        step, per_image = timing
        seconds = steps * step + (valid * epochs + test) * per_image
    return Cost(train, steps, valid * epochs, test, seconds)


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.1f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adlab.plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", help="experiment=bench_medical and overrides")
    parser.add_argument("--no-time", action="store_true", help="counts only, no measurement")
    parser.add_argument(
        "--steps", type=int, default=3, help="training steps timed (first: warm-up)"
    )
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        try:
            refuse_sweeps(split_user_overrides(args.overrides))
            root = compose("config", overrides=args.overrides)
            jobs = plan_jobs(root, args.overrides)
        except (PlanError, HydraException) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        counts = {need: inspect(need) for need in needs_of(jobs)}
        configs: dict[tuple, DictConfig] = {}
        for job in jobs:
            key = settings_key(job)
            if key not in configs:
                configs[key] = compose("config", overrides=job.overrides)
    timings: dict[tuple, tuple[float, float]] = {}
    measured_by: dict[tuple, tuple] = {}
    if not args.no_time:
        for key, cfg in configs.items():
            data = cfg.data
            shots = OmegaConf.select(cfg, "sampler.shots")
            size = (
                cfg.method._target_,
                cfg.image_size,
                data.batch_size,
                data.eval_batch_size,
                shots,
            )
            if size not in timings:
                timings[size] = measure(cfg.copy(), args.steps)
            measured_by[key] = size
    rows: dict[tuple[str, str], list[tuple[Job, Cost]]] = defaultdict(list)
    for job in jobs:
        key = settings_key(job)
        cost = job_cost(configs[key], job, counts, timings.get(measured_by.get(key)))
        rows[(job.row, job.dataset)].append((job, cost))
    print(report(root.benchmark.name, jobs, rows, timings, counts, configs))
    return 0


def report(name, jobs, rows, timings, counts, configs) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    present = sum(1 for items in rows.values() for _, c in items if c.train is not None)
    out = [f"benchmark {name}: {len(jobs)} jobs ({present} with their data present)", ""]
    out.append("| row | dataset | jobs | train images | steps | val+test images | per job | all |")
    out.append("|---|---|---|---|---|---|---|---|")
    total, unknown = 0.0, 0
    for (row, dataset), items in rows.items():
        costs = [c for _, c in items]
        known = [c.seconds for c in costs if c.seconds is not None]
        unknown += len(costs) - len(known)
        total += sum(known)
        first = costs[0]
        train = "missing" if first.train is None else str(first.train)
        steps = "-" if first.steps is None else str(first.steps)
        per_job = hours(statistics.fmean(known)) if known else "?"
        out.append(
            f"| {row} | {dataset} | {len(items)} | {train} | {steps} | "
            f"{first.valid + first.test} | {per_job} | {hours(sum(known)) if known else '?'} |"
        )
    out.append("")
    if timings:
        skipped = f" ({unknown} jobs without data not counted)" if unknown else ""
        out.append(f"estimated total: {hours(total)} of compute on {device}{skipped}")
        out.append("measured on this machine, random weights and random tensors, per method and")
        out.append("setting (image size, batch): median of the timed Lightning training steps, one")
        out.append("test batch; job = steps x step + (validation x epochs + test) images x image.")
        for (target, size, batch, eval_batch, shots), (step, image) in timings.items():
            what = target.rsplit(".", 1)[-1] + (
                f" {shots}-shot" if shots and "D24FAD" in target else ""
            )
            out.append(
                f"  {what} at {size} px, batch {batch} (test {eval_batch}): {step:.3f} s/step, "
                f"{image * 1000:.1f} ms/test image"
            )
    missing = {n: r for n, r in counts.items() if "error" in r}
    if missing:
        out += ["", missing_report(missing)]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
