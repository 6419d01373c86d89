"""RD4AD speed and memory on this machine: adlab vs anomalib's ReverseDistillation, same inputs.

    .venv/bin/python experiments/bench/rd4ad.py                       # adlab only
    /work/bench-env/bin/python experiments/bench/rd4ad.py             # both, with the ratio
    (bench-env: a separate venv with anomalib==2.7.0 installed; anomalib is never an adlab
    dependency. See docs in README "Benchmarks".)

Each implementation runs in its own subprocess so that peak memory (max RSS) is its own. Both use a
randomly initialised wide_resnet50_2 (no downloads), 256 px, batch 8, Adam with RD4AD's settings,
torch.set_num_threads(--threads). Reported: median training-step time (forward, loss, backward,
optimiser step), inference images/s including anomaly maps and Gaussian smoothing, peak RSS, and
for adlab a breakdown of where the training step's time goes.
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


def _timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_adlab(args) -> dict:
    import functools

    from adlab.methods.rd4ad import RD4AD
    from adlab.models.fusion.ocbe import OCBE
    from adlab.models.students.rd_decoder import ReverseDecoder
    from adlab.models.teachers.timm_encoder import TimmEncoder

    # adlab-w64: the OCBE at base width 64, the architecture anomalib builds (the official code
    # uses width_per_group 128 there), so that implementation speed is compared like for like.
    fusion_kw = {"base_width": 64} if args.impl == "adlab-w64" else {}
    method = RD4AD(
        teacher=TimmEncoder("wide_resnet50_2", pretrained=False),
        fusion=functools.partial(OCBE, **fusion_kw),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005, "betas": (0.5, 0.999)},
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

    def step():
        method.train()
        t0 = time.perf_counter()
        feats = method.model.teacher(x)
        t1 = time.perf_counter()
        loss = method.loss_fn(feats, method.model.student(method.model.fusion(feats)))
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[key].append(dt)

    def infer():
        method.eval()
        method.predict_maps(x)

    train = _timed(step, args.repeats, args.warmup)
    breakdown = {k: statistics.median(v[args.warmup :]) for k, v in parts.items()}
    test = _timed(infer, args.repeats, 1)
    return {"train": train, "infer": test, "breakdown": breakdown}


def bench_anomalib(args) -> dict:
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

    return {
        "train": _timed(step, args.repeats, args.warmup),
        "infer": _timed(infer, args.repeats, 1),
    }


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
    ] + (["--contiguous"] if args.contiguous else [])
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
    args = parser.parse_args()
    if args.impl:
        child(args)
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
    print(f"{'impl':<10}{'train step s':>14}{'infer img/s':>14}{'peak RSS MiB':>14}")
    for name, r in rows.items():
        if r:
            print(
                f"{name:<10}{statistics.median(r['train']):>14.3f}"
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
            print(f"{name} speed-up over anomalib: training x{train:.2f}, inference x{infer:.2f}")
    if theirs:
        print(
            "(adlab = the official OCBE width, 58.9M bottleneck parameters; adlab-w64 and anomalib "
            "= base width 64, 39.2M)"
        )


if __name__ == "__main__":
    main()
