"""Build a run's data and method from a config, or a trained method from its checkpoint.

Every entry point (`adlab.run`, `adlab.evaluate`, `adlab.load_model`, `adlab.plan`) and the tests
compose through these functions, so a method is built the same way everywhere. This module (with
the entry points) is the only place that instantiates Hydra configs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from adlab.data import AnomalyDataModule
from adlab.data.lodo import with_protocol
from adlab.methods.base import DistillationMethod, with_model_prefix
from adlab.models.features import CompositionError
from adlab.paths import CONF_DIR

# The config groups that define a trained model (taken from a checkpoint, never re-chosen).
MODEL_GROUPS = ("method", "teacher", "fusion", "student")
MODEL_KEYS = (*MODEL_GROUPS, "method_name", "image_size")
TRANSFORM_KEYS = ("crop_size", "resample", "normalize")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the fix."""


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


# --- from a checkpoint ----------------------------------------------------------------------------
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
