"""End-to-end few-shot runs: D24FAD leave-one-dataset-out over three generated domains, tested per
support seed; evaluation from the checkpoint's stored support set; the RD4AD k-shot baseline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fewshot_trees import domains
from test_e2e_run import adlab
from wandb_records import logged_values

pytestmark = pytest.mark.e2e

TINY = [
    "teacher=resnet18",
    "teacher.pretrained=false",
    "image_size=64",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
LODO = [
    "method=d24fad",
    *TINY,
    "protocol.members=[d24fad_his,d24fad_lag,d24fad_aptos]",
    "dataset=d24fad_his",
    "sampler.shots=2",
    "data.batch_size=8",
]


@pytest.fixture(scope="module")
def lodo_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("lodo")
    domains(cwd / "data", n_train=12, n_test=6, size=64)
    run_dir = cwd / "run"
    adlab("adlab.run", *LODO, "sampler.seeds=[0,1]", "trainer.max_epochs=2",
          f"hydra.run.dir={run_dir}", cwd=cwd)  # fmt: skip
    return run_dir


def test_lodo_training_reduces_the_loss(lodo_run):
    rows = list(csv.DictReader((lodo_run / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    assert any(r.get("train/ssd_step") for r in rows) and any(r.get("train/tsd_step") for r in rows)


def test_each_support_seed_is_tested_and_the_mean_and_std_written(lodo_run):
    results = json.loads((lodo_run / "results.json").read_text())
    sets = results["support_sets"]
    assert [s["label"] for s in sets] == ["seed0", "seed1"]
    assert sets[0]["files"] != sets[1]["files"]
    for s in sets:
        assert Path(s["list"]).read_text().split() == s["files"]
        assert all("/d24fad_his/train/good/" in f for f in s["files"]) and len(s["files"]) == 2
    aurocs = [s["metrics"]["image_auroc"] for s in sets]
    assert results["metrics"]["image_auroc"] == pytest.approx(sum(aurocs) / 2)
    std = abs(aurocs[0] - aurocs[1]) / 2**0.5  # sample std of two values
    assert results["metrics_std"]["image_auroc"] == pytest.approx(std)
    rows = list(csv.DictReader((lodo_run / "csv" / "metrics.csv").open()))
    logged = {k: float(v) for r in rows for k, v in r.items() if k.startswith("test/") and v}
    assert logged["test/seed1/image_auroc"] == pytest.approx(aurocs[1], abs=1e-6)
    assert logged["test/image_auroc_std"] == pytest.approx(std, abs=1e-6)
    (wandb_log,) = (lodo_run / "wandb").glob("offline-run-*/run-*.wandb")
    values = logged_values(wandb_log)
    assert values["test/image_auroc"][-1] == pytest.approx(results["metrics"]["image_auroc"])
    assert values["test/seed0/image_auroc"][-1] == pytest.approx(aurocs[0], abs=1e-6)
    members = results["provenance"]["dataset"]["summary"]["members"]
    assert {k: v["role"] for k, v in members.items()} == {
        "d24fad_lag": "train", "d24fad_aptos": "train", "d24fad_his": "target"
    }  # fmt: skip
    assert all(m["root"] and m["fingerprint"] for m in members.values())
    assert results["provenance"]["dataset"]["summary"]["train"] == {"normal": 24}
    report = adlab("adlab.report", str(lodo_run), "--metrics", "image_auroc", cwd=lodo_run)
    assert "d24fad_his/his (2-shot)" in report.stdout and "(n=2)" in report.stdout


def test_the_checkpoint_scores_with_its_stored_support_set(lodo_run, tmp_path):
    """sampler=full: no support set from the data, so the one stored in last.ckpt (seed 0)."""
    results = json.loads((lodo_run / "results.json").read_text())
    common = ["dataset=d24fad_his", "logger=none", "trainer.enable_progress_bar=false"]
    ckpt = f"ckpt={lodo_run / 'checkpoints' / 'last.ckpt'}"
    adlab("adlab.evaluate", ckpt, *common, f"hydra.run.dir={tmp_path / 'a'}", cwd=lodo_run.parent)
    stored = json.loads((tmp_path / "a" / "results.json").read_text())["metrics"]
    for key, value in results["support_sets"][0]["metrics"].items():
        assert stored[key] == pytest.approx(value, abs=1e-6), key
    adlab("adlab.evaluate", ckpt, *common, "sampler=kshot", "sampler.shots=2",
          "sampler.seeds=[1]", f"hydra.run.dir={tmp_path / 'b'}", cwd=lodo_run.parent)  # fmt: skip
    seed1 = json.loads((tmp_path / "b" / "results.json").read_text())["metrics"]
    expected = results["support_sets"][1]["metrics"]["image_auroc"]
    assert seed1["image_auroc"] == pytest.approx(expected)


def test_rd4ad_kshot_baseline_trains_on_k_target_normals(tmp_path):
    domains(tmp_path / "data", n_train=12, n_test=6, size=64)
    out = tmp_path / "rd"
    adlab("adlab.run", "method=rd4ad", *TINY, "dataset=d24fad_his", "sampler=kshot",
          "sampler.shots=4", "data.batch_size=4", "trainer.max_epochs=1", "logger=csv",
          f"hydra.run.dir={out}", cwd=tmp_path)  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["provenance"]["dataset"]["summary"]["train"] == {"normal": 4}
    assert 0.0 <= results["metrics"]["image_auroc"] <= 1.0
    several = adlab("adlab.run", "method=rd4ad", *TINY, "dataset=d24fad_his", "sampler=kshot",
                    "sampler.seeds=[0,1]", cwd=tmp_path, check=False)  # fmt: skip
    assert several.returncode != 0 and "one job per seed" in several.stderr


def test_fewshot_bad_inputs_fail_before_training(tmp_path):
    domains(tmp_path / "data", n_train=3, n_test=2, size=64)
    cases = {
        "is not among protocol.members": ["dataset=d24fad_rsna"],
        "sampler.shots=8 but category 'his' has only 3": ["sampler.shots=8"],
        "d24fad_lag: folder": [f"protocol.roots.d24fad_lag={tmp_path / 'nowhere'}"],
    }
    for message, override in cases.items():
        proc = adlab("adlab.run", *LODO, "logger=none", *override, cwd=tmp_path, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (message, proc.stderr[-2000:])
        assert "Trainer.fit" not in proc.stdout + proc.stderr


def test_predict_scores_new_images_with_the_stored_support_set(lodo_run, tmp_path):
    """adlab.predict needs no support images: the checkpoint's set (seed 0) scores the target's
    test folder exactly as the run's test phase did."""
    from sklearn.metrics import roc_auc_score

    test_dir = lodo_run.parent / "data" / "d24fad_his" / "test"
    out = tmp_path / "pred"
    adlab("adlab.predict", f"ckpt={lodo_run / 'checkpoints' / 'last.ckpt'}",
          f"input={test_dir}", f"output={out}", cwd=lodo_run.parent)  # fmt: skip
    rows = list(csv.DictReader((out / "scores.csv").open()))
    labels = [int(Path(r["path"]).parent.name != "good") for r in rows]
    assert 0 < sum(labels) < len(labels)
    auroc = roc_auc_score(labels, [float(r["score"]) for r in rows])
    results = json.loads((lodo_run / "results.json").read_text())
    assert auroc == pytest.approx(results["support_sets"][0]["metrics"]["image_auroc"], abs=1e-6)
