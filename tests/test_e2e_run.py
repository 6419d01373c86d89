"""End-to-end runs of `python -m adlab.run` / `adlab.evaluate` / `adlab.report` on synthetic data.

Each test starts the real entry point in a subprocess (Hydra, Lightning, W&B offline for real).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_trees import mvtec_tree, write_png
from wandb_records import logged_values, run_config

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
# A small, learnable setting: random-init ResNet18 teacher at 64 px on synthetic CT-like images.
TINY = [
    "method=rd4ad",
    "dataset=synthetic",
    "teacher=resnet18",
    "teacher.pretrained=false",
    "image_size=64",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def adlab(module: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "ADLAB_DATA": str(cwd / "data"),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One RD4AD run long enough to learn the synthetic anomalies.

    The per-pixel cosine loss (method.loss=pixel_cos) trains exactly what the anomaly map
    measures, so a random teacher at 64 px learns the anomalies within a dozen short epochs.
    """
    cwd = tmp_path_factory.mktemp("run")
    run_dir = cwd / "run"
    adlab(
        "adlab.run",
        *TINY,
        "method.loss=pixel_cos",
        "trainer.max_epochs=12",
        f"hydra.run.dir={run_dir}",
        cwd=cwd,
    )
    return run_dir


def _epoch_losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]


def test_training_reduces_the_loss(trained):
    losses = _epoch_losses(trained)
    assert len(losses) == 12
    assert losses[-1] < 0.6 * losses[0], losses


def test_random_teacher_learns_synthetic_anomalies(trained):
    metrics = json.loads((trained / "results.json").read_text())["metrics"]
    assert metrics["image_auroc"] >= 0.8, metrics
    assert metrics["pixel_auroc"] >= 0.8, metrics
    for key in ("image_ap", "image_f1_max", "pixel_ap", "pixel_f1_max", "aupro"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)


def test_results_json_holds_metrics_and_provenance(trained):
    results = json.loads((trained / "results.json").read_text())
    prov = results["provenance"]
    assert prov["weights"] == {"teacher": "random"}
    assert prov["dataset"]["fingerprint"]
    assert prov["dataset"]["summary"]["test"]["anomalous"] > 0
    assert results["config"]["teacher"]["name"] == "resnet18"
    assert results["timings"]["train_step_s"] > 0 and results["timings"]["test_images_per_s"] > 0
    assert results["memory"]["peak_rss_mib"] > 100
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert (trained / "pro_curve.csv").is_file() and (trained / "pro_curve.png").is_file()
    pngs = sorted((trained / "anomaly_maps").glob("*.png"))
    assert len(pngs) == 8
    assert sum("anomalous" in p.name for p in pngs) == 4
    assert (trained / "figures" / "worst_errors.png").is_file()
    assert (trained / "figures" / "score_histogram.png").is_file()
    assert any("randomly initialised" in w for w in results["warnings"])


