"""Evaluate a trained checkpoint on a dataset, without training.

python -m adlab.evaluate ckpt=outputs/.../checkpoints/last.ckpt dataset=synthetic
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from adlab.callbacks.results import git_revision
from adlab.callbacks.timing import PhaseTimer
from adlab.paths import CONF_DIR
from adlab.run import (
    ConfigError,
    build_datamodule,
    build_method,
    dataset_provenance,
    trainer_kwargs,
    write_outputs,
)
from adlab.tracking import finish_wandb, make_loggers

# Keys that define the trained model: taken from the checkpoint, never from the command line.
MODEL_KEYS = ("method", "method_name", "teacher", "fusion", "student", "image_size")
TRANSFORM_KEYS = ("crop_size", "resample", "normalize")


def model_config(cfg: DictConfig, stored: dict) -> DictConfig:
    """The run config with the model-defining keys replaced by those stored in the checkpoint."""
    merged = OmegaConf.to_container(cfg, resolve=True)
    for key in MODEL_KEYS:
        merged[key] = stored[key]
    for key in TRANSFORM_KEYS:
        merged["data"][key] = stored["data"][key]
    merged["teacher"] = {**merged["teacher"], "pretrained": False}  # weights come from the ckpt
    return OmegaConf.create(merged)


def load_checkpoint(path: str) -> dict:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"ckpt={path}: no such file. Pass a last.ckpt from a run's checkpoints/.")
    ckpt = torch.load(file, map_location="cpu", weights_only=False)
    if not ckpt.get("adlab_config"):
        raise ConfigError(f"ckpt={path} was not written by adlab.run (no adlab_config inside).")
    return ckpt


def evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    started = time.perf_counter()
    ckpt = load_checkpoint(cfg.ckpt)
    cfg = model_config(cfg, ckpt["adlab_config"])
    pl.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    method = build_method(cfg)
    method.load_state_dict(ckpt["state_dict"], strict=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    provenance = {
        "git": git_revision(),
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "dataset": dataset_provenance(datamodule),
    }
    loggers = make_loggers(cfg.logger, run_dir, cfg.run_name, {**config, "provenance": provenance})
    timer = PhaseTimer()
    trainer_args = trainer_kwargs(cfg)
    trainer_args.pop("max_epochs", None)
    trainer = pl.Trainer(
        **trainer_args, logger=loggers, callbacks=[timer], default_root_dir=str(run_dir)
    )
    try:
        trainer.test(method, dataloaders=datamodule.test_dataloader(), verbose=False)
        results = write_outputs(cfg, run_dir, method, loggers, timer, provenance, config, started)
    finally:
        finish_wandb(loggers)
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))["metrics"].get("image_auroc")


if __name__ == "__main__":
    main()
