"""Launch-time choices (threads, workers, GPU per job), resume=auto, objectives, W&B labels and
the report plot: the pieces the scale-out e2e tests rely on, without starting processes."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from adlab.callbacks.checkpoints import resume_path
from adlab.metrics.ranking import usable_cpus
from adlab.objective import ObjectiveError, check_objective, objective_value
from adlab.report_plot import bars, plot
from adlab.resources import Launch, apply_resources, parallel_jobs, threads_for
from adlab.tracking import group_name, run_tags


def test_threads_are_shared_between_parallel_jobs_and_ddp_processes():
    cpus = usable_cpus()
    assert threads_for("auto", Launch()) is None  # alone: torch's default
    assert threads_for("auto", Launch(parallel_jobs=2)) == max(1, cpus // 2)
    assert threads_for("auto", Launch(parallel_jobs=2), processes=2) == max(1, cpus // 4)
    assert threads_for("auto", Launch(parallel_jobs=4, cpus_per_job=8)) == 8  # submitit's share
    assert threads_for(3, Launch(parallel_jobs=8)) == 3
    assert parallel_jobs(None) == 1 and parallel_jobs(3) == 3 and parallel_jobs(-1) == cpus
    with pytest.raises(ValueError, match="resources.threads='many'"):
        threads_for("many", Launch())


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
