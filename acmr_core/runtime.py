"""Device selection and seeding, shared by training, extraction and the app.

torch is imported inside the functions: the CLI imports this module (for ``DEVICE_CHOICES``) while building
its parser, and ``acmr --help`` must not pay for importing torch.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from acmr_core.errors import ACMRError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:N]`` to a torch device; ``auto`` picks CUDA when it is available."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ACMRError(
                f"device '{name}' was requested but no CUDA GPU is available; use --device cpu or auto"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ACMRError(f"unknown device '{name}'; expected one of {', '.join(DEVICE_CHOICES)}")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch CPU generator seeded the same way for explicit use."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
