"""The checks that read the code: ruff (the linter) and mypy (the type checker), each with the
configuration in the repository (ruff.toml, mypy.ini), over the whole tree. They run with the
rest of the suite, so the README's test command, and with it .ci/run, fails when either does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# lambda/ is not a package ("lambda" is a keyword): its files are checked as the scripts they are.
LAMBDAS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "lambda").glob("*.py"))
PACKAGES = ["pipeline", "serve", "steps", "train", "evaluation", "benchmarks", "tests"]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    for targets in (PACKAGES, LAMBDAS):  # two runs: the Lambdas' module names (deploy, ...) stand alone
        result = _run("mypy", "--config-file", "mypy.ini", *targets)
        assert result.returncode == 0, result.stdout + result.stderr
