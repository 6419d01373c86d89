"""Reading checkpoint files and checking them strictly against a model, with a readable diff."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch


class WeightsError(RuntimeError):
    """A weight file is missing, unreadable or does not match the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a .pth/.pt/.bin/.ckpt or .safetensors file and unwrap the usual containers.

    Wrappers seen in the wild ("state_dict", "model", "module." prefixes from DataParallel) are
    removed so that the keys are the model's own parameter names.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weight file not found: {path}. Pass an existing .pth or .safetensors file."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any decoding failure is reported with the file name
        raise WeightsError(f"cannot read weight file {path}: {err}") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def key_diff(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    ignore_unexpected: Iterable[str] = (),
) -> list[str]:
    """Lines describing missing, unexpected and shape-mismatched keys (empty when they match).

    `ignore_unexpected` lists key prefixes that a file may carry but the model does not use
    (a classifier head, layers after the last tap).
    """
    prefixes = tuple(ignore_unexpected)
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(k for k in set(given) - set(expected) if not k.startswith(prefixes))
    shapes = sorted(
        f"{k}: model {tuple(expected[k].shape)} vs file {tuple(given[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(expected[k].shape) != tuple(given[k].shape)
    )
    lines = []
    for title, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", shapes),
    ):
        if keys:
            shown = keys[:10] + ([f"... and {len(keys) - 10} more"] if len(keys) > 10 else [])
            lines.append(f"{title} ({len(keys)}): " + ", ".join(shown))
    return lines


def load_strict(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    ignore_unexpected: Iterable[str] = (),
) -> None:
    """Load `state` into `model`, raising WeightsError with the key diff on any mismatch."""
    expected = model.state_dict()
    problems = key_diff(expected, state, ignore_unexpected)
    if problems:
        raise WeightsError(
            f"weights in {source} do not match {type(model).__name__}:\n  "
            + "\n  ".join(problems)
            + "\nCheck that the file belongs to this architecture."
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
