"""File writing shared by every on-disk format (bundles, trained models, features, shards, step caches).

One implementation each of: an atomic write (readers never see half a file), a JSON file written the same way
everywhere, JSON text parsed safely and a JSON file read the same way everywhere, a value made JSON-safe, and
the SHA-256 of a file.
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

from acmr_core.errors import ACMRError, BundleError

_HASH_BLOCK = 1 << 20
#: Deepest nesting :func:`parse_json` accepts. The project's JSON (bundles, configs, exports, attribute
#: objects) is a few levels deep; anything deeper is damage or an attack, and would later overflow the
#: recursion of code walking the value (e.g. :func:`jsonable`).
MAX_JSON_DEPTH = 64
#: Longest integer literal :func:`parse_json` converts. Python refuses to convert more than 4300 digits with
#: a bare ValueError; no number in the project's JSON needs a tenth of this.
MAX_JSON_INT_DIGITS = 400


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


def _parse_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"a number has {len(literal.lstrip('-'))} digits")
    return int(literal)


def _parse_finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # e.g. 1e999, which float() turns into inf
        raise ValueError(f"{literal[:20]} is too large a number")
    return value


def _refuse_constant(literal: str) -> float:
    raise ValueError(f"{literal} is not a JSON number")


def _check_depth(value: Any) -> None:
    """Raise ValueError if ``value`` nests deeper than :data:`MAX_JSON_DEPTH` (no recursion: any depth)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"nested too deeply, over {MAX_JSON_DEPTH} levels")
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def parse_json(text: str | bytes, allow_non_finite: bool = False) -> Any:
    """Parse JSON text; every problem is a ``ValueError`` whose message is one short line.

    Beyond :func:`json.loads`: nesting deeper than :data:`MAX_JSON_DEPTH` (CPython's parser raises
    RecursionError well before it could crash), integers longer than :data:`MAX_JSON_INT_DIGITS` digits, and
    (unless ``allow_non_finite``, for input validated value by value later) NaN, Infinity and numbers that
    overflow a float are refused. The project writes strict JSON (:func:`json_text`), so its own files never
    hold those.
    """
    hooks: dict[str, Callable[[str], Any]] = {"parse_int": _parse_int}
    if not allow_non_finite:
        hooks.update(parse_float=_parse_finite_float, parse_constant=_refuse_constant)
    try:
        value = json.loads(text, **hooks)
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError(f"nested too deeply, over {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError:  # bytes that are not UTF-8/16/32
        raise ValueError("not UTF-8 text") from None
    _check_depth(value)
    return value


def read_json(
    path: str | Path,
    what: str | None = None,
    error: type[ACMRError] = BundleError,
    advice: str = "",
    allow_non_finite: bool = False,
) -> Any:
    """The JSON value in the file ``path``, parsed by :func:`parse_json` (strict unless ``allow_non_finite``).

    A missing, unreadable or invalid file raises ``error`` with one line naming the file, e.g.
    ``"bundle demo-world: model.json is corrupt (not valid JSON: <reason>); <advice>"``; ``what`` names the
    file (default: its path) and ``advice`` says what to do.
    """
    path = Path(path)
    what = what or str(path)
    advice = f"; {advice}" if advice else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what} not found{advice}") from None
    except OSError as problem:
        raise error(f"{what} cannot be read ({problem.strerror or problem}){advice}") from None
    try:
        return parse_json(data, allow_non_finite)
    except ValueError as problem:
        raise error(f"{what} is corrupt (not valid JSON: {problem}){advice}") from None


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
