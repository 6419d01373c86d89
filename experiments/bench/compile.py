"""What `method.compile=true` (torch.compile, inductor) costs and gains for RD4AD on this CPU.

    PYTHONPATH=. .venv/bin/python experiments/bench/compile.py [--teacher wide_resnet50_2]
        [--size 256] [--batch 8] [--repeats 3] [--threads 2] [--precision 32|bf16]

Two copies of the same randomly initialised RD4AD (channels-last, as conf/method/rd4ad.yaml),
one compiled as `method.compile=true` does (adlab.methods.compile), in one process. First the
compile cost: the first training step and the first test pass of the compiled copy minus an
eager one. Then --repeats rounds that alternate an eager and a compiled training step (forward,
loss, backward, fused Adam) and test pass (maps and scores), so that load changes on a shared
machine hit both alike; reported as medians, with the losses of the first step of each.
--precision bf16 runs both copies under bf16 autocast instead (what trainer.precision=bf16-mixed
does); --compare-precision alternates float32 and bf16 eager copies instead of compiling.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import tempfile
import time

import torch

from adlab.methods.compile import compile_parts
from adlab.methods.rd4ad import RD4AD
from adlab.models.fusion.ocbe import OCBE
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder


def build(teacher: str) -> RD4AD:
    method = RD4AD(
        teacher=TimmEncoder(teacher, pretrained=False),
        fusion=functools.partial(OCBE),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005, "betas": (0.5, 0.999)},
        channels_last=True,
    )
    method.setup("fit")
    return method


class Runner:
    """One method copy with its optimiser, timing a training step and a test pass."""

    def __init__(self, method: RD4AD, x: torch.Tensor, bf16: bool) -> None:
        self.method, self.x, self.bf16 = method, x, bf16
        self.opt = method.configure_optimizers()

    def autocast(self):
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        self.method.train()
        with self.autocast():
            loss = self.method.training_loss({"image": self.x})["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0, loss.item()

    def test(self) -> float:
        t0 = time.perf_counter()
        self.method.eval()
        with self.autocast():
            maps, _ = self.method.predict_maps(self.x)
        assert maps.dtype == torch.float32
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default="wide_resnet50_2")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument(
        "--compare-precision", action="store_true", help="float32 vs bf16 eager, no compile"
    )
    parser.add_argument("--warm-cache", action="store_true", help="reuse inductor's disk cache")
    args = parser.parse_args()
    if not args.warm_cache:  # a cold compile, as a first run on a new machine pays
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    a, b = build(args.teacher), build(args.teacher)
    b.load_state_dict(a.state_dict())
    bf16 = args.precision == "bf16"
    if args.compare_precision:
        names = ("float32", "bf16")
        runners = (Runner(a, x, False), Runner(b, x, True))
    else:
        names = ("eager", "compiled")
        runners = (Runner(a, x, bf16), Runner(b, x, bf16))
    load = os.getloadavg()[0]
    first = [runners[0].step(), None]
    if not args.compare_precision:
        t0 = time.perf_counter()
        compile_parts(b.model)  # includes the probe compile of check_compile
        probe = time.perf_counter() - t0
    first[1] = runners[1].step()
    first_test = [runners[0].test(), runners[1].test()]
    steps: list[list[float]] = [[], []]
    tests: list[list[float]] = [[], []]
    for _ in range(args.repeats):
        for i, runner in enumerate(runners):
            steps[i].append(runner.step()[0])
            tests[i].append(runner.test())
    med = [statistics.median(s) for s in steps]
    med_test = [statistics.median(t) for t in tests]
    print(
        f"RD4AD {args.teacher} {args.size} px batch {args.batch}, {args.threads} threads, "
        f"precision {'32 vs bf16' if args.compare_precision else args.precision}, median of "
        f"{args.repeats} alternated rounds; load average {load:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print(f"first-step losses: {names[0]} {first[0][1]:.7f}, {names[1]} {first[1][1]:.7f}")
    for i, name in enumerate(names):
        print(
            f"{name:>9}: training step {med[i]:.3f} s (first {first[i][0]:.1f} s), test pass "
            f"{med_test[i]:.3f} s = {args.batch / med_test[i]:.2f} img/s (first "
            f"{first_test[i]:.1f} s)"
        )
    print(
        f"speed-up {names[1]} over {names[0]}: training x{med[0] / med[1]:.2f}, "
        f"test x{med_test[0] / med_test[1]:.2f}"
    )
    if not args.compare_precision:
        print(
            f"compile cost: probe {probe:.1f} s, training graph {first[1][0] - med[0]:.1f} s, "
            f"test graph {first_test[1] - med_test[0]:.1f} s (first call minus an eager one)"
        )


if __name__ == "__main__":
    main()
