"""A job's share of the machine: torch threads, data-loader workers and its GPU.

Parallel launchers (hydra/launcher=joblib) run several jobs on one machine; without a cap each
job's torch would use every core and n jobs would oversubscribe them n times. Read once at the
start of a job (adlab.pipeline), from `resources.threads` and what the launcher says about the
sweep (how many jobs run at once, this job's number).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from adlab.metrics.ranking import usable_cpus  # the affinity mask: SLURM's or taskset's share

log = logging.getLogger("adlab")


@dataclass(frozen=True)
class Launch:
    """What the launcher tells a job: its number in the sweep, how many jobs run at once on this
    machine, the CPUs it was given (submitit's cpus_per_task), the sweep directory (None
    outside a multirun) and the experiment preset."""

    job_num: int = 0
    parallel_jobs: int = 1
    cpus_per_job: int | None = None
    sweep_dir: str | None = None
    experiment: str | None = None  # the experiment preset chosen, if any (a W&B group)


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU quota in CPUs (cgroup v2 cpu.max or v1 cfs_quota_us), None without
    one. `docker --cpus=2` on a 64-core host leaves all 64 in the affinity mask but gives 2."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def job_cpus() -> int:
    """The CPUs this process is given: its affinity mask (taskset, SLURM), capped by a container
    CPU quota (rounded up)."""
    limit = cgroup_cpu_limit()
    cpus = usable_cpus()
    return max(1, min(cpus, math.ceil(limit))) if limit else cpus


def parallel_jobs(n_jobs: int | None) -> int:
    """joblib's n_jobs as a count (-1: one per CPU, -2: all but one, ...)."""
    if not n_jobs:
        return 1
    return max(1, n_jobs if n_jobs > 0 else job_cpus() + 1 + n_jobs)


def processes_per_job(trainer: DictConfig) -> int:
    """Processes one job starts on this machine: the DDP devices, else 1."""
    devices = trainer.get("devices", 1)
    if "ddp" in str(trainer.get("strategy") or "") and isinstance(devices, int) and devices > 1:
        return devices
    return 1


def threads_for(setting: int | str, launch: Launch, processes: int = 1) -> int | None:
    """`resources.threads`: N, or auto: the job's CPUs (submitit's cpus_per_task), else the CPUs
    this process is given (job_cpus) shared out between the jobs and processes that run at once.
    A lone job with OMP_NUM_THREADS set keeps it (None: torch's choice)."""
    if setting == "auto" and launch.cpus_per_job:  # per task: on SLURM each DDP rank is one
        return launch.cpus_per_job
    if setting == "auto":
        share = launch.parallel_jobs * processes
        if share == 1 and os.environ.get("OMP_NUM_THREADS"):
            return None
        return max(1, job_cpus() // share)
    if isinstance(setting, int) and not isinstance(setting, bool) and setting > 0:
        return setting
    raise ValueError(f"resources.threads={setting!r}: use auto or a positive number of threads.")


def gpu_for(launch: Launch, trainer: DictConfig) -> list[int] | None:
    """Round-robin over the visible GPUs by job number, for a one-device job among parallel
    ones on a machine with several GPUs (None: leave trainer.devices as configured)."""
    if launch.parallel_jobs == 1 or trainer.get("devices") not in (1, "1"):
        return None
    if str(trainer.get("accelerator", "auto")) not in ("auto", "gpu", "cuda"):
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [launch.job_num % count] if count > 1 else None


def apply_resources(cfg: DictConfig, launch: Launch) -> dict:
    """Set this process's torch threads, cap data.num_workers to them and pick the job's GPU;
    edits cfg so results.json records what the job actually used. Returns the choices."""
    resources = cfg.get("resources") or {}
    threads = threads_for(resources.get("threads", "auto"), launch, processes_per_job(cfg.trainer))
    chosen: dict = {"threads": torch.get_num_threads(), "parallel_jobs": launch.parallel_jobs}
    if threads is not None:
        torch.set_num_threads(threads)
        chosen["threads"] = threads
        if cfg.data.num_workers > threads:
            log.info("data.num_workers %d -> %d (resources.threads)", cfg.data.num_workers, threads)
            with open_dict(cfg):
                cfg.data.num_workers = threads
    gpu = gpu_for(launch, cfg.trainer)
    if gpu is not None:
        with open_dict(cfg):
            cfg.trainer.devices = gpu
        chosen["gpu"] = gpu[0]
    if threads is not None or gpu is not None:
        log.info("job %d resources: %s", launch.job_num, chosen)
    return chosen
