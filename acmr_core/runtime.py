"""Device selection and seeding, shared by training, extraction and the app.

torch is imported inside the functions: the CLI imports this module (for :func:`check_device_name`) while
building its parser, and ``acmr --help`` must not pay for importing torch.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from acmr_core.errors import ACMRError

if TYPE_CHECKING:
    import torch

#: The device names :func:`resolve_device` accepts, in words (for ``--help`` and error messages).
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")

log = logging.getLogger(__name__)


def check_device_name(name: str) -> str:
    """``name`` if it is one of :data:`DEVICE_NAMES`; the one rule both ``--device`` and
    :func:`resolve_device` apply, so a command refuses at parse time exactly what would fail later."""
    if _DEVICE_NAME.fullmatch(name) is None:
        raise ACMRError(f"unknown device '{name}'; expected {DEVICE_NAMES}")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """Map ``auto|cpu|cuda[:N]`` to a torch device; ``auto`` picks CUDA when it is available."""
    import torch

    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ACMRError(
            f"device '{name}' was requested but no CUDA GPU is available; use --device cpu or auto"
        )
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch CPU generator seeded the same way for explicit use."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (CUDA Ampere+, AVX512-BF16/AMX CPUs)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def training_autocast(device: torch.device, precision: str) -> Any:
    """Autocast for a training forward: bfloat16 matrix products for ``"bf16"``, nothing for ``"fp32"``.

    Weights, gradients and optimizer state stay float32 either way (autocast casts on the fly), so a model
    trained in bf16 saves and loads exactly like one trained in fp32.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ACMRError(f"unknown precision '{precision}'; expected fp32 or bf16")
    import torch

    if not has_native_bf16(device):
        # Still correct, only emulated: say so instead of silently training slower than fp32.
        log.warning("%s has no native bfloat16 arithmetic; bf16 training will be slower than fp32", device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def as_tensor(values: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``values`` (a tensor, array or sequence) as a tensor of ``dtype`` on ``device``."""
    import torch

    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)
