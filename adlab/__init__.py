"""adlab: knowledge-distillation anomaly detection experiments (RD4AD, URD, PDD, D24FAD)."""

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str):
    # `adlab.load_model` without importing torch and Lightning on `import adlab`.
    if name == "load_model":
        from adlab.inference import load_model

        return load_model
    raise AttributeError(f"module 'adlab' has no attribute {name!r}")
