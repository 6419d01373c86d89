"""Where adlab's Hydra configs live: adlab/conf in an installed wheel (setup.py copies the
top-level conf/ there), else the checkout's conf/ (source tree or editable install)."""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "conf"
CONF_DIR = str(_PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parents[1] / "conf")
