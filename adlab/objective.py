"""The number a hyper-parameter search optimises: a validation metric, never a test one.

`objective=val/loss` (distillation loss on validation normals, minimise) or `val/image_auroc`
(a validation split with both classes, maximise). The pipeline records the final validation
metrics in results.json; adlab.run returns the objective's value to the sweeper (Optuna).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# objective -> the validation images it needs
OBJECTIVES = {"val/loss": ("normal",), "val/image_auroc": ("normal", "anomalous")}


class ObjectiveError(ValueError):
    """An objective that cannot be computed; the message names the key and the fix."""


def check_objective(objective: str | None, valid: Mapping[str, int]) -> None:
    """Fail before training when the objective is unknown or the validation split cannot give
    it (a search must never fall back to the test set)."""
    if objective is None:
        return
    if objective not in OBJECTIVES:
        raise ObjectiveError(
            f"objective={objective!r}: use one of {', '.join(OBJECTIVES)} (validation metrics; "
            "the test set is never an objective)."
        )
    missing = [kind for kind in OBJECTIVES[objective] if not valid.get(kind)]
    if missing:
        raise ObjectiveError(
            f"objective={objective} needs {' and '.join(missing)} validation images, and this "
            f"dataset's validation split has {dict(valid)}. Set dataset.val_fraction (e.g. 0.1, "
            "normal images carved from training: objective=val/loss) or use a dataset with its "
            "own validation split (objective=val/image_auroc)."
        )


def validation_metrics(metrics: Mapping) -> dict[str, float]:
    """The last epoch's validation metrics (val/*) from the trainer's callback metrics."""
    return {k: float(v) for k, v in metrics.items() if k.startswith("val/")}


def objective_value(results: Mapping, objective: str) -> float:
    """The objective's value in a job's results (its final validation metric)."""
    value = (results.get("validation") or {}).get(objective)
    if value is None or math.isnan(value):
        raise ObjectiveError(
            f"objective={objective}: the run recorded no finite value (validation ran: "
            f"{sorted(results.get('validation') or {})}); check trainer.check_val_every_n_epoch "
            "and the validation split."
        )
    return float(value)
