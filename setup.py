"""Packaging of what pyproject.toml cannot express: the wheel carries the Hydra configs of the
top-level conf/ (their source) as the package data adlab/conf, found by adlab.paths.CONF_DIR."""

from pathlib import Path

from setuptools import find_packages, setup

CONF = Path(__file__).resolve().parent / "conf"
GROUPS = sorted(p.relative_to(CONF).as_posix() for p in CONF.rglob("*") if p.is_dir())
CONF_PACKAGES = ["adlab.conf"] + [f"adlab.conf.{g.replace('/', '.')}" for g in GROUPS]

DATA = {"adlab.data.splits": ["*.csv"], **{p: ["*.yaml"] for p in CONF_PACKAGES}}

setup(
    packages=find_packages(include=["adlab*"]) + ["hydra_plugins.adlab_benchmark"] + list(DATA),
    package_dir={"adlab.conf": "conf"},
    package_data=DATA,
)
