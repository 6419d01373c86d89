"""The timing loops of the benchmark scripts, one copy: calls after warm-up calls (oneDNN creates
its primitives on the first call of each shape), several variants alternated so that load
changes on a shared machine hit every variant alike.

    from timing import alternated, timed                    # scripts in experiments/bench/
    from experiments.bench.timing import alternated, timed  # others (run with PYTHONPATH=.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

Clock = Callable[[], float]


def alternated(
    fns: Sequence[Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    clock: Clock = time.perf_counter,
) -> list[list[float]]:
    """Seconds of each function over `repeats` rounds, called in turn (A, B, A, B, ...) after
    `warmup` rounds. clock: time.perf_counter (wall) or time.thread_time (CPU seconds of the
    calling thread, what a call costs at 1 thread on a machine shared with other jobs)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = clock()
            fn()
            out.append(clock() - t0)
    return times


def timed(
    fn: Callable[[], object], repeats: int, warmup: int = 1, clock: Clock = time.perf_counter
) -> list[float]:
    """Seconds of `repeats` calls of one function after `warmup` calls."""
    return alternated([fn], repeats, warmup, clock)[0]
