"""Freeze a tested virtualenv into the lock, ``constraints.txt``.

    python tools/lock.py [--venv .venv] [--out constraints.txt]

Every install (``make install``, ``make test``, ``make demo``, CI) reads the lock with pip's
``-c``, so a fresh machine gets exactly the versions the tests passed with. The lock moves
on purpose: run ``make test-latest``; if it is green, ``make lock VENV=.venv-latest`` adopts
its versions, and the next ``make test`` confirms them.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import date
from pathlib import Path

HEADER = """\
# The versions mmalign's tests passed with: pip reads this file with -c on every install.
# Made by `make lock` (tools/lock.py) from {venv} on {day}, Python {python}.
# Move it on purpose: `make test-latest`, then `make lock VENV=.venv-latest` when that is green.
"""


def frozen(venv: Path) -> list[str]:
    """``name==version`` of every distribution in ``venv`` (pip and setuptools included),
    mmalign itself left out."""
    out = subprocess.check_output([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all",
                                   "--exclude-editable", "--disable-pip-version-check"], text=True)
    lines = [line.strip() for line in out.splitlines() if "==" in line]
    return sorted((line for line in lines if not line.lower().startswith("mmalign==")), key=str.lower)


def python_version(venv: Path) -> str:
    return subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                    "import platform; print(platform.python_version())"], text=True).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", default=".venv", type=Path)
    p.add_argument("--out", default="constraints.txt", type=Path)
    args = p.parse_args(argv)
    if not (args.venv / "bin" / "python").is_file():
        print(f"lock: {args.venv} is not a virtualenv; run `make install` first", file=sys.stderr)
        return 2
    header = HEADER.format(venv=args.venv, day=date.today().isoformat(), python=python_version(args.venv))
    lines = frozen(args.venv)
    args.out.write_text(header + "\n".join(lines) + "\n")
    print(f"{args.out}: {len(lines)} pinned distributions from {args.venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
