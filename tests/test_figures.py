"""Run figures (samples, worst errors, histogram), the F1-max threshold, the end-of-run summary
and the silenced benign warnings; all in-process, no training."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from adlab.callbacks.drawing import BAR_W
from adlab.callbacks.figures import outcome, sample_panels, worst_errors
from adlab.callbacks.histogram import score_counts, write_histogram
from adlab.callbacks.run_figures import write_run_figures
from adlab.callbacks.visualize import heat_colors
from adlab.methods.base import keep_worst, worst_admits
from adlab.metrics import AnomalyEvaluator
from adlab.quiet import quiet_benign
from adlab.summary import run_warnings, summary_lines


def visual(score: float, label: int, mask: bool = True, name: str = "a.png") -> dict:
    gt = torch.zeros(1, 100, 120, dtype=torch.uint8)
    gt[0, 30:60, 40:80] = label
    return {
        "image": torch.rand(3, 64, 64),
        "map": torch.rand(64, 64) * score,
        "score": score,
        "label": label,
        "mask": gt if mask else None,
        "path": f"/data/{name}",
    }


def test_sample_figure_is_at_ground_truth_size_with_three_panels_and_a_colour_bar():
    fig = sample_panels(visual(0.9, 1), "none", 0.0, 1.0, 0.5)
    # ground truth 100x120 -> raised to 256 px on the short side: 256 x 307 per panel
    assert fig.shape[1] >= 3 * 256 + BAR_W
    bar = fig[-256:, -BAR_W + 4 : -BAR_W + 22]  # the colour ramp, high at the top
    assert (bar[0, 5] == heat_colors(np.array(1.0))).all()
    assert (bar[-1, 5] == heat_colors(np.array(0.0))).all()
    no_mask = sample_panels(visual(0.9, 1, mask=False), "none", 0.0, 1.0, 0.5)
    assert no_mask.shape[0] >= 256 and no_mask.shape[1] < fig.shape[1]  # no ground-truth panel


def test_outcome_and_worst_errors_against_a_hand_threshold():
    assert [outcome(s, y, 0.5) for s, y in [(0.7, 1), (0.5, 0), (0.2, 0), (0.49, 1)]] == [
        "TP",
        "FP",
        "TN",
        "FN",
    ]
    assert outcome(0.7, 1, float("nan")) == "?"
    items = [visual(s, y) for s, y in [(0.9, 0), (0.6, 0), (0.1, 0), (0.3, 1), (0.05, 1), (0.8, 1)]]
    fps, fns = worst_errors(items, threshold=0.5, n=5)
    assert [v["score"] for v in fps] == [0.9, 0.6]
    assert [v["score"] for v in fns] == [0.05, 0.3]


def test_keep_worst_holds_highest_normals_and_lowest_anomalies():
    kept: list[dict] = []
    for s, y in [(0.2, 0), (0.9, 0), (0.5, 0), (0.7, 1), (0.1, 1), (0.4, 1)]:
        if worst_admits(kept, s, y, per_label=2):
            kept = keep_worst(kept, {"score": s, "label": y}, per_label=2)
    assert sorted(v["score"] for v in kept if v["label"] == 0) == [0.5, 0.9]
    assert sorted(v["score"] for v in kept if v["label"] == 1) == [0.1, 0.4]
    assert not worst_admits(kept, 0.3, 0, per_label=2) and worst_admits(kept, 0.05, 1, 2)
    assert not worst_admits([], 0.3, 0, per_label=0)


def test_evaluator_threshold_reaches_f1_max():
    ev = AnomalyEvaluator(pixel_metrics=False)
    ev.update(
        torch.zeros(5, 4, 4), torch.tensor([0.1, 0.5, 0.4, 0.9, 0.3]), torch.tensor([0, 0, 1, 1, 0])
    )
    thr = ev.image_threshold()
    scores, labels = ev.image_scores()
    pred = scores >= thr
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    assert 2 * tp / (tp + fp + labels.sum()) == pytest.approx(ev.compute()["image_f1_max"])
    assert thr == pytest.approx(0.4)


def test_histogram_counts_every_image(tmp_path):
    scores = np.array([0.1, 0.2, 0.25, 0.8, 0.9, 0.3])
    labels = np.array([0, 0, 0, 1, 1, 1], bool)
    counts = write_histogram(tmp_path / "h.png", scores, labels, threshold=0.3, bins=10)
    assert sum(counts["normal"]) == 3 and sum(counts["anomalous"]) == 3
    assert (tmp_path / "h.png").is_file()
    edges, normal, anomalous = score_counts(scores, labels, 10)
    assert normal.tolist() == counts["normal"] and edges[0] == 0.1 and edges[-1] == 0.9


def test_run_figures_are_written_and_keyed_for_wandb(tmp_path):
    visuals = [visual(0.8, 1, name="x.png"), visual(0.2, 0, name="y.png")]
    worst = [visual(0.9, 0, name="fp.png"), visual(0.1, 1, name="fn.png")]
    figs = write_run_figures(
        tmp_path, visuals, worst, np.array([0.8, 0.2, 0.9, 0.1]),
        np.array([1, 0, 0, 1], bool), 0.5, "none", note="RANDOM TEACHER",
    )  # fmt: skip
    assert set(figs) == {"test/anomaly_maps", "test/worst_errors", "test/score_histogram"}
    assert [c.split()[:3] for _, c in figs["test/anomaly_maps"]] == [
        ["anomalous", "score=0.8000", "TP"],
        ["normal", "score=0.2000", "TN"],
    ]
    assert Image.open(tmp_path / "anomaly_maps" / "00_anomalous_x.png").width >= 3 * 256
    grid = Image.open(tmp_path / "figures" / "worst_errors.png")
    assert grid.height > 2 * 256 and grid.width >= 3 * 256  # one FP row and one FN row
    assert (tmp_path / "figures" / "score_histogram.png").is_file()


def results(**over) -> dict:
    base = {
        "method": "rd4ad",
        "run_dir": "/runs/1",
        "metrics": {"image_auroc": 0.9, "pixel_ap": float("nan")},
        "metrics_per_category": {},
        "provenance": {
            "weights": {"teacher": "random (pretrained=auto fell back: download failed)"},
            "dataset": {"skipped": ["/data/bad1.png", "/data/bad2.png"]},
        },
        "config": {"trainer": {"accelerator": "cpu"}},
    }
    return {**base, **over}


def test_summary_repeats_every_degraded_condition():
    found = run_warnings(results(), cuda_available=True)
    assert len(found) == 4
    assert "randomly initialised" in found[0] and "teacher" in found[0]
    assert "2 unreadable file(s) skipped" in found[1] and "bad1.png" in found[1]
    assert "NaN metrics: pixel_ap" in found[2]
    assert "GPU" in found[3]
    clean = results(
        metrics={"image_auroc": 0.9},
        provenance={"weights": {"teacher": "timm:resnet18"}, "dataset": {"skipped": []}},
    )
    assert run_warnings(clean, cuda_available=True) == [found[3]]
    assert run_warnings(clean, cuda_available=False) == []
    text = "\n".join(summary_lines({**results(), "warnings": found}))
    assert "image_auroc=0.9000" in text and "/runs/1" in text
    assert text.count("WARNING:") == 4


def test_benign_library_messages_are_silenced_others_kept(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_benign():
            for message, category in [
                ("Found 69 module(s) in eval mode at the start of training. This may", None),
                ("You defined a `validation_step` but have no `val_dataloader`. Skip", None),
                ("`isinstance(treespec, LeafSpec)` is deprecated, use", FutureWarning),
                ("TEACHER IS RANDOMLY INITIALISED: no network", None),
            ]:
                warnings.warn(message, category or UserWarning, stacklevel=1)
            rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
            with caplog.at_level(logging.INFO, logger=rank_zero.name):
                rank_zero.info(
                    "💡 Tip: For seamless cloud logging, try installing [litlogger](...)"
                )
                rank_zero.info("GPU available: False, used: False")
    assert [str(w.message) for w in caught] == ["TEACHER IS RANDOMLY INITIALISED: no network"]
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
