"""Identify the exact files a run read, so results.json says which copy of a benchmark it used."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from adlab.data.records import Sample


def fingerprint(samples: Iterable[Sample], root: str) -> str:
    """'<file count>-<sha256[:16]>' of the sorted relative paths of images and masks, with split
    and label, so a moved copy of the same data has the same fingerprint and a changed split
    does not."""
    entries = set()
    for sample in samples:
        entries.add(f"{sample.split}\t{sample.label}\t{_relative(sample.path, root)}")
        if sample.mask:
            entries.add(f"mask\t\t{_relative(sample.mask, root)}")
    digest = hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:16]
    return f"{len(entries)}-{digest}"


def _relative(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root).replace(os.sep, "/")
    except ValueError:  # another drive on Windows
        return path.replace(os.sep, "/")
