"""Nothing lost: a killed run resumes bit for bit, SIGTERM saves last.ckpt and stops, a diverged
run stops at the first non-finite loss with results.json saying so."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
# 32 training images in batches of 16: two batches per epoch.
TINY = [
    "method=rd4ad",
    "dataset=synthetic",
    "dataset.n_train=32",
    "dataset.n_test_normal=8",
    "dataset.n_test_anomalous=8",
    "teacher=resnet18",
    "teacher.pretrained=false",
    "image_size=64",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "seed=3",
]


def _env(cwd: Path) -> dict:
    return {
        **os.environ,
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "ADLAB_DATA": str(cwd / "data"),
        "PYTHONPATH": str(REPO),
    }


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adlab.run", *TINY, *args],
        cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _interrupt(cwd: Path, run_dir: Path, sig: int, after: int, *args: str) -> int:
    """Start a run and send `sig` once last.ckpt has been written `after` times."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "adlab.run", *TINY, *args, f"hydra.run.dir={run_dir}"],
        cwd=cwd, env=_env(cwd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ckpt, seen, stamp = run_dir / "checkpoints" / "last.ckpt", 0, None
    while proc.poll() is None:
        if ckpt.exists() and ckpt.stat().st_mtime_ns != stamp:
            stamp, seen = ckpt.stat().st_mtime_ns, seen + 1
            if seen >= after:
                proc.send_signal(sig)
                break
        time.sleep(0.01)
    return proc.wait(timeout=600)


def _epoch_losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("faults")
    proc = _run(cwd, "trainer.max_epochs=3", f"hydra.run.dir={cwd / 'full'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "full"


def test_sigkill_mid_training_then_resume_reproduces_the_run_bit_for_bit(uninterrupted):
    cwd = uninterrupted.parent
    killed = cwd / "killed"
    # step checkpoints: the kill lands within an epoch, after the 3rd write of last.ckpt
    code = _interrupt(cwd, killed, signal.SIGKILL, 3, "trainer.max_epochs=3",
                      "checkpoint.every_n_steps=1")  # fmt: skip
    assert code == -signal.SIGKILL
    ckpt = killed / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and not (killed / "results.json").exists()
    assert torch.load(ckpt, weights_only=False)["global_step"] < 6  # stopped before the end
    resumed = cwd / "resumed"
    proc = _run(cwd, "trainer.max_epochs=3", f"ckpt_path={ckpt}", f"hydra.run.dir={resumed}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = json.loads((uninterrupted / "results.json").read_text())["metrics"]
    got = json.loads((resumed / "results.json").read_text())["metrics"]
    assert got == want  # exactly, every metric
    assert _epoch_losses(resumed)[-1] == _epoch_losses(uninterrupted)[-1]
    a = _weights(uninterrupted / "checkpoints" / "last.ckpt")
    b = _weights(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# PDD's presets accumulate two batches per optimiser step; 64 images in batches of 8: 8 batches
# (4 steps) an epoch
ACCUMULATED = ["trainer.accumulate_grad_batches=2", "dataset.n_train=64", "data.batch_size=8",
               "trainer.max_epochs=2"]  # fmt: skip


def _at_group_end(ckpt: Path) -> int:
    """Batches trained in the checkpoint's epoch, checked to end an accumulation group of two
    with every group's optimiser step taken (4 steps an epoch)."""
    state = torch.load(ckpt, weights_only=False)
    batches = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    assert batches % 2 == 0, batches  # not between two accumulated batches
    assert state["global_step"] == 4 * state["epoch"] + batches // 2
    return batches


def test_resume_is_exact_with_gradient_accumulation(tmp_path):
    """A save due between two accumulated batches waits for the optimiser step: the kill after
    the 3rd write (every batch asked for) leaves the state after 6 batches and 3 steps, not after
    3 batches with the 3rd one's gradient lost, and the resumed run is the uninterrupted one."""
    full = tmp_path / "accumulated"
    proc = _run(tmp_path, *ACCUMULATED, f"hydra.run.dir={full}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = tmp_path / "accumulated-killed"
    code = _interrupt(tmp_path, killed, signal.SIGKILL, 3, *ACCUMULATED,
                      "checkpoint.every_n_steps=1")  # fmt: skip
    assert code == -signal.SIGKILL
    ckpt = killed / "checkpoints" / "last.ckpt"
    assert _at_group_end(ckpt) == 6  # written after batches 2, 4, 6; killed before the 4th
    resumed = tmp_path / "accumulated-resumed"
    proc = _run(tmp_path, *ACCUMULATED, f"ckpt_path={ckpt}", f"hydra.run.dir={resumed}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = json.loads((full / "results.json").read_text())["metrics"]
    assert json.loads((resumed / "results.json").read_text())["metrics"] == want
    a = _weights(full / "checkpoints" / "last.ckpt")
    b = _weights(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # SIGTERM (SLURM's preemption) sent after the first group's save lands inside the second
    # group: Lightning's own SIGTERM stop would save after batch 3; the save waits for batch 4
    stopped = tmp_path / "accumulated-sigterm"
    code = _interrupt(tmp_path, stopped, signal.SIGTERM, 1, *ACCUMULATED,
                      "checkpoint.every_n_steps=1")  # fmt: skip
    assert code != 0 and not (stopped / "results.json").exists()
    assert _at_group_end(stopped / "checkpoints" / "last.ckpt") >= 4
    assert "stopped by SIGTERM" in (stopped / "run.log").read_text()


def test_sigterm_saves_last_ckpt_and_stops_without_results(uninterrupted):
    cwd = uninterrupted.parent
    stopped = cwd / "sigterm"
    code = _interrupt(cwd, stopped, signal.SIGTERM, 1, "trainer.max_epochs=50")
    assert code != 0
    assert (stopped / "checkpoints" / "last.ckpt").is_file()
    assert not (stopped / "results.json").exists()
    assert "stopped by SIGTERM" in (stopped / "run.log").read_text()
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] < 49


def test_divergence_stops_at_the_first_non_finite_loss(tmp_path):
    run_dir = tmp_path / "nan"
    proc = _run(tmp_path, "method.optimizer.lr=1e30", "trainer.max_epochs=5",
                f"hydra.run.dir={run_dir}")  # fmt: skip
    assert proc.returncode != 0
    assert "training diverged at step" in proc.stderr and "1e+30" in proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and results["metrics"] == {}
    info = results["divergence"]
    assert info["epoch"] == 0 and info["learning_rates"] == [1e30]
    assert info["step"] <= 2  # the second batch at the latest: one huge update breaks it
    report = subprocess.run(
        [sys.executable, "-m", "adlab.report", str(tmp_path)],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "1 job(s) diverged" in report.stdout and str(run_dir) in report.stdout
