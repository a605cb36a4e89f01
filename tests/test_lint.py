"""The code is linted, formatted and type-checked with the configuration in pyproject.toml: the test
command runs the same checks a developer runs by hand (``ruff check . && ruff format --check . && mypy``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ["shared", "worker", "producer", "tests", "bench"]


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")
    return found


def check(argv: list[str]) -> None:
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"


def test_ruff_finds_nothing():
    check([tool("ruff"), "check", *CHECKED])


def test_the_code_is_formatted():
    check([tool("ruff"), "format", "--check", *CHECKED])


@pytest.mark.slow
def test_mypy_finds_nothing_in_the_three_packages():
    check([tool("mypy")])
