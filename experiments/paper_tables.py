"""Write the published-number tables of experiments/*/README.md from the presets' paper blocks.

    python experiments/paper_tables.py           # rewrite the tables between the markers
    python experiments/paper_tables.py --check   # exit 1 when a README is out of date

A README asks for a table with `<!-- paper-table: pdd_headct pdd_brainmri -->` followed by
`<!-- /paper-table -->`; the numbers live only in conf/experiment/<preset>.yaml (`paper:`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adlab.paper import fill_tables

HERE = Path(__file__).resolve().parent


def readmes() -> list[Path]:
    """Every README under experiments/ (those without markers are left as they are)."""
    return sorted(HERE.glob("*/README.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale READMEs")
    args = parser.parse_args(argv)
    stale = []
    for path in readmes():
        text = path.read_text()
        fresh = fill_tables(text)
        if fresh != text:
            stale.append(path)
            if not args.check:
                path.write_text(fresh)
    verb = "out of date" if args.check else "rewritten"
    for path in stale:
        print(f"{verb}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
