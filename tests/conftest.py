"""Shared test fixtures. Area-specific fixtures live in the test modules that use them."""

from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: the API tests run an app server beside the test process, and on a
# 2-core machine spinning threads of two processes slowed a tiny training from 8 s to over 10 minutes.
# Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real xlsa17 metadata sits beside the checkout (../shared/data/xlsa17); ACMR_XLSA17 overrides.
XLSA17_DIR = Path(os.environ.get("ACMR_XLSA17", REPO_ROOT.parent / "shared" / "data" / "xlsa17"))


@pytest.fixture(scope="session")
def xlsa17_dir() -> Path:
    """The real xlsa17 metadata folder; tests that need it skip cleanly where it is absent."""
    if not (XLSA17_DIR / "CUB" / "att_splits.mat").is_file():
        pytest.skip(f"xlsa17 metadata not found at {XLSA17_DIR}")
    return XLSA17_DIR


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never reach the Hugging Face hub and never touch the user's caches."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))
