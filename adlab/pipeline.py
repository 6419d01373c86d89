"""One pipeline for every entry point: build data and method from a config, fit, test, write.

`adlab.run`, `adlab.evaluate`, `adlab.load_model` and the tests go through these functions, so a
method composes, trains and is evaluated the same way everywhere. This module (with the entry
points) is the only place that instantiates Hydra configs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from adlab.allocator import keep_freed_memory
from adlab.callbacks.checkpoints import LastCheckpoint, resume_path
from adlab.callbacks.results import git_revision, peak_memory, write_json
from adlab.callbacks.resume import ExactResume
from adlab.callbacks.run_figures import write_run_figures
from adlab.callbacks.synthesis_grid import grid_callbacks
from adlab.callbacks.timing import PhaseTimer
from adlab.data import AnomalyDataModule
from adlab.data.batch import BATCH_KEY_SOURCES
from adlab.data.lodo import with_protocol
from adlab.data.synthesis import checkpoint_epoch
from adlab.methods.base import DistillationMethod, Diverged, with_model_prefix
from adlab.methods.cache_policy import plan_fit
from adlab.models.features import CompositionError
from adlab.objective import check_objective, validation_metrics
from adlab.paths import CONF_DIR
from adlab.reference_tests import store_references, test_per_reference_set
from adlab.resources import Launch, apply_resources, parallel_jobs
from adlab.summary import run_warnings, summary_lines
from adlab.tracking import finish_wandb, group_name, log_pro_curve, log_summary, make_loggers

log = logging.getLogger("adlab")

# The config groups that define a trained model (taken from a checkpoint, never re-chosen).
MODEL_GROUPS = ("method", "teacher", "fusion", "student")
MODEL_KEYS = (*MODEL_GROUPS, "method_name", "image_size")
TRANSFORM_KEYS = ("crop_size", "resample", "normalize")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


# --- building ---------------------------------------------------------------------------------
def build_datamodule(cfg: DictConfig) -> AnomalyDataModule:
    """The dataset's datamodule, or with protocol=lodo the one that trains on the other members."""
    target = AnomalyDataModule(
        dataset=cfg.dataset,
        sampler=cfg.sampler,
        image_size=cfg.image_size,
        crop_size=cfg.data.crop_size,
        resample=cfg.data.resample,
        normalize=cfg.data.normalize,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
        allow_one_class=cfg.eval.get("allow_one_class", False),
        synthesis=cfg.get("synthesis"),
        high_bit_depth=cfg.data.get("high_bit_depth", "minmax"),
    )
    protocol = OmegaConf.select(cfg, "protocol", default=None)
    protocol = OmegaConf.to_container(protocol, resolve=True) if protocol is not None else None
    return with_protocol(target, protocol, Path(CONF_DIR) / "dataset")


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """The option chosen for each model group (Hydra's choice, else the class name)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = dict(HydraConfig.get().runtime.choices)
    except ValueError:  # composed without @hydra.main (tests, load_model)
        choices = dict(OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {})
    out = {}
    for group in MODEL_GROUPS:
        target = str(OmegaConf.select(cfg, f"{group}._target_", default="?"))
        out[group] = str(choices.get(group) or target.rsplit(".", 1)[-1])
    return out


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


def build_method(cfg: DictConfig) -> DistillationMethod:
    """Compose the method from its groups. Teacher, fusion and student configs are instantiated
    here; the network completes fusion and student with the teacher's feature description."""
    try:
        method = instantiate(
            cfg.method,
            teacher=instantiate(cfg.teacher),
            fusion=instantiate(cfg.fusion),
            student=instantiate(cfg.student),
            evaluation=cfg.eval,
            _recursive_=False,
            _convert_="all",
        )
    except Exception as err:  # Hydra wraps what the constructors raise
        cause = composition_cause(err)
        if cause is None:
            raise
        groups = ", ".join(f"{g}={c}" for g, c in group_choices(cfg).items())
        raise ConfigError(f"these groups do not compose ({groups}): {cause}") from err
    check_input_size(cfg, method.input_divisor)
    method.run_config = OmegaConf.to_container(cfg, resolve=True)
    return method


def composition_cause(err: BaseException | None) -> CompositionError | None:
    """The CompositionError behind an instantiation error, if there is one."""
    while err is not None:
        if isinstance(err, CompositionError):
            return err
        err = err.__cause__
    return None


