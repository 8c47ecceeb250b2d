"""`acmr extract` in shards and under torchrun: two gloo processes on loopback give the single-process file
byte for byte; a killed rank loses only unfinished shards and a rerun finishes identically; shards of another
job are refused with one line.

The torchrun runs use a seeded random ResNet-18 on 32×24 images (the code path of the ResNet-101; the smaller
network keeps each run to seconds on two cores). ``--standalone`` rendezvous binds port 0 and the workers get
a free port from it, so concurrent test runs never collide.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acmr_core.cli import main
from acmr_core.commands.extract import shards_folder
from acmr_core.features.extract import extract_features, find_images, load_features, save_features
from acmr_core.features.sharding import (
    Shard,
    ShardJob,
    ShardLayout,
    ShardMismatchError,
    image_list_sha256,
    merge_shards,
    shard_path,
    write_shard,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = "resnet18"
BATCH = 2
N_IMAGES = 12  # 6 shards of one batch: 3 per rank
#: Bound on one torchrun job (startup included); a hang fails the test instead of blocking CI.
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 small noise images in two classes; one of them is not an image (it must be skipped and counted)."""
    root = tmp_path_factory.mktemp("distributed") / "images"
    rng = np.random.default_rng(13)
    for index in range(N_IMAGES):
        folder = root / ("cat" if index % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / f"{index:02d}.png")
    (root / "dog" / "06.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return root


def extract_arguments(images: Path, out: Path) -> list[str]:
    return [
        "extract", "--images", str(images), "--out", str(out), "--weights", "random", "--model", MODEL,
        "--batch-size", str(BATCH), "--shard-size", str(BATCH), "--device", "cpu", "--workers", "1",
        "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The features file of a plain single-process `acmr extract` (no torchrun)."""
    out = tmp_path_factory.mktemp("single") / "features.safetensors"
    assert main(extract_arguments(image_folder, out)) == 0
    assert not shards_folder(out).exists()  # merged, then removed
    return out.read_bytes()


def torchrun(arguments: list[str], log: Path, **extra_environment: str) -> subprocess.Popen:
    """Start ``torchrun --standalone --nproc_per_node=2 -m acmr_core ARGS`` on loopback, output to ``log``."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "--local-addr=127.0.0.1", "--max-restarts=0", "-m", "acmr_core", *arguments,
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **extra_environment}
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)


def finish(process: subprocess.Popen, log: Path) -> tuple[int, str]:
    try:
        code = process.wait(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"torchrun did not finish within {JOB_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
    return code, log.read_text(errors="replace")


def parent_of(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, found through /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (parent := parent_of(int(entry.name))) is not None:
            children.setdefault(parent, []).append(int(entry.name))
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(children.get(pid, []))
    return tree


def worker_of_rank(launcher: int, rank: int) -> int:
    """The pid of the torchrun worker (a child of the launcher) whose environment says ``RANK=rank``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if parent_of(int(entry.name)) == launcher and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    raise LookupError(f"no worker with RANK={rank} under process {launcher}")


@pytest.mark.slow
def test_two_processes_write_the_single_process_file_byte_for_byte(
    image_folder: Path, reference: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "features.safetensors"
    code, output = finish(torchrun(extract_arguments(image_folder, out), tmp_path / "log"), tmp_path / "log")
    assert code == 0, output[-3000:]
    assert out.read_bytes() == reference
    assert not shards_folder(out).exists()

    features = load_features(out)
    assert len(features) == N_IMAGES - 1 and [entry["path"] for entry in features.skipped] == ["dog/06.png"]
    assert "extracted 11 of 12 images" in output and "skipped 1 unreadable image" in output
    assert "(2 processes)" in output
    for rank in (0, 1):  # each rank did its share and logged its throughput
        assert f"rank {rank}/2: finished its shards; 6 images in" in output


def test_sharding_does_not_change_a_bit_of_the_unsharded_extraction(
    image_folder: Path, reference: bytes, tmp_path: Path
) -> None:
    from acmr_core.features.backbone import create_backbone

    backbone = create_backbone("random", model_name=MODEL, device="cpu", seed=0, batch_size=BATCH)
    whole = extract_features(backbone, find_images(image_folder), workers=0, progress=False)
    assert save_features(tmp_path / "whole.safetensors", whole).read_bytes() == reference


@pytest.mark.slow
def test_a_killed_rank_loses_only_unfinished_shards_and_a_rerun_finishes_identically(
    image_folder: Path, reference: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "features.safetensors"
    shards = shards_folder(out)
    log = tmp_path / "killed.log"
    launcher = torchrun(extract_arguments(image_folder, out), log)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not list(shards.glob("*.safetensors")):  # kill as soon as the first shard is complete
        assert launcher.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.02)
    # The rank dies with its DataLoader worker (a worker left behind would wait on its dead parent's pipe).
    for pid in process_tree(worker_of_rank(launcher.pid, 1)):
        os.kill(pid, signal.SIGKILL)
    code, output = finish(launcher, log)
    assert code != 0  # torchrun reports the lost worker and stops the job
    assert not out.exists()
    kept = sorted(path.name for path in shards.glob("*.safetensors"))
    assert 1 <= len(kept) < N_IMAGES // BATCH, output[-3000:]
    stamps = {name: (shards / name).stat().st_mtime_ns for name in kept}

    with pytest.raises(ShardMismatchError, match=r"of 6 shards are missing \(shard"):
        merge_shards(shards, job_of(image_folder))  # an incomplete folder is never merged
    assert {name: (shards / name).stat().st_mtime_ns for name in kept} == stamps

    rerun_log = tmp_path / "rerun.log"
    code, output = finish(torchrun(extract_arguments(image_folder, out), rerun_log), rerun_log)
    assert code == 0, output[-3000:]
    assert f"{len(kept)} done earlier, {6 - len(kept)} to extract" in output
    assert out.read_bytes() == reference


def job_of(image_folder: Path, seed: int = 0) -> ShardJob:
    from acmr_core.features.backbone import create_backbone

    images = find_images(image_folder)
    backbone = create_backbone("random", model_name=MODEL, device="cpu", seed=seed, batch_size=BATCH)
    return ShardJob(
        backbone.identity,
        image_list_sha256(images.paths, images.labels, images.class_names),
        ShardLayout.plan(len(images.paths), BATCH, BATCH),
    )


def fake_shard(job: ShardJob, index: int) -> Shard:
    start, stop = job.layout.bounds(index)
    dim = job.identity.feature_dim
    return Shard(index, np.zeros((stop - start, dim), np.float32), np.arange(start, stop), [])


@pytest.mark.parametrize(
    ("mismatch", "message"),
    [
        ("backbone", r"was made with another backbone \(weights_sha256 differ"),
        ("images", r"was made for another image list \(11 images"),
    ],
)
def test_a_shard_of_another_job_is_refused_with_one_line(
    image_folder: Path,
    tmp_path: Path,
    mismatch: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import dataclasses

    job = job_of(image_folder)
    if mismatch == "backbone":
        other = job_of(image_folder, seed=1)
    else:
        other = dataclasses.replace(
            job, images_sha256="0" * 64, layout=dataclasses.replace(job.layout, n_images=11)
        )
    out = tmp_path / "features.safetensors"
    stray = write_shard(shards_folder(out), other, fake_shard(other, 1))
    before = stray.read_bytes()

    assert main(extract_arguments(image_folder, out)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("acmr extract: error: ") and "\n" not in error
    assert str(shard_path(shards_folder(out), 1)) in error and "to start over" in error
    assert re.search(message, error), error
    assert stray.read_bytes() == before and not out.exists()  # nothing overwritten, nothing written

    with pytest.raises(ShardMismatchError, match=message):
        write_shard(shards_folder(out), job, fake_shard(job, 0))  # the rest complete, but shard 1 is foreign
        for index in range(2, job.layout.count):
            write_shard(shards_folder(out), job, fake_shard(job, index))
        merge_shards(shards_folder(out), job)


def test_layout_is_whole_batches_and_independent_of_the_process_count() -> None:
    layout = ShardLayout.plan(37_322, batch_size=32)
    assert layout.shard_images % 32 == 0 and layout.count <= 64
    assert ShardLayout.plan(10_000_000, 32).shard_images == 2048
    assert ShardLayout.plan(10, batch_size=4, shard_images=5).shard_images == 8
    assert [ShardLayout.plan(10, 4, 8).bounds(index) for index in range(2)] == [(0, 8), (8, 10)]


@pytest.mark.slow
def test_bootstrap_under_torchrun_shares_the_extraction_and_rank_0_writes_the_bundle(tmp_path: Path) -> None:
    import json

    from acmr_core.data.image_plan import ImagePlan
    from tests.fixtures_archives import LoopbackServer, build_tiny_dataset

    data_dir, checkpoints, log = tmp_path / "data", tmp_path / "checkpoints", tmp_path / "bootstrap.log"
    tiny = build_tiny_dataset("cub", images_per_class=3)  # 8 classes, 24 images
    with LoopbackServer().running() as server:
        urls = {name: server.serve(f"cub/{tiny.filenames[name]}", b) for name, b in tiny.archives.items()}
        argv = [
            "bootstrap", "cub", "--weights", "random", "--epochs", "1", "--device", "cpu", "--workers", "0",
            "--batch-size", "4", "--shard-size", "4", "--data-dir", str(data_dir), "--checkpoints",
            str(checkpoints), "--no-progress", "--cub-url", urls["cub"], "--xlsa17-url", urls["xlsa17"],
        ]  # fmt: skip
        # Rank 0 fits the bundle's UMAP map on 26 latents: compiling UMAP's numba code in this fresh process
        # took 60 s of a loaded 2-core machine, running it uncompiled 11 s. What is checked here is the shared
        # extraction and who writes the bundle; the compiled UMAP path is covered in-process (test_bootstrap,
        # test_cli_bundle), where it is compiled once per test session.
        code, output = finish(torchrun(argv, log, NUMBA_DISABLE_JIT="1"), log)
    assert code == 0, output[-3000:]
    assert "rank 0/2: finished its shards; 12 images" in output
    assert "rank 1/2: finished its shards; 12 images" in output
    assert "cub: U " in output and (checkpoints / "cub-random" / "manifest.json").is_file()

    # Rank 0 merged every planned image, in plan order (byte-identity with one process: the tests above).
    work = data_dir / "work" / "cub-random"
    plan = ImagePlan.from_json(json.loads((work / "plan.json").read_text()))
    merged = load_features(work / "features.safetensors")
    assert merged.image_paths == plan.relative_paths and merged.skipped == []
    assert not list(work.glob("features.shards-*"))
