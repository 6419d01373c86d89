"""RD4AD speed and memory on this machine: adlab vs anomalib's ReverseDistillation, same inputs.

    .venv/bin/python experiments/bench/rd4ad.py                       # adlab only
    /work/bench-env/bin/python experiments/bench/rd4ad.py             # both, with the ratio
    /work/bench-env/bin/python experiments/bench/rd4ad.py --interleaved   # both, one process
    (bench-env: a separate venv with anomalib==2.7.0 installed; anomalib is never an adlab
    dependency. See docs in README "Benchmarks".)

Each implementation runs in its own subprocess so that peak memory (max RSS) is its own. Both use a
randomly initialised wide_resnet50_2 (no downloads), 256 px, batch 8, Adam with RD4AD's settings,
torch.set_num_threads(--threads). Reported: median training-step time (forward, loss, backward,
optimiser step), for adlab also from the second epoch on, with the teacher's features served by
the teacher cache (`method.teacher_cache_gib=auto`; measured alternately with the uncached step in
one process), inference images/s including anomaly maps and Gaussian smoothing, peak RSS, and for
adlab a breakdown of where the training step's time goes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from timing import alternated, timed  # noqa: E402 (experiments/bench, the script's folder)

clock = time.perf_counter  # --cpu-time: time.thread_time (CPU seconds of the one torch thread)


def adlab_parts(args, impl: str, compile: bool = False) -> tuple[dict, dict]:
    """adlab's train step (teacher run), the same step with the teacher's features from the
    teacher cache (epoch 2 on), inference; and the train step's breakdown lists. compile: the
    network's parts compiled as `method.compile=true` does (inductor, compiled at first call)."""
    import functools

    from adlab.methods.rd4ad import RD4AD
    from adlab.methods.teacher_cache import TeacherCache
    from adlab.models.fusion.ocbe import OCBE
    from adlab.models.students.rd_decoder import ReverseDecoder
    from adlab.models.teachers.timm_encoder import TimmEncoder

    # adlab-w64: the OCBE at base width 64, the architecture anomalib builds (the official code
    # uses width_per_group 128 there), so that implementation speed is compared like for like.
    fusion_kw = {"base_width": 64} if impl == "adlab-w64" else {}
    method = RD4AD(
        teacher=TimmEncoder("wide_resnet50_2", pretrained=False),
        fusion=functools.partial(OCBE, **fusion_kw),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005, "betas": (0.5, 0.999)},
        compile=compile,
    )
    method.channels_last = not args.contiguous
    method.setup("fit")  # what Lightning calls: channels-last weights unless --contiguous
    opt = method.configure_optimizers()
    x = method.on_after_batch_transfer(
        {"image": torch.randn(args.batch, 3, args.size, args.size)}, 0
    )["image"]
    parts: dict[str, list[float]] = {
        "teacher_fwd": [],
        "student_fwd": [],
        "backward": [],
        "optimizer": [],
    }
    cache, keys = TeacherCache(64.0), [f"{i}.png" for i in range(args.batch)]

    def step(cached: bool = False):
        method.train()
        t0 = clock()
        with torch.no_grad():
            feats = cache(method.model.teacher, x, keys) if cached else method.model.teacher(x)
        t1 = clock()
        loss = method.loss_fn(feats, method.model.student(method.model.fusion(feats)))
        t2 = clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = clock()
        opt.step()
        t4 = clock()
        if not cached:  # the breakdown is the uncached step's
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[key].append(dt)

    def infer():
        method.eval()
        method.predict_maps(x)

    def infer_bf16():  # trainer.precision=bf16-mixed at test (RD4AD's bf16_testing)
        method.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            method.predict_maps(x)

    fns = {"train": step, "train_cached": lambda: step(True), "infer": infer}
    return {**fns, "infer_bf16": infer_bf16}, parts


