"""File writing shared by every on-disk format (bundles, trained models, features, shards, step caches).

One implementation each of: an atomic write (readers never see half a file), a JSON file written the same way
everywhere, a value made JSON-safe, and the SHA-256 of a file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

_HASH_BLOCK = 1 << 20


def atomic_write(path: str | Path, data: bytes | Callable[[IO[bytes]], None]) -> None:
    """Write ``data`` (bytes, or a function writing to an open binary file) to ``path`` atomically.

    The content goes to a temporary file in the same folder, is flushed to disk, then renamed over ``path``:
    a reader sees the old file or the new one, never a mix, and an interrupted write leaves no debris.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as tmp:
        try:
            if isinstance(data, bytes):
                tmp.write(data)
            else:
                data(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
            os.chmod(tmp.name, 0o644)  # temporary files are created private; the result is a normal file
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def jsonable(value: Any) -> Any:
    """``value`` with mappings, tuples, numpy values and paths made JSON-safe; non-finite floats become None.

    Tuples become lists, so a value compares equal to itself after a JSON round trip.
    """
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(data: Any) -> str:
    """The project's JSON style: indented, UTF-8, strict (no NaN), newline-terminated."""
    return json.dumps(jsonable(data), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON (see :func:`json_text`) atomically."""
    atomic_write(path, json_text(data).encode("utf-8"))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    """Hex SHA-256 of ``value`` as compact JSON (``","``/``":"`` separators, keys in insertion order).

    The bytes hashed are fixed (shard folders on disk record such hashes), so callers build dicts in a fixed
    key order.
    """
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()
