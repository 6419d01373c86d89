"""Speed and size of PDD at the paper's setting (256 px, WRN50 + VMamba-Tiny, random weights).

    PYTHONPATH=. .venv/bin/python experiments/pdd/bench.py --batch 2 --steps 3

Prints parameter counts, per-part forward times (teachers, fusion + students), a full training
step (forward + backward + Adam) with and without `student.share_first_stage`, the same step
from the second epoch on with the teacher cache (teachers served from it, as
`method.teacher_cache_gib=auto` does; the two steps alternate in one loop, so load changes hit
both alike), and test-time throughput. Timings are the fastest of --steps calls after one
warm-up call (--median: the median), with glibc malloc keeping freed memory as adlab.run does
(`resources.keep_freed_memory`; --system-malloc: without).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from adlab.allocator import keep_freed_memory
from adlab.methods.pdd import PDD
from adlab.methods.teacher_cache import TeacherCache
from adlab.models.fusion.pdd_fusion import PDDFusion
from adlab.models.students.dual_prior import DualPriorStudent
from adlab.models.teachers.dual import DualTeacher
from adlab.models.teachers.timm_encoder import TimmEncoder
from adlab.models.teachers.vmamba import VMambaEncoder
from experiments.bench.timing import alternated
from experiments.bench.timing import timed as time_calls


def pick(times: list[float]) -> float:
    """The fastest time: on a shared 2-core machine the minimum is the figure least disturbed
    by other processes (--median: the median)."""
    return statistics.median(times) if MEDIAN else min(times)


def timed(fn, steps: int) -> float:
    """`pick` of `steps` calls after a warm-up call (oneDNN primitive creation)."""
    return pick(time_calls(fn, steps, 1, CLOCK))


MEDIAN = False
CLOCK = time.perf_counter  # --cpu-time: time.thread_time (CPU seconds of the one torch thread)


def timed_alternately(fns, steps: int) -> list[float]:
    """`timed` for several functions called in turn (A, B, A, B, ...) after one warm-up each."""
    return [pick(times) for times in alternated(fns, steps, 1, CLOCK)]


def count(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scan", default="fast", choices=["fast", "ref"])
    ap.add_argument("--median", action="store_true")
    ap.add_argument("--cpu-time", action="store_true", help="with --threads 1: CPU seconds")
    ap.add_argument(
        "--system-malloc", action="store_true", help="without resources.keep_freed_memory"
    )
    args = ap.parse_args()
    keep_freed_memory(not args.system_malloc)  # as adlab.run does by default
    global MEDIAN, CLOCK
    MEDIAN = args.median
    if args.cpu_time:
        if args.threads != 1:
            ap.error("--cpu-time needs --threads 1 (other threads' CPU time is not counted)")
        CLOCK = time.thread_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cnn = TimmEncoder("wide_resnet50_2", layers=(1, 2, 3, 4))
    vmamba = VMambaEncoder("vanilla_vmamba_tiny", scan_impl=args.scan)
    teacher = DualTeacher(cnn, vmamba)
    images = torch.rand(args.batch, 3, args.size, args.size)
    print(f"batch {args.batch} x {args.size}px, {args.threads} threads, scan={args.scan}")
    print(f"params: WRN50 {count(cnn)}, VMamba-T {count(vmamba)}")
    with torch.no_grad():
        t_cnn = timed(lambda: cnn(images), args.steps)
        t_vm = timed(lambda: vmamba(images), args.steps)
        feats = teacher(images)
    print(f"teacher forward: WRN50 {t_cnn:.3f}s, VMamba-T {t_vm:.3f}s per batch")

    for share in (False, True):
        method = PDD(
            teacher,
            functools.partial(PDDFusion),
            functools.partial(DualPriorStudent, share_first_stage=share),
            optimizer={"lr": 2e-3, "betas": (0.5, 0.999)},
        )
        if not share:
            fusion, students = count(method.model.fusion), count(method.model.student)
            print(f"params: fusion (InA+MMU+MPA) {fusion}, students {students}")
        method.train()
        opt = method.configure_optimizers()

        batch = {"image": images, "path": [f"{i}.png" for i in range(args.batch)]}

        def step(method=method, opt=opt, batch=batch, cache=None):
            method.teacher_cache = cache
            loss = method.training_loss(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def heads(method=method, feats=feats):
            fused = method.model.fusion(feats.cnn, feats.vmamba)
            out = method.model.student(fused.manifold, fused.priors)
            return fused, out

        with torch.no_grad():
            t_heads = timed(heads, args.steps)
        cached = functools.partial(step, cache=TeacherCache(4.0))  # its warm-up call fills it
        t_step, t_cached = timed_alternately([step, cached], args.steps)
        method.teacher_cache = None
        method.eval()
        t_pred = timed(lambda method=method: method.predict_maps(images), args.steps)
        print(
            f"share_first_stage={share}: fusion+students forward {t_heads:.3f}s, train step "
            f"{t_step:.3f}s ({t_step / args.batch:.3f}s/img), with the teacher cache "
            f"{t_cached:.3f}s ({t_step / t_cached:.1f}x), test {args.batch / t_pred:.2f} img/s"
        )


if __name__ == "__main__":
    main()
