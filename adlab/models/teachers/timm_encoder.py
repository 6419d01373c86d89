"""Frozen-or-trainable CNN encoders from timm that return the feature maps of chosen stages."""

from __future__ import annotations

import os
import socket
import sys
import warnings
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

import torch
from torch import nn

from adlab.models.features import Features, resnet_taps
from adlab.models.teachers.weights import WeightsError, load_strict, read_state_dict


def import_timm() -> ModuleType:
    """timm, loaded without the W&B import its training utilities attempt (0.5-0.7 s of a
    run's start-up, for timm's own scripts, which adlab never calls): a run without W&B
    (logger=csv) no longer pays for it, and W&B still imports normally afterwards."""
    if "timm" in sys.modules or "wandb" in sys.modules:
        import timm

        return timm
    sys.modules["wandb"] = None  # `import wandb` inside timm raises ImportError: skipped
    try:
        import timm
    finally:
        if sys.modules.get("wandb", 0) is None:
            del sys.modules["wandb"]
    return timm


timm = import_timm()

# Tags of the weights the official codes used: RD4AD and URD load torchvision's ImageNet weights.
DEFAULT_TAGS = {
    "resnet18": "tv_in1k",
    "resnet34": "tv_in1k",
    "resnet50": "tv_in1k",
    "wide_resnet50_2": "tv_in1k",
}


def weights_url(name: str) -> str:
    """Where a timm model's pretrained weights live, for the offline error message."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return f"(timm has no pretrained weights named {name!r})"
    if cfg.hf_hub_id:
        filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
        return f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{filename}"
    return cfg.url or "(no url)"


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def cached_weights(name: str) -> str | None:
    """A previously downloaded weight file of `name` in the hub cache, if there is one."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=hub_cache_dir())
        if isinstance(found, str):
            return found
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers at all: offline, fail in seconds instead of a minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


class TimmEncoder(nn.Module):
    """A timm ResNet-family encoder tapped at `layers` (1 = layer1 ... 4 = layer4).

    pretrained: False (random init), True (download through timm; offline this fails with the file
    to fetch), "auto" (True, falling back to random init with a loud warning), or a path to a local
    .pth/.safetensors checkpoint of the full model (torchvision or timm key names), loaded strictly.
    """

    def __init__(
        self,
        name: str = "wide_resnet50_2",
        layers: tuple[int, ...] | list[int] = (1, 2, 3),
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        arch, _, tag = name.partition(".")
        tag = tag or DEFAULT_TAGS.get(arch, "")
        self.name = f"{arch}.{tag}" if tag else arch
        self.arch = arch
        self.layers = tuple(int(i) for i in layers)
        self.model, self.weights_source = self._build(pretrained)
        info = self.model.feature_info
        self.channels: list[int] = list(info.channels())
        self.strides: list[int] = list(info.reduction())
        stages = [getattr(self.model, name) for name in info.module_name()]
        blocks = ["bottleneck" if hasattr(stage[0], "conv3") else "basic" for stage in stages]
        first = self.model.layer1[0]
        base_width = first.conv1.out_channels if blocks[0] == "bottleneck" else 64
        self.features = Features(
            resnet_taps(self.channels, self.strides, [len(s) for s in stages], blocks[0]),
            base_width=base_width,
            source=f"teacher {self.name}",
        )

    def _create(self, pretrained: bool, **extra) -> nn.Module:
        return timm.create_model(
            self.name, pretrained=pretrained, features_only=True, out_indices=self.layers, **extra
        )

    def _build(self, pretrained: bool | str) -> tuple[nn.Module, str]:
        if pretrained in (False, "false", "False", None):
            return self._create(False), "random"
        if pretrained in (True, "true", "True"):
            return self._download(), f"timm:{self.name}"
        if pretrained == "auto":
            try:
                return self._download(), f"timm:{self.name}"
            except WeightsError as err:
                message = f"TEACHER IS RANDOMLY INITIALISED: {err}"
                warnings.warn(message, stacklevel=2)
                return self._create(False), "random (pretrained=auto fell back: download failed)"
        return self._from_file(Path(str(pretrained))), str(Path(str(pretrained)).expanduser())

    def _download(self) -> nn.Module:
        cached = cached_weights(self.name)
        if cached:
            return self._create(True, pretrained_cfg_overlay={"file": cached})
        reason = "the hub is not reachable"
        if hub_reachable():
            try:
                return self._create(True)
            except Exception as err:  # noqa: BLE001 - network/hub errors come in many types
                reason = str(err)
        raise WeightsError(
            f"could not download pretrained weights for teacher {self.name!r} ({reason}). "
            f"Fetch {weights_url(self.name)} on a machine with network access and pass "
            f"teacher.pretrained=/path/to/that/file (or teacher.pretrained=false for random init)."
        )

    def _from_file(self, path: Path) -> nn.Module:
        state = read_state_dict(path)
        full = timm.create_model(self.name, pretrained=False)
        # A classifier checkpoint holds layers after our last tap and the head: check the whole
        # model strictly, then keep the tapped part.
        load_strict(full, state, str(path))
        model = self._create(False)
        load_strict(model, full.state_dict(), str(path), ignore_unexpected=_unused_prefixes(model))
        return model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model(x)


def _unused_prefixes(model: nn.Module) -> tuple[str, ...]:
    present = {k.split(".")[0] for k in model.state_dict()}
    return tuple(f"{p}." for p in ("layer2", "layer3", "layer4", "fc") if p not in present)
