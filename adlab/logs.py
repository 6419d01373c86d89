"""A job's log (Hydra's run.log): the job's warnings, and the exception that stopped it, so the
directory of a failed sweep job says why it failed, not only the console that launched it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from adlab.quiet import quiet_benign

log = logging.getLogger("adlab")


FILE_ONLY = {"console": False}  # `extra` of records the console already shows another way


class NotFileOnly(logging.Filter):
    """Console filter (conf/hydra/job_logging/adlab.yaml): drops FILE_ONLY records, such as a
    failure that Hydra prints to the console itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True)


def log_failure(exc: BaseException, logger: logging.Logger = log) -> None:
    """Log why the job stopped: the traceback of an error, one line for an interruption."""
    if isinstance(exc, KeyboardInterrupt):
        logger.error("job interrupted (KeyboardInterrupt)", extra=FILE_ONLY)
    elif isinstance(exc, SystemExit):
        if exc.code not in (None, 0):
            logger.error("job exited with status %s", exc.code, extra=FILE_ONLY)
    else:
        logger.error("job failed: %s: %s", type(exc).__name__, exc, exc_info=exc, extra=FILE_ONLY)


@contextmanager
def job_log(logger: logging.Logger = log) -> Iterator[None]:
    """Run a job's body with Python warnings (Lightning's among them) sent to the log, and log
    the reason if it raises (log_failure) before the exception propagates unchanged. Known
    benign library messages are silenced (adlab.quiet)."""
    logging.captureWarnings(True)
    try:
        with quiet_benign():
            yield
    except BaseException as exc:
        log_failure(exc, logger)
        raise
    finally:
        logging.captureWarnings(False)
