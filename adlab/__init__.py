"""adlab: knowledge-distillation anomaly detection experiments (RD4AD, URD, PDD, D24FAD)."""

__version__ = "0.1.0"
