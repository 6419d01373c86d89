"""Exact resume: what a checkpoint needs beyond Lightning's model, optimiser and loop states.

Stored per checkpoint: the training loader's shuffle generator (at the start of the current pass
and now), how many batches of that pass were trained, and the global torch / numpy / Python RNG
states. On resume the shuffle continues where it stopped: at an epoch boundary from the current
state, mid-epoch from the pass's start with the trained batches skipped.
"""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch

from adlab.data.resumable import ResumableLoader


def numpy_state() -> tuple:
    """numpy's global RNG state in plain types (Lightning loads checkpoints weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)


class ExactResume(pl.Callback):
    def __init__(self, loader: ResumableLoader) -> None:
        self.loader = loader
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict:
        generator = self.loader.generator
        trainer = self._trainer
        epochs = trainer.fit_loop.epoch_progress.current if trainer else None
        batches = trainer.fit_loop.epoch_loop.batch_progress.current if trainer else None
        within_epoch = epochs is not None and epochs.processed < epochs.started
        return {
            "pass_start": getattr(self.loader, "pass_start_state", None),
            "current": None if generator is None else generator.get_state(),
            # Within an epoch (not at its end, where Lightning counts it processed): the batches
            # trained so far. Written in on_train_batch_end, `processed` includes the batch just
            # trained, which Lightning also counts as done when it restarts there.
            "mid_epoch_batches": int(batches.processed) if within_epoch else 0,
            "torch": torch.get_rng_state(),
            "numpy": numpy_state(),
            "python": random.getstate(),
        }

    def load_state_dict(self, state: dict) -> None:
        generator = self.loader.generator
        trained = int(state.get("mid_epoch_batches", 0))
        if generator is not None:
            saved = state["pass_start"] if trained else state["current"]
            if saved is not None:
                generator.set_state(saved)
        if trained:
            self.loader.batch_sampler.skip_next(trained)
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
