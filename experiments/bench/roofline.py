"""Roofline of RD4AD, PDD, URD and D24FAD on this CPU: attainable float32 throughput, FLOPs per
image, achieved FLOP/s, and what keeps a training step or a test pass from the peak.

    PYTHONPATH=. .venv/bin/python experiments/bench/roofline.py                 # all four
    PYTHONPATH=. .venv/bin/python experiments/bench/roofline.py --methods rd4ad --json out.json
    PYTHONPATH=. .venv/bin/python experiments/bench/roofline.py --quick         # smoke run

1. Attainable peak, with torch.set_num_threads(--threads): a large GEMM and the convolutions
   that dominate WRN50 at 256 px (batch 8; NCHW and channels-last; forward, and forward +
   backward for one shape), best of --repeats; the best convolution is the peak.
2. FLOPs of one training step and one test pass per method (random weights and images, the
   settings of the benches in experiments/), by torch's FlopCounterMode, split into frozen
   forward (teachers), trained forward and backward, and checked against the conv / linear
   modules' shapes (adlab.flops).
3. Time: the training step as Lightning runs it (training_step, backward, optimiser step; URD's
   two steps) and the test pass (predict_maps: maps and scores), median of --repeats after
   --warmup calls. Achieved = FLOPs / time; fraction = achieved / peak.
4. Where the time goes: torch.profiler on one step and one test pass, self CPU time grouped into
   convolution and matmul (compute-bound) and the rest (memory-bound), largest ops listed.
On a 2-core machine any other process stalls every 2-thread op: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from timing import timed  # noqa: E402 (experiments/bench, the script's folder)

from adlab.flops import PhaseFlops, ShapeFlops  # noqa: E402

GOAL = 0.6  # the fraction of the attainable peak every step and test pass should reach
G = 1e9


@dataclass(frozen=True)
class Setting:
    """One method's benchmark setting: image size, batch, config overrides, support shots."""

    size: int
    batch: int
    overrides: tuple[str, ...] = ()
    shots: int = 0
    note: str = ""


# The settings of each method's bench script (experiments/bench/rd4ad.py, experiments/*/bench.py).
FULL = {
    "rd4ad": Setting(256, 8, note="WRN50 -> OCBE -> decoder"),
    "pdd": Setting(256, 2, note="WRN50 + VMamba-T -> InA/MMU/MPA -> 2 students"),
    "urd": Setting(256, 8, note="WRN50 expert + trained WRN50 teacher -> OCBE -> skip decoder"),
    "d24fad": Setting(128, 16, shots=4, note="WRN50 layer4 -> decoder, learn-to-weight"),
}
QUICK = {
    "rd4ad": Setting(64, 2, ("teacher.name=resnet18",), note="resnet18"),
    "pdd": Setting(
        64,
        2,
        (
            "teacher.cnn.name=resnet18",
            "+teacher.vmamba.dim=8",
            "+teacher.vmamba.depths=[1,1,1,1]",
            "+teacher.vmamba.d_state=4",
        ),
        note="resnet18 + VMamba width 8",
    ),
    "urd": Setting(64, 2, ("teacher.expert.name=resnet18",), note="resnet18"),
    "d24fad": Setting(64, 2, ("teacher.name=resnet18",), shots=2, note="resnet18"),
}
NAMES = {"rd4ad": "RD4AD", "pdd": "PDD", "urd": "URD", "d24fad": "D24FAD"}


