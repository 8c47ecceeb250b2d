"""The Gradio web app of the ACMR zero-shot studio (``python -m app`` or ``acmr serve``)."""

from __future__ import annotations

import atexit
import errno
import functools
import importlib
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_BUNDLE
from acmr_core.errors import ACMRError

log = logging.getLogger(__name__)

# Events without their own limit (plots, catalog) run this many at once; predict allows 2
# (PREDICT_CONCURRENCY), reading attributes from images 1 and class edits 2, each in its own group.
DEFAULT_CONCURRENCY = 4
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
# Larger uploads are refused by Gradio before reaching the app (photos are a few MB; 64 MP is the pixel cap).
MAX_UPLOAD = "50mb"
#: Each serving process keeps its temporary files (Gradio's upload cache, exports) in its own folder,
#: ``tempfile.mkdtemp`` in SCRATCH_ROOT (a fresh name, mode 0700: no other user can read uploads or plant
#: files there), removed at exit (also on SIGTERM, see :func:`serve`). A folder left by a killed process is
#: removed at the next start, but only one that is certainly ours (see :func:`_stale_scratch`).
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


def check_port(host: str, port: int) -> None:
    """Refuse, with one line, a port this process cannot serve on (taken, privileged, host not here).

    Checked before seconds of loading torch and the bundle; :func:`launch` still turns a port taken in the
    meantime into the same error. ``SO_REUSEADDR`` as the server sets it, so a port whose last connections
    are only closing (TIME_WAIT) is not refused.
    """
    if not 1 <= port <= 65535:
        raise ACMRError(f"--port must be between 1 and 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as error:
        raise ACMRError(f"cannot serve on {host}:{port}: unknown host ({error})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise _port_error(host, port, error) from None


def _port_error(host: str, port: int, error: OSError) -> ACMRError:
    if error.errno == errno.EADDRINUSE or "empty port" in str(error):
        return ACMRError(
            f"port {port} on {host} is already in use (another server?); stop it or choose another --port"
        )
    return ACMRError(f"cannot serve on {host}:{port}: {error.strerror or error}")


def create_app(
    bundle: str = DEFAULT_BUNDLE,
    checkpoints: Path = CHECKPOINTS_DIR,
    device: str = "auto",
    user_classes_dir: Path | None = None,
    examples_dir: Path = EXAMPLES_DIR,
    per_visitor: bool = True,
) -> Any:
    """Load the bundle once, build the queued Gradio Blocks around it, and return them warmed up.

    ``per_visitor`` (the default, for a served app): every visitor has their own classes, kept in
    ``user_classes_dir``; False: one set of classes shared by everyone (a local user, a curated demo).
    """
    demo, warm_up = _build(bundle, checkpoints, device, user_classes_dir, examples_dir, per_visitor)
    warm_up.join()
    return demo


def _build(
    bundle: str,
    checkpoints: Path,
    device: str,
    user_classes_dir: Path | None,
    examples_dir: Path,
    per_visitor: bool,
) -> tuple[Any, threading.Thread]:
    """The Blocks, and the thread warming the model up (started; join it before calling the app ready)."""
    # Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning. A server shares
    # its CPU cores (request threads, other processes); measured on the busy 2-core dev machine, one
    # ResNet-101 forward took 8 s with spinning threads and 0.3 s with sleeping ones. Set the variable
    # yourself to override. (Set here, not at import: `acmr` loads app.cli for every command.)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # The app must work offline: no usage analytics calls.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Uploads land in this process's scratch folder (read by Gradio when it is imported, just below).
    os.environ.setdefault("GRADIO_TEMP_DIR", str(scratch_folder() / "gradio"))
    # Importing Gradio takes seconds of mostly single-threaded Python: do it while the model loads.
    ui_import = threading.Thread(target=importlib.import_module, args=("app.ui",), daemon=True)
    ui_import.start()
    from acmr_core.serving.registry import ServiceRegistry  # lazy: torch loads while gradio is imported

    registry = ServiceRegistry(
        checkpoints=checkpoints,
        default_bundle=bundle,
        device=device,
        user_classes_dir=user_classes_dir,
        warm_default=False,
        per_visitor=per_visitor,
    )
    # The first forward pass is slow (kernel set-up): overlap it with building and launching the UI.
    warm_up = threading.Thread(target=registry.default().warm_up, name="acmr-warm-up", daemon=True)
    warm_up.start()
    ui_import.join()
    from app.ui import build_app  # lazy: imported by the thread above (gradio), in parallel with torch

    demo = build_app(registry, examples_dir=Path(examples_dir))
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
    return demo, warm_up


def launch(demo: Any, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> Any:
    """Start serving without blocking (loopback by default; a public link only with ``share=True``)."""
    from app.layout import APP_CSS, APP_HEAD, app_theme  # lazy: keeps `acmr --help` free of gradio

    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=True,
        allowed_paths=[str(EXAMPLES_DIR)],  # the example gallery, wherever the server was started from
        max_file_size=MAX_UPLOAD,
        footer_links=["api"],
        quiet=True,
        theme=app_theme(),
        css=APP_CSS,
        head=APP_HEAD,
    )
    return demo


def serve(
    bundle: str = DEFAULT_BUNDLE,
    checkpoints: Path = CHECKPOINTS_DIR,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    device: str = "auto",
    user_classes_dir: Path | None = None,
    block: bool = True,
    per_visitor: bool = True,
) -> Any:
    """Load, serve, print one "ready" line with the URL, then wait until Ctrl+C or SIGTERM (when ``block``).

    A port that cannot be served on is refused with one :class:`ACMRError` line, before loading anything.
    """
    started = time.perf_counter()
    check_port(host, port)
    if block:
        _exit_on_sigterm()
    demo, warm_up = _build(bundle, checkpoints, device, user_classes_dir, EXAMPLES_DIR, per_visitor)
    try:
        launch(demo, host, port, share)
    except OSError as error:  # the port was taken since check_port (Gradio: "Cannot find empty port")
        raise _port_error(host, port, error) from None
    finally:
        # "ready" means serving *and* warm: the first request is as fast as any other. Joined on the error
        # path too: torch aborts the interpreter ("terminate called without an active exception", exit 134)
        # when it exits while a thread is still in a forward pass.
        warm_up.join()
    print(f"ACMR studio ready in {time.perf_counter() - started:.1f} s: {demo.local_url}", flush=True)
    if share and getattr(demo, "share_url", None):
        print(f"public link (anyone with it can use the app): {demo.share_url}", flush=True)
    if block:
        try:
            demo.block_thread()  # returns on Ctrl+C (Gradio closes the server itself)
        finally:  # SIGTERM: SystemExit from the handler below
            demo.close(verbose=False)
    return demo


def _exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``docker stop``, systemd) end the process like ``sys.exit(143)``.

    Python's default for SIGTERM dies at once, skipping ``finally`` blocks and atexit handlers, so the scratch
    folder (uploads, exports) outlived every stop. Only the main thread may install a handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigterm(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
