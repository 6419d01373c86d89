"""Launch-time choices (threads, workers, GPU per job), resume=auto, objectives, W&B labels and
the report plot: the pieces the scale-out e2e tests rely on (one small probe process checks the
thread count under an affinity mask)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from adlab.callbacks.checkpoints import resume_path
from adlab.metrics.ranking import usable_cpus
from adlab.objective import ObjectiveError, check_objective, objective_value
from adlab.report_plot import bars, plot
from adlab.resources import (
    Launch,
    apply_resources,
    cgroup_cpu_limit,
    job_cpus,
    parallel_jobs,
    threads_for,
)
from adlab.tracking import group_name, run_tags


def test_threads_are_shared_between_parallel_jobs_and_ddp_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = job_cpus()
    assert threads_for("auto", Launch()) == cpus  # alone: every CPU it is given
    assert threads_for("auto", Launch(parallel_jobs=2)) == max(1, cpus // 2)
    assert threads_for("auto", Launch(parallel_jobs=2), processes=2) == max(1, cpus // 4)
    assert threads_for("auto", Launch(parallel_jobs=4, cpus_per_job=8)) == 8  # submitit's share
    assert threads_for(3, Launch(parallel_jobs=8)) == 3
    assert parallel_jobs(None) == 1 and parallel_jobs(3) == 3 and parallel_jobs(-1) == cpus
    with pytest.raises(ValueError, match="resources.threads='many'"):
        threads_for("many", Launch())


def test_lone_job_keeps_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_for("auto", Launch()) is None  # the user's explicit setting: torch's choice
    assert threads_for("auto", Launch(parallel_jobs=2)) == max(1, job_cpus() // 2)


def test_cgroup_quota_caps_the_cpus(tmp_path):
    assert cgroup_cpu_limit(tmp_path) is None  # no cgroup files: no quota
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus=1.5
    assert cgroup_cpu_limit(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    assert cgroup_cpu_limit(v1) == 2.0


AFFINITY_PROBE = """
import os, sys, torch
from omegaconf import OmegaConf
from adlab.resources import Launch, apply_resources
if sys.argv[1] == "after-import":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
before = torch.get_num_threads()
cfg = OmegaConf.create(
    {"resources": {"threads": "auto"}, "data": {"num_workers": 4}, "trainer": {"devices": 1}}
)
apply_resources(cfg, Launch())
print(before, torch.get_num_threads(), cfg.data.num_workers)
"""


@pytest.mark.skipif(usable_cpus() < 2 or not shutil.which("taskset"), reason="needs 2 CPUs")
@pytest.mark.parametrize("when", ["taskset", "after-import"])
def test_a_job_pinned_to_one_cpu_runs_one_thread(when):
    """Under `taskset -c 0` torch already starts with 1 thread; when the mask shrinks after torch
    started (before is still every CPU), resources.threads=auto follows the mask."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-c", AFFINITY_PROBE, when]
    if when == "taskset":
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()
    before, after, workers = map(int, out)
    assert (after, workers) == (1, 1)
    assert before == (1 if when == "taskset" else usable_cpus())


def test_apply_resources_caps_workers_and_records_the_choice():
    cfg = OmegaConf.create(
        {"resources": {"threads": 1}, "data": {"num_workers": 4}, "trainer": {"devices": 1}}
    )
    before = torch.get_num_threads()
    try:
        chosen = apply_resources(cfg, Launch(job_num=3, parallel_jobs=2))
        assert chosen["threads"] == 1 and torch.get_num_threads() == 1
        assert cfg.data.num_workers == 1  # results.json records what the job used
        assert "gpu" not in chosen  # no GPUs here: devices left as configured
    finally:
        torch.set_num_threads(before)


def test_resume_auto_finds_the_run_directorys_last_checkpoint(tmp_path):
    assert resume_path(None, "auto", tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    assert resume_path(None, "auto", tmp_path) == str(last)
    assert resume_path("/given.ckpt", "auto", tmp_path) == "/given.ckpt"
    assert resume_path(None, "never", tmp_path) is None
    with pytest.raises(ValueError, match="resume='sometimes'"):
        resume_path(None, "sometimes", tmp_path)


def test_objectives_are_validation_metrics_and_need_a_validation_split():
    check_objective(None, {"normal": 0, "anomalous": 0})
    check_objective("val/loss", {"normal": 4, "anomalous": 0})
    with pytest.raises(ObjectiveError, match="needs normal validation images.*val_fraction"):
        check_objective("val/loss", {"normal": 0, "anomalous": 0})
    with pytest.raises(ObjectiveError, match="needs anomalous validation images"):
        check_objective("val/image_auroc", {"normal": 4, "anomalous": 0})
    with pytest.raises(ObjectiveError, match="test set is never an objective"):
        check_objective("test/image_auroc", {"normal": 4, "anomalous": 4})
    assert objective_value({"validation": {"val/loss": 0.25}}, "val/loss") == 0.25
    with pytest.raises(ObjectiveError, match="no finite value"):
        objective_value({"validation": {}}, "val/loss")


def test_wandb_group_and_tags(tmp_path):
    assert group_name(None) is None
    assert group_name(tmp_path / "sweep") == str((tmp_path / "sweep").resolve())
    assert len(group_name("/" + "x" * 300)) == 128
    config = {
        "method_name": "rd4ad",
        "dataset": {"name": "mvtec", "category": ["bottle", "cable"]},
        "sampler": {"name": "kshot", "shots": 4},
    }
    assert run_tags(config) == [
        "method=rd4ad", "dataset=mvtec", "category=bottle+cable", "shots=4"
    ]  # fmt: skip
    assert run_tags({"method_name": "pdd", "dataset": {"name": "headct"}})[-1] == "shots=full"


def _result(method: str, dataset: str, seed: int, auroc: float) -> dict:
    return {
        "method": method,
        "config": {"dataset": {"name": dataset}, "seed": seed},
        "metrics": {"image_auroc": auroc},
        "metrics_per_category": {},
    }


def test_report_plot_draws_one_panel_per_dataset(tmp_path):
    results = [
        _result("rd4ad", "headct", 0, 0.80), _result("rd4ad", "headct", 1, 0.90),
        _result("pdd", "headct", 0, 0.95), _result("pdd", "brainmri", 0, 0.70),
    ]  # fmt: skip
    methods, datasets, stats = bars(results, "image_auroc")
    assert datasets == ["brainmri", "headct"] and methods == ["pdd", "rd4ad"]
    assert stats[("rd4ad", "headct")][0] == pytest.approx(85.0)
    assert stats[("rd4ad", "headct")][1] == pytest.approx(7.0710678)  # seed std
    path = plot(results, "image_auroc", tmp_path / "t.png")
    with Image.open(path) as img:
        assert img.size[0] > 2 * 200  # two panels side by side
        colours = {c for _, c in img.getcolors(maxcolors=1 << 16)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # a bar colour per method
