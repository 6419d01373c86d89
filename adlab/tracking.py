"""Experiment loggers: W&B (online when logged in, offline files otherwise) and CSV (always).

W&B is the sweep dashboard: the jobs of a sweep share a group (the sweep directory), carry tags
to filter by (method, dataset, category, shots), and end with their test metrics in the run
summary (the runs table sorts by them) and the PRO curve as a line plot.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger


def wandb_logged_in() -> bool:
    """True when wandb has credentials: WANDB_API_KEY or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(requested: str) -> str:
    """Resolve `logger.mode` (auto | online | offline); WANDB_MODE in the environment wins."""
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    if requested not in ("auto", "online", "offline"):
        raise ValueError(f"logger.mode must be auto, online or offline, got {requested!r}")
    if requested == "auto":
        return "online" if wandb_logged_in() else "offline"
    return requested


def group_name(sweep_dir: str | Path | None) -> str | None:
    """The W&B group of a sweep: its directory as an absolute path (W&B allows 128 characters;
    longer paths keep their end). `adlab.report <dir> --wandb` uses the same name."""
    if not sweep_dir:
        return None
    return str(Path(sweep_dir).resolve())[-128:]


def run_tags(config: Mapping) -> list[str]:
    """Tags to filter a sweep's runs by: method, dataset, category (when set) and shots."""
    dataset = config.get("dataset") or {}
    category = dataset.get("category")
    if isinstance(category, list | tuple):
        category = "+".join(map(str, category))
    shots = (config.get("sampler") or {}).get("shots", "full")
    tags = [f"method={config.get('method_name')}", f"dataset={dataset.get('name')}"]
    if category not in (None, ""):
        tags.append(f"category={category}")
    tags.append(f"shots={shots}")
    return [t[:64] for t in tags]  # W&B's limit per tag


def make_loggers(
    cfg: Mapping, run_dir: Path, run_name: str, config: dict, group: str | None = None
) -> list[Logger]:
    """CSV logger always; a WandbLogger when `logger.wandb` is true, in `logger.group` (else
    `group`, the sweep's) with the run's tags."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    if cfg.get("wandb", False):
        mode = wandb_mode(cfg.get("mode", "auto"))
        wandb_logger = WandbLogger(
            name=run_name,
            project=cfg.get("project", "adlab"),
            entity=cfg.get("entity"),
            group=cfg.get("group") or group,
            tags=[*cfg.get("tags", []), *run_tags(config)],
            save_dir=str(run_dir),
            offline=mode == "offline",
            mode=mode if mode == "disabled" else None,
            config=config,
        )
        # Lightning passes anonymous=None, which W&B warns has no effect: leave the setting unset.
        wandb_logger._wandb_init.pop("anonymous", None)  # noqa: SLF001
        loggers.append(wandb_logger)
    return loggers


def finish_wandb(loggers: list[Logger]) -> None:
    """Close the W&B run so that the next job of a multirun starts a fresh one."""
    for lg in loggers:
        if isinstance(lg, WandbLogger) and lg._experiment is not None:  # noqa: SLF001
            lg.experiment.finish()


def wandb_runs(loggers: list[Logger]) -> list:
    """The W&B runs among the loggers (on rank 0; none on other ranks or without W&B)."""
    return [lg.experiment for lg in loggers if isinstance(lg, WandbLogger)]


def log_summary(loggers: list[Logger], metrics: Mapping[str, float]) -> None:
    """The final test metrics in the run summary (`test/<metric>`): the runs table's columns."""
    for run in wandb_runs(loggers):
        run.summary.update({f"test/{k}": float(v) for k, v in metrics.items()})


def log_pro_curve(loggers: list[Logger], fpr, pro, max_points: int = 1000) -> None:
    """The PRO curve as a W&B line plot (`test/pro_curve`, beside `test/anomaly_maps`)."""
    runs = wandb_runs(loggers)
    if not runs:
        return
    import wandb

    from adlab.metrics.curve_io import thin

    fpr, pro = thin(fpr, pro, max_points)
    table = wandb.Table(
        columns=["fpr", "pro"], data=[[float(x), float(y)] for x, y in zip(fpr, pro)]
    )
    for run in runs:
        plot = wandb.plot.line(table, "fpr", "pro", title="PRO curve (FPR up to the AUPRO limit)")
        run.log({"test/pro_curve": plot})
