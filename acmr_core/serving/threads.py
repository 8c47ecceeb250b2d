"""Thread limits for the tiny bursts of work a request does between big forwards (measured on a busy CPU)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from threadpoolctl import ThreadpoolController


@functools.cache
def _sklearn_openmp() -> Any:
    """scikit-learn's own OpenMP runtime (its wheel vendors a libgomp apart from torch's), selected once."""
    controller = ThreadpoolController()
    own = [lib.filepath for lib in controller.lib_controllers if "scikit_learn" in str(lib.filepath)]
    return controller.select(filepath=own)


def sklearn_single_thread() -> Any:
    """Run scikit-learn single-threaded for a tiny query (placing one point among a few thousand).

    scikit-learn vendors its own OpenMP runtime; on a busy CPU its thread team waits on descheduled threads:
    measured on the shared 2-core dev machine under load, one k-NN query over 2000 points took a median 270 ms
    with two threads and 0.3 ms with one.
    """
    return _sklearn_openmp().limit(limits=1)


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Run torch single-threaded for a burst of tiny ops (the classifier re-fit: 64×C linear layer steps).

    Each tiny op split over two OpenMP threads waits for the slower one; on a busy 2-core CPU that made the
    re-fit 36× slower (8.7 s vs 0.24 s, measured). The previous count is restored, so predictions keep both.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
