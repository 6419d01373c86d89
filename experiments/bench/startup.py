"""Where the time goes between `python -m adlab.run ...` and the first training step.

    PYTHONPATH=. .venv/bin/python experiments/bench/startup.py [--repeats 3] [--root OTHER ...]

Each repeat starts a fresh interpreter that runs adlab.run exactly as `python -m adlab.run` does
(runpy, same command line: the tiny synthetic RD4AD config below, random ResNet18 at 64 px), with
a few functions wrapped to stamp the wall clock at each phase boundary:

    imports     interpreter start -> `import adlab.run` done
    compose     Hydra: config composition, run dir, logging -> train_and_test called
    resources   threads, run dir, seed -> datamodule construction
    data        build_datamodule + datamodule.setup (synthetic tree, validation, fingerprint)
    model       build_method (teacher, fusion, student)
    loggers     checks, provenance (git), loggers, train loader, callbacks
    trainer     pl.Trainer(...)
    fit_setup   trainer.fit -> first training batch starts (Lightning setup, summary, loaders)
    first_step  the first training step itself (first oneDNN calls are slower)

The child exits right after the first step. `--root` runs the same measurement against other
checkouts (PYTHONPATH=root), interleaved with this one, so that before/after comparisons on a
loaded machine see the same load. `-X importtime` of `import adlab.run` is summarised per
top-level package (self time), once per root.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "method=rd4ad",
    "dataset=synthetic",
    "teacher=resnet18",
    "teacher.pretrained=false",
    "image_size=64",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "seed=0",
    "logger=csv",
]
PHASES = (
    "imports",
    "compose",
    "resources",
    "data",
    "model",
    "loggers",
    "trainer",
    "fit_setup",
    "first_step",
)


def child(t_spawn: float, overrides: list[str]) -> None:
    """Run adlab.run in this process with phase stamps; print them and exit after one step."""
    import runpy

    stamps: dict[str, float] = {"spawn": t_spawn}

    def stamp(name: str) -> None:
        stamps.setdefault(name, time.time())

    import adlab.run  # noqa: F401  (the imports phase; runpy below re-runs only run.py's body)

    stamp("imports")
    import pytorch_lightning as pl

    import adlab.pipeline as pipeline
    from adlab.methods.base import DistillationMethod

    def wrap(owner, name, before=None, after=None):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if before:
                stamp(before)
            out = original(*args, **kwargs)
            if after:
                stamp(after)
            return out

        setattr(owner, name, wrapped)

    wrap(pipeline, "train_and_test", before="compose")
    wrap(pipeline, "build_datamodule", before="resources")
    wrap(pipeline, "build_method", before="data", after="model")
    wrap(pipeline, "make_loggers")
    wrap(pl.Trainer, "__init__", before="loggers", after="trainer")

    def first_batch_start(self, batch, batch_idx):
        stamp("fit_setup")

    def first_batch_end(self, outputs, batch, batch_idx):
        stamp("first_step")
        print("STAMPS " + json.dumps(stamps), flush=True)
        os._exit(0)  # nothing after the first step is measured

    DistillationMethod.on_train_batch_start = first_batch_start
    DistillationMethod.on_train_batch_end = first_batch_end
    sys.argv = ["adlab.run", *overrides]
    runpy.run_module("adlab.run", run_name="__main__")


def phases(stamps: dict[str, float]) -> dict[str, float]:
    """Durations of each phase from the boundary stamps (the previous one present)."""
    out, last = {}, stamps["spawn"]
    for name in PHASES:
        if name in stamps:
            out[name] = stamps[name] - last
            last = stamps[name]
    out["total"] = last - stamps["spawn"]
    return out


def measure(root: Path, overrides: list[str], workdir: Path) -> dict[str, float] | None:
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "ADLAB_DATA": str(workdir / "data"),
    }
    run_dir = tempfile.mkdtemp(dir=workdir)
    cmd = [sys.executable, __file__, "--child", str(time.time()), "--"]
    cmd += [*overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("STAMPS "):
            return phases(json.loads(line[len("STAMPS ") :]))
    print(f"[{root}] failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    return None


def import_profile(root: Path, top: int = 10) -> list[tuple[str, float]]:
    """Self import time of `import adlab.run` per top-level package, largest first."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import adlab.run"],
        env=env,
        capture_output=True,
        text=True,
    )
    per: dict[str, float] = defaultdict(float)
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, self_us, _, name = (p.strip() for p in line.replace("import time:", "|").split("|"))
        per[name.split(".")[0]] += int(self_us) / 1e6
    return sorted(per.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(float(sys.argv[2]), sys.argv[4:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", nargs="*", default=[], help="other checkouts to compare")
    parser.add_argument("--imports", action="store_true", help="also the -X importtime profile")
    parser.add_argument("overrides", nargs="*", help="extra adlab.run overrides")
    args = parser.parse_args()
    roots = [REPO, *map(Path, args.root)]
    results: dict[Path, list[dict]] = {r: [] for r in roots}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        measure(REPO, [*TINY, *args.overrides], workdir)  # generate the synthetic tree once
        for _ in range(args.repeats):  # interleaved: each repeat runs every root once
            for root in roots:
                r = measure(root, [*TINY, *args.overrides], workdir)
                if r:
                    results[root].append(r)
    load = os.getloadavg()[0]
    print("\nseconds from `python -m adlab.run` to the first training step (median of ")
    print(f"{args.repeats}, interleaved; load average {load:.2f} on {os.cpu_count()} CPUs)")
    names = [*PHASES, "total"]
    print(f"{'phase':<12}" + "".join(f"{str(r)[-24:]:>26}" for r in roots))
    for name in names:
        cells = []
        for root in roots:
            values = [r[name] for r in results[root] if name in r]
            cells.append(
                f"{statistics.median(values):>12.2f} [{min(values):.2f}-{max(values):.2f}]"
                if values
                else "-"
            )
        print(f"{name:<12}" + "".join(f"{c:>26}" for c in cells))
    if args.imports:
        for root in roots:
            profile = ", ".join(f"{k} {v:.2f}" for k, v in import_profile(root))
            print(f"import adlab.run self time per package ({root}): {profile}")


if __name__ == "__main__":
    main()