def test_wandb_offline_run_holds_the_metrics(trained):
    logs = list((trained / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    logged = logged_values(logs[0])
    results = json.loads((trained / "results.json").read_text())
    for key, value in results["metrics"].items():
        assert logged[f"test/{key}"][-1] == pytest.approx(value, abs=1e-6), key
    assert len(logged["train/loss_epoch"]) == 12
    assert logged["test/anomaly_maps/count"] == [8]
    config = run_config(logs[0])
    assert config["provenance"]["weights"] == {"teacher": "random"}
    assert config["teacher"]["name"] == "resnet18"


def test_evaluate_reproduces_the_test_metrics(trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    adlab(
        "adlab.evaluate",
        f"ckpt={ckpt}",
        "dataset=synthetic",
        "logger=none",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
        cwd=trained.parent,
    )
    ours = json.loads((out / "results.json").read_text())["metrics"]
    original = json.loads((trained / "results.json").read_text())["metrics"]
    for key, value in original.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    out = tmp_path / "resumed"
    adlab(
        "adlab.run",
        *TINY,
        "trainer.max_epochs=13",
        "logger=none",
        f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={out}",
        cwd=trained.parent,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 13
    assert len(_epoch_losses(out)) == 1  # only the one new epoch was trained


def test_multirun_keeps_finished_jobs_when_a_later_one_fails(tmp_path):
    sweep = tmp_path / "sweep"
    proc = adlab(
        "adlab.run",
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "logger=none",
        "image_size=64,72",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "image_size=72 is not divisible by 32" in proc.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1"]
    assert (jobs[0] / "results.json").is_file()
    assert (jobs[0] / "checkpoints" / "last.ckpt").is_file()
    assert not (jobs[1] / "results.json").exists()
    report = adlab("adlab.report", str(sweep), cwd=tmp_path)
    assert "image_auroc" in report.stdout and "1 job(s) without results.json" in report.stdout


def test_multirun_over_seeds_gives_one_result_per_job(tmp_path):
    sweep = tmp_path / "seeds"
    adlab(
        "adlab.run",
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "logger=none",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["config"]["seed"] for r in results] == [0, 1]
    report = adlab("adlab.report", str(sweep), "--csv", str(tmp_path / "t.csv"), cwd=tmp_path)
    assert "(n=2)" in report.stdout


def test_bad_inputs_fail_with_clear_errors(tmp_path):
    unknown = adlab("adlab.run", "teacher=resnet999", cwd=tmp_path, check=False)
    assert unknown.returncode != 0 and "Available options" in unknown.stderr
    assert "wide_resnet50_2" in unknown.stderr
    missing = adlab(
        "adlab.run",
        *TINY,
        "dataset=mvtec",
        f"dataset.root={tmp_path / 'nowhere'}",
        cwd=tmp_path,
        check=False,
    )
    assert missing.returncode != 0 and str(tmp_path / "nowhere") in missing.stderr


def test_best_val_selects_on_a_validation_split_never_on_test(tmp_path):
    out = tmp_path / "bv"
    adlab(
        "adlab.run",
        *TINY,
        "trainer.max_epochs=2",
        "logger=none",
        "dataset.val_fraction=0.25",
        "select=best_val",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["selected"].endswith("best.ckpt") and Path(results["selected"]).is_file()
    summary = results["provenance"]["dataset"]["summary"]
    assert summary["valid"] == {"normal": 16, "anomalous": 0}  # 25% of the 64 training normals
    assert summary["train"]["normal"] == 48
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    assert len([r for r in rows if r.get("val/loss")]) == 2
    no_val = adlab("adlab.run", *TINY, "select=best_val", cwd=tmp_path, check=False)
    assert no_val.returncode != 0 and "needs a validation split" in no_val.stderr


def test_multi_class_run_reports_each_category_and_their_mean(tmp_path):
    """One model on two MVTec-layout categories: results.json, the CSV log and the report hold
    each category's metrics and the mean over categories next to the pooled ones."""
    for category in ("bottle", "cable"):
        mvtec_tree(tmp_path / "data" / "mvtec", category)
    for i in range(2):  # cable's anomalous images differ from its train set: the classes differ
        write_png(
            tmp_path / "data" / "mvtec" / "cable" / "test" / "crack" / f"{i:03d}.png", value=9
        )
    out = tmp_path / "mc"
    adlab(
        "adlab.run",
        *TINY,
        "dataset=mvtec",
        "dataset.category=[bottle,cable]",
        "data.batch_size=3",
        "trainer.max_epochs=1",
        "logger=csv",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    results = json.loads((out / "results.json").read_text())
    by_cat = results["metrics_per_category"]
    assert list(by_cat) == ["bottle", "cable", "category_mean"]
    assert by_cat["bottle"]["pixel_auroc"] != pytest.approx(by_cat["cable"]["pixel_auroc"])
    for key, value in by_cat["category_mean"].items():
        assert value == pytest.approx((by_cat["bottle"][key] + by_cat["cable"][key]) / 2), key
    assert set(by_cat["bottle"]) == set(results["metrics"])  # image, pixel metrics and AUPRO
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    logged = {k: float(v) for r in rows for k, v in r.items() if k.startswith("test/") and v}
    assert logged["test/cable/aupro"] == pytest.approx(by_cat["cable"]["aupro"], abs=1e-6)
    assert logged["test/category_mean/image_auroc"] == pytest.approx(
        by_cat["category_mean"]["image_auroc"], abs=1e-6
    )
    report = adlab("adlab.report", str(out), cwd=tmp_path)
    assert "| mvtec/bottle | mvtec/cable | mean |" in report.stdout


def test_predict_writes_maps_and_scores_and_lists_unreadable_files(trained, tmp_path):
    import numpy as np
    import torch

    from adlab.inference import load_model, preprocess

    images = sorted((trained.parent / "data").rglob("test/*/*.png"))[:3]
    assert len(images) == 3
    folder = tmp_path / "in"
    folder.mkdir()
    for i, src in enumerate(images):
        (folder / f"img{i}.png").write_bytes(src.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "out"
    ckpt = trained / "checkpoints" / "last.ckpt"
    proc = adlab(
        "adlab.predict", f"ckpt={ckpt}", f"input={folder}", f"output={out}", "batch_size=2",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # one unreadable file, the others processed
    assert "broken.png" in proc.stderr
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [Path(r["path"]).name for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert [r["path"] for r in csv.DictReader((out / "failed.csv").open())] == [
        str(folder / "broken.png")
    ]
    assert len(list((out / "overlays").glob("*.png"))) == 3
    # the same model loaded in this process, without Lightning or Hydra in the caller's code
    network = load_model(ckpt)
    with torch.no_grad():
        maps, scores = network(preprocess(network, [folder / f"img{i}.png" for i in range(3)]))
    for i, row in enumerate(rows):
        assert float(row["score"]) == pytest.approx(float(scores[i]), abs=1e-5)
        saved = np.load(out / "maps" / f"img{i}.npy")
        assert saved.shape == (64, 64)
        np.testing.assert_allclose(saved, maps[i].numpy(), atol=1e-6)


def test_onnx_and_torchscript_exports_match_eager(trained, tmp_path):
    import numpy as np
    import onnxruntime
    import torch

    from adlab import load_model

    ckpt = trained / "checkpoints" / "last.ckpt"
    adlab("adlab.export", f"ckpt={ckpt}", "format=onnx", f"output={tmp_path / 'm.onnx'}",
          cwd=tmp_path)  # fmt: skip
    adlab("adlab.export", f"ckpt={ckpt}", "format=torchscript", f"output={tmp_path / 'm.pt'}",
          cwd=tmp_path)  # fmt: skip
    network = load_model(ckpt)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        maps, scores = network(images)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    onnx_maps, onnx_scores = session.run(None, {"images": images.numpy()})  # batch 3, exported 1
    np.testing.assert_allclose(onnx_maps, maps.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_scores, scores.numpy(), atol=1e-4)
    meta = {
        p.key: p.value for p in __import__("onnx").load(str(tmp_path / "m.onnx")).metadata_props
    }
    assert json.loads(meta["adlab_preprocessing"])["image_size"] == 64
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    ts_maps, ts_scores = scripted(images)
    torch.testing.assert_close(ts_maps, maps, atol=1e-5, rtol=0)
