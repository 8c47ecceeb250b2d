"""Hardening of the served app (issue 27): concurrency groups, port errors, the scratch folder, temporary
files and plain-text API errors.

The live tests hold chosen requests inside the service (patched ``predict``/``attributes_from_images`` that
wait on an event for images named ``slow-*``) and observe who gets in while they are held: no timing is
measured, every wait has a generous guard that only turns a deadlock into a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_app_api import (
    DEMO_BUNDLE,
    REPO_ROOT,
    app_error,
    example_images,
    launch_demo_app,
    require_demo_bundle,
)

pytestmark = [
    pytest.mark.slow,
    # Gradio's queue uses pandas options that pandas 3 deprecates; not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]

#: Only turns a deadlock (or a request that never gets in) into a failure; never reached when things work.
GUARD_S = 180.0
PYTHON = sys.executable


# ---- held requests -----------------------------------------------------------------------------------------


class Gates:
    """Holds every service call on an image named ``slow-*`` until released; logs entries and releases."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self._changed = threading.Condition()
        self._release: dict[str, threading.Event] = {}

    def enter(self, name: str) -> None:
        with self._changed:
            self.log.append(f"enter {name}")
            release = self._release.setdefault(name, threading.Event())
            self._changed.notify_all()
        if name.startswith("slow-") and not release.wait(GUARD_S):
            raise RuntimeError(f"{name} was never released")

    def release(self, name: str) -> None:
        with self._changed:
            self.log.append(f"release {name}")
            self._release.setdefault(name, threading.Event()).set()

    def entered(self, name: str) -> bool:
        with self._changed:
            return f"enter {name}" in self.log

    def wait_entered(self, *names: str) -> None:
        with self._changed:
            inside = self._changed.wait_for(
                lambda: all(f"enter {name}" in self.log for name in names), timeout=GUARD_S
            )
        assert inside, f"never ran (a concurrency limit keeps them waiting): {names}; log: {self.log}"

    def release_all(self) -> None:
        with self._changed:
            for event in self._release.values():
                event.set()


@pytest.fixture(scope="module")
def gates() -> Iterator[Gates]:
    from acmr_core.serving.service import StudioService

    gates = Gates()
    real_predict = StudioService.predict
    real_read = StudioService.attributes_from_images

    def gated_predict(self: StudioService, image: Any, *args: Any, **kwargs: Any) -> Any:
        gates.enter(Path(str(image)).name)
        return real_predict(self, image, *args, **kwargs)

    def gated_read(self: StudioService, images: Any, *args: Any, **kwargs: Any) -> Any:
        for image in images:
            gates.enter(Path(str(image)).name)
        return real_read(self, images, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StudioService, "predict", gated_predict)
        patch.setattr(StudioService, "attributes_from_images", gated_read)
        try:
            yield gates
        finally:
            gates.release_all()


