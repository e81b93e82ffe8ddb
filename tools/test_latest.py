"""Run the test suite against the newest releases, and say what they break.

    python tools/test_latest.py [--venv .venv-latest] [--out runs/test-latest.json] [PYTEST ARGS]

Builds a throwaway virtualenv with the newest release of every dependency, except torch and
torchvision, which stay at the versions this machine serves from its disk (a newer torch
downloads gigabytes), runs pytest there, and writes one JSON: the installed versions, those
that differ from the lock, the counts, and each failing test with the first line of its error.
Exit status: pytest's. Green means the lock can move (``make lock VENV=.venv-latest``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: held back: the releases the machines serve locally
HELD = ("torch==2.14.1", "torchvision==0.29.1")


def make_venv(venv: Path, python: str) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    held = venv / "held.txt"
    held.write_text("\n".join(HELD) + "\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade"]
    subprocess.run(pip + ["pip"], check=True)
    subprocess.run(pip + ["-c", str(held), "-e", f"{ROOT}[media,test]"], check=True)


def versions(venv: Path) -> dict[str, str]:
    out = subprocess.check_output([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all",
                                   "--exclude-editable"], text=True)
    pairs = (line.split("==", 1) for line in out.splitlines() if "==" in line)
    return {name.lower(): version for name, version in pairs}


def locked() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = (line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))
    return {name.lower(): version for name, version in pairs}


def failures(junit: Path) -> tuple[dict[str, int], list[dict[str, str]]]:
    suites = ET.parse(junit).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in suite.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                           "error": message[0][:500] if message else ""})
    return counts, failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", default=ROOT / ".venv-latest", type=Path)
    p.add_argument("--out", default=ROOT / "runs" / "test-latest.json", type=Path)
    p.add_argument("--python", default=sys.executable)
    args, pytest_args = p.parse_known_args(argv)
    make_venv(args.venv, args.python)
    junit = args.venv / "junit.xml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = subprocess.run([str(args.venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", *pytest_args], cwd=ROOT, env=env).returncode
    now, lock = versions(args.venv), locked()
    counts, failed = failures(junit) if junit.is_file() else ({}, [])
    report = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pytest_exit": code,
              "counts": counts, "failures": failed,
              "differs_from_lock": {k: {"lock": lock.get(k), "latest": v} for k, v in sorted(now.items())
                                    if lock.get(k) != v},
              "versions": now}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.out}: exit {code}, {counts}, {len(report['differs_from_lock'])} versions differ from the lock")
    return code


if __name__ == "__main__":
    sys.exit(main())
