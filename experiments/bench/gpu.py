"""The GPU checks in one script, for a lent GPU machine (about 5-8 minutes on an H200).

    PYTHONPATH=. python experiments/bench/gpu.py --out gpu_results            # on the GPU
    PYTHONPATH=. python experiments/bench/gpu.py --out /tmp/smoke --device cpu --quick

Writes <out>/gpu_bench.json and <out>/gpu_bench.md (device name, versions, every figure):

1. throughput: RD4AD (WRN50, 256 px, batch 16) and PDD (WRN50 + VMamba-T, 256 px, batch 10),
   random init, configs composed from conf/ as `adlab.run` does; per precision (32-true,
   bf16-mixed: bf16 autocast around the forward, as Lightning does) the median training step
   (forward, loss, backward, Adam), test images/s (maps and scores included) and the peak
   memory of each phase (torch.cuda.max_memory_allocated; max RSS on CPU).
2. agreement: a short synthetic `python -m adlab.run` per method in both precisions (random
   teachers; RD4AD with the per-pixel loss learns the synthetic anomalies), and the float32
   model tested in bf16 by `adlab.evaluate`; image and pixel AUROC must agree within 0.5 points
   for bf16 to be offered (`bf16_training`, `bf16_testing` of the method class).
3. scan: the selective scan at VMamba-T stage-1 shapes on the device: adlab's chunked path
   (no-grad and differentiable) and mamba-ssm's kernel (when importable) against the
   sequential reference, max abs difference (must be <= 1e-3 in float32) and time per call.

--quick shrinks every part (tiny models, 64 px, one or two epochs) for a CPU smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

AUROC_POINTS = 0.5  # the largest bf16 vs float32 difference for bf16 to be offered
SCAN_TOLERANCE = 1e-3
PRECISIONS = ("32-true", "bf16-mixed")

# method -> (overrides for the throughput models, overrides for the quick ones)
MODELS = {
    "rd4ad": (
        ["method=rd4ad", "teacher.pretrained=false"],
        ["method=rd4ad", "teacher=resnet18", "teacher.pretrained=false", "image_size=64"],
    ),
    "pdd": (
        ["method=pdd", "teacher.cnn.pretrained=false", "teacher.vmamba.weights=null"],
        [
            "method=pdd",
            "teacher.cnn.name=resnet18",
            "teacher.cnn.pretrained=false",
            "teacher.vmamba.weights=null",
            "+teacher.vmamba.dim=8",
            "+teacher.vmamba.depths=[1,1,1,1]",
            "+teacher.vmamba.d_state=4",
            "image_size=64",
        ],
    ),
}
# method -> (overrides of the short synthetic run, extra overrides with --quick)
RUNS = {
    "rd4ad": (
        [
            *MODELS["rd4ad"][1],
            "method.loss=pixel_cos",  # learns the synthetic anomalies with a random teacher
            "trainer.max_epochs=12",
        ],
        ["trainer.max_epochs=2"],
    ),
    "pdd": (
        [*MODELS["pdd"][1], "trainer.max_epochs=6"],
        ["trainer.max_epochs=1", "dataset.n_train=16"],
    ),
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    return platform.processor() or "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """Peak GPU memory since reset_peak, or the process's max RSS on CPU (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    fixed = ["method_name=bench", "run_name=bench", "dataset=synthetic"]
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        return hydra_compose("config", overrides=[*overrides, *fixed])


def autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def throughput(name: str, args, device: torch.device) -> list[dict]:
    """Training step and test throughput of one method in each precision."""
    cfg = compose(MODELS[name][1 if args.quick else 0])
    rows = []
    for precision in PRECISIONS:
        rows.append({"method": name, **measure_precision(cfg, precision, args, device)})
        print(f"throughput {name} {precision}: {json.dumps(rows[-1])}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def measure_precision(cfg, precision: str, args, device: torch.device) -> dict:
    from adlab.compose import build_method

    batch, eval_batch, size = cfg.data.batch_size, cfg.data.eval_batch_size, cfg.image_size
    if args.quick:
        batch, eval_batch = 4, 4
    torch.manual_seed(0)
    method = build_method(cfg).to(device)
    method.setup("fit")  # channels-last as configured
    opt = method.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    fmt = torch.channels_last if method.channels_last else torch.contiguous_format
    x = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    xe = torch.rand(eval_batch, 3, size, size, device=device).contiguous(memory_format=fmt)

    def step():
        method.train()
        with autocast(device, precision):
            loss = method.training_loss({"image": x})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    dtypes = {}

    def test():
        method.eval()
        with torch.no_grad(), autocast(device, precision):
            maps, scores = method.predict_maps(xe)
        dtypes["maps"], dtypes["scores"] = str(maps.dtype), str(scores.dtype)

    reset_peak(device)
    train = timed(step, device, args.steps, args.warmup)
    train_peak = peak_mib(device)
    opt.state.clear()
    method.zero_grad(set_to_none=True)
    reset_peak(device)
    infer = timed(test, device, args.steps, 1)
    return {
        "precision": precision,
        "image_size": size,
        "batch": batch,
        "eval_batch": eval_batch,
        "train_step_s": statistics.median(train),
        "train_images_per_s": batch / statistics.median(train),
        "train_peak_mib": train_peak,
        "test_images_per_s": eval_batch / statistics.median(infer),
        "test_peak_mib": peak_mib(device),
        "map_dtypes": dtypes,
    }


def adlab_env(args) -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "ADLAB_DATA": str(Path(args.out) / "data"),
    }


