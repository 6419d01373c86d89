"""Small generated domains in the D24FAD layout (train/good, test/{good,bad}) for few-shot tests.

Each domain is one style of the synthetic generator with its own brightness, so sources differ
and a model can tell normal images from ones with a painted lesion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from adlab.data.synthetic import DEFECTS, add_defect, normal_image

DOMAINS = {"d24fad_his": ("texture", 0.0), "d24fad_lag": ("ct", 0.1), "d24fad_aptos": ("ct", -0.1)}


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)


def domain_tree(
    root: Path, style: str, shift: float, n_train: int = 8, n_test: int = 4, size: int = 64,
    seed: int = 0,
) -> dict:  # fmt: skip
    """<root>/train/good/<i>.png, <root>/test/good, <root>/test/bad (one lesion each)."""
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        _save(root / "train" / "good" / f"{i:03d}.png", normal_image(style, size, rng)[0] + shift)
    for i in range(n_test):
        _save(root / "test" / "good" / f"{i:03d}.png", normal_image(style, size, rng)[0] + shift)
        image, region = normal_image(style, size, rng)
        bad, _ = add_defect(image, region, DEFECTS[i % 3], rng)
        _save(root / "test" / "bad" / f"{i:03d}.png", bad + shift)
    return {"train": n_train, "test_normal": n_test, "test_anomalous": n_test}


def domains(data: Path, **kwargs) -> dict[str, Path]:
    """The three domains under data/<config name> (ADLAB_DATA=data finds them by name)."""
    roots = {}
    for i, (name, (style, shift)) in enumerate(DOMAINS.items()):
        roots[name] = data / name
        domain_tree(roots[name], style, shift, seed=i, **kwargs)
    return roots
