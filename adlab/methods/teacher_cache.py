"""Frozen-teacher outputs kept across epochs, keyed by image path (`method.teacher_cache_gib`).

adlab applies no random augmentation, and a frozen teacher runs in eval mode without gradients,
so every epoch asks it for the same features of the same images: PDD spends about three quarters
of a CPU training step in its two teachers. Kept features are exact copies; the budget bounds
their memory on the teacher's device, and images beyond it are recomputed every time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

Rebuild = Callable[[Sequence[Tensor]], Any]


def flatten(tree: Any) -> tuple[list[Tensor], Rebuild]:
    """Tensors of a teacher output (tensor, None, list / tuple / NamedTuple of those) in order,
    and the function that puts a same-length list back into that structure."""
    if isinstance(tree, Tensor):
        return [tree], lambda leaves: leaves[0]
    if tree is None:
        return [], lambda leaves: None
    if isinstance(tree, (list, tuple)):
        parts = [flatten(item) for item in tree]
        bounds = [0]
        for leaves, _ in parts:
            bounds.append(bounds[-1] + len(leaves))

        def rebuild(leaves: Sequence[Tensor]) -> Any:
            items = [fn(leaves[a:b]) for (_, fn), a, b in zip(parts, bounds, bounds[1:])]
            return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)

        return [t for leaves, _ in parts for t in leaves], rebuild
    raise TypeError(f"cannot cache a teacher output of type {type(tree).__name__}")


class TeacherCache:
    """Per-image teacher features up to `budget_gib`; `cache(teacher, images, keys)` returns what
    `teacher(images)` would, running the teacher only on the images it has not kept."""

    def __init__(self, budget_gib: float) -> None:
        if not budget_gib > 0:
            raise ValueError(
                f"method.teacher_cache_gib={budget_gib} must be > 0 (0 or null turns it off)"
            )
        self.budget_bytes = int(budget_gib * 2**30)
        self.used_bytes = 0
        self.entries: dict[str, tuple[Tensor, ...]] = {}
        self.hits = 0
        self.misses = 0
        self._rebuild: Rebuild | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def _keep(self, key: str, row: Sequence[Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in row)
        if key in self.entries or self.used_bytes + size > self.budget_bytes:
            return
        self.entries[key] = tuple(t.clone() for t in row)
        self.used_bytes += size

    @torch.no_grad()
    def __call__(self, teacher: nn.Module, images: Tensor, keys: Sequence[str]) -> Any:
        if len(keys) != images.shape[0]:
            raise ValueError(f"{len(keys)} cache keys for a batch of {images.shape[0]} images")
        rows: list[Sequence[Tensor] | None] = [self.entries.get(k) for k in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            subset = images if len(missing) == len(keys) else images[missing]
            output = teacher(subset)
            leaves, self._rebuild = flatten(output)
            for j, i in enumerate(missing):
                rows[i] = [t[j] for t in leaves]
                self._keep(keys[i], rows[i])
            if len(missing) == len(keys):
                return output
        stacked = [torch.stack(parts) for parts in zip(*rows)]
        return self._rebuild(stacked)

    def take_hit_rate(self) -> float | None:
        """Fraction of images served from the cache since the last call (None if none asked)."""
        asked = self.hits + self.misses
        rate = self.hits / asked if asked else None
        self.hits = self.misses = 0
        return rate
