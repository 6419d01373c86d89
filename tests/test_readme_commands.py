"""Every `python -m adlab...` command line in the README composes (Hydra entry points: the
overrides compose as `--cfg job` would; argparse entry points: `--help` works), and the method
list of the README's first paragraph matches conf/method/, so the README cannot drift from the
code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from adlab.paths import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
COMMAND = re.compile(r"python -m (adlab[\w.]*)([^`|#\n]*)")
HYDRA_CONFIGS = {"adlab.run": "config", "adlab.evaluate": "evaluate", "adlab.data.check": None}
HELP_ONLY = ("adlab.report", "adlab.predict", "adlab.export", "adlab.data.prepare")
# configs the README has the user write first: a search-path folder, the "Adding a method" example
NEEDS_FILES = ("hydra.searchpath", "method=mse_rd")


def commands() -> list[tuple[str, list[str]]]:
    """(module, arguments) of each command line, continuation lines joined, placeholders filled."""
    text = re.sub(r"\\\n\s*", " ", README)
    out = []
    for module, rest in COMMAND.findall(text):
        rest = rest.replace("<run>", "2026-01-01/00-00-00_run").replace("$HOME", "/home/u")
        rest = re.sub(r"=<(\w+)>", r"=\1", rest)  # other placeholders (partition=<yours>)
        args = [a for a in shlex.split(rest) if a != "..."]
        out.append((module, args))
    return out


def first_sweep_values(overrides: list[str]) -> list[str]:
    """A multirun's overrides with each sweep replaced by its first value (one job composes)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override():
            out.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
        else:
            out.append(raw)
    return out


ALL = commands()


def test_readme_has_commands_for_every_entry_point():
    modules = {m for m, _ in ALL}
    assert {"adlab.run", "adlab.evaluate", "adlab.data.check", *HELP_ONLY} <= modules


@pytest.mark.parametrize(
    ("module", "args"),
    [c for c in ALL if c[0] in HYDRA_CONFIGS],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_hydra_command_composes(module, args):
    if any(a.startswith(NEEDS_FILES) for a in args):
        pytest.skip("needs a config the user writes first")
    overrides = first_sweep_values([a for a in args if a not in ("-m", "--multirun", "--decode")])
    if module == "adlab.data.check":
        from adlab.data.check import load_config

        cfg = load_config(overrides)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name=HYDRA_CONFIGS[module], overrides=overrides)
    assert cfg.dataset.name and cfg.image_size


@pytest.mark.parametrize("module", HELP_ONLY)
def test_argparse_command_has_help(module, capsys):
    main = __import__(module, fromlist=["main"]).main
    try:
        code = main(["--help"])
    except SystemExit as exit_:
        code = exit_.code
    assert code in (0, None)
    assert capsys.readouterr().out.strip()


def test_first_paragraph_names_every_method():
    intro = README.split("```")[0].lower()
    for method in sorted(p.stem for p in (Path(CONF_DIR) / "method").glob("*.yaml")):
        assert method in intro, f"README's first paragraph does not name method {method!r}"
