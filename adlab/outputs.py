"""What a finished test phase leaves behind: results.json, figures, the PRO curve, W&B summary
and the end-of-run block printed to the terminal."""

from __future__ import annotations

import time

from adlab.callbacks.results import peak_memory, write_json
from adlab.callbacks.run_figures import write_run_figures
from adlab.summary import run_warnings, summary_lines
from adlab.tracking import finish_wandb, log_pro_curve, log_summary


def write_outputs(cfg, run_dir, method, loggers, timer, provenance, config, started, **extra):
    """Figures (also to W&B), the PRO curve and results.json of a finished test phase; under
    DDP only rank 0 writes (every rank returns the results)."""
    results = {
        "method": cfg.method_name,
        "run_name": cfg.run_name,
        "run_dir": str(run_dir),
        "metrics": method.test_results,
        "metrics_per_category": method.test_results_by_category,  # {} for a single class
        **extra,
        "provenance": provenance,
        "timings": {**timer.summary(), "wall_s": time.perf_counter() - started},
        "memory": peak_memory(),
        "config": config,
    }
    results["warnings"] = run_warnings(results)
    if method.global_rank != 0:
        return results
    figures = {}
    if method.evaluator is not None and method.evaluator.num_images:
        scores, labels = method.evaluator.image_scores()
        figures = write_run_figures(
            run_dir,
            method.visuals,
            method.worst,
            scores,
            labels,
            method.evaluator.image_threshold(),
            cfg.data.normalize,
            figure_note(provenance),
        )
    if method.evaluator is not None and "aupro" in method.test_results:
        _, png = method.evaluator.save_pro_curve(run_dir)
        figures["test/pro_curve"] = [(png, "PRO curve")]
        log_pro_curve(loggers, *method.evaluator.pro_curve())
    for lg in loggers:
        for key, images in figures.items() if hasattr(lg, "log_image") else ():
            lg.log_image(
                key=key, images=[str(p) for p, _ in images], caption=[c for _, c in images]
            )
    log_summary(loggers, results["metrics"])
    write_json(run_dir / "results.json", results)
    finish_wandb(loggers)  # W&B's closing lines before the summary, not after it
    print_summary(results)
    return results


def dataset_provenance(datamodule) -> dict:
    return {
        "root": str(datamodule.root),
        "fingerprint": datamodule.fingerprint,
        "summary": datamodule.summary(),
        "skipped": list(datamodule.skipped),
    }


def figure_note(provenance: dict) -> str:
    """A line printed on every figure of a run whose teacher was not pretrained."""
    weights = " ".join(map(str, (provenance.get("weights") or {}).values()))
    return (
        "RANDOM TEACHER (not pretrained): these maps are not meaningful"
        if "random" in weights
        else ""
    )


def print_summary(results: dict) -> None:
    """The end-of-run block (adlab.summary): metrics, outputs and every degraded condition."""
    print("\n".join(summary_lines(results)))
