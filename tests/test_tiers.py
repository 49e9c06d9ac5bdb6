"""The test tiers (tests/conftest.py, pyproject.toml): a plain run leaves the marked tiers out, ``--all``
and an explicit ``-m`` bring them back, and an unregistered marker is an error, not a silent tier."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each collection is a fresh interpreter importing torch

ROOT = Path(__file__).resolve().parents[1]
CODE_CHECKS = "tests/test_code_checks.py"  # two slow tests (ruff, mypy) and one unmarked


def _collected(*flags: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *flags],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(line.split("::")[1] for line in result.stdout.splitlines() if "::" in line)


def test_a_plain_run_leaves_the_slow_tier_out_and_all_brings_it_back():
    assert _collected(CODE_CHECKS) == ["test_imports_follow_the_layers"]
    assert _collected("--all", CODE_CHECKS) == ["test_imports_follow_the_layers", "test_mypy_finds_nothing",
                                                  "test_ruff_finds_nothing"]
    assert _collected("-m", "slow", CODE_CHECKS) == ["test_mypy_finds_nothing", "test_ruff_finds_nothing"]


def test_every_tier_marker_is_registered():
    from tests.conftest import TIERS

    registered = subprocess.run([sys.executable, "-m", "pytest", "--markers", "-p", "no:cacheprovider"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120).stdout
    assert all(f"@pytest.mark.{tier}:" in registered for tier in TIERS)