# --- 1. attainable peak ------------------------------------------------------------------------
def conv_row(batch, cin, cout, hw, k, channels_last: bool, backward: bool, repeats: int) -> dict:
    """Throughput of one convolution (stride 1, same padding, no bias)."""
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
    x = torch.randn(batch, cin, hw, hw)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * cin * cout * k * k * hw * hw
    if backward:  # grad of the input and of the weight: 2 more convolutions of the same size
        x.requires_grad_(True)
        grad = torch.randn(batch, cout, hw, hw)
        if channels_last:
            grad = grad.contiguous(memory_format=torch.channels_last)

        def fn():
            conv(x).backward(grad)

        flops *= 3
    else:

        def fn():
            with torch.no_grad():
                conv(x)

    best = min(timed(fn, repeats, 1))
    layout = "NHWC" if channels_last else "NCHW"
    passes = "fwd+bwd" if backward else "fwd"
    name = f"conv{k}x{k} {cin}->{cout} {hw}x{hw} b{batch} {layout} {passes}"
    return {"kernel": name, "kind": "conv", "flops": flops, "seconds": best, "rate": flops / best}


def attainable(quick: bool, repeats: int) -> list[dict]:
    """GEMM and convolution throughput on this machine with the current thread count."""
    n = 512 if quick else 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(timed(lambda: torch.mm(a, b), repeats, 1))
    rows = [
        {
            "kernel": f"GEMM {n}^3",
            "kind": "gemm",
            "flops": 2 * n**3,
            "seconds": best,
            "rate": 2 * n**3 / best,
        }
    ]
    # WRN50 at 256 px: layer1 (3x3 128 ch, 1x1 256->128) at 64x64, layer2-3 3x3 at 32 and 16 px,
    # and the 256 ch at 64x64 shape of the decoder's last stage.
    shapes = [(8, 256, 256, 64, 3), (8, 128, 128, 64, 3), (8, 256, 128, 64, 1),
              (8, 256, 256, 32, 3), (8, 512, 512, 16, 3)]  # fmt: skip
    if quick:
        shapes = [(2, 64, 64, 32, 3), (2, 64, 32, 32, 1)]
    for i, (batch, cin, cout, hw, k) in enumerate(shapes):
        for channels_last in (False, True):
            rows.append(conv_row(batch, cin, cout, hw, k, channels_last, False, repeats))
            if i == 0:
                rows.append(conv_row(batch, cin, cout, hw, k, channels_last, True, repeats))
    return rows


# --- 2./3. methods as Lightning steps them ------------------------------------------------------
def build(name: str, setting: Setting):
    """The method from its Hydra config with random weights (adlab.plan's timing build)."""
    from hydra import compose, initialize_config_dir

    from adlab.compose import build_method
    from adlab.paths import CONF_DIR
    from adlab.plan import random_weights

    overrides = [
        f"method={name}",
        f"image_size={setting.size}",
        f"data.batch_size={setting.batch}",
        "method_name=roofline",
        "run_name=roofline",
        *([f"sampler.shots={setting.shots}"] if setting.shots else []),
        *setting.overrides,
    ]
    with initialize_config_dir(CONF_DIR, version_base=None):
        cfg = compose("config", overrides=overrides)
    random_weights(cfg)
    return build_method(cfg)


class Runner:
    """A method stepped as Lightning steps it, without a Trainer: `training_step` (with URD's
    manual optimisation: its optimisers, `manual_backward`), then for automatic optimisation
    zero_grad, backward and the optimiser step; logging is a no-op."""

    def __init__(self, method, setting: Setting) -> None:
        from adlab.plan import random_batch

        self.method = method
        method.setup("fit")  # channels-last weights where the method config asks for them
        conf = method.configure_optimizers()
        conf = conf["optimizer"] if isinstance(conf, dict) else conf
        self.optimizers = list(conf) if isinstance(conf, list | tuple) else [conf]
        opts = self.optimizers
        method.optimizers = lambda *a, **k: opts if len(opts) > 1 else opts[0]
        method.manual_backward = lambda loss, *a, **k: loss.backward()
        method.log = lambda *a, **k: None
        batch = random_batch(method, setting.size, setting.batch, setting.shots)
        self.batch = method.on_after_batch_transfer(batch, 0)
        self.shots = setting.shots

    def train_step(self) -> None:
        method = self.method
        method.train()
        loss = method.training_step(self.batch, 0)
        if method.automatic_optimization:
            opt = self.optimizers[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def start_test(self) -> None:
        """Eval mode and, for a few-shot method, its stored support features."""
        method = self.method
        method.eval()
        if method.references_needed:
            image = self.batch["image"]
            method.set_references(torch.rand(max(self.shots, 1), *image.shape[1:]))

    def test_pass(self) -> None:
        self.method.predict_maps(self.batch["image"])


def count(fn, root: nn.Module) -> dict:
    """FLOPs of one call: FlopCounterMode's total, its per-phase split (PhaseFlops sees the same
    ops), and the forward FLOPs of the conv / linear modules from their shapes."""
    with PhaseFlops() as phases, FlopCounterMode(display=False) as counter, ShapeFlops(root) as shp:
        fn()
    return {
        "total": counter.get_total_flops(),
        **phases.flops,
        "phases_total": phases.total,
        "shape_frozen": shp.frozen,
        "shape_trained": shp.trained,
    }


# --- 4. where the time goes --------------------------------------------------------------------
SCAN = "selective_scan"
COMPUTE = ("convolution", "matmul")
MATMUL = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear", "einsum", "mv", "addmv",
          "dot", "tensordot", "scaled_dot_product_attention"}  # fmt: skip
