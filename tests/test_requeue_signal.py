"""Under submitit, SIGUSR1 (the warning before the time limit) first saves last.ckpt after the
current batch and then reaches submitit's handler, which requeues the job; without a handler
installed before training, SIGUSR1 is left alone (Lightning's own SLURM handling applies)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from adlab.callbacks.checkpoints import LastCheckpoint


class Tiny(pl.LightningModule):
    def __init__(self, signal_at: int | None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.signal_at = signal_at

    def training_step(self, batch, batch_idx):
        if batch_idx == self.signal_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, last: LastCheckpoint, signal_at: int | None) -> None:
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = pl.Trainer(
        max_epochs=1, callbacks=[last], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with last.stop_on_signals():
        trainer.fit(Tiny(signal_at), loader)


def test_sigusr1_saves_last_ckpt_then_hands_over_to_submitit(tmp_path):
    calls = []

    def submitit_handler(signum, frame):  # what submitit installs: requeue, then exit
        calls.append((signum, last.path.is_file(), torch.load(last.path)["global_step"]))
        raise SystemExit(-1)

    last = LastCheckpoint(tmp_path / "checkpoints")
    previous = signal.signal(signal.SIGUSR1, submitit_handler)
    try:
        try:
            fit(tmp_path, last, signal_at=1)
        except SystemExit as exc:
            assert exc.code == -1
        assert calls == [(signal.SIGUSR1, True, 2)]  # saved after batch 1, before requeueing
        assert signal.getsignal(signal.SIGUSR1) is submitit_handler  # restored after training
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_sigusr1_is_left_alone_without_a_handler(tmp_path):
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        last = LastCheckpoint(tmp_path / "checkpoints")
        fit(tmp_path, last, signal_at=None)
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
        assert last.requeue is None and last.path.is_file()
    finally:
        signal.signal(signal.SIGUSR1, previous)
