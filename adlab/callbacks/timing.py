"""Wall time and throughput of the training and test phases, for results.json."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class PhaseTimer(pl.Callback):
    """Seconds spent in fit and test, training steps/s and test images/s."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t0: dict[str, float] = {}
        self.train_steps = 0
        self.test_images = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0["fit"] = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.times["fit_s"] = time.perf_counter() - self._t0["fit"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_steps += 1

    def on_test_start(self, trainer, pl_module) -> None:
        self._t0["test"] = time.perf_counter()
        self.test_images = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.test_images += len(batch["label"])

    def on_test_end(self, trainer, pl_module) -> None:
        self.times["test_s"] = time.perf_counter() - self._t0["test"]

    def summary(self) -> dict[str, float]:
        out = dict(self.times)
        if self.train_steps and out.get("fit_s"):
            out["train_steps"] = self.train_steps
            out["train_step_s"] = out["fit_s"] / self.train_steps
        if self.test_images and out.get("test_s"):
            out["test_images"] = self.test_images
            out["test_images_per_s"] = self.test_images / out["test_s"]
        return out
