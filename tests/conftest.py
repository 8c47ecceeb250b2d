"""Shared test fixtures. Area-specific fixtures live in the test modules that use them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    monkeypatch.setenv("ACMR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "acmr_cache"))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a module's ResNet-101 forwards: on a loaded 2-core machine, two threads waiting
    on each other at every layer made a forward pass ~20x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def random_backbone() -> Any:
    """The cached seed-0 random ResNet-101 (what the demo bundle uses); ``acmr extract --weights random`` run
    in-process reuses the same model instead of building its own."""
    from acmr_core.features.backbone import create_backbone

    return create_backbone("random", device="cpu", seed=0, batch_size=2)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``time.sleep`` requested while the test runs (any thread), in seconds.

    "Fails fast" is checked as "waited on no retry back-off" (huggingface_hub alone sleeps ~25 s between
    attempts): a bound on what the code asked for holds on a loaded machine; a wall-clock limit does not.
    """
    import time

    requested: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        requested.append(float(seconds))
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", recording_sleep)
    return requested


def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the generator is open: bound (so no other
    process can take it) but not listening. No pick-release-reuse race."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def refused_port() -> Iterator[int]:
    yield from refusing_port()
