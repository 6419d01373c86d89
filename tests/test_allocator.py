"""resources.keep_freed_memory: a freed 256 MiB tensor stays in the process for reuse (the
default returns it to the kernel, so the next step faults its pages in again)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import sys, torch
from adlab.allocator import keep_freed_memory

def resident_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

applied = keep_freed_memory(sys.argv[1] == "keep")
big = torch.empty(2**26).fill_(1.0)  # 256 MiB, every page touched
held = resident_mib()
del big
print(applied, held - resident_mib())
"""


def _released_mib(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_freed_memory_stays_for_reuse_only_when_kept():
    applied, kept_released = _released_mib("keep")
    default_applied, default_released = _released_mib("default")
    assert applied == "True" and default_applied == "False"
    assert default_released >= 250  # munmap'd at once
    assert kept_released < 8  # still resident, reused by the next allocations without faults
