"""Known-benign library messages, silenced for the duration of a job by exact message so that
the console shows what matters (adlab's own warnings, such as a random teacher, stay loud).

- "Found N module(s) in eval mode at the start of training": the frozen teachers are in eval mode
  on purpose (DESIGN.md: teachers are frozen encoders).
- "You defined a `validation_step` but have no `val_dataloader`": every method validates when the
  dataset has a validation split and skips it otherwise.
- "`isinstance(treespec, LeafSpec)` is deprecated": raised inside Lightning's own pytree helper.
- Lightning's "Tip: ... litlogger / litmodels" advertisements.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

BENIGN_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"You defined a `validation_step` but have no `val_dataloader`",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
TIP_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class DropTips(logging.Filter):
    """Drops Lightning's product tips (they start with the light-bulb 'Tip:' prefix)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("Tip:" in message and ("litlogger" in message or "litmodels" in message))


@contextmanager
def quiet_benign() -> Iterator[None]:
    """Within the block: the BENIGN_WARNINGS are ignored and Lightning's tips are dropped."""
    tips = DropTips()
    loggers = [logging.getLogger(name) for name in TIP_LOGGERS]
    with warnings.catch_warnings():
        for message in BENIGN_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for lg in loggers:
            lg.addFilter(tips)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(tips)