COPIES = {"copy_", "clone", "contiguous", "to", "to_copy", "cat", "stack", "flip", "roll", "repeat",
          "index", "index_select", "gather", "constant_pad_nd", "to_dense", "to_mkldnn",
          "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "zero_", "fill_",
          "new_zeros", "ones", "ones_like", "resize_", "as_strided_", "unfold"}  # fmt: skip


@contextmanager
def scan_labelled():
    """The VMamba selective scan inside a profiler range, so that its many small elementwise ops
    are reported as the scan rather than mixed with the network's other elementwise ops."""
    try:
        from adlab.models.teachers import vmamba
    except ImportError:  # pragma: no cover - VMamba is part of adlab
        yield
        return
    impls = dict(vmamba.SCAN_IMPLS)

    def labelled(fn):
        def run(*args, **kwargs):
            with record_function(SCAN):
                return fn(*args, **kwargs)

        return run

    vmamba.SCAN_IMPLS.update({k: labelled(v) for k, v in impls.items()})
    try:
        yield
    finally:
        vmamba.SCAN_IMPLS.update(impls)


def op_base(name: str) -> str:
    """'aten::_to_copy' -> 'to_copy'; 'autograd::engine::evaluate_function: MmBackward0' -> 'mm'."""
    base = name.split("::")[-1].split(": ")[-1].lower().lstrip("_")
    for suffix in ("backward0", "backward1", "backward"):
        base = base.removesuffix(suffix)
    return base


def category(name: str, in_scan: bool) -> str:
    """The op's kind: convolution and matmul are compute-bound, the rest memory-bound."""
    base = op_base(name)
    if base.startswith(("conv1d", "conv2d", "conv_", "convolution", "mkldnn_conv", "slow_conv")):
        return "convolution"
    if base in MATMUL:
        return "matmul"
    if in_scan or base == SCAN:
        return "selective scan"
    if "batch_norm" in base or "batchnorm" in base:
        return "batch norm"
    if "layer_norm" in base or "layernorm" in base or "group_norm" in base:
        return "layer norm"
    if "adam" in base or "optimizer" in name.lower() or base.startswith("foreach"):
        return "optimizer"
    if "upsample" in base or "grid_sampl" in base or "interpolat" in base:
        return "interpolation"
    if "pool" in base:
        return "pooling"
    if base in COPIES or "copy" in base or "pad" in base:
        return "copies / layout"
    return "elementwise / reductions"


def inside(event, label: str) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == label:
            return True
        parent = parent.cpu_parent
    return False


