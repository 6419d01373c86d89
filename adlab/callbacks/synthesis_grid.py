"""What the model trains on: a grid of image | damaged image | synthetic mask, one row per
sample of the first training batch, written to the run directory and logged to W&B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image

from adlab.callbacks.visualize import to_uint8_image

GRID_NAME = "synthesis_examples.png"


def synthesis_grid(batch: dict, normalize: str, rows: int = 8) -> np.ndarray:
    """(rows*H, 3*W, 3) uint8 from a batch with image, augmented and synthetic_mask."""
    count = min(rows, len(batch["image"]))
    lines = []
    for i in range(count):
        image = to_uint8_image(batch["image"][i], normalize)
        damaged = to_uint8_image(batch["augmented"][i], normalize)
        mask = batch["synthetic_mask"][i].float().cpu().numpy()[0] > 0.5
        mask_rgb = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        lines.append(np.concatenate([image, damaged, mask_rgb], axis=1))
    return np.concatenate(lines, axis=0)


def write_synthesis_grid(batch: dict, path: str | Path, normalize: str, rows: int = 8) -> Path:
    """Write the grid as a PNG; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthesis_grid(batch, normalize, rows)).save(path)
    return path


class SynthesisGrid(pl.Callback):
    """On the first training batch (rank zero): write the grid and log it with every logger that
    has log_image (W&B). Batches without synthetic anomalies are left alone."""

    def __init__(self, path: str | Path, normalize: str, rows: int = 8) -> None:
        self.path, self.normalize, self.rows = Path(path), normalize, rows
        self.done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.done or not isinstance(batch, dict) or "augmented" not in batch:
            return
        self.done = True
        if not trainer.is_global_zero:
            return
        path = write_synthesis_grid(batch, self.path, self.normalize, self.rows)
        coverage = float(batch["synthetic_mask"][: self.rows].float().mean())
        caption = f"image | damaged | mask (first batch, mean mask coverage {coverage:.3f})"
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="train/synthesis", images=[str(path)], caption=[caption])


def grid_callbacks(train_keys: set[str], run_dir: str | Path, normalize: str) -> list[pl.Callback]:
    """The grid callback when the training batches carry synthetic anomalies, else none."""
    if "augmented" not in train_keys:
        return []
    return [SynthesisGrid(Path(run_dir) / GRID_NAME, normalize)]
