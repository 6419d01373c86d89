"""Entry point: compose the config, build data and method, train, test, write results.

python -m adlab.run method=rd4ad dataset=elpv
python -m adlab.run -m method=rd4ad dataset=synthetic seed=0,1
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from adlab.callbacks.results import git_revision, peak_memory, write_json
from adlab.callbacks.timing import PhaseTimer
from adlab.callbacks.visualize import write_overlays
from adlab.data import AnomalyDataModule
from adlab.methods.base import DistillationMethod
from adlab.paths import CONF_DIR
from adlab.tracking import finish_wandb, make_loggers

log = logging.getLogger("adlab")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


def build_datamodule(cfg: DictConfig) -> AnomalyDataModule:
    return AnomalyDataModule(
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
    )


def build_method(cfg: DictConfig) -> DistillationMethod:
    """Compose the method from its groups: teacher, fusion and student configs are instantiated
    here and completed by the method with the shapes it derives from the teacher."""
    method = instantiate(
        cfg.method,
        teacher=instantiate(cfg.teacher),
        fusion=instantiate(cfg.fusion),
        student=instantiate(cfg.student),
        evaluation=cfg.eval,
        _recursive_=False,
        _convert_="all",
    )
    size = cfg.data.crop_size or cfg.image_size
    divisor = method.input_divisor
    nearest = max(divisor, size // divisor * divisor)
    if size % divisor:
        key = "data.crop_size" if cfg.data.crop_size else "image_size"
        raise ConfigError(
            f"{key}={size} is not divisible by {divisor}, the total stride of this teacher and "
            f"bottleneck; use a multiple of {divisor} such as {nearest}."
        )
    method.run_config = OmegaConf.to_container(cfg, resolve=True)
    return method


def trainer_kwargs(cfg: DictConfig) -> dict:
    """Trainer arguments from the trainer group (null values are left to Lightning)."""
    return {k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if v is not None}


def _checkpoint_callback(cfg: DictConfig, run_dir: Path, valid: dict) -> ModelCheckpoint:
    """last.ckpt always; with select=best_val also best.ckpt by validation AUROC (a split with
    anomalies, e.g. BMAD's) or by validation loss (a normal-only split from val_fraction)."""
    if cfg.select == "best_val":
        if not valid["normal"] + valid["anomalous"]:
            raise ConfigError(
                "select=best_val needs a validation split: this dataset has none. Set "
                "dataset.val_fraction (e.g. 0.1) or use select=last."
            )
        both = valid["normal"] and valid["anomalous"]
        monitor, mode = ("val/image_auroc", "max") if both else ("val/loss", "min")
        return ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            save_last=True,
            save_top_k=1,
            monitor=monitor,
            mode=mode,
            filename="best",
        )
    if cfg.select != "last":
        raise ConfigError(f"select must be 'last' or 'best_val', got {cfg.select!r}")
    return ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One job: train, test and write results.json, overlays and the PRO curve to run_dir."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    method = build_method(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    provenance = {
        "git": git_revision(),
        "weights": method.weights_sources(),
        "dataset": dataset_provenance(datamodule),
    }
    loggers = make_loggers(cfg.logger, run_dir, cfg.run_name, {**config, "provenance": provenance})
    val_loader = datamodule.val_dataloader()
    ckpt = _checkpoint_callback(cfg, run_dir, datamodule.summary()["valid"])
    timer = PhaseTimer()
    trainer = pl.Trainer(
        **trainer_kwargs(cfg),
        logger=loggers,
        callbacks=[ckpt, timer],
        default_root_dir=str(run_dir),
    )
    try:
        trainer.fit(
            method,
            train_dataloaders=datamodule.train_dataloader(),
            val_dataloaders=val_loader,
            ckpt_path=cfg.ckpt_path,
        )
        tested = ckpt.best_model_path if cfg.select == "best_val" else None
        trainer.test(
            method, dataloaders=datamodule.test_dataloader(), ckpt_path=tested, verbose=False
        )
        results = write_outputs(
            cfg,
            run_dir,
            method,
            loggers,
            timer,
            provenance,
            config,
            started,
            selected=tested or "last",
            epochs=trainer.current_epoch,
            checkpoint=str(run_dir / "checkpoints" / "last.ckpt"),
        )
    finally:
        finish_wandb(loggers)
    return results


def write_outputs(cfg, run_dir, method, loggers, timer, provenance, config, started, **extra):
    """Overlays (also to W&B), the PRO curve and results.json of a finished test phase."""
    overlays = write_overlays(method.visuals, run_dir / "anomaly_maps", cfg.data.normalize)
    for lg in loggers:
        if hasattr(lg, "log_image") and overlays:
            lg.log_image(
                key="test/anomaly_maps",
                images=[str(p) for p, _ in overlays],
                caption=[c for _, c in overlays],
            )
    if method.evaluator is not None and "aupro" in method.test_results:
        method.evaluator.save_pro_curve(run_dir)
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
    write_json(run_dir / "results.json", results)
    _print_summary(results)
    return results


def dataset_provenance(datamodule) -> dict:
    return {
        "root": str(datamodule.root),
        "fingerprint": datamodule.fingerprint,
        "summary": datamodule.summary(),
        "skipped": list(datamodule.skipped),
    }


def _print_summary(results: dict) -> None:
    def line(metrics: dict) -> str:
        return "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())

    print(f"\n[adlab] {results['method']}: {line(results['metrics'])}")
    for category, values in results["metrics_per_category"].items():
        print(f"[adlab]   {category}: {line(values)}")
    print(f"[adlab] outputs: {results['run_dir']} (results.json, anomaly_maps/, checkpoints/)")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    results = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    return results["metrics"].get("image_auroc")


if __name__ == "__main__":
    main()
