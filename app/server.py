"""Start-up of the studio: check the port, build the queued Blocks while the model loads, serve, and stop.

:func:`serve` is what ``acmr serve`` and ``python -m app`` run (through :mod:`app.cli`); :func:`create_app`
and :func:`launch` are its two halves, for tests and benchmarks that serve in their own process. Gradio and
torch are imported only once a server is built: ``acmr --help`` loads :mod:`app.cli`, which imports this.
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_BUNDLE
from acmr_core.errors import ACMRError
from app.paths import EXAMPLES_DIR, scratch_folder

# Events without their own limit (plots, catalog) run this many at once; predict allows 2
# (PREDICT_CONCURRENCY), reading attributes from images 1 and class edits 2, each in its own group.
DEFAULT_CONCURRENCY = 4
# Larger uploads are refused by Gradio before reaching the app (photos are a few MB; 64 MP is the pixel cap).
MAX_UPLOAD = "50mb"


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
        # An edit is answered with the fast classifier update; the full re-fit follows in the background
        # (with many user classes the fast rows alone lose accuracy: docs/benchmarks/app.md).
        refine=True,
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
