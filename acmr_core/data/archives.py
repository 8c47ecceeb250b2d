"""Safe, atomic unpacking of downloaded archives.

``unpack_archive(archive, dest)`` unpacks ``.tar``/``.tar.gz``/``.tgz``/``.zip`` (recognised by content, not
name) into a temporary sibling folder ``<dest>.extracting`` and renames it into place only when complete,
refusing members that would land outside ``dest`` (path traversal, absolute paths, links, device files). A
marker file in ``dest`` records which archive it came from, so unpacking the same file again is skipped.

Every failure is a :class:`~acmr_core.errors.DownloadError` with one line saying what to do (usually: delete
the archive and rerun, which downloads it again).
"""

from __future__ import annotations

import errno
import json
import logging
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from acmr_core.errors import DownloadError
from acmr_core.fileio import atomic_write

log = logging.getLogger(__name__)

# The on-disk names keep their first spelling, so folders unpacked by earlier versions are still recognised.
_UNPACKED_MARKER = ".acmr-extracted.json"
_STAGING_SUFFIX = ".extracting"


def archive_kind(path: Path) -> str:
    """``"zip"`` or ``"tar"`` from the file's content (not its name); DownloadError otherwise."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    raise DownloadError(
        f"'{path}' is not a zip or tar archive (corrupt, truncated or HTML?); delete it and rerun"
    )


def _unsafe_reason(name: str) -> str | None:
    """Why an archive member name would escape the unpacking folder, or None when it is safe."""
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in posix.parts:
        return "'..' in path"
    return None


def _safe_zip_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    for info in members:
        reason = _unsafe_reason(info.filename)
        mode = info.external_attr >> 16
        if reason is None and stat.S_ISLNK(mode):
            reason = "symbolic link"
        if reason is not None:
            raise DownloadError(
                f"refusing to extract '{info.filename}' from {path.name}: {reason} (unsafe archive)"
            )
    return members


def _check_tar_member(member: tarfile.TarInfo, path: Path) -> None:
    reason = _unsafe_reason(member.name)
    if reason is None and (member.issym() or member.islnk()):
        target = PurePosixPath(member.name).parent / member.linkname if member.issym() else member.linkname
        reason = (
            f"link pointing outside the archive ({member.linkname})" if _unsafe_reason(str(target)) else None
        )
    if reason is None and (member.isdev() or member.isfifo()):
        reason = "device or fifo"
    if reason is not None:
        raise DownloadError(
            f"refusing to extract '{member.name}' from {path.name}: {reason} (unsafe archive)"
        )


def unpack_archive(archive: Path, dest: Path, *, progress: bool = True) -> Path:
    """Unpack ``archive`` into ``dest``, atomically; a finished unpacking of the same file is reused."""
    archive, dest = Path(archive), Path(dest)
    identity = {
        "archive": archive.name,
        "size": archive.stat().st_size,
        "mtime_ns": archive.stat().st_mtime_ns,
    }
    marker = dest / _UNPACKED_MARKER
    try:
        if json.loads(marker.read_text()) == identity:
            log.info("already extracted: %s", dest)
            return dest
    except (OSError, ValueError):
        pass
    kind = archive_kind(archive)
    staging = dest.with_name(dest.name + _STAGING_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if kind == "zip":
            _unpack_zip(archive, staging, progress)
        else:
            _unpack_tar(archive, staging, progress)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise DownloadError(f"disk full while extracting {archive.name} into {dest.parent}") from None
        raise DownloadError(
            f"cannot extract {archive}: {error.__class__.__name__}: {error}; "
            "the archive is corrupt or truncated — delete it and rerun"
        ) from None
    except DownloadError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write(staging / _UNPACKED_MARKER, json.dumps(identity).encode())
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    log.info("extracted %s into %s", archive.name, dest)
    return dest


def _unpack_zip(archive: Path, staging: Path, progress: bool) -> None:
    with zipfile.ZipFile(archive) as handle:
        members = _safe_zip_members(handle, archive)
        needed, free = sum(info.file_size for info in members), shutil.disk_usage(staging).free
        if needed > free:
            raise DownloadError(
                f"not enough disk space to extract {archive.name}: {needed / 1e9:.2f} GB needed, "
                f"{free / 1e9:.2f} GB free in {staging.parent}; free space or choose another --data-dir"
            )
        for info in tqdm(members, desc=f"extract {archive.name}", unit="file", disable=not progress):
            handle.extract(info, staging)


def _unpack_tar(archive: Path, staging: Path, progress: bool) -> None:
    # One sequential pass: listing members first would decompress a multi-GB .tar.gz twice.
    # The stdlib 'data' filter (Python >= 3.10.12 / 3.11.4) re-checks every member: a second line of defence.
    extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with (
        tarfile.open(archive, mode="r:*") as handle,
        tqdm(desc=f"extract {archive.name}", unit="file", disable=not progress) as bar,
    ):
        for member in handle:
            _check_tar_member(member, archive)
            handle.extract(member, staging, **extra)
            bar.update(1)


def directory_size(path: Path) -> int:
    """Total bytes of the files under ``path`` (for the disk-usage summary)."""
    return sum(entry.stat().st_size for entry in Path(path).rglob("*") if entry.is_file())


__all__ = ["archive_kind", "directory_size", "unpack_archive"]
