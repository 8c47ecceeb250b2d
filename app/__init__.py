"""The Gradio web app of the ACMR zero-shot studio (``python -m app`` or ``acmr serve``)."""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from acmr_core.defaults import CHECKPOINTS_DIR, DEFAULT_BUNDLE, USER_CLASSES_DIR

log = logging.getLogger(__name__)

# Events without their own limit (plots, catalog) run this many at once; predict allows 2, class edits 1.
DEFAULT_CONCURRENCY = 4
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
# Larger uploads are refused by Gradio before reaching the app (photos are a few MB; 64 MP is the pixel cap).
MAX_UPLOAD = "50mb"
#: Each serving process keeps its temporary files (Gradio's upload cache, exports) in SCRATCH_ROOT/<pid>:
#: removed at exit, and a folder left by a killed process is removed at the next start.
SCRATCH_ROOT = Path(tempfile.gettempdir()) / "acmr-studio"
#: Gradio's cache cleaning: every 30 min, files this app cached more than an hour ago are deleted.
DELETE_CACHE = (1800, 3600)


@functools.cache
def scratch_folder() -> Path:
    """This process's temporary folder (created once, removed at exit); stale ones of dead processes go."""
    _remove_stale_scratch()
    folder = SCRATCH_ROOT / str(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _remove_stale_scratch() -> None:
    if not SCRATCH_ROOT.is_dir():
        return
    for folder in SCRATCH_ROOT.iterdir():
        if folder.name.isdigit() and not _process_alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed the temporary files of a previous run (%s)", folder)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, and not ours to clean
        return True
    return True


def create_app(
    bundle: str = DEFAULT_BUNDLE,
    checkpoints: Path = CHECKPOINTS_DIR,
    device: str = "auto",
    user_classes_dir: Path = USER_CLASSES_DIR,
    examples_dir: Path = EXAMPLES_DIR,
) -> Any:
    """Load the bundle once, build the queued Gradio Blocks around it, and return them warmed up."""
    demo, warm_up = _build(bundle, checkpoints, device, user_classes_dir, examples_dir)
    warm_up.join()
    return demo


def _build(
    bundle: str, checkpoints: Path, device: str, user_classes_dir: Path, examples_dir: Path
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
    user_classes_dir: Path = USER_CLASSES_DIR,
    block: bool = True,
) -> Any:
    """Load, serve, print one "ready" line with the URL, then wait until Ctrl+C (when ``block``)."""
    started = time.perf_counter()
    demo, warm_up = _build(bundle, checkpoints, device, user_classes_dir, EXAMPLES_DIR)
    launch(demo, host, port, share)
    warm_up.join()  # "ready" means serving *and* warm: the first request is as fast as any other
    print(f"ACMR studio ready in {time.perf_counter() - started:.1f} s: {demo.local_url}", flush=True)
    if share and getattr(demo, "share_url", None):
        print(f"public link (anyone with it can use the app): {demo.share_url}", flush=True)
    if block:
        demo.block_thread()
    return demo
