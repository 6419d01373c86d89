"""Checks before a run trains or tests: each stops a config that cannot work with the key named
and the fix, before any time is spent: errors are raised where the bad input enters."""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from adlab.compose import ConfigError
from adlab.data import AnomalyDataModule
from adlab.data.batch import BATCH_KEY_SOURCES
from adlab.methods.base import DistillationMethod
from adlab.resources import Launch


def check_precision(cfg: DictConfig, method: DistillationMethod, training: bool = True) -> None:
    """bf16 only where it was measured to give float32's metrics: the method's `bf16_training`
    (adlab.run trains and tests in it) or `bf16_testing` (adlab.evaluate only tests)."""
    precision = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    if "bf16" not in precision:
        return
    cls = type(method)
    flag = "bf16_training" if training else "bf16_testing"
    where = f"{cls.__module__}.{cls.__name__}.{flag}"
    if precision not in ("bf16-mixed", "bf16"):
        raise ConfigError(
            f"trainer.precision={precision}: adlab measured only bf16-mixed (float32 weights, "
            "bf16 autocast); use trainer.precision=bf16-mixed where a method offers it, or "
            "32-true (the default)."
        )
    if not getattr(cls, flag) and not cfg.get("allow_bf16", False):
        what = "training" if training else "testing"
        testing = (
            " (bf16 testing of a float32-trained model is: adlab.evaluate ckpt=... "
            "trainer.precision=bf16-mixed)"
            if training and cls.bf16_testing
            else ""
        )
        raise ConfigError(
            f"trainer.precision={precision} is not offered for {what} {cls.__name__} ({where} "
            f"is False; measured: {cls.bf16_note}). bf16 is offered where its metrics agree "
            f"with float32 within 0.5 AUROC points: use trainer.precision=32-true (the default)"
            f"{testing}, or to measure it add allow_bf16=true (experiments/bench/gpu.py does) "
            f"and set {where} with the figures."
        )


def check_batch_keys(method: DistillationMethod, datamodule: AnomalyDataModule) -> None:
    """Fail before training when the data does not provide what the method trains on."""
    missing = [k for k in method.required_batch_keys if k not in datamodule.batch_keys("train")]
    if missing:
        hints = "; ".join(
            f"{k}: {BATCH_KEY_SOURCES.get(k, 'no data component adds it')}" for k in missing
        )
        raise ConfigError(
            f"{type(method).__name__} trains on batch keys {missing} that this data does not "
            f"provide ({hints})"
        )


def check_processes(trainer: pl.Trainer, launch: Launch) -> None:
    """Lightning starts the other DDP ranks by re-running the command line, which in a multirun
    (-m) would restart the whole sweep; on SLURM the ranks are SLURM's tasks instead."""
    if launch.sweep_dir and trainer.world_size > 1 and trainer.strategy.launcher is not None:
        raise ConfigError(
            f"trainer.devices={trainer.num_devices} with DDP inside a multirun (-m): Lightning "
            "would re-run the sweep for each rank. Run DDP jobs one at a time (without -m), or "
            "on SLURM with hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node=<devices> "
            "(SLURM starts the ranks)."
        )


def check_references(method: DistillationMethod, datamodule, training: bool = True) -> None:
    """Before training or testing: a few-shot method needs support sets (or stored ones); a
    method that trains on the k-shot draw itself takes one seed per run."""
    sets = datamodule.reference_sets()
    if method.references_needed and not sets and not method.model.has_references():
        raise ConfigError(
            f"{type(method).__name__} scores against reference images, but sampler="
            f"{datamodule.sampler.get('name')} gives none: use sampler=kshot"
        )
    if training and not method.references_needed and len(sets) > 1:
        raise ConfigError(
            f"{type(method).__name__} trains on the k-shot images themselves, one model per "
            f"draw, but sampler.seeds={[s.seed for s in sets]} asks for {len(sets)}: run one "
            "job per seed (-m sampler.seeds=[0],[1],[2]); adlab.report averages them."
        )
