"""Frozen-teacher outputs kept across epochs, keyed by image path (`method.teacher_cache_gib`).

adlab applies no random augmentation, and a frozen teacher runs in eval mode without gradients,
so every epoch asks it for the same features of the same images: PDD spends about three quarters
of a CPU training step in its two teachers. Kept features are exact copies, returned in the memory
layout the teacher gave (channels-last stays channels-last, so the layers after it run the same
kernels and give the same bits); the budget bounds their memory on the teacher's device, and images
beyond it are recomputed every time. `adlab.methods.cache_policy` decides when `auto` turns it on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

Rebuild = Callable[[Sequence[Tensor]], Any]


def batch_order(t: Tensor) -> list[int] | None:
    """The dims of a batch tensor from outermost to innermost in memory (batch first), or None
    when its rows are not dense blocks that a permutation makes contiguous."""
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    if t.dim() == 0 or order[0] != 0 or not t.permute(order).is_contiguous():
        return None
    return order


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
        self._orders: list[list[int] | None] = []  # per leaf, its memory order (batch_order)

    def __len__(self) -> int:
        return len(self.entries)

    def _keep(self, key: str, row: Sequence[Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in row)
        if key in self.entries or self.used_bytes + size > self.budget_bytes:
            return
        self.entries[key] = tuple(t.clone() for t in row)
        self.used_bytes += size

    def _rows(self, leaves: Sequence[Tensor]) -> list[list[Tensor]]:
        """Per image, its leaves as contiguous views in the batch's memory order."""
        self._orders = [batch_order(t) for t in leaves]
        views = [t if order is None else t.permute(order) for t, order in zip(leaves, self._orders)]
        return [[v[j] for v in views] for j in range(leaves[0].shape[0] if leaves else 0)]

    def _stack(self, rows: Sequence[Sequence[Tensor]]) -> list[Tensor]:
        """The batch of each leaf back in the teacher's layout (one copy, no format change)."""
        out = []
        for parts, order in zip(zip(*rows), self._orders):
            stacked = torch.stack(parts)
            out.append(stacked if order is None else stacked.permute(_inverse(order)))
        return out

    def _keep_output(self, output: Any, keys: Sequence[str]) -> list[list[Tensor]]:
        """Keep each image's rows of a teacher output (what fits); returns the rows."""
        leaves, self._rebuild = flatten(output)
        rows = self._rows(leaves)
        for key, row in zip(keys, rows):
            self._keep(key, row)
        return rows

    def store(self, output: Any, keys: Sequence[str]) -> None:
        """Keep a teacher output computed elsewhere (the batch that decided `auto`): misses."""
        self.misses += len(keys)
        self._keep_output(output, keys)

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
            kept = self._keep_output(output, [keys[i] for i in missing])
            for i, row in zip(missing, kept):
                rows[i] = row
            if len(missing) == len(keys):
                return output
        return self._rebuild(self._stack(rows))

    def take_hit_rate(self) -> float | None:
        """Fraction of images served from the cache since the last call (None if none asked)."""
        asked = self.hits + self.misses
        rate = self.hits / asked if asked else None
        self.hits = self.misses = 0
        return rate


def _inverse(order: Sequence[int]) -> list[int]:
    inverse = [0] * len(order)
    for position, dim in enumerate(order):
        inverse[dim] = position
    return inverse
