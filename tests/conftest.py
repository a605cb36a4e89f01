"""Shared fixtures. Assets come from $ASCENT_ASSETS (default: ../shared/assets beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("ASCENT_ASSETS", REPO.parent / "shared" / "assets")).resolve()
WEIGHTS = ASSETS / "weights" / "squeezenet1_1_fp16_from_ncnn.pth"
VAL25 = ASSETS / "cs231n" / "datasets" / "imagenet_val_25.npz"


@pytest.fixture(scope="session")
def assets() -> Path:
    """The assets folder; tests that need it are skipped with the reason when it is absent."""
    if not WEIGHTS.is_file() or not VAL25.is_file():
        pytest.skip(f"assets not found at {ASSETS} (set ASCENT_ASSETS to the shared assets folder)")
    return ASSETS
