"""Turn metric inputs (numpy arrays or torch tensors) into checked numpy arrays.

Every public metric goes through these helpers so that bad input fails where it enters, with a
ValueError that names the argument, instead of producing a silently wrong number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # np.ndarray | torch.Tensor | sequence of numbers


def to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """A numpy view/copy of x (torch tensors are detached and moved to CPU)."""
    if x is None:
        raise ValueError(f"{name} is None; pass a numpy array or torch tensor.")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def as_scores(x: ArrayLike, name: str) -> np.ndarray:
    """Float32 scores; NaN (no place in a ranking) and inf (NaN after resizing) are rejected."""
    arr = to_numpy(x, name)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold numbers (got dtype {arr.dtype}).")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        what = "NaN" if np.isnan(arr).any() else "inf"
        raise ValueError(f"{name} contains {what}; check the model output before evaluation.")
    return arr


def as_binary(x: ArrayLike, name: str) -> np.ndarray:
    """Boolean ground truth from bool or 0/1 values (float masks: > 0.5 is anomalous)."""
    arr = to_numpy(x, name)
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be bool or 0/1 numbers (got dtype {arr.dtype}).")
    if np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise ValueError(f"{name} contains NaN; ground truth must be 0/1.")
        return arr > 0.5
    return arr != 0


def as_labels(x: ArrayLike, name: str = "labels") -> np.ndarray:
    """Image labels: exactly 0 (normal) or 1 (anomalous), as a flat bool array."""
    arr = to_numpy(x, name).reshape(-1)
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5] if arr.size else arr
            raise ValueError(f"{name} must be 0 (normal) or 1 (anomalous); found {bad}.")
        arr = arr.astype(bool)
    return arr


def maps_and_masks(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checked (N, H, W) float32 maps and bool masks of the same shape.

    A (N, 1, H, W) mask or map is accepted and squeezed, as datasets store masks N1HW.
    """
    m = as_scores(maps, "maps")
    g = as_binary(masks, "masks")
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if g.ndim == 4 and g.shape[1] == 1:
        g = g[:, 0]
    if m.ndim == 2:
        m = m[None]
    if g.ndim == 2:
        g = g[None]
    if m.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W); got {tuple(m.shape)}.")
    if m.shape != g.shape:
        raise ValueError(
            f"maps and masks must have the same shape; got maps {tuple(m.shape)} and masks "
            f"{tuple(g.shape)}. Resize the maps to the masks (or use AnomalyEvaluator, which does)."
        )
    return m, g


def scores_and_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checked flat float32 scores and bool labels of equal length."""
    s = as_scores(scores, "scores").reshape(-1)
    y = as_labels(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(
            f"scores and labels must have the same length; got {s.size} scores and {y.size} labels."
        )
    return s, y
