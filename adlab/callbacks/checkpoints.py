"""last.ckpt written during training, atomically: after every epoch, every N training steps or
minutes (for long epochs), and when SIGTERM / SIGINT asks the job to stop (SLURM preemption
sends SIGTERM), after which the job stops with RunInterrupted and writes no results.json.
Under submitit (hydra/launcher=submitit_*), its SIGUSR1 time-limit warning also saves last.ckpt
first and then reaches submitit, which requeues the job; `resume_path` lets the requeued job
find that file in its own run directory. With trainer.accumulate_grad_batches > 1 a save that
falls between two accumulated batches waits for the optimiser step that ends the group: the
checkpoint never misses a gradient accumulated so far, so resume stays exact (on one process;
under DDP Lightning's own SIGTERM stop, which it broadcasts to every rank, is left as it is)."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger("adlab")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
REQUEUE_SIGNAL = signal.SIGUSR1  # submitit's (and SLURM --signal) warning before the time limit


def resume_path(ckpt_path: str | None, resume: str, run_dir: Path) -> str | None:
    """The checkpoint to resume from: ckpt_path when given; with resume=auto, the run
    directory's own checkpoints/last.ckpt when it exists (a requeued or restarted job)."""
    if ckpt_path or resume == "never":
        return ckpt_path
    if resume != "auto":
        raise ValueError(f"resume={resume!r}: use auto or never.")
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    log.info("resuming from %s (resume=auto; resume=never starts afresh)", last)
    return str(last)


def mid_accumulation(trainer: pl.Trainer, batch_idx: int) -> bool:
    """True after a batch whose gradient waits for the next one (trainer.accumulate_grad_batches
    > 1, not the group's last batch nor the epoch's): the optimiser has not stepped yet, and a
    checkpoint now would hold the weights without that gradient. batch_idx counts the epoch's
    batches, resumed ones included, as Lightning's own accumulation test does."""
    group = trainer.accumulate_grad_batches
    if group <= 1:
        return False
    done = batch_idx + 1
    total = trainer.num_training_batches
    if math.isfinite(total) and done >= total:
        return False
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return done % group != 0 and not getattr(progress, "is_last_batch", False)


def defer_lightning_sigterm(trainer: pl.Trainer) -> None:
    """Lightning notes SIGTERM too (its handler runs before ours) and would stop the loop after
    this batch, inside the accumulation group; our own stop, already pending, then saves and
    stops at the group's end. Single process only: under DDP Lightning's flag is what it
    broadcasts to the other ranks, so there its stop is left as it is."""
    connector = getattr(trainer, "_signal_connector", None)
    if connector is not None and getattr(connector, "received_sigterm", False):
        connector.received_sigterm = False


class RunInterrupted(RuntimeError):
    """The job was asked to stop; last.ckpt holds its state (resume with ckpt_path=...)."""


class LastCheckpoint(pl.Callback):
    def __init__(
        self,
        dirpath: str | Path,
        every_n_steps: int | None = None,
        every_minutes: float | None = None,
    ) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = int(every_n_steps) if every_n_steps else None
        self.every_s = 60.0 * float(every_minutes) if every_minutes else None
        self._last_save = time.monotonic()
        self._batches = 0
        self._due = False  # a step or time save is owed (held back within an accumulation group)
        self.stop_signal: int | None = None
        self.requeue: tuple | None = None  # (signum, submitit's handler) to call after saving

    def save(self, trainer: pl.Trainer) -> None:
        """Write to a temporary file and rename: a kill mid-write never leaves a broken file.
        Every rank calls it (saving is collective); rank 0 writes and renames."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._last_save = time.monotonic()
        self._due = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        if self.every_n_steps and self._batches % self.every_n_steps == 0:
            self._due = True
        if self.every_s is not None and time.monotonic() - self._last_save >= self.every_s:
            self._due = True
        if mid_accumulation(trainer, batch_idx):  # everything waits for the group's step
            if self.stop_signal is not None and trainer.world_size == 1:
                defer_lightning_sigterm(trainer)
            return
        if self.stop_signal is not None or self.requeue or self._due:
            self.save(trainer)
        if self.requeue is not None:  # submitit requeues the job and exits
            signum, handler = self.requeue
            self.requeue = None
            handler(signum, None)
        if self.stop_signal is not None:
            raise self.interrupted()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # Lightning's own SIGTERM handling stops the loop at a batch or epoch end
        if isinstance(exception, SIGTERMException):
            self.save(trainer)

    def interrupted(self) -> RunInterrupted:
        name = (
            "a stop signal" if self.stop_signal is None else signal.Signals(self.stop_signal).name
        )
        return RunInterrupted(
            f"stopped by {name} during training; the state is in {self.path}: resume with "
            f"ckpt_path={self.path} (and the same overrides)"
        )

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While training: the first SIGTERM/SIGINT saves last.ckpt after the current batch and
        stops the job; a second one acts as usual (kills at once)."""

        def handler(signum, frame) -> None:
            if self.stop_signal is not None:
                signal.signal(signum, previous[signum])
                signal.raise_signal(signum)
            self.stop_signal = signum

        def requeue(signum, frame) -> None:
            self.requeue = (signum, previous[signum])

        previous = {s: signal.getsignal(s) for s in (*STOP_SIGNALS, REQUEUE_SIGNAL)}
        for s in STOP_SIGNALS:
            signal.signal(s, handler)
        if callable(previous[REQUEUE_SIGNAL]):  # submitit's: save last.ckpt before it runs
            signal.signal(REQUEUE_SIGNAL, requeue)
        try:
            yield
        except SIGTERMException as exc:  # Lightning stopped the loop (a SystemExit with code 0)
            raise self.interrupted() from exc
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