def check_input_size(cfg: DictConfig, divisor: int) -> None:
    size = cfg.data.crop_size or cfg.image_size
    nearest = max(divisor, size // divisor * divisor)
    if size % divisor:
        key = "data.crop_size" if cfg.data.crop_size else "image_size"
        raise ConfigError(
            f"{key}={size} is not divisible by {divisor}, the total stride of this teacher and "
            f"bottleneck; use a multiple of {divisor} such as {nearest}."
        )


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


def trainer_kwargs(cfg: DictConfig) -> dict:
    """Trainer arguments from the trainer group (null values are left to Lightning)."""
    return {k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if v is not None}


# --- checkpoints --------------------------------------------------------------------------------
def no_downloads(config: Any) -> Any:
    """A teacher config that builds without fetching weights (they come from a checkpoint):
    every `pretrained` becomes false and every VMamba `weights` null, at any depth."""
    if isinstance(config, Mapping):
        out = {k: no_downloads(v) for k, v in config.items()}
        if "pretrained" in out:
            out["pretrained"] = False
        if "weights" in out and "VMamba" in str(out.get("_target_", "")):
            out["weights"] = None
        return out
    if isinstance(config, list):
        return [no_downloads(v) for v in config]
    return config


def load_checkpoint(path: str | Path) -> dict:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"ckpt={path}: no such file. Pass a last.ckpt from a run's checkpoints/.")
    ckpt = torch.load(file, map_location="cpu", weights_only=False)
    if not ckpt.get("adlab_config"):
        raise ConfigError(f"ckpt={path} was not written by adlab.run (no adlab_config inside).")
    return ckpt


def model_config(cfg: DictConfig | Mapping, stored: Mapping) -> DictConfig:
    """The config with the model-defining keys replaced by those stored in a checkpoint."""
    merged = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    merged = dict(merged)
    compile_now = bool((merged.get("method") or {}).get("compile", False))
    for key in MODEL_KEYS:
        merged[key] = stored[key]
    # method.compile is how this process runs the network, not part of it: the caller's choice
    merged["method"] = {**merged["method"], "compile": compile_now}
    merged["data"] = {**merged.get("data", {}), **{k: stored["data"][k] for k in TRANSFORM_KEYS}}
    merged["teacher"] = no_downloads(merged["teacher"])  # weights come from the checkpoint
    return OmegaConf.create(merged)


def method_from_checkpoint(ckpt: Mapping, cfg: DictConfig | None = None) -> DistillationMethod:
    """Rebuild the method stored in a checkpoint (its own config unless `cfg` is given) and load
    its weights strictly."""
    stored = ckpt["adlab_config"]
    method = build_method(model_config(cfg if cfg is not None else stored, stored))
    method.load_state_dict(with_model_prefix(ckpt["state_dict"]), strict=True)
    return method


# --- phases -------------------------------------------------------------------------------------
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


# --- outputs ------------------------------------------------------------------------------------
def write_outputs(cfg, run_dir, method, loggers, timer, provenance, config, started, **extra):
    """Figures (also to W&B), the PRO curve and results.json of a finished test phase; under
    DDP only rank 0 writes (every rank returns the results)."""
    results = {
        "method": cfg.method_name,
        "run_name": cfg.run_name,
        "run_dir": str(run_dir),
        "metrics": method.test_results,
        "metrics_per_category": method.test_results_by_category,  # {} for a single class
        **extra,
        "provenance": provenance,
        "timings": {**timer.summary(), "wall_s": time.perf_counter() - started},
        "memory": peak_memory(),
        "config": config,
    }
    results["warnings"] = run_warnings(results)
    if method.global_rank != 0:
        return results
    figures = {}
    if method.evaluator is not None and method.evaluator.num_images:
        scores, labels = method.evaluator.image_scores()
        figures = write_run_figures(
            run_dir,
            method.visuals,
            method.worst,
            scores,
            labels,
            method.evaluator.image_threshold(),
            cfg.data.normalize,
            figure_note(provenance),
        )
    if method.evaluator is not None and "aupro" in method.test_results:
        _, png = method.evaluator.save_pro_curve(run_dir)
        figures["test/pro_curve"] = [(png, "PRO curve")]
        log_pro_curve(loggers, *method.evaluator.pro_curve())
    for lg in loggers:
        for key, images in figures.items() if hasattr(lg, "log_image") else ():
            lg.log_image(
                key=key, images=[str(p) for p, _ in images], caption=[c for _, c in images]
            )
    log_summary(loggers, results["metrics"])
    write_json(run_dir / "results.json", results)
    finish_wandb(loggers)  # W&B's closing lines before the summary, not after it
    print_summary(results)
    return results


def dataset_provenance(datamodule) -> dict:
    return {
        "root": str(datamodule.root),
        "fingerprint": datamodule.fingerprint,
        "summary": datamodule.summary(),
        "skipped": list(datamodule.skipped),
    }


def figure_note(provenance: dict) -> str:
    """A line printed on every figure of a run whose teacher was not pretrained."""
    weights = " ".join(map(str, (provenance.get("weights") or {}).values()))
    return (
        "RANDOM TEACHER (not pretrained): these maps are not meaningful"
        if "random" in weights
        else ""
    )


def print_summary(results: dict) -> None:
    """The end-of-run block (adlab.summary): metrics, outputs and every degraded condition."""
    print("\n".join(summary_lines(results)))
