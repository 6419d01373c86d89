"""`pip install .` gives a working install: the wheel carries the Hydra configs, and the entry
points compose them from a directory outside the repository, plus the user's own config folder
added with hydra.searchpath."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "adlab", "conf", "hydra_plugins")


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the sources (a build in the repo would leave build/ there)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    dist = tmp_path / "dist"
    run(
        "-m",
        "pip",
        "wheel",
        ".",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(dist),
        cwd=src,
    )
    (wheel,) = dist.glob("adlab-*.whl")
    return wheel


def test_wheel_install_composes_its_configs_outside_the_repo(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for conf in REPO.joinpath("conf").rglob("*.yaml"):
        assert f"adlab/conf/{conf.relative_to(REPO / 'conf').as_posix()}" in names, conf
    assert "adlab/data/splits/headct.csv" in names
    assert "hydra_plugins/adlab_benchmark/benchmark_sweeper.py" in names  # experiment=bench_*
    # torch & co. come from this interpreter's environment: install only adlab, offline
    site = tmp_path / "site"
    run(
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        "--target",
        str(site),
        str(wheel),
        cwd=tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(
        "-c", "import adlab.paths as p; print(p.__file__, p.CONF_DIR)", cwd=elsewhere, env=env
    )
    assert where.stdout.split() == [str(site / "adlab/paths.py"), str(site / "adlab/conf")]

    job = run(
        "-m",
        "adlab.run",
        "--cfg",
        "job",
        "dataset=mvtec_layout",
        "dataset.root=/my/data",
        cwd=elsewhere,
        env=env,
    ).stdout
    assert "reader: mvtec_layout" in job and "root: /my/data" in job and "mask_resize: false" in job
    assert "teacher:" in job and "allow_one_class: false" in job
    evaluate = run("-m", "adlab.evaluate", "--cfg", "job", "ckpt=x.ckpt", cwd=elsewhere, env=env)
    assert "ckpt: x.ckpt" in evaluate.stdout

    # a user's own dataset config, from a folder added to Hydra's search path
    mine = tmp_path / "myconf" / "dataset" / "mine.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("name: mine\nreader: mvtec_layout\nroot: /my/data\ncategory: all\n")
    own = run(
        "-m",
        "adlab.run",
        "--cfg",
        "job",
        "dataset=mine",
        f"hydra.searchpath=[file://{mine.parents[1]}]",
        cwd=elsewhere,
        env=env,
    ).stdout
    assert "name: mine" in own and "verify: full" in own  # the shared dataset keys apply

    check = run(
        "-m",
        "adlab.data.check",
        "dataset=synthetic",
        f"dataset.root={tmp_path / 'd'}",
        "dataset.n_train=4",
        cwd=elsewhere,
        env=env,
    )
    assert '"train": {"normal": 4}' in check.stdout.splitlines()[-1]
