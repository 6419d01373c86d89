"""One pipeline for every entry point: fit, test and write a run (or test a checkpoint).

`adlab.run` and `adlab.evaluate` call these two functions; what they build comes from
adlab.compose, what they refuse from adlab.preflight, what they write from adlab.outputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from adlab.allocator import keep_freed_memory
from adlab.callbacks.checkpoints import LastCheckpoint, resume_path
from adlab.callbacks.results import git_revision
from adlab.callbacks.resume import ExactResume
from adlab.callbacks.synthesis_grid import grid_callbacks
from adlab.callbacks.timing import PhaseTimer
from adlab.compose import (
    ConfigError,
    build_datamodule,
    build_method,
    load_checkpoint,
    method_from_checkpoint,
    model_config,
)
from adlab.data.synthesis import checkpoint_epoch
from adlab.methods.base import Diverged
from adlab.methods.cache_policy import plan_fit
from adlab.objective import check_objective, validation_metrics
from adlab.outputs import dataset_provenance, write_outputs
from adlab.preflight import check_batch_keys, check_precision, check_processes, check_references
from adlab.reference_tests import store_references, test_per_reference_set
from adlab.resources import Launch, apply_resources, parallel_jobs
from adlab.tracking import finish_wandb, group_name, make_loggers


def launch_context() -> Launch:
    """What Hydra's launcher tells this job (number, parallel jobs, CPUs, sweep dir)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except ValueError:  # composed without @hydra.main
        return Launch()
    experiment = hydra_cfg.runtime.choices.get("experiment")
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return Launch(experiment=experiment)
    return Launch(
        job_num=int(hydra_cfg.job.num),
        parallel_jobs=parallel_jobs(OmegaConf.select(hydra_cfg, "launcher.n_jobs")),
        cpus_per_job=OmegaConf.select(hydra_cfg, "launcher.cpus_per_task"),
        sweep_dir=str(hydra_cfg.sweep.dir),
        experiment=experiment,
    )


def trainer_kwargs(cfg: DictConfig) -> dict:
    """Trainer arguments from the trainer group (null values are left to Lightning)."""
    return {k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if v is not None}


def best_checkpoint(cfg: DictConfig, run_dir: Path, valid: dict) -> ModelCheckpoint | None:
    """With select=best_val, best.ckpt by validation AUROC (a split with anomalies, e.g. BMAD's)
    or by validation loss (a normal-only split from val_fraction); None with select=last."""
    if cfg.select == "last":
        return None
    if cfg.select != "best_val":
        raise ConfigError(f"select must be 'last' or 'best_val', got {cfg.select!r}")
    if not valid["normal"] + valid["anomalous"]:
        raise ConfigError(
            "select=best_val needs a validation split: this dataset has none. Set "
            "dataset.val_fraction (e.g. 0.1) or use select=last."
        )
    both = valid["normal"] and valid["anomalous"]
    monitor, mode = ("val/image_auroc", "max") if both else ("val/loss", "min")
    return ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_top_k=1, monitor=monitor, mode=mode, filename="best"
    )


def train_and_test(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> dict:
    """One job: train, test and write results.json, overlays and the PRO curve to run_dir."""
    started = time.perf_counter()
    launch = launch_context()
    apply_resources(cfg, launch)
    keep_freed_memory(cfg.get("resources", {}).get("keep_freed_memory", True))
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    method = build_method(cfg)
    check_precision(cfg, method)
    check_batch_keys(method, datamodule)
    check_references(method, datamodule)
    config = OmegaConf.to_container(cfg, resolve=True)
    provenance = {
        "git": git_revision(),
        "weights": method.weights_sources(),
        "dataset": dataset_provenance(datamodule),
    }
    group = group_name(launch.sweep_dir) or launch.experiment
    loggers = make_loggers(
        cfg.logger, run_dir, cfg.run_name, {**config, "provenance": provenance}, group
    )
    ckpt_path = resume_path(cfg.ckpt_path, cfg.get("resume", "auto"), run_dir)
    train_loader = datamodule.train_dataloader(epoch=checkpoint_epoch(ckpt_path))
    best = best_checkpoint(cfg, run_dir, datamodule.summary()["valid"])
    check_objective(cfg.get("objective"), datamodule.summary()["valid"])
    every = cfg.get("checkpoint") or {}
    last = LastCheckpoint(
        run_dir / "checkpoints", every.get("every_n_steps"), every.get("every_minutes")
    )
    timer = PhaseTimer()
    grid = grid_callbacks(datamodule.batch_keys("train"), run_dir, cfg.data.normalize)
    trainer = pl.Trainer(
        **{**trainer_kwargs(cfg), **method.trainer_arguments(len(train_loader))},
        logger=loggers,
        callbacks=[last, ExactResume(train_loader), timer, *grid, *([best] if best else [])],
        enable_checkpointing=best is not None,
        default_root_dir=str(run_dir),
    )
    check_processes(trainer, launch)
    plan_fit(method, datamodule, trainer, train_loader)  # teacher_cache_gib=auto: exact and fits?
    outputs = (cfg, run_dir, method, loggers, timer, provenance, config, started)
    try:
        try:
            with last.stop_on_signals():
                trainer.fit(
                    method,
                    train_dataloaders=train_loader,
                    val_dataloaders=datamodule.val_dataloader(),
                    ckpt_path=ckpt_path,
                )
        except Diverged as err:
            write_outputs(
                *outputs,
                status="diverged",
                divergence=err.info,
                error=str(err),
                overrides=overrides or [],
            )
            raise
        validation = validation_metrics(trainer.callback_metrics)  # before test resets them
        tested = best.best_model_path if best is not None else None
        per_set = test_per_reference_set(trainer, method, datamodule, loggers, run_dir, tested)
        if method.references_needed:
            store_references(Path(tested or last.path), method)
        results = write_outputs(
            *outputs,
            status="completed",
            overrides=overrides or [],
            selected=tested or "last",
            validation=validation,
            epochs=trainer.current_epoch,
            checkpoint=str(last.path),
            **per_set,
        )
    finally:
        finish_wandb(loggers)
    return results


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None):
    """Test a trained checkpoint on the configured dataset, without training."""
    started = time.perf_counter()
    launch = launch_context()
    apply_resources(cfg, launch)
    ckpt = load_checkpoint(cfg.ckpt)
    cfg = model_config(cfg, ckpt["adlab_config"])
    pl.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    method = method_from_checkpoint(ckpt, cfg)
    check_precision(cfg, method, training=False)
    check_references(method, datamodule, training=False)
    config = OmegaConf.to_container(cfg, resolve=True)
    provenance = {
        "git": git_revision(),
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "dataset": dataset_provenance(datamodule),
    }
    loggers = make_loggers(
        cfg.logger,
        run_dir,
        cfg.run_name,
        {**config, "provenance": provenance},
        group_name(launch.sweep_dir) or launch.experiment,
    )
    timer = PhaseTimer()
    args = trainer_kwargs(cfg)
    args.pop("max_epochs", None)
    trainer = pl.Trainer(**args, logger=loggers, callbacks=[timer], default_root_dir=str(run_dir))
    try:
        per_set = test_per_reference_set(trainer, method, datamodule, loggers, run_dir)
        results = write_outputs(
            cfg,
            run_dir,
            method,
            loggers,
            timer,
            provenance,
            config,
            started,
            status="completed",
            overrides=overrides or [],
            **per_set,
        )
    finally:
        finish_wandb(loggers)
    return results
