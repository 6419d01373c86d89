"""Experiment loggers: W&B (online when logged in, offline files otherwise) and CSV (always)."""

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


def make_loggers(cfg: Mapping, run_dir: Path, run_name: str, config: dict) -> list[Logger]:
    """CSV logger always; a WandbLogger when `logger.wandb` is true."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    if cfg.get("wandb", False):
        mode = wandb_mode(cfg.get("mode", "auto"))
        wandb_logger = WandbLogger(
            name=run_name,
            project=cfg.get("project", "adlab"),
            entity=cfg.get("entity"),
            tags=list(cfg.get("tags", [])),
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
