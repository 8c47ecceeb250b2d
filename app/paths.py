"""Where the app keeps its files: the example gallery, and each serving process's private scratch folder.

Imported by the launcher (:mod:`app.server`) and by the panels (:mod:`app.ui`, :mod:`app.define_panel`);
it imports neither, so both can read the same names without a cycle. No Gradio or torch here.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from acmr_core.errors import ACMRError

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
#: Each serving process keeps its temporary files (Gradio's upload cache, exports) in its own folder,
#: ``tempfile.mkdtemp`` in SCRATCH_ROOT (a fresh name, mode 0700: no other user can read uploads or plant
#: files there), removed at exit (also on SIGTERM, see :func:`app.server.serve`). A folder left by a killed
#: process is removed at the next start, but only one that is certainly ours (see :func:`_stale_scratch`).
SCRATCH_ROOT = Path(tempfile.gettempdir())
SCRATCH_PREFIX = "acmr-studio-"
#: The file in a scratch folder that names the process owning it.
PID_MARKER = "owner.pid"
#: Gradio's cache cleaning: every 30 min, files this app cached more than an hour ago are deleted.
DELETE_CACHE = (1800, 3600)


@functools.cache
def scratch_folder() -> Path:
    """This process's temporary folder (created once, removed at exit); stale ones of dead processes go."""
    _remove_stale_scratch()
    try:
        folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=SCRATCH_ROOT))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        (folder / PID_MARKER).write_text(str(os.getpid()), encoding="utf-8")
    except OSError as error:
        raise ACMRError(
            f"cannot create a temporary folder in {SCRATCH_ROOT} ({error.strerror or error}); "
            "set TMPDIR to a writable folder"
        ) from None
    return folder


def _remove_stale_scratch() -> None:
    for folder in _stale_scratch(SCRATCH_ROOT):
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed the temporary files of a previous run (%s)", folder)


def _stale_scratch(root: Path) -> list[Path]:
    """Scratch folders of dead processes of this user: the shared temp folder holds other users' and other
    programs' files, so a folder qualifies only if it is a real directory (not a link) with our prefix, owned
    by us, holding a pid marker (a regular file) that names a process no longer running."""
    try:
        candidates = [path for path in root.iterdir() if path.name.startswith(SCRATCH_PREFIX)]
    except OSError:
        return []
    stale = []
    for folder in candidates:
        try:
            info = folder.lstat()
            marker = folder / PID_MARKER
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            if not stat.S_ISREG(marker.lstat().st_mode):
                continue
            pid = int(marker.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):  # gone meanwhile, unreadable, no marker, not a pid: not ours to judge
            continue
        if pid != os.getpid() and not _process_alive(pid):
            stale.append(folder)
    return stale


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, and not ours to clean
        return True
    except (OverflowError, ValueError):  # not a valid pid at all: no such process
        return False
    return True
