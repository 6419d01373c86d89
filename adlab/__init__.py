"""adlab: knowledge-distillation anomaly detection experiments (RD4AD, URD, PDD, D24FAD)."""

import os as _os
import sys as _sys

__version__ = "0.1.0"
__all__ = ["load_model"]

if "torch" not in _sys.modules:
    # OpenMP threads sleep while they wait instead of spinning: with spinning, jobs that share
    # cores (parallel sweeps, a busy machine) slowed each other 3-10x (README "Threads"). Read
    # when torch loads libgomp, so only before that; OMP_WAIT_POLICY in the environment wins.
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str):
    # `adlab.load_model` without importing torch and Lightning on `import adlab`.
    if name == "load_model":
        from adlab.inference import load_model

        return load_model
    raise AttributeError(f"module 'adlab' has no attribute {name!r}")
