"""`method.teacher_cache_gib=auto`: keep teacher features only where that is exact and fits.

The cache is exact when every epoch would ask the teacher for the same features of the same
images: the teacher is frozen (no gradients, eval mode), the training images are not changed
between epochs (no random transform, no synthetic anomalies, few-shot episodes not redrawn) and
the run has more than one epoch. The pipeline states those facts before fitting (`plan`); the first
batch that asks for teacher features measures their bytes per image, and the cache is made when
bytes per image x images fit in the budget: RAM_FRACTION of the memory available on the teacher's
device, at most CAP_GIB. Every decision is one log line saying why.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from adlab.data.synthesis import enabled
from adlab.data.transforms import Transform
from adlab.methods.teacher_cache import TeacherCache, flatten

log = logging.getLogger("adlab")

RAM_FRACTION = 0.25  # of the memory available when training starts
CAP_GIB = 16.0  # never more than this without an explicit method.teacher_cache_gib
GIB = 2**30


def teacher_refusal(model: nn.Module) -> str | None:
    """Why this network's `teacher` gives different features over training, or None."""
    teacher = getattr(model, "teacher", None)
    if teacher is None:
        return f"{type(model).__name__} has no teacher"
    frozen = "teacher" in getattr(model, "_frozen", ())
    if not frozen or any(p.requires_grad for p in teacher.parameters()):
        return "the teacher is trained (not frozen, as in URD), so its features change every step"
    return None


def data_refusal(datamodule: Any) -> str | None:
    """Why the training images may differ between epochs, or None."""
    target = getattr(datamodule, "target", datamodule)  # protocol=lodo wraps the target's data
    synthesis = getattr(target, "synthesis", None)
    if enabled(synthesis):
        return f"synthesis={synthesis.get('name')} makes training images anew each epoch"
    resample = getattr(datamodule, "resample", "never")
    if resample != "never":
        return f"protocol.resample={resample} redraws the few-shot episodes each epoch"
    transform = getattr(target, "transform", None)
    if type(transform) is not Transform:  # adlab's own is deterministic; others may be random
        return f"the training transform {type(transform).__name__} may be random"
    return None


def planned_epochs(max_epochs: int | None, max_steps: int, steps_per_epoch: int) -> float:
    """How many passes over the training images the fit makes (max_steps counts optimiser
    steps; steps_per_epoch those of one pass)."""
    epochs = math.inf if max_epochs is None or max_epochs < 0 else max_epochs
    if max_steps is not None and max_steps > 0:
        epochs = min(epochs, math.ceil(max_steps / max(1, steps_per_epoch)))
    return epochs


def available_bytes(device: torch.device) -> tuple[int, str]:
    """Memory available to the cache on `device` and where the figure comes from."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), "free GPU memory"
    found = [(_meminfo_available(), "available RAM"), (_cgroup_room(), "the cgroup memory limit")]
    found = [(v, name) for v, name in found if v is not None]
    if not found:
        found = [(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free RAM")]
    room, source = min(found)
    ranks = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if ranks > 1:  # CPU ranks share the host's memory
        return room // ranks, f"{source} / {ranks} ranks"
    return room, source


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_room() -> int | None:
    """The room left under a cgroup v2 memory limit (containers, SLURM jobs), or None."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


class AutoCache:
    """The pending `auto` decision of one method: facts from `plan`, then `decide` on the first
    batch of teacher features (which it returns, so deciding costs no extra teacher pass)."""

    def __init__(self) -> None:
        self.refusal: str | None = "not started through adlab's pipeline, which checks the data"
        self.images = 0
        self.decision = "pending"

    def plan(self, refusal: str | None, images: int) -> None:
        self.refusal, self.images = refusal, int(images)

    def decide(
        self, teacher: nn.Module, images: Tensor, keys: Sequence[str]
    ) -> tuple[Any, TeacherCache | None]:
        """The teacher's output for this batch and the cache to use from now on (or None)."""
        output = teacher(images)
        cache = None
        if self.refusal is None:
            leaves, _ = flatten(output)
            per_image = sum(t.numel() * t.element_size() for t in leaves) / max(1, len(keys))
            need = per_image * self.images
            room, source = available_bytes(images.device)
            budget = min(RAM_FRACTION * room, CAP_GIB * GIB)
            size = f"{self.images} images x {per_image / 2**20:.1f} MiB = {need / GIB:.2f} GiB"
            room_text = f"{RAM_FRACTION:.0%} of {source}, at most {CAP_GIB:g} GiB"
            if need > budget:
                self.refusal = (
                    f"{size} exceed the budget of {budget / GIB:.2f} GiB ({room_text}); "
                    "method.teacher_cache_gib=<GiB> caches what fits"
                )
            else:
                cache = TeacherCache(budget / GIB)
                cache.store(output, keys)
                self.decision = f"on: {size} within {budget / GIB:.2f} GiB ({room_text})"
        if cache is None:
            self.decision = f"off: {self.refusal}"
        log.info("teacher cache (method.teacher_cache_gib=auto) %s", self.decision)
        return output, cache


def caches_for(setting: float | str | None) -> tuple[AutoCache | None, TeacherCache | None]:
    """method.teacher_cache_gib: "auto" (decided at the first batch), N > 0 (a cache of up to
    N GiB, no questions asked), 0 or null (off)."""
    if setting == "auto":
        return AutoCache(), None
    if isinstance(setting, str):
        try:
            setting = float(setting)
        except ValueError:
            raise ValueError(
                f"method.teacher_cache_gib={setting!r}: use auto, a number of GiB, or 0 (off)"
            ) from None
    return None, (TeacherCache(float(setting)) if setting else None)


def plan(method: Any, datamodule: Any, images: int, epochs: float) -> None:
    """Before fitting: refuse an `auto` teacher cache now (one log line) when the teacher or the
    data make it inexact or the run has one epoch; else leave the rest to the first batch."""
    auto = getattr(method, "auto_cache", None)
    if auto is None:
        return
    refusal = teacher_refusal(method.model) or data_refusal(datamodule)
    if refusal is None and epochs <= 1:
        refusal = "the run has one epoch, so no image is asked for twice"
    auto.plan(refusal, images)
    if refusal is not None:
        auto.decision = f"off: {refusal}"
        log.info("teacher cache (method.teacher_cache_gib=auto) %s", auto.decision)
        method.auto_cache = None


def plan_fit(method: Any, datamodule: Any, trainer: Any, train_loader: Any) -> None:
    """`plan` with the counts of a Lightning fit: training images plus the validation normals
    (the validation loss asks for theirs too) and the passes that max_epochs / max_steps allow."""
    valid = datamodule.summary().get("valid", {}).get("normal", 0)
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
    steps = math.ceil(len(train_loader) / accumulate) * method.optimizers_per_batch
    epochs = planned_epochs(trainer.max_epochs, trainer.max_steps, steps)
    plan(method, datamodule, len(train_loader.dataset) + int(valid), epochs)
