"""Tiny versions of both benchmark presets, end to end on generated trees in the real layouts:
the sweep (data checked once, only_available), `adlab.plan` (same job count, measured time) and
`adlab.report` (one table per benchmark, paper numbers beside the cells, jobs not run listed)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from data_trees import bmad_tree, mvtec_tree
from fewshot_trees import domains
from test_e2e_run import adlab

pytestmark = pytest.mark.e2e

# Random ResNet18 teachers, a width-8 VMamba, 64 px, one epoch or two iterations.
TINY = [
    "+benchmark.overrides.rd4ad=['teacher=resnet18','teacher.pretrained=false']",
    "+benchmark.overrides.d24fad=['teacher=resnet18','teacher.pretrained=false','data.batch_size=8']",
    "+benchmark.overrides.urd=['teacher.expert.name=resnet18','teacher.expert.pretrained=false',"
    "'method.iterations=2']",
    "+benchmark.overrides.pdd=['teacher.cnn.name=resnet18','teacher.cnn.pretrained=false',"
    "'teacher.vmamba.weights=null','+teacher.vmamba.dim=8','+teacher.vmamba.depths=[1,1,1,1]',"
    "'+teacher.vmamba.d_state=4']",
    "image_size=64",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]
# headct is absent on purpose: only_available runs the rest and lists it. URD and PDD run in the
# industrial sweep (time: ~10 s a job on 2 cores).
MEDICAL = [
    "experiment=bench_medical",
    "benchmark.datasets=[bmad_brain,headct,d24fad_his]",
    "benchmark.methods=[rd4ad,d24fad]",
    "benchmark.seeds=[0]",
    "benchmark.shots=[2]",
    "benchmark.lodo_members=[d24fad_his,d24fad_lag,d24fad_aptos]",
    *TINY,
]
INDUSTRIAL = [
    "experiment=bench_industrial",
    "benchmark.datasets=[mvtec]",
    "benchmark.categories.mvtec=[bottle]",
    "benchmark.seeds=[0,1]",
    *TINY,
]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("bench")
    bmad_tree(cwd / "data" / "bmad_brain")
    domains(cwd / "data", n_train=12, n_test=6, size=64)
    mvtec_tree(cwd / "data" / "mvtec", "bottle")
    adlab("adlab.run", "-m", *MEDICAL, "benchmark.only_available=true",
          f"hydra.sweep.dir={cwd}/multirun/medical", cwd=cwd)  # fmt: skip
    adlab("adlab.run", "-m", *INDUSTRIAL, f"hydra.sweep.dir={cwd}/multirun/industrial", cwd=cwd)
    return cwd


def launched(sweep: Path) -> int:
    return len([d for d in sweep.iterdir() if (d / ".hydra").is_dir()])


def test_a_missing_set_stops_the_sweep_before_any_job(sweeps, tmp_path):
    sweep = tmp_path / "stopped"
    proc = adlab("adlab.run", "-m", *MEDICAL, f"hydra.sweep.dir={sweep}", cwd=sweeps, check=False)
    assert proc.returncode != 0
    listed = re.findall(r"^  (\S+) at ", proc.stderr, re.MULTILINE)
    assert listed == ["headct"], proc.stderr[-3000:]
    assert (
        "python -m adlab.data.prepare headct" in proc.stderr and "No job was started" in proc.stderr
    )
    assert not sweep.exists() or launched(sweep) == 0


def test_the_plan_counts_the_jobs_the_sweep_launches(sweeps):
    medical = sweeps / "multirun" / "medical"
    plan = json.loads((medical / "benchmark.json").read_text())
    assert launched(medical) == plan["launched"] == 4
    assert plan["jobs"] == 5 and {j["dataset"] for j in plan["not_run"]} == {"headct"}
    out = adlab("adlab.plan", *MEDICAL, "--no-time", cwd=sweeps).stdout
    assert "benchmark medical: 5 jobs (4 with their data present)" in out
    assert "| rd4ad | headct | 1 | missing |" in out
    industrial = launched(sweeps / "multirun" / "industrial")
    out = adlab("adlab.plan", *INDUSTRIAL, "--no-time", cwd=sweeps).stdout
    assert f"benchmark industrial: {industrial} jobs ({industrial} with their data" in out
    assert industrial == 6


def test_the_plan_measures_each_method_and_totals(sweeps):
    out = adlab("adlab.plan", *MEDICAL, "--steps", "2", cwd=sweeps).stdout
    assert re.search(r"  RD4AD at 64 px, batch 16 \(test 16\): [\d.]+ s/step", out), out
    assert re.search(r"  D24FAD 2-shot at 64 px, batch 8 \(test 16\): [\d.]+ s/step", out), out
    assert re.search(r"estimated total: [\d.]+ (s|h) of compute on CPU \(1 jobs without data", out)
    # D24FAD trains on the other members' 2 x 12 normals: 1 epoch of 3 batches (drop_last), and
    # tests 12 images against each of 5 support sets; bmad_tree has 3 training normals
    assert re.search(r"\| d24fad \| d24fad_his \| 1 \| 24 \| 3 \| 60 \| [\d.]+ s \|", out), out
    assert re.search(r"\| rd4ad \| bmad_brain \| 1 \| 3 \| 1 \| ", out), out


def test_the_report_prints_one_table_per_benchmark_with_the_paper_beside(sweeps):
    table = sweeps / "table.csv"
    out = adlab("adlab.report", str(sweeps / "multirun"), "--metrics", "image_auroc",
                "--csv", str(table), "--wandb", cwd=sweeps).stdout  # fmt: skip
    assert "logged the table to W&B" in out  # the same tables, offline files for wandb sync
    out = out[: out.index("logged the table")]
    industrial, medical = out.split("## benchmark medical")
    assert industrial.startswith("## benchmark industrial: mvtec")
    head = next(line for line in medical.splitlines() if line.startswith("| method"))
    assert head == "| method | bmad_brain/brain | d24fad_his/his | d24fad_his/his (2-shot) | mean |"
    rows = {
        line.split(" | ")[0][2:]: line for line in medical.splitlines() if line.startswith("| ")
    }
    assert set(rows) == {"method", "rd4ad", "rd4ad k-shot", "d24fad"}
    assert "[paper 89.4]" in rows["rd4ad"]  # BMAD's RD4AD row, beside the measured cell
    assert re.search(r"± [\d.]+ \(n=5\) \[paper 94\.2\]", rows["d24fad"])  # five support sets
    assert "1 job(s) not run, their data missing (headct)" in medical
    assert "rd4ad on headct, seed 0" in medical
    assert "Settings borrowed where a paper has none:" in medical
    irows = [line.split(" | ")[0][2:] for line in industrial.splitlines() if line.startswith("| ")]
    assert irows == ["method", "rd4ad", "urd", "pdd"]
    irow = next(line for line in industrial.splitlines() if line.startswith("| rd4ad"))
    assert re.search(r"^\| rd4ad \| [\d.]+ ± [\d.]+ \(n=2\) \| [\d.]+ \[paper 98\.5\] \|$", irow)
    lines = list(csv.DictReader(table.open()))
    assert {(r["benchmark"], r["table"]) for r in lines} == {
        ("medical", "medical"),
        ("industrial", "mvtec"),
    }
    assert any(r["paper"] == "89.4" and r["method"] == "rd4ad" for r in lines)
    only = adlab("adlab.report", str(sweeps / "multirun"), "--benchmark", "industrial", cwd=sweeps)
    assert "benchmark medical" not in only.stdout and "benchmark industrial: mvtec" in only.stdout
