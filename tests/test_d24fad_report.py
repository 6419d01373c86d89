"""adlab.report on few-shot runs: a column per k, mean ± std over the support sets of a run."""

import json

from adlab.reference_tests import mean_and_std
from adlab.report import main


def _fewshot_job(root, name, shots, per_seed):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    sets = [{"label": f"seed{i}", "metrics": {"image_auroc": v}} for i, v in enumerate(per_seed)]
    mean, std = mean_and_std([s["metrics"] for s in sets])
    config = {
        "dataset": {"name": "d24fad_his", "category": "his"},
        "sampler": {"name": "kshot", "shots": shots},
        "teacher": {"name": "wide_resnet50_2.tv_in1k"},
    }
    payload = {"method": "d24fad", "metrics": mean, "metrics_std": std, "support_sets": sets,
               "config": config}  # fmt: skip
    (job / "results.json").write_text(json.dumps(payload))


def test_support_sets_are_the_spread_of_a_cell_and_shots_are_columns(tmp_path, capsys):
    _fewshot_job(tmp_path, "0", 2, [0.9, 0.8, 0.85])
    _fewshot_job(tmp_path, "1", 4, [0.95])
    assert main([str(tmp_path), "--metrics", "image_auroc"]) == 0
    out = capsys.readouterr().out
    assert "| method | d24fad_his/his (2-shot) | d24fad_his/his (4-shot) | mean |" in out
    assert "| 85.0 ± 5.0 (n=3) | 95.0 |" in out


def test_mean_and_std_over_sets():
    mean, std = mean_and_std([{"a": 0.5, "b": 1.0}, {"a": 0.7, "b": 1.0}])
    assert abs(mean["a"] - 0.6) < 1e-12 and abs(std["a"] - 0.1414213562) < 1e-9
    assert std["b"] == 0.0
    assert mean_and_std([{"a": 0.5}])[1] == {"a": 0.0}
