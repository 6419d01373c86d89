"""The block printed at the end of a run: metrics, where the outputs went, and every degraded
condition repeated (they scroll away in the log; results.json keeps them as `warnings`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def run_warnings(results: Mapping[str, Any], cuda_available: bool | None = None) -> list[str]:
    """Conditions that make a run's numbers weaker than they look, one sentence each."""
    out = []
    prov = results.get("provenance", {})
    for part, source in (prov.get("weights") or {}).items():
        if "random" in str(source):
            out.append(
                f"{part} is randomly initialised ({source}), not pretrained: the anomaly maps "
                "and metrics are not meaningful; pass teacher.pretrained=true with network "
                "access or teacher.pretrained=/path/to/weights"
            )
    skipped = (prov.get("dataset") or {}).get("skipped") or []
    if skipped:
        shown = ", ".join(map(str, skipped[:3])) + (" ..." if len(skipped) > 3 else "")
        out.append(f"{len(skipped)} unreadable file(s) skipped (on_bad_image=skip): {shown}")
    nan = [k for k, v in (results.get("metrics") or {}).items() if _is_nan(v)]
    if nan:
        out.append(f"NaN metrics: {', '.join(nan)} (a class is missing from the test set)")
    accelerator = str(((results.get("config") or {}).get("trainer") or {}).get("accelerator"))
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available and accelerator == "cpu":
        out.append("a GPU is available but trainer.accelerator=cpu: use trainer.accelerator=auto")
    return out


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def summary_lines(results: Mapping[str, Any]) -> list[str]:
    """The end-of-run block, one string per line."""

    def line(metrics: Mapping) -> str:
        return "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())

    status = results.get("status", "completed")
    flag = "" if status == "completed" else f" [{status}]"
    out = ["", "[adlab] ---------------- summary ----------------"]
    out.append(f"[adlab] {results['method']}{flag}: {line(results['metrics'])}")
    for category, values in (results.get("metrics_per_category") or {}).items():
        out.append(f"[adlab]   {category}: {line(values)}")
    out.append(
        f"[adlab] outputs: {results['run_dir']} (results.json, anomaly_maps/, figures/, "
        "pro_curve.png, checkpoints/)"
    )
    for warning in results.get("warnings", []):
        out.append(f"[adlab] WARNING: {warning}")
    return out
