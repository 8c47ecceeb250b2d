"""Resumable, checksummed downloads (unpacking the archives is :mod:`acmr_core.data.archives`).

``fetch(url, dest)`` brings one file to ``dest``:

* ``http(s)://`` URLs stream into ``<dest>.part`` and resume with an HTTP ``Range`` request after an
  interruption (within the same call, up to ``retries`` times, and across calls: rerunning picks the ``.part``
  file up). A server that ignores ``Range`` (answers 200) restarts the file cleanly from byte 0.
* A local path or ``file://`` URL (a mirror copied by hand) is used in place, never copied.
* Where a checksum is published (``sha256:<hex>`` or ``md5:<hex>``) the finished file is verified; a mismatch
  is refused and the bad bytes are deleted so they can never be mistaken for a complete download.
* A completed download leaves a small ``<dest>.download.json`` record (URL, size, digests) so reruns skip it.

Every failure is a :class:`~acmr_core.errors.DownloadError` with one line that names the URL, says what went
wrong (offline, DNS, refused, timeout, HTTP status, checksum) and how to use a mirror or a local copy instead.
Sockets always carry a timeout, so nothing here can hang.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from acmr_core.errors import DownloadError
from acmr_core.fileio import atomic_write

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_RETRIES = 3
CHUNK_BYTES = 1 << 20
SUPPORTED_DIGESTS = ("sha256", "md5")
USER_AGENT = "acmr-studio-bootstrap/0.1 (+https://github.com/; resumable dataset download)"


@dataclass(frozen=True)
class Checksum:
    """A published digest, written ``sha256:<hex>`` or ``md5:<hex>``."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, text: str) -> Checksum:
        algorithm, sep, hexdigest = text.strip().partition(":")
        algorithm, hexdigest = algorithm.lower(), hexdigest.lower()
        lengths = {"sha256": 64, "md5": 32}
        if (
            not sep
            or algorithm not in lengths
            or not re.fullmatch(rf"[0-9a-f]{{{lengths[algorithm]}}}", hexdigest)
        ):
            raise DownloadError(
                f"bad checksum '{text}'; expected 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'"
            )
        return cls(algorithm, hexdigest)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


@dataclass(frozen=True)
class Fetched:
    """A complete local file and its digests (sha256 always, plus the published algorithm's)."""

    path: Path
    size: int
    digests: dict[str, str]
    downloaded: bool  # False when it was already complete, or is a local copy used in place