def profiled(fn) -> dict:
    """Self CPU time of one call by op kind and by op (seconds), and the call's wall time. The
    wall time not inside any op is Python and framework overhead."""
    with scan_labelled(), profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    kinds: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for event in prof.events():
        seconds = event.self_cpu_time_total / 1e6
        if seconds <= 0:
            continue
        kind = category(event.name, inside(event, SCAN))
        kinds[kind] += seconds
        if kind not in COMPUTE:
            ops[f"{event.name} [{kind}]"] += seconds
    kinds["outside ops (Python, framework)"] = max(wall - sum(kinds.values()), 0.0)
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
    return {"wall": wall, "kinds": dict(kinds), "top_memory_ops": dict(top)}


# --- one method ----------------------------------------------------------------------------------
def measure(name: str, setting: Setting, args) -> dict:
    torch.manual_seed(0)
    runner = Runner(build(name, setting), setting)
    net = runner.method.model
    out: dict = {"setting": asdict(setting)}
    for phase, start, fn in (
        ("train", None, runner.train_step),
        ("test", runner.start_test, runner.test_pass),
    ):
        if start:
            start()
        times = timed(fn, args.repeats, args.warmup)
        flops = count(fn, net)
        prof = profiled(fn) if args.profile else None
        median = statistics.median(times)
        out[phase] = {
            "times": times,
            "median": median,
            "flops": flops,
            "profile": prof,
            "rate": flops["total"] / median,
        }
        print(f"  {NAMES[name]} {phase}: {median:.3f} s per batch of {setting.batch}", flush=True)
    return out


# --- report --------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def gf(x: float) -> str:
    return f"{x / G:.1f}" if x >= 10 * G else f"{x / G:.2f}"


def report(peaks: list[dict], results: dict, args) -> str:
    out = [f"Attainable float32 throughput, {args.threads} threads (best of {args.repeats}):", ""]
    out.append(
        table(
            ["kernel", "GFLOP", "s", "GFLOP/s"],
            [
                [r["kernel"], gf(r["flops"]), f"{r['seconds']:.4f}", f"{r['rate'] / G:.0f}"]
                for r in peaks
            ],
        )
    )
    peak = max((r for r in peaks if r["kind"] == "conv"), key=lambda r: r["rate"])
    gemm = next(r for r in peaks if r["kind"] == "gemm")
    out += [
        "",
        f"attainable conv peak: {peak['rate'] / G:.0f} GFLOP/s ({peak['kernel']}); "
        f"GEMM {gemm['rate'] / G:.0f} GFLOP/s",
        "",
    ]
    if not results:
        return "\n".join(out)

    rows = []
    for name, r in results.items():
        batch = r["setting"]["batch"]
        row = [NAMES[name], r["setting"]["size"], batch]
        row += [gf(r[phase]["flops"]["total"] / batch) for phase in ("train", "test")]
        for phase in ("train", "test"):
            rate = r[phase]["rate"]
            row += [f"{r[phase]['median']:.3f}", f"{rate / G:.0f}", f"{rate / peak['rate']:.0%}"]
        rows.append(row)
    header = [
        "method",
        "px",
        "batch",
        "train GFLOP/img",
        "test GFLOP/img",
        "train s/step",
        "train GFLOP/s",
        "train % peak",
        "test s/batch",
        "test GFLOP/s",
        "test % peak",
    ]
    out.append(
        f"Methods ({args.threads} threads, median of {args.repeats} after {args.warmup} warm-up; "
        "FLOPs by FlopCounterMode; % of the attainable conv peak):"
    )
    out += ["", table(header, rows), ""]

    rows = []
    for name, r in results.items():
        batch = r["setting"]["batch"]
        for phase in ("train", "test"):
            f = r[phase]["flops"]
            fwd = f["frozen"] + f["trained"]
            shape_fwd = f["shape_frozen"] + f["shape_trained"]
            bwd_est = 2 * f["shape_trained"]
            rows.append(
                [
                    NAMES[name],
                    phase,
                    gf(f["frozen"] / batch),
                    gf(f["trained"] / batch),
                    gf(f["backward"] / batch),
                    gf(f["total"] / batch),
                    gf(shape_fwd / batch),
                    f"{fwd / shape_fwd:.3f}" if shape_fwd else "-",
                    f"{f['backward'] / bwd_est:.3f}" if bwd_est else "-",
                    "ok" if f["phases_total"] == f["total"] else f"phases {gf(f['phases_total'])}",
                ]
            )
    header = [
        "method",
        "pass",
        "frozen fwd",
        "trained fwd",
        "backward",
        "total",
        "shapes fwd",
        "fwd counter/shapes",
        "bwd counter/(2 x trained)",
        "phases = total",
    ]
    out.append(
        "FLOPs per image (GFLOP): FlopCounterMode by phase (frozen forward = teachers without "
        "grad; trained forward; backward) vs the conv / linear modules' shapes:"
    )
    out += ["", table(header, rows)]
    out += [
        "(FlopCounterMode counts convolutions, matmul / einsum / bmm and attention only: norms,",
        " activations, pooling, interpolation, cosine, the selective scan's elementwise",
        " recurrence and the optimiser add no FLOPs. The shapes count sees Conv / ConvTranspose /",
        " Linear modules only: einsum projections and the scan's C contraction (VMamba), the",
        " learn-to-weight bmm / einsum (D24FAD) and the Gaussian blur (test) are the difference.",
        " Backward / (2 x trained forward) < 1: the first trained layer gets no input gradient.)",
        "",
    ]

    if args.profile:
        for name, r in results.items():
            out += explain(name, r, peak["rate"])
    return "\n".join(out)


