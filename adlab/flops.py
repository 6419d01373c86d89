"""FLOP counts of a model run, two independent ways, for throughput figures (achieved FLOP/s).

`ShapeFlops` counts the forward FLOPs of every Conv / ConvTranspose / Linear module from the
shapes its forward hooks see; `PhaseFlops` applies torch's own formulas (those of
`torch.utils.flop_counter.FlopCounterMode`) to every op and splits them by phase: frozen forward
(no grad: frozen teachers, test passes), trained forward (grad enabled) and backward. Both count
multiply-adds as 2 FLOPs and leave out biases, elementwise ops, normalisation and reductions.
torch's formula counts a grouped convolution's weight gradient `groups` times over (torch 2.14);
no trained part of the four methods has one (VMamba's depthwise convs are frozen).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

PHASES = ("frozen", "trained", "backward")


def module_flops(module: nn.Module, x: Tensor, out: Tensor) -> int:
    """FLOPs of one call of a Conv*d / ConvTranspose*d / Linear with input `x` and output `out`:
    2 x in x out channels (per group) x kernel size, per output position of a convolution and
    per input position of a transposed one (each input pixel is scattered into the output)."""
    if isinstance(module, nn.Linear):
        return 2 * (x.numel() // module.in_features) * module.in_features * module.out_features
    kernel = math.prod(module.kernel_size)
    per_group = module.in_channels // module.groups * (module.out_channels // module.groups)
    if module.transposed:
        positions = x.numel() // module.in_channels
    else:
        positions = out.numel() // module.out_channels
    return 2 * positions * module.groups * per_group * kernel


class ShapeFlops:
    """Forward FLOPs of the conv / linear modules under `root`, from their shapes (forward hooks),
    split into frozen (no grad) and trained (grad enabled) calls. Functional convolutions and
    matmuls without a module (einsum projections, scans, Gaussian blur) are not seen, which is
    what makes it an independent check of torch's counter on conv nets.

        with ShapeFlops(model) as shapes:
            model(x)
        shapes.total, shapes.frozen, shapes.trained, shapes.by_module
    """

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.frozen = 0
        self.trained = 0
        self.by_module: dict[str, int] = defaultdict(int)
        self._handles: list = []

    @property
    def total(self) -> int:
        return self.frozen + self.trained

    def __enter__(self) -> ShapeFlops:
        kinds = (nn.modules.conv._ConvNd, nn.Linear)
        for name, module in self.root.named_modules():
            if isinstance(module, kinds):
                self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            flops = module_flops(module, inputs[0], output)
            self.by_module[name] += flops
            if torch.is_grad_enabled():
                self.trained += flops
            else:
                self.frozen += flops

        return hook


class PhaseFlops(TorchDispatchMode):
    """torch's FLOP formulas summed per phase: "frozen" (forward ops run without grad),
    "trained" (forward ops with grad enabled) and "backward" (ops the autograd engine runs).

    Enter it *outside* a FlopCounterMode (`with PhaseFlops() as p, FlopCounterMode() as c:`) to
    see exactly the ops that counter counts, including those it decomposes; the phases then sum
    to `c.get_total_flops()`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops: dict[str, int] = dict.fromkeys(PHASES, 0)

    @property
    def total(self) -> int:
        return sum(self.flops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            if torch._C._current_graph_task_id() != -1:
                phase = "backward"
            else:
                phase = "trained" if torch.is_grad_enabled() else "frozen"
            self.flops[phase] += formula(*args, **kwargs, out_val=out)
        return out
