"""The benchmark presets' plans: job counts, each job's settings, plan errors, and the one
headers-only data check that lists exactly the absent sets (adlab.benchmark, adlab.sweeper)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from data_trees import bmad_tree
from fewshot_trees import domains
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from adlab.benchmark import PlanError, expand
from adlab.data.presence import missing_report
from adlab.sweeper import available

CONF = Path(__file__).resolve().parents[1] / "conf"


def plan(name: str, **changes) -> dict:
    block = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml").benchmark)
    return {**block, **changes}


def test_presets_expand_to_every_method_dataset_and_seed():
    medical = expand(plan("bench_medical"))
    rows = Counter(j.row for j in medical)
    # 16 sets x 3 seeds for each full-shot method; 5 sets x 3 shots x 3 seeds few-shot
    assert rows == {"rd4ad": 48, "urd": 48, "pdd": 48, "rd4ad k-shot": 45, "d24fad": 45}
    industrial = expand(plan("bench_industrial"))
    # 15 + 12 + 3 + 6 + 8 categories x 3 seeds; D24FAD does not apply
    assert Counter(j.row for j in industrial) == {"rd4ad": 132, "urd": 132, "pdd": 132}
    assert {j.seed for j in industrial} == {0, 1, 2}
    assert all(j.overrides[-1].startswith("bench={name:") for j in medical + industrial)
    assert {(j.table, j.dataset) for j in industrial if j.table != j.dataset} == set()


def test_restrictions_and_user_overrides():
    jobs = expand(
        plan("bench_industrial", datasets=["btad"], methods=["urd"], seeds=[5],
             overrides={"urd": ["method.iterations=2"]}, roots={"btad": "/data/BT AD"}),
        ["logger=csv"],
    )  # fmt: skip
    assert [j.category for j in jobs] == ["01", "02", "03"]
    assert jobs[0].overrides == [
        "experiment=urd_btad", "dataset=btad", "dataset.category='01'",
        "dataset.root='/data/BT AD'", "seed=5", "method.iterations=2", "logger=csv",
        "bench={name:industrial,table:btad,row:'urd',papers:[urd_btad]}",
    ]  # fmt: skip


def _compose(job):
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=[*job.overrides, "method_name=m", "run_name=r"])


@pytest.mark.parametrize(
    ("preset", "row", "dataset", "category", "expect"),
    [
        ("bench_medical", "rd4ad", "bmad_rsna", None,
         {"image_size": 224, "select": "best_val", "trainer.max_epochs": 200}),
        ("bench_medical", "urd", "bmad_liver", None,
         {"image_size": 256, "select": "best_val", "method.iterations": 5000}),
        ("bench_medical", "pdd", "zhanglab", None,
         {"data.batch_size": 10, "trainer.accumulate_grad_batches": 2, "trainer.max_epochs": 100}),
        ("bench_medical", "d24fad", "d24fad_lag", None,
         {"image_size": 128, "protocol.name": "lodo", "sampler.shots": 2,
          "trainer.max_epochs": 70}),
        ("bench_medical", "rd4ad k-shot", "d24fad_rsna", None,
         {"image_size": 128, "sampler.name": "kshot", "sampler.seeds": [0]}),
        ("bench_industrial", "urd", "mvtec", "cable", {"method.iterations": 10000}),
        ("bench_industrial", "urd", "visa", "pcb1", {"method.iterations": 10000}),
        ("bench_industrial", "urd", "mpdd", "tubes", {"method.iterations": 5000}),
        ("bench_industrial", "pdd", "mvtec2", "rice",
         {"image_size": 256, "trainer.max_epochs": 100, "dataset.name": "mvtec2"}),
        ("bench_industrial", "rd4ad", "btad", "02", {"image_size": 256, "dataset.category": "02"}),
    ],
)  # fmt: skip
def test_each_job_composes_with_its_papers_settings(preset, row, dataset, category, expect):
    job = next(
        j for j in expand(plan(preset))
        if j.row == row and j.dataset == dataset and j.category == category
    )  # fmt: skip
    cfg = _compose(job)
    for key, value in expect.items():
        got = OmegaConf.select(cfg, key)
        assert (OmegaConf.to_object(got) if OmegaConf.is_config(got) else got) == value, key
    assert cfg.bench.row == row


def test_every_borrowed_setting_is_named():
    jobs = expand(plan("bench_industrial")) + expand(plan("bench_medical"))
    borrowed = {(j.row, j.dataset) for j in jobs if j.borrowed}
    assert ("urd", "mpdd") in borrowed and ("pdd", "mvtec") in borrowed
    assert ("urd", "headct") in borrowed and ("rd4ad", "visa") in borrowed
    assert ("urd", "mvtec") not in borrowed and ("pdd", "headct") not in borrowed


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"jobs": [{"row": "x", "datasets": ["mvtec"]}]}, "give experiment (a preset) or method"),
        ({"jobs": [{"row": "x", "datasets": ["mvtec"], "method": "rd4ad", "size": 1}]}, "size"),
        ({"colour": 1}, "unknown keys ['colour']"),
        ({"datasets": ["nothing"]}, "selects no job"),
        ({"table_per": "category"}, "table_per"),
    ],
)
def test_plan_errors_name_the_key(changes, message):
    with pytest.raises(
        PlanError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        expand(plan("bench_industrial", **changes))


def test_the_check_lists_exactly_the_absent_sets(tmp_path, monkeypatch):
    data = tmp_path / "data"
    bmad_tree(data / "bmad_brain")
    domains(data)  # d24fad_his, d24fad_lag, d24fad_aptos
    monkeypatch.setenv("ADLAB_DATA", str(data))
    jobs = expand(plan(
        "bench_medical", datasets=["bmad_brain", "headct", "d24fad_his"], seeds=[0], shots=[2],
        lodo_members=["d24fad_his", "d24fad_lag", "d24fad_aptos", "d24fad_rsna"],
    ))  # fmt: skip
    runnable, missing = available(jobs)
    assert sorted(n.label() for n in missing) == ["d24fad_rsna", "headct"]
    # D24FAD needs every member; the full-shot and k-shot runs on d24fad_his do not
    assert {(j.row, j.dataset) for j in runnable} == {
        ("rd4ad", "bmad_brain"), ("urd", "bmad_brain"), ("pdd", "bmad_brain"),
        ("rd4ad", "d24fad_his"), ("urd", "d24fad_his"), ("pdd", "d24fad_his"),
        ("rd4ad k-shot", "d24fad_his"),
    }  # fmt: skip
    text = missing_report(missing)
    assert text.startswith("2 dataset(s)") and "python -m adlab.data.prepare headct" in text
    assert f"{data}/headct" in text and "data/RSNA" in text and "bmad_brain" not in text


def test_every_benchmark_dataset_says_how_to_get_it():
    hints = OmegaConf.load(CONF / "dataset_sources.yaml")
    for name in ("bench_medical", "bench_industrial"):
        p = plan(name)
        needed = set(p["datasets"]) | set(p["lodo_members"])
        assert needed <= set(hints), needed - set(hints)


def test_a_sweep_override_is_refused_with_the_key_to_use(capsys):
    from adlab.plan import main

    assert main(["experiment=bench_industrial", "seed=0,1", "--no-time"]) == 2
    assert "use benchmark.seeds=[..]" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["bench_medical", "bench_industrial"])
def test_one_job_of_every_row_and_dataset_composes(preset):
    firsts = {}
    for job in expand(plan(preset)):
        firsts.setdefault((job.row, job.dataset), job)
    with initialize_config_dir(str(CONF), version_base=None):
        for (row, dataset), job in firsts.items():
            cfg = compose("config", overrides=[*job.overrides, "method_name=m", "run_name=r"])
            assert cfg.dataset.name == dataset and cfg.bench.row == row
            assert cfg.method._target_.rsplit(".", 1)[-1].lower() == row.split()[0]