def bench_adlab(args) -> dict:
    from adlab.allocator import keep_freed_memory

    keep_freed_memory()  # as adlab.run does (resources.keep_freed_memory)
    fns, parts = adlab_parts(args, args.impl)
    train, cached = alternated(
        [fns["train"], fns["train_cached"]], args.repeats, args.warmup, clock
    )
    breakdown = {k: statistics.median(v[args.warmup :]) for k, v in parts.items()}
    test = timed(fns["infer"], args.repeats, 1, clock)
    return {"train": train, "train_cached": cached, "infer": test, "breakdown": breakdown}


def anomalib_parts(args) -> dict:
    """anomalib's train step and inference on the same inputs."""
    from anomalib.models.image.reverse_distillation.torch_model import ReverseDistillationModel

    try:
        from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss

        loss_fn = ReverseDistillationLoss()
    except ImportError:  # pragma: no cover - older layouts
        from adlab.models.losses import flat_cos_loss as loss_fn
    model = ReverseDistillationModel(
        backbone="wide_resnet50_2",
        input_size=(args.size, args.size),
        layers=["layer1", "layer2", "layer3"],
        anomaly_map_mode="add",
        pre_trained=False,
    )
    params = list(model.bottleneck.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.Adam(params, lr=0.005, betas=(0.5, 0.999))
    x = torch.randn(args.batch, 3, args.size, args.size)

    def step():
        model.train()
        enc, dec = model(x)
        loss = loss_fn(enc, dec)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer():
        model.eval()
        model(x)

    return {"train": step, "infer": infer}


def flops_per_call(fns: dict) -> dict[str, int]:
    """FLOPs of one call of each timed function (torch's FlopCounterMode; the teacher cache is
    filled first, so that the cached step counts no teacher)."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    for name, fn in fns.items():
        if name in ("train", "train_cached", "infer"):
            fn()
            with FlopCounterMode(display=False) as counter:
                fn()
            out[name] = counter.get_total_flops()
    return out


def attainable_peak(args) -> float:
    """Best float32 FLOP/s of the 3x3 convolutions that dominate WRN50 at 256 px, channels-last,
    at --threads (the roofline bench's peak, measured again here in the same process)."""
    from roofline import conv_row

    shapes = [(8, 256, 256, 64, 3), (8, 128, 128, 64, 3), (8, 256, 256, 32, 3),
              (8, 512, 512, 16, 3)]  # fmt: skip
    return max(conv_row(*s, True, False, 3)["rate"] for s in shapes)


def ceiling(name: str, flops: int, seconds: float, peak: float, theirs_s: float) -> str:
    """One call's FLOPs, its fraction of the attainable peak, and the largest speed-up over
    anomalib's `theirs_s` that the peak allows: a target above it needs fewer FLOPs or another
    precision, whatever the implementation."""
    best = flops / peak
    return (
        f"{name:<24}{flops / 1e9:>8.1f} GFLOP{seconds:>8.3f} s"
        f"{100 * best / seconds:>6.0f} % of peak   at the peak: {best:.3f} s, "
        f"x{theirs_s / best:.2f} over anomalib"
    )


def bench_anomalib(args) -> dict:
    fns = anomalib_parts(args)
    return {
        "train": timed(fns["train"], args.repeats, args.warmup, clock),
        "infer": timed(fns["infer"], args.repeats, 1, clock),
    }


def system_malloc() -> None:
    """glibc's settings in a training loop without adlab's `resources.keep_freed_memory`:
    blocks from 32 MiB on mmap'd and unmapped when freed (its dynamic threshold's ceiling),
    the heap trimmed above twice that; what was kept is returned now."""
    import ctypes

    from adlab.allocator import M_MMAP_MAX, M_TRIM_THRESHOLD

    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_MAX, 65536)
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
    libc.mallopt(M_TRIM_THRESHOLD, 64 * 2**20)
    libc.malloc_trim(0)


def with_malloc(fn, keep: bool):
    """fn run under adlab's allocator setting (keep) or glibc's (anomalib, adlab without it)."""
    from adlab.allocator import keep_freed_memory

    def run():
        if keep:
            keep_freed_memory()
        else:
            system_malloc()
        fn()

    return run


def interleaved(args) -> None:
    """adlab-w64 and anomalib in one process, their calls alternated (train steps, then
    inference): on a machine shared with other jobs the only fair speed ratio. adlab's calls
    run with `resources.keep_freed_memory` (as adlab.run sets it) and once more without."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    ours, _ = adlab_parts(args, "adlab-w64")
    theirs = anomalib_parts(args)
    variants = {
        "adlab-w64 train, system malloc": with_malloc(ours["train"], False),
        "adlab-w64 train": with_malloc(ours["train"], True),
        "adlab-w64 epoch 2+": with_malloc(ours["train_cached"], True),
        "anomalib train": with_malloc(theirs["train"], False),
    }
    infers = {
        "adlab-w64": with_malloc(ours["infer"], True),
        "anomalib": with_malloc(theirs["infer"], False),
    }
    if args.bf16:
        infers["adlab-w64 bf16-mixed"] = with_malloc(ours["infer_bf16"], True)
    if args.compile:  # method.compile=true; compiled at the first (warm-up) call of each
        compiled, _ = adlab_parts(args, "adlab-w64", compile=True)
        variants["adlab-w64 epoch 2+, compiled"] = with_malloc(compiled["train_cached"], True)
        infers["adlab-w64 compiled"] = with_malloc(compiled["infer"], True)
    train = alternated(list(variants.values()), args.repeats, args.warmup, clock)
    med = dict(zip(variants, map(statistics.median, train)))
    test = alternated(list(infers.values()), args.repeats, 1, clock)
    infer = dict(zip(infers, map(statistics.median, test)))
    what = "CPU time" if args.cpu_time else "wall time"
    print(
        f"RD4AD wide_resnet50_2 (OCBE base width 64 in both), {args.size}px, batch {args.batch}, "
        f"{args.threads} threads, alternated in one process, median {what} of {args.repeats}"
    )
    for name, value in med.items():
        print(f"{name:<32}{value:>8.3f} s per training step")
    for name, value in infer.items():
        print(f"{name + ' inference':<32}{args.batch / value:>8.2f} images/s")
    base = med["anomalib train"]
    print(
        f"adlab-w64 speed-up over anomalib: training x{base / med['adlab-w64 train']:.2f} "
        f"(x{base / med['adlab-w64 train, system malloc']:.2f} with glibc's default malloc, "
        f"x{base / med['adlab-w64 epoch 2+']:.2f} from epoch 2 with the teacher cache), "
        f"inference x{infer['anomalib'] / infer['adlab-w64']:.2f}"
    )
    if args.compile:
        print(
            f"with method.compile=true: training from epoch 2 "
            f"x{base / med['adlab-w64 epoch 2+, compiled']:.2f}, "
            f"inference x{infer['anomalib'] / infer['adlab-w64 compiled']:.2f}"
        )
    if args.bf16:
        print(
            "with trainer.precision=bf16-mixed at test (offered for RD4AD, metrics within 0.5 "
            f"AUROC points): inference x{infer['anomalib'] / infer['adlab-w64 bf16-mixed']:.2f}"
        )
    if args.ceiling:
        peak = attainable_peak(args)
        mine, yours = flops_per_call(ours), flops_per_call(theirs)
        print(
            f"float32 ceiling, a batch of {args.batch}, attainable peak {peak / 1e9:.0f} GFLOP/s "
            "(FLOPs by FlopCounterMode):"
        )
        rows = [
            ("anomalib train", yours["train"], base, base),
            ("adlab-w64 train", mine["train"], med["adlab-w64 train"], base),
            ("adlab-w64 epoch 2+", mine["train_cached"], med["adlab-w64 epoch 2+"], base),
            ("anomalib inference", yours["infer"], infer["anomalib"], infer["anomalib"]),
            ("adlab-w64 inference", mine["infer"], infer["adlab-w64"], infer["anomalib"]),
        ]
        for row in rows:
            print(ceiling(*row[:3], peak, row[3]))


def child(args) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    result = (bench_anomalib if args.impl == "anomalib" else bench_adlab)(args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def run_child(impl: str, args) -> dict | None:
    cmd = [
        sys.executable,
        __file__,
        "--impl",
        impl,
        "--batch",
        str(args.batch),
        "--size",
        str(args.size),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    cmd += ["--contiguous"] if args.contiguous else []
    cmd += ["--cpu-time"] if args.cpu_time else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    print(f"[{impl}] failed:\n{proc.stderr[-2000:]}")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impl", choices=["adlab", "adlab-w64", "anomalib"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--contiguous", action="store_true", help="adlab without channels-last (NCHW) memory format"
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="with --threads 1: time CPU seconds of the thread, not wall seconds (on a machine "
        "shared with other jobs, what a call costs rather than how long it waited)",
    )
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="adlab-w64 and anomalib alternated in one process (timings only, no peak RSS)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="with --interleaved: also adlab-w64 with method.compile=true (about 3 min to compile)",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="with --interleaved: also adlab-w64 inference under bf16 autocast (bf16-mixed)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="with --interleaved: count each call's FLOPs and print the fastest it could be at "
        "this machine's attainable float32 peak, and the speed-up over anomalib that allows "
        "(the peak is timed by wall clock, also with --cpu-time)",
    )
    args = parser.parse_args()
    if args.cpu_time:
        if args.threads != 1:
            parser.error("--cpu-time needs --threads 1 (other threads' CPU time is not counted)")
        global clock
        clock = time.thread_time
    if args.impl:
        child(args)
        return
    if args.interleaved:
        interleaved(args)
        return
    rows = {"adlab": run_child("adlab", args)}
    try:
        import anomalib  # noqa: F401

        rows["adlab-w64"] = run_child("adlab-w64", args)
        rows["anomalib"] = run_child("anomalib", args)
    except ImportError:
        print(
            "anomalib is not installed in this interpreter: anomalib column skipped "
            "(run this script with the bench-env interpreter to compare)."
        )
    print(
        f"\nRD4AD wide_resnet50_2, {args.size}px, batch {args.batch}, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(
        f"{'impl':<10}{'train step s':>14}{'epoch 2+ s':>12}{'infer img/s':>14}{'peak RSS MiB':>14}"
    )
    for name, r in rows.items():
        if r:
            cached = f"{statistics.median(r['train_cached']):.3f}" if "train_cached" in r else "-"
            print(
                f"{name:<10}{statistics.median(r['train']):>14.3f}{cached:>12}"
                f"{args.batch / statistics.median(r['infer']):>14.2f}{r['peak_rss_mib']:>14.0f}"
            )
    if rows.get("adlab"):
        b = rows["adlab"]["breakdown"]
        total = sum(b.values())
        print(
            "adlab training step breakdown: "
            + ", ".join(f"{k} {v:.3f}s ({100 * v / total:.0f}%)" for k, v in b.items())
        )
    theirs = rows.get("anomalib")
    for name in ("adlab-w64", "adlab"):
        ours = rows.get(name)
        if ours and theirs:
            train = statistics.median(theirs["train"]) / statistics.median(ours["train"])
            infer = statistics.median(theirs["infer"]) / statistics.median(ours["infer"])
            again = statistics.median(theirs["train"]) / statistics.median(ours["train_cached"])
            print(
                f"{name} speed-up over anomalib: training x{train:.2f} (x{again:.2f} from epoch 2 "
                f"with the teacher cache), inference x{infer:.2f}"
            )
    if theirs:
        print(
            "(adlab = the official OCBE width, 58.9M bottleneck parameters; adlab-w64 and anomalib "
            "= base width 64, 39.2M)"
        )


if __name__ == "__main__":
    main()
