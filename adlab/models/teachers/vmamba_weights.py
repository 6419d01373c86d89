"""Finding and reading VMamba checkpoints: None, a local file, or the official release URL.

The official v0 checkpoints come from the VMamba training code, which pickles its yacs config
next to the weights; `torch.load(weights_only=True)` refuses such a file, so a restricted reader
replaces every non-torch object by an inert placeholder and keeps only tensors.
"""

from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from adlab.models.teachers.weights import WeightsError, read_state_dict

OFFICIAL_URLS = {
    "vanilla_vmamba_tiny": (
        "https://github.com/MzeroMiko/VMamba/releases/download/%23v0cls/"
        "vssmtiny_dp01_ckpt_epoch_292.pth"
    ),
}

# Keys of the ImageNet classifier (final norm and linear head) that a backbone does not use.
CLASSIFIER_PREFIXES = ("head.", "norm.", "classifier.")

# Later VMamba code renamed the v0 modules; a checkpoint saved by it maps back to the v0 names.
_RENAMES = (
    (re.compile(r"^patch_embed\.0\."), "patch_embed.proj."),
    (re.compile(r"^patch_embed\.2\."), "patch_embed.norm."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+)\.norm\."), r"\1.ln_1."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+)\.op\."), r"\1.self_attention."),
    (re.compile(r"^(layers\.\d+\.downsample)\.1\."), r"\1.norm."),
    (re.compile(r"^(layers\.\d+\.downsample)\.2\."), r"\1.reduction."),
)


def to_v0_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename keys written by VMamba's refactored VSSM (patch_embed.0, blocks.N.op, ...) to the
    names of the v0 release (patch_embed.proj, blocks.N.self_attention, ...); v0 keys pass."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


class _Placeholder(dict):
    """Stands in for any pickled non-tensor object (a yacs config, argparse namespace...)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def __setstate__(self, state) -> None:
        pass


_ALLOWED_PREFIXES = ("torch", "collections", "numpy", "_codecs")
_ALLOWED_BUILTINS = {"set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bool"}


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Resolves torch / numpy / container globals; every other class becomes a placeholder.
    Builtins that run code (eval, exec, getattr, ...) are never resolved."""

    def find_class(self, module: str, name: str):
        if module == "builtins":
            if name in _ALLOWED_BUILTINS:
                return super().find_class(module, name)
            return _Placeholder
        if module == "copyreg" and name in ("_reconstructor", "__newobj__"):
            return super().find_class(module, name)
        if module.split(".")[0] in _ALLOWED_PREFIXES:
            return super().find_class(module, name)
        return _Placeholder


class _TensorsOnlyPickle:
    """A `pickle_module` for torch.load built on `_TensorsOnlyUnpickler`."""

    Unpickler = _TensorsOnlyUnpickler
    __name__ = "adlab_tensors_only_pickle"

    @staticmethod
    def load(file, **kwargs):
        return _TensorsOnlyUnpickler(file, **kwargs).load()


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a VMamba checkpoint file (weights under "model" when wrapped)."""
    path = Path(path).expanduser()
    try:
        return read_state_dict(path)
    except WeightsError as first:
        if not path.is_file():
            raise
        try:  # e.g. a pickled training config next to the weights
            state = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_TensorsOnlyPickle
            )
        except Exception:  # noqa: BLE001 - the first error is the informative one
            raise first from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    return OrderedDict(
        (k.removeprefix("module."), v) for k, v in state.items() if isinstance(v, torch.Tensor)
    )


def cached_file(url: str) -> Path:
    """Where torch.hub keeps the download of `url` ($TORCH_HOME/hub/checkpoints/<name>)."""
    name = os.path.basename(unquote(urlparse(url).path))
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def fetch(url: str) -> Path:
    """Download `url` into the torch hub cache (once) and return the local file.

    Offline, raises WeightsError naming the URL, the file to fetch and how to pass it instead.
    """
    target = cached_file(url)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise WeightsError(
            f"cannot download VMamba weights from {url} ({type(err).__name__}: {err}). "
            f"Fetch {target.name} on a machine with network access and either put it at "
            f"{target} or pass its path, e.g. teacher.vmamba.weights=/path/to/{target.name}."
        ) from err
    return target


def resolve(weights: str | os.PathLike | None) -> tuple[dict[str, torch.Tensor] | None, str]:
    """(state dict or None, provenance string) for the `weights` argument of VMambaEncoder."""
    if weights is None:
        return None, "random"
    source = str(weights)
    if source.startswith(("http://", "https://")):
        return read_checkpoint(fetch(source)), source
    path = Path(source).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"VMamba weight file not found: {path}. Pass an existing .pth file, the official URL "
            f"({OFFICIAL_URLS['vanilla_vmamba_tiny']}) or weights=None for random init."
        )
    return read_checkpoint(path), str(path)
