"""How jobs that share a machine slow each other down, by torch thread count.

    PYTHONPATH=. .venv/bin/python experiments/bench/threads.py [--seconds 20] [--size 64]

One job = one process training RD4AD (random ResNet18, OCBE, reverse decoder; --size px, batch
--batch, Adam) for --seconds after two warm-up steps; its figure is the median step time. The
scenarios run one after another, each job in its own process; concurrent jobs build and warm up
first, then start timing together (a barrier on stdin), so their timed windows overlap:

    alone      one job
    pair       two jobs at once (what `hydra/launcher=joblib hydra.launcher.n_jobs=2` does)

each with 1 and 2 threads and OMP_WAIT_POLICY unset (libgomp's default: a waiting OpenMP thread
spins for a while, then sleeps), and with 2 threads once more with OMP_WAIT_POLICY=ACTIVE (spin)
and PASSIVE (sleep at once; what adlab sets when it is imported before torch). --rounds repeats
the whole list, interleaved, and reports the median per job over rounds. The slow-down factor
is a job's median step over the same thread count alone. The last line checks what
`resources.threads=auto` gives a lone job under `taskset -c 0` (needs the taskset binary).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def job(args) -> None:
    """One training job: build, warm up, say READY, wait for GO, time steps for args.seconds."""
    import functools

    import torch

    from adlab.methods.rd4ad import RD4AD
    from adlab.models.fusion.ocbe import OCBE
    from adlab.models.students.rd_decoder import ReverseDecoder
    from adlab.models.teachers.timm_encoder import TimmEncoder

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    method = RD4AD(
        teacher=TimmEncoder("resnet18", pretrained=False),
        fusion=functools.partial(OCBE),
        student=functools.partial(ReverseDecoder),
        optimizer={"lr": 0.005, "betas": (0.5, 0.999)},
        channels_last=True,
    )
    method.setup("fit")
    opt = method.configure_optimizers()
    x = torch.rand(args.batch, 3, args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    method.train()

    def step() -> None:
        loss = method.training_loss({"image": x})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    print("READY", flush=True)
    sys.stdin.readline()
    times, end = [], time.perf_counter() + args.seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps(times), flush=True)


def scenario(args, jobs: int, threads: int, env: dict | None = None) -> list[float]:
    """Median step time of each of `jobs` concurrent jobs with `threads` threads."""
    cmd = [sys.executable, __file__, "--job", "--threads", str(threads)]
    cmd += ["--seconds", str(args.seconds), "--size", str(args.size), "--batch", str(args.batch)]
    full_env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # unset: libgomp's
    full_env.update({"PYTHONPATH": str(REPO), **(env or {})})
    procs = [
        subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=full_env
        )
        for _ in range(jobs)
    ]
    for p in procs:  # barrier: every job built and warmed up
        assert p.stdout.readline().strip() == "READY"
    for p in procs:
        p.stdin.write("GO\n")
        p.stdin.flush()
    medians = []
    for p in procs:
        out, _ = p.communicate()
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        medians.append(statistics.median(json.loads(line[len("RESULT ") :])))
    return medians


def auto_threads_under_taskset() -> str:
    """What resources.threads=auto gives a lone job pinned to CPU 0 (and torch's default)."""
    if not shutil.which("taskset"):
        return "taskset not installed"
    probe = (
        "import torch; from omegaconf import OmegaConf; "
        "from adlab.resources import Launch, apply_resources; d = torch.get_num_threads(); "
        "c = OmegaConf.create({'resources': {'threads': 'auto'}, 'data': {'num_workers': 4}, "
        "'trainer': {'devices': 1}}); apply_resources(c, Launch()); "
        "print(d, torch.get_num_threads(), c.data.num_workers)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", probe], env=env, capture_output=True, text=True
    ).stdout.split()
    return f"torch default {out[0]}, resources.threads=auto {out[1]}, num_workers 4 -> {out[2]}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.job:
        job(args)
        return
    load = os.getloadavg()
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    active = {"OMP_WAIT_POLICY": "ACTIVE"}
    scenarios = (
        ("alone, 1 thread", 1, 1, None),
        ("alone, 2 threads", 1, 2, None),
        ("pair, 1 thread each", 2, 1, None),
        ("pair, 2 threads each", 2, 2, None),
        ("alone, 2 threads, OMP_WAIT_POLICY=ACTIVE", 1, 2, active),
        ("alone, 2 threads, OMP_WAIT_POLICY=PASSIVE", 1, 2, passive),
        ("pair, 2 threads each, OMP_WAIT_POLICY=PASSIVE", 2, 2, passive),
    )
    runs: dict[str, list[list[float]]] = {name: [] for name, *_ in scenarios}
    for r in range(args.rounds):  # rounds interleave the scenarios: load changes hit all
        for name, jobs, threads, env in scenarios:
            runs[name].append(scenario(args, jobs, threads, env))
            print(f"round {r}, {name}: {runs[name][-1]} s/step", flush=True)
    rows = {  # per job of the scenario: the median over rounds
        name: (threads, [statistics.median(x) for x in zip(*runs[name])])
        for name, _, threads, _ in scenarios
    }
    alone = {t: rows[f"alone, {t} thread{'s' if t > 1 else ''}"][1][0] for t in (1, 2)}
    print(
        f"\nRD4AD ResNet18 {args.size} px batch {args.batch}, median step over {args.seconds:.0f} s"
        f" per job and round, median of {args.rounds} interleaved rounds, {os.cpu_count()} CPUs,"
        f" load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print("| scenario | s/step per job | slow-down vs alone, same threads | vs alone, 2 threads |")
    print("|---|---|---|---|")
    for name, (threads, medians) in rows.items():
        steps = " / ".join(f"{m:.3f}" for m in medians)
        slow = " / ".join(f"{m / alone[threads]:.2f}x" for m in medians)
        vs2 = " / ".join(f"{m / alone[2]:.2f}x" for m in medians)
        print(f"| {name} | {steps} | {slow} | {vs2} |")
    print(f"\nlone job under taskset -c 0: {auto_threads_under_taskset()}")


if __name__ == "__main__":
    main()
