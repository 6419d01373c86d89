"""`method.compile=true`: torch.compile (inductor) of a network's parts, in place.

Each direct child of the network (teacher, fusion, student, ...) is compiled with
`nn.Module.compile`, which keeps the module and its parameter names: checkpoints have the same
keys (no `_orig_mod.`) with or without compile and load either way. Scoring stays eager (float32,
small). Compiling costs time before the first step and again for each new mode or shape (train,
eval, the last smaller batch); README "Speed options" has the measured cost and gain.
"""

from __future__ import annotations

import torch
from torch import nn


class CompileUnavailable(RuntimeError):
    """torch.compile cannot run here (no C++ compiler for inductor, unsupported platform)."""


def check_compile() -> None:
    """Compile and run a two-op function, so that a broken toolchain fails here with the fix
    named, not deep inside the first training step."""
    try:
        fn = torch.compile(lambda x: x * 2 + 1, backend="inductor", dynamic=False)
        out = fn(torch.ones(4))
    except Exception as err:  # inductor raises many types (BackendCompilerFailed, OSError, ...)
        raise CompileUnavailable(
            f"method.compile=true: torch.compile (inductor) does not work here "
            f"({type(err).__name__}: {str(err).strip().splitlines()[0][:300]}). On CPU inductor "
            "needs a C++ compiler (g++ or clang on PATH, or CXX=...); set method.compile=false "
            "(the default) to train eagerly."
        ) from err
    if not torch.equal(out, torch.full((4,), 3.0)):
        raise CompileUnavailable("method.compile=true: torch.compile gave wrong results here.")


def compile_parts(network: nn.Module) -> list[str]:
    """Compile every direct child of `network` in place; returns their names."""
    check_compile()
    names = []
    for name, child in network.named_children():
        if type(child).forward is not nn.Module.forward:  # containers without a forward
            child.compile()
            names.append(name)
    return names
