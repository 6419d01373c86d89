"""FLOP counting for the roofline benchmark (adlab.flops) and a smoke run of the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adlab.flops import PhaseFlops, ShapeFlops

REPO = Path(__file__).resolve().parents[1]


def tiny_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 2 x 3 x 8 x 9 per output pixel, 2 x 8 x 8 of them
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),  # 2 in / group, 4 x 4 out
        nn.ConvTranspose2d(8, 4, 2, stride=2),  # per *input* pixel: 2 x 8 x 4 x 4
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


# by hand, batch 2: 2*3*8*9 * 2*8*8, 2*2*8*9 * 2*4*4, 2*8*4*4 * 2*4*4, 2*256*10 * 2
HAND = {"0": 55296, "3": 9216, "4": 8192, "6": 10240}


def test_shape_count_matches_the_hand_count_and_torchs_counter():
    net, x = tiny_net(), torch.randn(2, 3, 8, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as counter, ShapeFlops(net) as shapes:
        net(x)
    assert dict(shapes.by_module) == HAND
    assert shapes.frozen == shapes.total == sum(HAND.values()) == counter.get_total_flops()
    assert shapes.trained == 0
    net(x)  # hooks are removed on exit
    assert shapes.total == sum(HAND.values())


def test_phases_split_torchs_count_into_frozen_trained_and_backward():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2),
        nn.Flatten(),
        nn.Linear(4 * 16 * 16, 10),
    )
    x = torch.randn(2, 3, 8, 8)
    with PhaseFlops() as phases, FlopCounterMode(display=False) as counter, ShapeFlops(net) as shp:
        with torch.no_grad():
            net(x)  # a frozen pass (teacher, test)
        net(x).sum().backward()  # a trained pass and its backward
    conv, transposed, linear = 55296, 2 * 2 * 64 * 8 * 4 * 4, 2 * 2 * 1024 * 10
    forward = conv + transposed + linear
    assert phases.flops["frozen"] == phases.flops["trained"] == forward
    assert shp.frozen == shp.trained == forward
    # the first conv's input needs no gradient: its weight gradient only; the rest input + weight
    assert phases.flops["backward"] == conv + 2 * (transposed + linear)
    assert phases.total == counter.get_total_flops()


def test_op_kinds_of_the_time_breakdown():
    sys.path.insert(0, str(REPO / "experiments" / "bench"))
    try:
        from roofline import category
    finally:
        sys.path.pop(0)
    assert category("aten::mkldnn_convolution", False) == "convolution"
    assert category("autograd::engine::evaluate_function: ConvolutionBackward0", False) == (
        "convolution"
    )
    assert category("aten::convolution_backward", False) == "convolution"
    assert category("aten::addmm", True) == "matmul"  # compute stays compute inside the scan
    assert category("aten::exp2_", True) == "selective scan"
    assert category("aten::native_batch_norm_backward", False) == "batch norm"
    assert category("aten::_fused_adam_", False) == "optimizer"
    assert category("aten::upsample_bilinear2d", False) == "interpolation"
    assert category("aten::_to_copy", False) == "copies / layout"
    assert category("aten::_convert_indices_from_coo_to_csr", False) != "convolution"
    assert category("aten::mul", False) == "elementwise / reductions"


@pytest.mark.e2e
def test_quick_run_of_one_method(tmp_path):
    out = tmp_path / "roofline.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "experiments/bench/roofline.py", "--quick", "--methods", "rd4ad"]
    cmd += ["--repeats", "1", "--warmup", "0", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "attainable conv peak" in proc.stdout and "| RD4AD " in proc.stdout
    assert "RD4AD train (" in proc.stdout and "largest memory-bound ops" in proc.stdout
    result = json.loads(out.read_text())["methods"]["rd4ad"]
    for phase in ("train", "test"):
        flops = result[phase]["flops"]
        assert flops["total"] > 0 and flops["phases_total"] == flops["total"]
        shapes = flops["shape_frozen"] + flops["shape_trained"]
        assert abs((flops["frozen"] + flops["trained"]) / shapes - 1) < 0.02  # conv nets agree
    assert result["test"]["flops"]["backward"] == 0 and result["train"]["flops"]["backward"] > 0