@pytest.fixture(scope="module")
def demo(gates: Gates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    demo, port = launch_demo_app(tmp_path_factory)
    demo.test_port = port
    try:
        yield demo
    finally:
        gates.release_all()
        demo.close()


@pytest.fixture(scope="module")
def client(demo: Any) -> Any:
    from gradio_client import Client

    return Client(f"http://127.0.0.1:{demo.test_port}/", verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of one example image under the names the gates look at."""
    folder = tmp_path_factory.mktemp("images")
    source = example_images()[0].read_bytes()
    names = ["slow-1.png", "slow-2.png", "slow-read.png", "fast.png", *[f"leak-{i}.png" for i in range(6)]]
    paths = {}
    for name in names:
        paths[name] = folder / name
        paths[name].write_bytes(source)
    return paths


def submit_predict(client: Any, path: Path) -> Any:
    from gradio_client import handle_file

    return client.submit(handle_file(str(path)), api_name="/predict")


# ---- D2: predictions run two at a time, beside a slow image reading ----------------------------------------


def test_predict_and_image_reading_have_separate_concurrency_groups(demo: Any) -> None:
    from app.widgets import IMAGE_READING_CONCURRENCY, IMAGE_READING_ID, PREDICT_CONCURRENCY

    functions = list(demo.fns.values())
    by_api = {fn.api_name: fn for fn in functions}
    assert by_api["predict"].concurrency_id == "predict"
    assert by_api["attributes_from_images"].concurrency_id == IMAGE_READING_ID
    # Gradio gives a group the lowest limit of its events: every member must allow PREDICT_CONCURRENCY.
    predict_group = [fn for fn in functions if fn.concurrency_id == "predict"]
    assert {fn.concurrency_limit for fn in predict_group} == {PREDICT_CONCURRENCY}
    readers = [fn for fn in functions if fn.concurrency_id == IMAGE_READING_ID]
    assert len(readers) == 2  # the page's "Fill from images" and the API endpoint
    assert {fn.concurrency_limit for fn in readers} == {IMAGE_READING_CONCURRENCY}


def test_two_slow_predictions_run_at_once_beside_an_image_reading(
    client: Any, gates: Gates, images: dict[str, Path]
) -> None:
    from gradio_client import handle_file
    from gradio_client.utils import Status

    reading = client.submit([handle_file(str(images["slow-read.png"]))], api_name="/attributes_from_images")
    gates.wait_entered("slow-read.png")
    # An image reading in progress (1-10 backbone forwards) must not hold up predictions.
    slow = [submit_predict(client, images[name]) for name in ("slow-1.png", "slow-2.png")]
    gates.wait_entered("slow-1.png", "slow-2.png")

    fast = submit_predict(client, images["fast.png"])
    # Both prediction places taken: the fast one queues (Gradio tells the client so)...
    wait_for_status(fast, Status.IN_QUEUE)
    assert not gates.entered("fast.png")
    # ...and runs as soon as one place frees, while the other slow prediction is still held.
    gates.release("slow-1.png")
    assert fast.result(timeout=GUARD_S)["label"]
    assert not slow[1].done()
    assert gates.log.index("enter fast.png") > gates.log.index("release slow-1.png")
    gates.release("slow-2.png")
    gates.release("slow-read.png")
    assert all(job.result(timeout=GUARD_S)["label"] for job in slow)
    assert reading.result(timeout=GUARD_S)


def wait_for_status(job: Any, code: Any) -> None:
    """Poll the job's own status until it reaches ``code`` (the deadline only ends a hang)."""
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        status = job.status()
        if status.code == code:
            return
        assert not job.done(), f"finished instead of waiting: {status}"
        time.sleep(0.05)
    raise AssertionError(f"the job never reached {code}: {job.status()}")


# ---- D9: no temporary file per upload ----------------------------------------------------------------------


def stray_temporary_files(demo: Any) -> list[Path]:
    """What gr.File(type="filepath")'s preprocessing used to leave: empty ``tmp*`` files in the cache."""
    return sorted(Path(demo.GRADIO_CACHE).glob("tmp*"))


def test_uploads_through_the_api_leave_no_temporary_files(
    client: Any, demo: Any, images: dict[str, Path]
) -> None:
    from gradio_client import handle_file

    before = stray_temporary_files(demo)
    for index in range(4):
        assert client.predict(handle_file(str(images[f"leak-{index}.png"])), api_name="/predict")["label"]
    files = [handle_file(str(images[f"leak-{index}.png"])) for index in (4, 5)]
    assert client.predict(files, api_name="/attributes_from_images")
    assert stray_temporary_files(demo) == before


# ---- D12: API errors are plain text; the page still escapes ------------------------------------------------


def test_api_errors_arrive_as_plain_text(client: Any) -> None:
    message = app_error(lambda: client.predict("<b>nobody</b>", api_name="/delete_class"))
    assert "<b>nobody</b>" in message
    assert "&lt;" not in message


def test_page_errors_are_escaped_and_api_errors_are_not() -> None:
    import gradio as gr

    from acmr_core.errors import ACMRError
    from app.widgets import api_errors, user_errors

    def refuse() -> None:
        raise ACMRError("no class named '<img src=x onerror=alert(1)>'")

    with pytest.raises(gr.Error) as page:
        user_errors(refuse)()
    with pytest.raises(gr.Error) as api:
        api_errors(refuse)()
    assert page.value.message == "no class named '&lt;img src=x onerror=alert(1)&gt;'"
    assert api.value.message == "no class named '<img src=x onerror=alert(1)>'"


# ---- D7: a port in use is one line, exit 2 -----------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket is listening on, for the length of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def app_command(*args: str) -> list[str]:
    return [PYTHON, "-m", "app", "--bundle", str(DEMO_BUNDLE), *args]


def run_briefly(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GRADIO_TEMP_DIR", None)  # set in this process by the served app above: each server has its own
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env, **kwargs
    )


@pytest.mark.parametrize("entry", ["python -m app", "acmr serve"])
def test_a_port_in_use_is_one_line_and_exit_2(entry: str, taken_port: int) -> None:
    acmr = shutil.which("acmr", path=str(Path(PYTHON).parent))
    command = (
        app_command("--port", str(taken_port))
        if entry == "python -m app"
        else [str(acmr), "serve", "--bundle", str(DEMO_BUNDLE), "--port", str(taken_port)]
    )
    done = run_briefly(command)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"port {taken_port}" in done.stderr and "in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_taken_during_start_up_is_one_line_too(taken_port: int) -> None:
    """The port check skipped, so that Gradio's launch itself fails (a port taken while the model loads)."""
    require_demo_bundle()
    script = (
        "import sys, app.server; app.server.check_port = lambda host, port: None\n"
        "from app.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    done = run_briefly([PYTHON, "-c", script, "--bundle", str(DEMO_BUNDLE), "--port", str(taken_port)])
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m app: error:") and f"port {taken_port}" in last, done.stderr
    assert "Traceback" not in done.stderr
    assert "terminate called" not in done.stderr


def test_bad_ports_are_refused_before_loading() -> None:
    from acmr_core.errors import ACMRError
    from app.server import check_port

    for port in (0, 70000):
        with pytest.raises(ACMRError, match="between 1 and 65535"):
            check_port("127.0.0.1", port)
    with pytest.raises(ACMRError, match="unknown host"):
        check_port("no-such-host.invalid", 7860)


# ---- D8: the scratch folder --------------------------------------------------------------------------------


def test_the_scratch_folder_is_private_and_names_its_process() -> None:
    from app import paths

    folder = paths.scratch_folder()
    assert folder.parent == paths.SCRATCH_ROOT and folder.name.startswith(paths.SCRATCH_PREFIX)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / paths.PID_MARKER).read_text(encoding="utf-8") == str(os.getpid())


def dead_pid() -> int:
    child = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def scratch_like(root: Path, name: str, pid: int | None) -> Path:
    folder = root / name
    (folder / "gradio").mkdir(parents=True)
    (folder / "gradio" / "upload.png").write_bytes(b"x" * 100)
    if pid is not None:
        (folder / "owner.pid").write_text(str(pid), encoding="utf-8")
    return folder


def test_stale_cleanup_removes_only_our_dead_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import paths

    root, elsewhere = tmp_path / "tmp", tmp_path / "elsewhere"
    root.mkdir()
    monkeypatch.setattr(paths, "SCRATCH_ROOT", root)
    gone = dead_pid()
    dead = scratch_like(root, "acmr-studio-dead", gone)
    alive = scratch_like(root, "acmr-studio-alive", os.getppid())
    unmarked = scratch_like(root, "acmr-studio-unmarked", None)
    old_layout = scratch_like(root, str(gone), gone)  # the former fixed name: not made by this version
    other_program = scratch_like(root, "notes", gone)
    foreign = scratch_like(root, "acmr-studio-foreign", gone)
    if os.geteuid() == 0:  # only root can make a folder another user's (the dev machine and CI run as root)
        os.chown(foreign, 54321, 54321)
    else:
        foreign = unmarked
    target = scratch_like(elsewhere, "precious", gone)
    (root / "acmr-studio-link").symlink_to(target)  # a link planted in the shared folder
    linked_marker = scratch_like(root, "acmr-studio-linked-marker", None)
    (linked_marker / "owner.pid").symlink_to(target / "owner.pid")

    paths._remove_stale_scratch()

    assert not dead.exists()
    for kept in (alive, unmarked, old_layout, other_program, foreign, linked_marker):
        assert (kept / "gradio" / "upload.png").exists(), kept
    assert (target / "gradio" / "upload.png").exists() and (root / "acmr-studio-link").is_symlink()


def test_an_unusable_temp_folder_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from acmr_core.errors import ACMRError
    from app import paths

    monkeypatch.setattr(paths, "SCRATCH_ROOT", tmp_path / "missing")
    with pytest.raises(ACMRError, match=r"cannot create a temporary folder in .*missing.*TMPDIR"):
        paths.scratch_folder.__wrapped__()  # uncached: this process's own folder stays as it is


def test_sigterm_stops_the_server_and_removes_its_scratch_folder(tmp_path: Path) -> None:
    from tests.test_app_api import free_port

    require_demo_bundle()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}
    env.pop("GRADIO_TEMP_DIR", None)
    command = app_command("--port", str(free_port()), "--user-classes", str(tmp_path / "classes"))
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = server.stdout.readline()  # blocks until the "ready" line (or the end of the output)
        assert "ready" in ready, server.communicate(timeout=GUARD_S)
        folders = list(temp.glob("acmr-studio-*"))
        assert len(folders) == 1 and (folders[0] / "owner.pid").read_text() == str(server.pid)
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=GUARD_S)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "terminate called" not in stderr
    assert not folders[0].exists()
