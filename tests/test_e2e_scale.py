"""Scaling out, end to end on tiny synthetic data: parallel launchers (joblib, submitit_local),
resume=auto, DDP on 2 CPU processes, the W&B sweep dashboard and an Optuna search on the
validation split. Each test starts the real entry points (Hydra plugins, Lightning, W&B offline).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_e2e_run import TINY, adlab
from wandb_records import run_config, run_record, summary

from adlab.metrics.ranking import usable_cpus

pytestmark = pytest.mark.e2e

ONE_EPOCH = [*TINY, "trainer.max_epochs=1"]


def _results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]


def _epoch_losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]


def test_joblib_sweep_is_a_wandb_dashboard_and_a_report(tmp_path):
    """2 jobs in parallel with capped threads; each W&B run in the sweep's group with tags, its
    test metrics in the summary and the PRO curve; the report as W&B Tables and a PNG."""
    sweep = tmp_path / "sweep"
    adlab("adlab.run", "-m", *ONE_EPOCH, "seed=0,1", "hydra/launcher=joblib",
          "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    results = _results(sweep)
    assert [r["config"]["seed"] for r in results] == [0, 1]
    threads = max(1, usable_cpus() // 2)
    for job, result in zip(sorted(sweep.glob("*/results.json")), results):
        assert f"'threads': {threads}" in (job.parent / "run.log").read_text()
        log = next(job.parent.glob("wandb/offline-run-*/run-*.wandb"))
        run = run_record(log)
        assert run.run_group == str(sweep.resolve())
        assert list(run.tags) == ["method=rd4ad", "dataset=synthetic", "shots=full"]
        final = summary(log)
        for key, value in result["metrics"].items():
            assert final[f"test/{key}"] == pytest.approx(value, abs=1e-12), key
        assert final["test/pro_curve_table/_type"] == "table-file"
        assert "test/pro_curve" in json.dumps(run_config(log))  # the line chart's spec
        assert list(log.parent.glob("files/media/table/test/pro_curve_table_*.table.json"))
    png = tmp_path / "table.png"
    report = adlab("adlab.report", str(sweep), "--wandb", "--plot", str(png), cwd=tmp_path)
    assert "(n=2)" in report.stdout and png.is_file()
    runs = [p for p in sweep.glob("wandb/offline-run-*") if p.is_dir()]
    assert len(runs) == 1  # the report's own run, beside the jobs
    log = next(runs[0].glob("run-*.wandb"))
    assert run_record(log).run_group == str(sweep.resolve())
    assert run_record(log).job_type == "report"
    cells = json.loads(
        next(runs[0].glob("files/media/table/report/cells_*.table.json")).read_text()
    )
    auroc = [row for row in cells["data"] if row[0] == "image_auroc"]
    assert len(auroc) == 1 and auroc[0][5] == 2  # one cell, two seeds
    values = [100 * r["metrics"]["image_auroc"] for r in results]
    assert auroc[0][3] == pytest.approx(sum(values) / 2)


def test_submitit_local_sweep_then_resume_auto(tmp_path):
    """2 jobs started at once by submitit; rerunning a job in its own directory continues from
    its last.ckpt (what a requeued SLURM job does) without ckpt_path."""
    sweep = tmp_path / "sweep"
    adlab("adlab.run", "-m", *ONE_EPOCH, "logger=none", "seed=0,1",
          "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
          f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert [r["config"]["seed"] for r in _results(sweep)] == [0, 1]
    report = adlab("adlab.report", str(sweep), cwd=tmp_path)
    assert "(n=2)" in report.stdout and "without results.json" not in report.stdout
    job = sorted(p for p in sweep.iterdir() if p.name.startswith("0_"))[0]
    adlab("adlab.run", *TINY, "trainer.max_epochs=2", "logger=none", "seed=0",
          f"hydra.run.dir={job}", cwd=tmp_path)  # fmt: skip
    assert json.loads((job / "results.json").read_text())["epochs"] == 2
    assert "resuming from" in (job / "run.log").read_text()
    assert len(_epoch_losses(job)) == 1  # only the second epoch was trained


def test_ddp_on_two_processes_tests_the_whole_set_once(tmp_path):
    """trainer=ddp with 2 gloo processes: one results.json, one checkpoint, one W&B run, and the
    test metrics of a single-process evaluation of the same checkpoint, the official codes'
    variants included (PDD's batch-level ones depend on the test order that the ranks split)."""
    run = tmp_path / "ddp"
    code = "eval.code_metrics=[rd4ad,pdd]"
    adlab("adlab.run", *ONE_EPOCH, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
          code, f"hydra.run.dir={run}", cwd=tmp_path)  # fmt: skip
    assert len(list(run.glob("wandb/offline-run-*"))) == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    ours = json.loads((run / "results.json").read_text())
    assert ours["config"]["trainer"]["strategy"] == "ddp"
    out = tmp_path / "eval"
    adlab("adlab.evaluate", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "dataset=synthetic",
          "logger=none", "trainer.enable_progress_bar=false", code, f"hydra.run.dir={out}",
          cwd=tmp_path)  # fmt: skip
    single = json.loads((out / "results.json").read_text())["metrics"]
    assert set(single) == set(ours["metrics"])
    assert {k for k in single if k.startswith("code_")} == {
        "code_rd4ad/pixel_auroc", "code_rd4ad/aupro", "code_rd4ad/image_auroc",
        "code_pdd/image_auroc", "code_pdd/image_ap", "code_pdd/image_f1_max",
    }  # fmt: skip
    for key, value in single.items():
        assert ours["metrics"][key] == pytest.approx(value, abs=1e-6), key
    refused = adlab("adlab.run", "-m", *ONE_EPOCH, "logger=none", "trainer=ddp",
                    "trainer.accelerator=cpu", "trainer.devices=2",
                    f"hydra.sweep.dir={tmp_path / 'm'}", cwd=tmp_path, check=False)  # fmt: skip
    assert refused.returncode != 0 and "inside a multirun" in refused.stderr


def test_optuna_searches_on_the_validation_split_only(tmp_path):
    """3 trials; each returns its final validation loss; the best trial is the lowest one. A
    search without a validation objective, or without a validation split, refuses to start."""
    sweep = tmp_path / "tune"
    search = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
              "hydra.sweeper.direction=minimize", "hydra.sweeper.sampler.seed=0",
              "method.optimizer.lr=interval(0.001, 0.01)"]  # fmt: skip
    adlab("adlab.run", "-m", *ONE_EPOCH, "logger=none", *search, "objective=val/loss",
          "dataset.val_fraction=0.25", f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    results = _results(sweep)
    assert len(results) == 3
    losses = [r["validation"]["val/loss"] for r in results]
    assert len({r["config"]["method"]["optimizer"]["lr"] for r in results}) == 3
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {min(losses)}" in best
    no_objective = adlab("adlab.run", "-m", *ONE_EPOCH, "logger=none", *search,
                         f"hydra.sweep.dir={tmp_path / 'a'}", cwd=tmp_path,
                         check=False)  # fmt: skip
    assert no_objective.returncode != 0 and "set objective=val/loss" in no_objective.stderr
    no_split = adlab("adlab.run", *ONE_EPOCH, "logger=none", "objective=val/loss",
                     f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path, check=False)  # fmt: skip
    assert no_split.returncode != 0 and "dataset.val_fraction" in no_split.stderr
    preset = adlab("adlab.run", "experiment=tune_pdd_loss", "--cfg", "all", cwd=tmp_path)
    assert "method.loss.w_div: interval(0.1, 1.0)" in preset.stdout
    assert "objective: val/image_auroc" in preset.stdout
