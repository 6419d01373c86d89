"""Helpers every reader shares: checked folders, sorted image listings, mask lookup by stem (with
an optional name rule), and the switch for a missing documented validation split."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adlab.data.io import is_image_file, looks_like_image
from adlab.data.records import DatasetError

_UNREAD: list[list[Path]] = []  # open unread_files() collections, innermost last


def require_dir(path: Path, layout: str) -> Path:
    """The folder, or DatasetError naming the expected path and the layout."""
    if not path.is_dir():
        raise DatasetError(f"missing folder {path}; expected layout: {layout}")
    return path


def require_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"missing file {path}; expected layout: {layout}")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly in folder, sorted by name (hidden files ignored). Files passed over
    that look like images (another format or extension) go to the open unread_files() list."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if _UNREAD:
        _UNREAD[-1].extend(p for p in files if not is_image_file(p) and looks_like_image(p))
    return [p for p in files if is_image_file(p)]


@contextmanager
def unread_files() -> Iterator[list[Path]]:
    """Collect, while a reader runs, the files list_images did not read although they look like
    images, so that nothing is dropped without a word (e.g. .gif, or a PNG named .dat)."""
    found: list[Path] = []
    _UNREAD.append(found)
    try:
        yield found
    finally:
        _UNREAD.pop()


def mask_index(folder: Path) -> dict[str, Path]:
    """Map of image stem -> mask file in folder, accepting '<stem>_mask.ext' and '<stem>.ext'."""
    index: dict[str, Path] = {}
    if not folder.is_dir():
        return index
    for path in list_images(folder):
        stem = path.stem
        index.setdefault(stem, path)
        if stem.endswith("_mask"):
            index[stem[: -len("_mask")]] = path
    return index


def mask_rule(config: Mapping[str, Any]) -> dict[str, str]:
    """dataset.mask_replace: {old: new} substrings replaced in an image's name to get its mask's
    name (MedIAnomaly BraTS2021: {flair: seg}); empty when unset."""
    rule = config.get("mask_replace") or {}
    if not isinstance(rule, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in rule.items()
    ):
        raise DatasetError(
            f"dataset.mask_replace={rule!r} must map substrings of image names to their "
            "replacement in the mask name, e.g. dataset.mask_replace={flair: seg}."
        )
    return dict(rule)


def mask_key(image: Path, rule: Mapping[str, str]) -> str:
    """The stem to look up in mask_index: the image's stem with the mask_replace rule applied."""
    stem = image.stem
    for old, new in rule.items():
        stem = stem.replace(old, new)
    return stem


def require_valid(config: Mapping[str, Any]) -> bool:
    """Whether a missing documented validation split is an error (dataset.require_valid, default
    true): without it select=best_val would silently have nothing to select on."""
    return bool(config.get("require_valid", True))


def categories(
    config: Mapping[str, Any], known: tuple[str, ...] | None, key: str, hint: str = ""
) -> list[str]:
    """dataset.category as a list: a name, a list of names, or 'all' (every known category).
    hint ends the message for an unknown name (e.g. where own data in that layout goes)."""
    value = config.get("category")
    if value is None:
        raise DatasetError(f"dataset.category is required for {key}; e.g. dataset.category=...")
    names = (
        list(known or ())
        if value == "all"
        else ([value] if isinstance(value, str) else [str(v) for v in value])
    )
    if known:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DatasetError(
                f"dataset.category={unknown[0]!r} is not a {key} category; use one of "
                f"{', '.join(known)} (or 'all').{hint}"
            )
    return names