def run_adlab(module: str, overrides: list[str], run_dir: Path, args) -> dict:
    """`python -m <module> <overrides>`; metrics and timings of its results.json."""
    cmd = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=args.out, env=adlab_env(args), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    results = json.loads((run_dir / "results.json").read_text())
    metrics = results["metrics"]
    return {
        "wall_s": wall,
        "train_step_s": results["timings"].get("train_step_s"),
        "test_images_per_s": results["timings"].get("test_images_per_s"),
        **{k: metrics.get(k) for k in ("image_auroc", "pixel_auroc", "aupro")},
    }


def agreement(args, device: torch.device) -> list[dict]:
    """Per method: trained and tested in float32 and in bf16-mixed (`bf16_training`), and the
    float32 model tested in bf16-mixed by adlab.evaluate (`bf16_testing`)."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    common = [
        "dataset=synthetic",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"trainer.accelerator={accelerator}",
        "allow_bf16=true",  # measure bf16 even where it is not offered yet
    ]
    rows = []
    for name, (overrides, quick) in RUNS.items():
        runs = {}
        for precision in PRECISIONS:
            run_dir = Path(args.out) / "runs" / f"{name}_{precision}"
            runs[precision] = run_adlab(
                "adlab.run",
                [*overrides, *(quick if args.quick else []), *common, "seed=0"]
                + [f"trainer.precision={precision}"],
                run_dir,
                args,
            )
        ckpt = Path(args.out) / "runs" / f"{name}_32-true" / "checkpoints" / "last.ckpt"
        runs["bf16-mixed test only"] = (
            run_adlab(
                "adlab.evaluate",
                [f"ckpt={ckpt}", *common, "trainer.precision=bf16-mixed"],
                Path(args.out) / "runs" / f"{name}_eval_bf16",
                args,
            )
            if ckpt.is_file()
            else {"error": "no float32 checkpoint"}
        )
        row = {"method": name, "runs": runs}
        ok = {k: r for k, r in runs.items() if "error" not in r}
        if "32-true" in ok:
            for other, key in (("bf16-mixed", "training"), ("bf16-mixed test only", "testing")):
                if other in ok:
                    diffs = {
                        m: 100 * abs(ok[other][m] - ok["32-true"][m])
                        for m in ("image_auroc", "pixel_auroc")
                    }
                    row[f"{key}_diff_points"] = diffs
                    row[f"bf16_{key}_agrees"] = all(d <= AUROC_POINTS for d in diffs.values())
        print(f"agreement {name}: {json.dumps(row)}", flush=True)
        rows.append(row)
    return rows


def scan_check(args, device: torch.device) -> dict:
    """Chunked scan (no-grad and differentiable) and the mamba kernel vs the reference."""
    from adlab.models.teachers.selective_scan import (
        mamba_kernel_available,
        selective_scan,
        selective_scan_ref,
    )

    batch, channels, length, d_state = (1, 64, 256, 8) if args.quick else (2, 768, 4096, 16)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, channels, length, generator=g)
    delta = torch.randn(batch, channels, length, generator=g) - 2.0
    A = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)
    B = torch.randn(batch, 4, d_state, length, generator=g)
    C = torch.randn(batch, 4, d_state, length, generator=g)
    D = torch.ones(channels)
    bias = torch.rand(channels, generator=g)
    u, delta, A, B, C, D, bias = (t.to(device) for t in (u, delta, A, B, C, D, bias))
    kw = dict(D=D, delta_bias=bias, delta_softplus=True)
    out = {"shape": {"batch": batch, "channels": channels, "length": length, "d_state": d_state}}
    with torch.no_grad():
        ref = selective_scan_ref(u, delta, A, B, C, **kw)
        out["ref_s"] = statistics.median(
            timed(lambda: selective_scan_ref(u, delta, A, B, C, **kw), device, 2, 0)
        )
        fast = selective_scan(u, delta, A, B, C, **kw, use_kernel=False)
        out["chunked_nograd_max_abs_diff"] = (fast - ref).abs().max().item()
        out["chunked_nograd_s"] = statistics.median(
            timed(lambda: selective_scan(u, delta, A, B, C, **kw, use_kernel=False), device, 5, 1)
        )
        out["mamba_ssm"] = mamba_kernel_available() and device.type == "cuda"
        if out["mamba_ssm"]:
            kern = selective_scan(u, delta, A, B, C, **kw, use_kernel=True)
            out["kernel_max_abs_diff"] = (kern - ref).abs().max().item()
            out["kernel_s"] = statistics.median(
                timed(lambda: selective_scan(u, delta, A, B, C, **kw), device, 5, 1)
            )
    n = min(length, 1024)  # the differentiable path keeps every step for backward: shorter
    ug = u[..., :n].clone().requires_grad_(True)
    grad_out = selective_scan(ug, delta[..., :n], A, B[..., :n], C[..., :n], **kw, use_kernel=False)
    with torch.no_grad():
        ref_n = selective_scan_ref(u[..., :n], delta[..., :n], A, B[..., :n], C[..., :n], **kw)
    out["chunked_grad_length"] = n
    out["chunked_grad_max_abs_diff"] = (grad_out.detach() - ref_n).abs().max().item()
    diffs = [v for k, v in out.items() if k.endswith("max_abs_diff")]
    out["equal_within_1e-3"] = all(d <= SCAN_TOLERANCE for d in diffs)
    print(f"scan: {json.dumps(out)}", flush=True)
    return out


def markdown(report: dict) -> str:
    lines = [
        f"# GPU checks on {report['device_name']}",
        "",
        f"torch {report['torch']}, CUDA {report['cuda']}, mamba-ssm kernel: "
        f"{report['scan'].get('mamba_ssm')}, total {report['wall_s']:.0f} s"
        + (" (--quick)" if report["quick"] else ""),
        "",
        "| method | precision | train step s | train img/s | train peak MiB | test img/s "
        "| test peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["throughput"]:
        lines.append(
            f"| {r['method']} ({r['image_size']} px, batch {r['batch']}) | {r['precision']} "
            f"| {r['train_step_s']:.3f} | {r['train_images_per_s']:.1f} "
            f"| {r['train_peak_mib']:.0f} | {r['test_images_per_s']:.1f} "
            f"| {r['test_peak_mib']:.0f} |"
        )
    lines += [
        "",
        f"Short synthetic runs (bf16 offered only within {AUROC_POINTS} AUROC points of float32):",
        "",
        "| method | precision | image AUROC | pixel AUROC | AUPRO | step s | test img/s "
        "| within 0.5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["agreement"]:
        agrees = {
            "32-true": "-",
            "bf16-mixed": row.get("bf16_training_agrees", "-"),
            "bf16-mixed test only": row.get("bf16_testing_agrees", "-"),
        }
        for precision, r in row["runs"].items():
            if "error" in r:
                lines.append(f"| {row['method']} | {precision} | failed: see JSON | | | | | |")
                continue
            step = f"{r['train_step_s']:.3f}" if r.get("train_step_s") else "-"
            lines.append(
                f"| {row['method']} | {precision} | {r['image_auroc']:.4f} "
                f"| {r['pixel_auroc']:.4f} | {r['aupro']:.4f} | {step} "
                f"| {r['test_images_per_s']:.1f} | {agrees[precision]} |"
            )
    s = report["scan"]
    lines += [
        "",
        f"Selective scan {s['shape']}: reference {s['ref_s']:.3f} s, chunked (no grad) "
        f"{s['chunked_nograd_s']:.4f} s, max |diff| {s['chunked_nograd_max_abs_diff']:.2e}; "
        f"differentiable path (length {s['chunked_grad_length']}) max |diff| "
        f"{s['chunked_grad_max_abs_diff']:.2e}"
        + (
            f"; mamba-ssm kernel {s['kernel_s']:.4f} s, max |diff| {s['kernel_max_abs_diff']:.2e}"
            if s.get("mamba_ssm")
            else "; mamba-ssm kernel not importable"
        )
        + f". Equal within {SCAN_TOLERANCE}: {s['equal_within_1e-3']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for gpu_bench.json / .md")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke test")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10, 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3, 1)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "agreement"])
    args = parser.parse_args()
    args.steps = args.steps or (2 if args.quick else 10)
    args.warmup = args.warmup or (1 if args.quick else 3)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: pass --device cpu (with --quick for a smoke test)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    args.out = str(Path(args.out).resolve())
    started = time.perf_counter()
    report = {
        "device_name": device_name(device),
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": args.quick,
        "load_average": os.getloadavg()[0],
    }
    report["scan"] = scan_check(args, device)
    skip = set(args.skip)
    report["throughput"] = (
        [] if "throughput" in skip else [r for m in MODELS for r in throughput(m, args, device)]
    )
    report["agreement"] = [] if "agreement" in skip else agreement(args, device)
    report["wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_bench.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