class _Digests:
    """Running digests for the algorithms we record."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        self._hashers = {name: hashlib.new(name) for name in dict.fromkeys(algorithms)}

    def update(self, chunk: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}


def _digest_file(
    path: Path, algorithms: Iterable[str], *, desc: str | None = None, progress: bool = True
) -> _Digests:
    digests = _Digests(algorithms)
    size = path.stat().st_size
    show = progress and size >= 64 << 20  # hashing is ~0.5 GB/s: only big files deserve a bar
    with (
        path.open("rb") as handle,
        tqdm(
            total=size, unit="B", unit_scale=True, desc=desc or f"verify {path.name}", disable=not show
        ) as bar,
    ):
        while chunk := handle.read(CHUNK_BYTES):
            digests.update(chunk)
            bar.update(len(chunk))
    return digests


def _algorithms(checksum: Checksum | None) -> tuple[str, ...]:
    return (
        ("sha256",) if checksum is None or checksum.algorithm == "sha256" else ("sha256", checksum.algorithm)
    )


def local_source(url: str) -> Path | None:
    """The local path that ``url`` names (a plain path or ``file://``), or None for a network URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise DownloadError(
            f"unsupported URL scheme '{parsed.scheme}' in '{url}'; use http(s)://, file:// or a path"
        )
    return Path(url).expanduser()


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".download.json")


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _read_record(dest: Path) -> dict | None:
    try:
        record = json.loads(_record_path(dest).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _verify(checksum: Checksum | None, digests: dict[str, str], url: str, hint: str) -> None:
    if checksum is None:
        return
    actual = digests.get(checksum.algorithm)
    if actual != checksum.hexdigest:
        raise DownloadError(
            f"checksum mismatch for {url}: expected {checksum}, got {checksum.algorithm}:{actual}; "
            f"the bad file was deleted — the mirror may serve a different or corrupted file{_hint(hint)}"
        )


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else ""


def fetch(
    url: str,
    dest: Path,
    *,
    checksum: Checksum | str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    progress: bool = True,
    hint: str = "",
) -> Fetched:
    """Make ``url`` available as a complete, verified local file (see the module docstring).

    ``dest`` is where a network download goes; a local path or ``file://`` URL is returned as is. ``hint`` is
    appended to every error (e.g. "pass --cub-url MIRROR_OR_PATH or set ACMR_CUB_URL").
    """
    expected = Checksum.parse(checksum) if isinstance(checksum, str) else checksum
    source = local_source(url)
    if source is not None:
        return _fetch_local(source, url, expected, hint, progress)
    dest = Path(dest)
    record = _read_record(dest)
    if dest.is_file() and record is not None and record.get("size") == dest.stat().st_size:
        digests = record.get("digests", {})
        if expected is None or digests.get(expected.algorithm) == expected.hexdigest:
            log.info("already downloaded: %s", dest)
            return Fetched(dest, dest.stat().st_size, digests, downloaded=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        # A file placed by hand (or a record from another checksum): verify it rather than download again.
        digests = _digest_file(dest, _algorithms(expected), progress=progress).hexdigests()
        if expected is None or digests.get(expected.algorithm) == expected.hexdigest:
            _write_record(dest, url, dest.stat().st_size, digests)
            return Fetched(dest, dest.stat().st_size, digests, downloaded=False)
        log.warning("%s does not match %s; downloading it again", dest, expected)
        dest.unlink()
    _download(url, dest, expected, timeout=timeout, retries=retries, progress=progress, hint=hint)
    record = _read_record(dest) or {}
    return Fetched(dest, dest.stat().st_size, record.get("digests", {}), downloaded=True)


def _fetch_local(source: Path, url: str, expected: Checksum | None, hint: str, progress: bool) -> Fetched:
    if not source.exists():
        raise DownloadError(f"local copy '{source}' does not exist{_hint(hint)}")
    if source.is_dir():
        # An already-unpacked copy: there is nothing to verify byte-for-byte.
        return Fetched(source, 0, {}, downloaded=False)
    if expected is None:
        return Fetched(source, source.stat().st_size, {}, downloaded=False)
    digests = _digest_file(source, _algorithms(expected), progress=progress).hexdigests()
    if digests.get(expected.algorithm) != expected.hexdigest:
        raise DownloadError(
            f"checksum mismatch for local copy {source}: expected {expected}, got "
            f"{expected.algorithm}:{digests.get(expected.algorithm)}; "
            f"the file is damaged or a different version{_hint(hint)}"
        )
    return Fetched(source, source.stat().st_size, digests, downloaded=False)


def discard_download(dest: Path) -> None:
    """Delete a downloaded file and its completion record: the next :func:`fetch` downloads it again."""
    Path(dest).unlink(missing_ok=True)
    _record_path(Path(dest)).unlink(missing_ok=True)


def _write_record(dest: Path, url: str, size: int, digests: dict[str, str]) -> None:
    record = {
        "url": url,
        "size": size,
        "digests": digests,
        "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(_record_path(dest), json.dumps(record, indent=1).encode())


def _describe_network_error(error: BaseException, timeout: float) -> str:
    """A short human reason for a failed request."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, socket.gaierror):
        return "host name could not be resolved (offline, or DNS failure)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (server down or wrong port)"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s (timed out)"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "network unreachable (offline?)"
    if isinstance(reason, ConnectionError):
        return f"connection lost ({type(reason).__name__})"
    return str(reason).strip() or type(reason).__name__


class _Interrupted(Exception):
    """The transfer stopped before its end; the ``.part`` file holds what arrived."""


def _download(
    url: str,
    dest: Path,
    expected: Checksum | None,
    *,
    timeout: float,
    retries: int,
    progress: bool,
    hint: str,
) -> None:
    part = _part_path(dest)
    attempts = max(0, retries) + 1
    last_reason = ""
    for attempt in range(attempts):
        try:
            _download_once(url, part, timeout=timeout, progress=progress, hint=hint)
            break
        except _Interrupted as interrupted:
            last_reason = str(interrupted)
            if attempt + 1 < attempts:
                log.warning("%s; resuming (attempt %d of %d)", last_reason, attempt + 2, attempts)
                time.sleep(min(2.0**attempt, 10.0) * 0.1)
    else:
        raise DownloadError(
            f"download of {url} was interrupted ({last_reason}); rerun the same command to resume from "
            f"{part.stat().st_size if part.exists() else 0} bytes{_hint(hint)}"
        )
    digests = _digest_file(
        part, _algorithms(expected), desc=f"verify {dest.name}", progress=progress
    ).hexdigests()
    try:
        _verify(expected, digests, url, hint)
    except DownloadError:
        part.unlink(missing_ok=True)  # never keep bad bytes where a resume would build on them
        raise
    size = part.stat().st_size
    part.replace(dest)
    _write_record(dest, url, size, digests)
    log.info("downloaded %s (%d bytes, sha256 %s)", dest, size, digests["sha256"])


def _open(url: str, offset: int, timeout: float, hint: str) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            raise  # the caller restarts from zero
        raise DownloadError(
            f"cannot download {url}: {_describe_network_error(error, timeout)}{_hint(hint)}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise DownloadError(
            f"cannot download {url}: {_describe_network_error(error, timeout)}{_hint(hint)}"
        ) from None


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` into (START, TOTAL); None where absent or unknown."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _download_once(url: str, part: Path, *, timeout: float, progress: bool, hint: str) -> None:
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout, hint)
    except urllib.error.HTTPError:
        log.warning("server refused to resume %s at byte %d; restarting from the beginning", url, offset)
        part.unlink(missing_ok=True)
        offset = 0
        response = _open(url, 0, timeout, hint)
    with response:
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        if offset and response.status == 206:
            start, _ = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)  # the next attempt starts from byte 0
                raise _Interrupted(f"server resumed at byte {start}, not {offset}; restarting")
            mode = "ab"
        else:
            if offset:
                log.info("server ignored the Range request for %s; restarting from byte 0", url)
            offset, mode = 0, "wb"
        total = offset + remaining if remaining is not None else None
        _check_disk_space(part, remaining, url, hint)
        received = offset
        try:
            with (
                part.open(mode) as handle,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name.removesuffix(".part"),
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(CHUNK_BYTES):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise DownloadError(
                    f"disk full while downloading {url} into {part.parent}; free space and rerun"
                ) from None
            raise _Interrupted(f"{_describe_network_error(error, timeout)} after {received} bytes") from None
    if total is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _check_disk_space(part: Path, needed: int | None, url: str, hint: str) -> None:
    if needed is None:
        return
    free = shutil.disk_usage(part.parent).free
    if free < needed:
        raise DownloadError(
            f"not enough disk space for {url}: {needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free in "
            f"{part.parent}; free space or choose another --data-dir{_hint(hint)}"
        )


__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT_S",
    "SUPPORTED_DIGESTS",
    "Checksum",
    "Fetched",
    "discard_download",
    "fetch",
    "local_source",
]
