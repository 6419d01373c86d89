"""Exact threshold statistics from one sort of the negatives.

Every metric here (AUROC, AP, F1-max, the PRO curve) changes value only at thresholds equal to a
positive score, so all of them follow from: the distinct positive scores v (descending), how many
positives sit at each v, and how many negatives are >= v and > v. The negatives (usually 95 % of
the pixels) are sorted once, in place and in parallel chunks, and never merged: counts are summed
over the chunks. Counts are integers and curves are float64, so ties are exact.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def sort_chunks(chunks: list[np.ndarray], n_parts: int | None = None) -> list[np.ndarray]:
    """Regroup float32 chunks into at most n_parts arrays and sort each in parallel.

    Chunks are consumed: a single chunk is sorted in place, several are concatenated first (the
    caller should drop its references to free memory). numpy releases the GIL while sorting, so
    the threads run at once: as many as torch's threads (this job's share, which
    `resources.threads` sets), so that parallel jobs on one machine do not oversubscribe it.
    """
    n_parts = n_parts or min(torch.get_num_threads(), usable_cpus(), 8)
    chunks = [c.reshape(-1) for c in chunks if c.size]
    total = sum(c.size for c in chunks)
    if total == 0:
        return []
    n_parts = max(1, min(n_parts, total // 1_000_000 + 1))
    if n_parts == 1 and len(chunks) == 1:
        parts = [chunks[0]]
    else:
        flat = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        bounds = np.linspace(0, total, n_parts + 1).astype(np.int64)
        parts = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if len(parts) == 1:
        parts[0].sort()
    else:
        with ThreadPoolExecutor(len(parts)) as pool:
            list(pool.map(np.ndarray.sort, parts))
    return parts


@dataclass(frozen=True)
class Ranked:
    """Distinct positive scores (descending) with the counts every exact metric needs."""

    values: np.ndarray  # (U,) distinct positive scores, descending
    pos_count: np.ndarray  # (U,) int64 positives equal to each value
    neg_ge: np.ndarray  # (U,) int64 negatives >= value
    neg_gt: np.ndarray  # (U,) int64 negatives > value
    n_pos: int
    n_neg: int
    weight: np.ndarray | None = None  # (U,) float64 summed per-positive weights at each value

    @property
    def tp(self) -> np.ndarray:
        """True positives when thresholding at each value (score >= value is anomalous)."""
        return np.cumsum(self.pos_count)


def rank(
    sorted_neg: list[np.ndarray], pos: np.ndarray, pos_weight: np.ndarray | None = None
) -> Ranked:
    """Group positives by distinct score and count the negatives above/at each score."""
    pos = pos.reshape(-1)
    order = np.argsort(pos, kind="stable")[::-1]
    ps = pos[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]]) if ps.size else np.zeros(0, int)
    values = ps[starts]
    pos_count = np.diff(np.r_[starts, ps.size]).astype(np.int64)
    weight = None
    if pos_weight is not None:
        w = pos_weight.reshape(-1)[order].astype(np.float64)
        weight = np.add.reduceat(w, starts) if ps.size else np.zeros(0)
    asc = values[::-1]  # searchsorted wants ascending needles for speed
    n_neg = int(sum(p.size for p in sorted_neg))
    below = np.zeros(asc.size, np.int64)  # negatives < v
    at_or_below = np.zeros(asc.size, np.int64)  # negatives <= v
    for part in sorted_neg:
        below += np.searchsorted(part, asc, side="left")
        at_or_below += np.searchsorted(part, asc, side="right")
    return Ranked(
        values=values,
        pos_count=pos_count,
        neg_ge=(n_neg - below)[::-1],
        neg_gt=(n_neg - at_or_below)[::-1],
        n_pos=int(ps.size),
        n_neg=n_neg,
        weight=weight,
    )


def degenerate(r: Ranked, metric: str) -> bool:
    """True (with a warning naming the metric) when one class is missing: the metric is NaN."""
    if r.n_pos and r.n_neg:
        return False
    missing = "anomalous (positive)" if not r.n_pos else "normal (negative)"
    warnings.warn(
        f"{metric}: no {missing} samples in the evaluation set; returning NaN.",
        RuntimeWarning,
        stacklevel=3,
    )
    return True


def auroc_from(r: Ranked, metric: str = "auroc") -> float:
    """P(score_pos > score_neg) + 0.5 P(equal), in exact integer arithmetic."""
    if degenerate(r, metric):
        return float("nan")
    below = r.n_neg - r.neg_ge
    equal = r.neg_ge - r.neg_gt
    twice = 2 * int(np.dot(r.pos_count, below)) + int(np.dot(r.pos_count, equal))
    return twice / (2.0 * r.n_pos * r.n_neg)


def ap_from(r: Ranked, metric: str = "ap") -> float:
    """Average precision sum_k (R_k - R_{k-1}) P_k over distinct thresholds (as scikit-learn)."""
    if degenerate(r, metric):
        return float("nan")
    tp = r.tp.astype(np.float64)
    precision = tp / (tp + r.neg_ge)
    return float(np.dot(r.pos_count / r.n_pos, precision))


def f1_max_from(r: Ranked, metric: str = "f1_max") -> float:
    """Best F1 = 2TP / (TP + FP + P) over thresholds; maxima sit at positive scores."""
    if degenerate(r, metric):
        return float("nan")
    tp = r.tp.astype(np.float64)
    return float(np.max(2.0 * tp / (tp + r.neg_ge + r.n_pos)))


def f1_max_threshold(r: Ranked) -> float:
    """The score at which F1-max is reached (score >= threshold is anomalous); NaN when one class
    is missing. Figures label images true/false positive against it."""
    if not (r.n_pos and r.n_neg):
        return float("nan")
    tp = r.tp.astype(np.float64)
    return float(r.values[int(np.argmax(2.0 * tp / (tp + r.neg_ge + r.n_pos)))])