def explain(name: str, r: dict, peak: float) -> list[str]:
    """Where a method's time goes, and why it is below the goal when it is."""
    out = []
    for phase in ("train", "test"):
        p, f = r[phase]["profile"], r[phase]["flops"]
        wall = p["wall"]
        compute = sum(p["kinds"].get(k, 0.0) for k in COMPUTE)
        fraction = r[phase]["rate"] / peak
        verdict = "meets the goal" if fraction >= GOAL else f"below {GOAL:.0%} of peak"
        line = f"{NAMES[name]} {phase} ({verdict}: {fraction:.0%}); profiled {wall:.3f} s: "
        if compute:
            rate = f["total"] / compute
            line += (
                f"convolution + matmul {compute / wall:.0%} of the time at {rate / G:.0f} GFLOP/s "
                f"({rate / peak:.0%} of peak), memory-bound ops and overhead "
                f"{1 - compute / wall:.0%}"
            )
        out.append(line)
        kinds = sorted(p["kinds"].items(), key=lambda kv: -kv[1])
        out.append("  by kind: " + ", ".join(f"{k} {v / wall:.1%}" for k, v in kinds))
        out.append(
            "  largest memory-bound ops: "
            + ", ".join(f"{k} {v / wall:.1%}" for k, v in p["top_memory_ops"].items())
        )
    out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="rd4ad,pdd,urd,d24fad")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, help="every method's batch (default: its bench's)")
    parser.add_argument("--size", type=int, help="every method's image size")
    parser.add_argument("--shots", type=int, help="D24FAD's supports per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny networks at 64 px (smoke run)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--json", type=Path, help="write every measurement to this file")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in FULL]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {sorted(FULL)}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    print(f"{torch.__version__}, {args.threads} threads, measuring the attainable peak", flush=True)
    peaks = attainable(args.quick, max(args.repeats, 3))
    results = {}
    for name in methods:
        setting = (QUICK if args.quick else FULL)[name]
        setting = replace(
            setting,
            batch=args.batch or setting.batch,
            size=args.size or setting.size,
            shots=args.shots if args.shots and setting.shots else setting.shots,
        )
        print(
            f"{NAMES[name]}: {setting.note}, {setting.size} px, batch {setting.batch}"
            + (f", {setting.shots} shots" if setting.shots else ""),
            flush=True,
        )
        results[name] = measure(name, setting, args)
    print()
    print(report(peaks, results, args))
    if args.json:
        args.json.write_text(
            json.dumps({"threads": args.threads, "peaks": peaks, "methods": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
