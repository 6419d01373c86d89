"""A job's log: the reason a job failed is in its run.log, next to adlab's and Lightning's lines."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from adlab.logs import job_log, log_failure

REPO = Path(__file__).resolve().parents[1]


def test_job_log_writes_warnings_and_the_reason_and_reraises(tmp_path):
    logger = logging.getLogger("adlab.test_logs")
    handler = logging.FileHandler(tmp_path / "run.log")
    logger.addHandler(handler)
    logging.getLogger("py.warnings").addHandler(handler)
    try:
        with pytest.raises(ValueError, match="boom"), job_log(logger):
            warnings.warn("a warning of the job", stacklevel=1)
            raise ValueError("boom")
        with pytest.raises(KeyboardInterrupt), job_log(logger):
            raise KeyboardInterrupt
        log_failure(SystemExit(0), logger)  # a normal exit is no failure
        log_failure(SystemExit(3), logger)
    finally:
        logger.removeHandler(handler)
        logging.getLogger("py.warnings").removeHandler(handler)
        handler.close()
    text = (tmp_path / "run.log").read_text()
    assert "UserWarning: a warning of the job" in text
    assert "job failed: ValueError: boom" in text
    assert "Traceback (most recent call last)" in text and 'raise ValueError("boom")' in text
    assert "job interrupted (KeyboardInterrupt)" in text
    assert text.count("exited with status") == 1 and "status 3" in text


APP = """
import logging

import hydra
import pytorch_lightning  # imported before Hydra sets up logging, as adlab.run does
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from adlab.logs import job_log
from adlab.paths import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg):
    with job_log():
        logging.getLogger("adlab.data").info("an adlab line")
        rank_zero_info("a Lightning line")
        rank_zero_warn("a Lightning warning")
        raise RuntimeError("the reason this job failed")


main()
"""


@pytest.mark.e2e
def test_failed_sweep_job_says_why_in_its_run_log(tmp_path):
    script = tmp_path / "run.py"  # job name "run": Hydra writes run.log
    script.write_text(APP)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(script), "-m", "seed=1,2", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "job failed" not in proc.stdout  # the console gets Hydra's own error report
    assert "the reason this job failed" in proc.stderr
    logs = sorted(sweep.glob("*/run.log"))
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        assert "[adlab.data][INFO] - an adlab line" in text
        assert "[pytorch_lightning.utilities.rank_zero][INFO] - a Lightning line" in text
        assert "job failed: RuntimeError: the reason this job failed" in text
        assert "Traceback" in text
    # Python shows a warning once per place: in a sweep, in the first job's log
    assert "[py.warnings][WARNING]" in logs[0].read_text()
    assert "UserWarning: a Lightning warning" in logs[0].read_text()
