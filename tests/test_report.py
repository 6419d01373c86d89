"""adlab.report: aggregation of results.json files into tables."""

import json

from adlab.report import main


def _job(root, name, method, dataset, auroc, category=None, teacher="resnet18"):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    if auroc is not None:
        config = {"dataset": {"name": dataset, "category": category}, "teacher": {"name": teacher}}
        payload = {"method": method, "metrics": {"image_auroc": auroc}, "config": config}
        (job / "results.json").write_text(json.dumps(payload))


def test_report_means_seeds_and_lists_failed_jobs(tmp_path, capsys):
    _job(tmp_path, "0", "rd4ad", "mvtec", 0.9, "bottle")
    _job(tmp_path, "1", "rd4ad", "mvtec", 0.8, "bottle")
    _job(tmp_path, "2", "rd4ad", "headct", 0.75)
    _job(tmp_path, "3", "rd4ad", "headct", None)  # crashed: no results.json
    assert main([str(tmp_path), "--metrics", "image_auroc", "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    # mean 85.0, sample std of (90, 80) = 7.07
    assert "| rd4ad (resnet18) | 75.0 | 85.0 ± 7.1 (n=2) | 80.0 |" in out
    assert "headct | mvtec/bottle" in out
    assert "1 job(s) without results.json" in out and str(tmp_path / "3") in out
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert "rd4ad (resnet18),mvtec/bottle,image_auroc,85.0000,7.0711,2" in rows


def test_report_on_an_empty_or_missing_directory(tmp_path):
    assert main([str(tmp_path)]) == 1
    assert main([str(tmp_path / "nope")]) == 2


def test_multi_class_runs_get_a_column_per_category(tmp_path, capsys):
    """One Uni-Medical model: a column per class and their mean; --pooled shows the pooled set."""
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    per_category = {
        "brain": {"image_auroc": 0.9},
        "liver": {"image_auroc": 0.6},
        "retinal": {"image_auroc": 0.75},
        "category_mean": {"image_auroc": 0.75},
    }
    payload = {
        "method": "pdd",
        "metrics": {"image_auroc": 0.7},
        "metrics_per_category": per_category,
        "config": {"dataset": {"name": "unimedical", "category": "all"}, "teacher": {}},
    }
    (job / "results.json").write_text(json.dumps(payload))
    assert main([str(tmp_path), "--metrics", "image_auroc"]) == 0
    out = capsys.readouterr().out
    assert "| method | unimedical/brain | unimedical/liver | unimedical/retinal | mean |" in out
    assert "| pdd | 90.0 | 60.0 | 75.0 | 75.0 |" in out
    assert main([str(tmp_path), "--metrics", "image_auroc", "--pooled"]) == 0
    assert "| pdd | 70.0 | 70.0 |" in capsys.readouterr().out
