"""The timm ResNet-101 backbone: features, determinism, identity, weight files, offline behaviour."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from acmr_core.errors import BackboneError, BundleError
from acmr_core.features.backbone import Backbone, BackboneIdentity, create_backbone
from acmr_core.features.weights import DEFAULT_WEIGHTS_TAG, seeded_random_state_dict, state_dict_sha256
from acmr_core.pipelines.build import backbone_spec_from_identity

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_BACKBONE = REPO_ROOT / "checkpoints" / "demo-world" / "backbone.json"


def shipped_identity() -> BackboneIdentity:
    """The backbone identity the shipped demo bundle records: the seeded random weights it was built with.

    Their hash must be the same on every machine, or that bundle would be refused there; it is read from the
    bundle (never repeated here), so a rebuilt bundle needs no test edit, and a changed hash fails.
    """
    identity = BackboneIdentity.from_dict(json.loads(DEMO_BACKBONE.read_text()))
    assert identity.weight_source.startswith("random(seed="), f"{DEMO_BACKBONE}: not a seeded random backbone"
    return identity


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone(random_backbone: Backbone) -> Backbone:
    return random_backbone


def striped(colour: tuple[int, int, int], size: tuple[int, int] = (96, 80)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    for x in range(0, size[0], 12):
        image.paste(colour, (x, 0, x + 6, size[1]))
    return image


@pytest.fixture(scope="module")
def samples() -> list[Image.Image]:
    """Three images, two of them in modes that need conversion (a ResNet-101 forward is slow: keep it few)."""
    return [striped((255, 0, 0)), striped((0, 0, 255)).convert("RGBA"), striped((0, 0, 0)).convert("L")]


@pytest.fixture(scope="module")
def sample_features(backbone: Backbone, samples: list[Image.Image]) -> np.ndarray:
    return backbone.features(samples)  # batch size 2: batches [0, 1] and [2]


# ------------------------------------------------------------------------------------------------ features


def test_features_shape_dtype_and_content(sample_features: np.ndarray) -> None:
    assert sample_features.shape == (3, 2048)
    assert sample_features.dtype == np.float32
    assert np.isfinite(sample_features).all()
    assert (sample_features >= 0).all() and sample_features.any()  # pooled after ReLU
    assert not np.allclose(sample_features[0], sample_features[1])  # different images, different features


def test_features_are_deterministic(
    backbone: Backbone, samples: list[Image.Image], sample_features: np.ndarray
) -> None:
    np.testing.assert_array_equal(backbone.features(samples[:2]), sample_features[:2])


def test_features_from_tensor_uses_the_timm_transform(
    backbone: Backbone, samples: list[Image.Image], sample_features: np.ndarray
) -> None:
    batch = torch.stack([backbone.transform(samples[2].convert("RGB"))])
    assert tuple(batch.shape) == (1, *backbone.identity.transform["input_size"])
    np.testing.assert_array_equal(backbone.features_from_tensor(batch)[0], sample_features[2])
    with pytest.raises(BackboneError, match=r"expected a batch of shape \(n, 3, H, W\)"):
        backbone.features_from_tensor(batch[0])
    assert backbone.features([]).shape == (0, 2048)


def test_transform_comes_from_the_timm_data_config(backbone: Backbone) -> None:
    # tv_in1k's pretrained config: 224 px centre crop at 0.875 (resize to 256), bilinear, ImageNet statistics.
    transform = backbone.identity.transform
    assert transform["input_size"] == [3, 224, 224]
    assert transform["crop_pct"] == 0.875
    assert transform["interpolation"] == "bilinear"
    assert transform["mean"] == pytest.approx([0.485, 0.456, 0.406])


# ------------------------------------------------------------------------------------------------ identity


def test_random_weights_are_reproducible(backbone: Backbone) -> None:
    # The shipped bundle's weights, recreated from what its identity records, hash the same here.
    shipped = shipped_identity()
    # The seeded weights plus the learnt part the bundle carries (issue 23): only the file recreates them.
    with pytest.raises(BundleError, match="learnt-parameters file"):
        backbone_spec_from_identity(shipped)
    recreated = create_backbone(
        str(DEMO_BACKBONE.with_name("backbone.safetensors")), device="cpu", use_cache=False
    )
    assert recreated.identity.differences(shipped) == []
    # The plain seed-0 weights are rebuilt bit for bit, and another seed gives other weights.
    rebuilt = create_backbone("random", device="cpu", seed=0, use_cache=False)
    assert rebuilt.identity == backbone.identity
    other_seed = seeded_random_state_dict(rebuilt.model, seed=1)
    assert state_dict_sha256(other_seed) != backbone.identity.weights_sha256


def test_random_weights_keep_timm_init_statistics(backbone: Backbone) -> None:
    weight = backbone.model.state_dict()["layer3.0.conv2.weight"]
    fan_out = weight.shape[0] * weight.shape[2] * weight.shape[3]
    assert float(weight.std()) == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.02)
    assert float(weight.abs().max()) <= (6.0 / fan_out) ** 0.5


def test_identity_round_trips_through_json(backbone: Backbone) -> None:
    restored = BackboneIdentity.from_dict(json.loads(json.dumps(backbone.identity.to_dict())))
    assert restored == backbone.identity
    restored.ensure_matches(backbone.identity)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_name", "resnet50"),
        ("weights_sha256", "f" * 64),
        ("feature_dim", 1024),
    ],
)
def test_identity_mismatch_names_the_field(backbone: Backbone, field: str, value: object) -> None:
    changed = BackboneIdentity.from_dict({**backbone.identity.to_dict(), field: value})
    with pytest.raises(BackboneError, match=rf"bundle demo: backbone mismatch, {field} differs") as caught:
        backbone.identity.ensure_matches(changed, context="bundle demo")
    assert "\n" not in str(caught.value)


def test_identity_mismatch_in_transform_names_the_setting(backbone: Backbone) -> None:
    transform = {**backbone.identity.transform, "crop_pct": 0.95, "interpolation": "bicubic"}
    changed = BackboneIdentity.from_dict({**backbone.identity.to_dict(), "transform": transform})
    with pytest.raises(
        BackboneError, match=r"transform differs in crop_pct \(0\.875 vs 0\.95\), interpolation"
    ):
        backbone.identity.ensure_matches(changed)


def test_weight_source_alone_is_not_a_mismatch(backbone: Backbone) -> None:
    copied = BackboneIdentity.from_dict(
        {**backbone.identity.to_dict(), "weight_source": "file:copy.safetensors"}
    )
    backbone.identity.ensure_matches(copied)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"model_name": "resnet101"},
        {"model_name": "r", "weight_source": "x", "weights_sha256": "0", "transform": 3},
    ],
)
def test_malformed_identity_is_refused(data: object) -> None:
    with pytest.raises(BackboneError, match="backbone identity"):
        BackboneIdentity.from_dict(data)


# -------------------------------------------------------------------------------------------- weight files


@pytest.fixture(scope="module")
def weight_files(backbone: Backbone, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seed-0 weights saved like real checkpoints: with an ImageNet head, as safetensors and .pth."""
    folder = tmp_path_factory.mktemp("weights")
    state = {name: tensor.contiguous() for name, tensor in backbone.model.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["fc.bias"] = torch.zeros(1000)
    files = {"safetensors": folder / "resnet101.safetensors", "pth": folder / "resnet101.pth"}
    safetensors.torch.save_file(state, files["safetensors"])
    torch.save({"state_dict": state}, files["pth"])  # wrapped like a training checkpoint
    incomplete = {name: tensor for name, tensor in state.items() if name != "layer2.1.conv1.weight"}
    files["incomplete"] = folder / "incomplete.safetensors"
    safetensors.torch.save_file(incomplete, files["incomplete"])
    return files


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_local_weight_files_load_with_the_same_identity(
    backbone: Backbone, weight_files: dict[str, Path], kind: str
) -> None:
    loaded = create_backbone(str(weight_files[kind]), device="cpu", use_cache=False)
    assert loaded.identity.weight_source == f"file:{weight_files[kind].name}"
    assert loaded.identity.weights_sha256 == backbone.identity.weights_sha256
    backbone.identity.ensure_matches(loaded.identity)


def _prefill_hf_cache(hub_cache: Path, repo_id: str, weights: Path) -> Path:
    """Put ``weights`` into a Hugging Face cache laid out as ``huggingface_hub`` leaves a download: the file
    as a blob named by its SHA-256, a snapshot folder per commit linking to it, ``refs/main`` naming it."""
    import hashlib

    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    commit = hashlib.sha1(digest.encode()).hexdigest()  # any 40-hex revision id
    (repo / "blobs").mkdir(parents=True)
    os.link(weights, repo / "blobs" / digest)  # same file system (pytest's base temp): no 170 MB copy
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot / "model.safetensors"


def test_hub_weights_load_from_a_prefilled_cache_offline(
    backbone: Backbone,
    weight_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sleeps: list[float],
) -> None:
    """HF_HUB_OFFLINE=1 and weights already in the cache (as a machine with internet left them): they load,
    with no network at all, and give the backbone of exactly those weights."""
    from tests.fixtures_archives import install_loopback_only_guard

    install_loopback_only_guard(monkeypatch)  # any connection off this machine fails at once
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    repo_id = "timm/resnet101.tv_in1k"
    _prefill_hf_cache(tmp_path / "hf_home" / "hub", repo_id, weight_files["safetensors"])
    loaded = create_backbone(DEFAULT_WEIGHTS_TAG, device="cpu", use_cache=False)
    assert loaded.identity.weight_source == f"hub:{repo_id}"
    assert loaded.identity.weights_sha256 == backbone.identity.weights_sha256  # the cached file's weights
    backbone.identity.ensure_matches(loaded.identity)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(64, 80, 3), dtype=np.uint8))
    assert np.array_equal(loaded.features([image]), backbone.features([image]))
    assert sleeps == []


def test_incomplete_weight_file_is_refused(weight_files: dict[str, Path]) -> None:
    with pytest.raises(BackboneError, match=r"Missing key\(s\).*layer2\.1\.conv1\.weight"):
        create_backbone(str(weight_files["incomplete"]), device="cpu", use_cache=False)


def test_bad_weight_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(BackboneError, match=r"cannot load resnet101 weights from .*garbage\.safetensors"):
        create_backbone(str(garbage), device="cpu", use_cache=False)

    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "extra": Path("x")}, pickled)
    with pytest.raises(BackboneError, match="weights_only"):  # never unpickle arbitrary objects
        create_backbone(str(pickled), device="cpu", use_cache=False)

    with pytest.raises(BackboneError, match="weights file not found"):
        create_backbone(str(tmp_path / "absent.safetensors"), device="cpu")


def test_unknown_tags_and_models_are_refused() -> None:
    with pytest.raises(BackboneError, match=r"not a pretrained tag of resnet101 \(available: .*tv_in1k"):
        create_backbone("imagenet22k_nope", device="cpu")
    with pytest.raises(BackboneError, match="unknown timm model 'resnet9000'"):
        create_backbone("random", model_name="resnet9000", device="cpu")


def test_backbones_are_cached_and_batch_size_validated() -> None:
    first = create_backbone("random", device="cpu", seed=0, batch_size=4)
    second = create_backbone("random", device="cpu", seed=0, batch_size=8)
    assert first.model is second.model and second.batch_size == 8
    with pytest.raises(BackboneError, match="batch size must be at least 1"):
        create_backbone("random", device="cpu", batch_size=0)


# ------------------------------------------------------------------------------------------------ offline


def test_hub_weights_with_hf_hub_offline_fail_fast_with_guidance(sleeps: list[float]) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest; the HF cache is an empty temp folder
    with pytest.raises(BackboneError) as caught:
        create_backbone(DEFAULT_WEIGHTS_TAG, device="cpu", use_cache=False)
    assert sleeps == []  # no retry, no back-off
    message = str(caught.value)
    assert "HF_HUB_OFFLINE" in message and "timm/resnet101.tv_in1k" in message
    for hint in ("Hugging Face cache", "--weights /path/model.safetensors", "--weights random"):
        assert hint in message
    assert "\n" not in message


@dataclass
class SilentServer:
    """A loopback port that accepts connections but never answers (a network that hangs); counts them."""

    port: int
    connections: list[socket.socket] = field(default_factory=list)


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        silent = SilentServer(server.getsockname()[1])

        def accept_forever() -> None:
            with contextlib.suppress(OSError):  # the listening socket closed: the test is over
                while True:
                    silent.connections.append(server.accept()[0])

        threading.Thread(target=accept_forever, daemon=True).start()
        yield silent
        for connection in silent.connections:
            connection.close()


@pytest.mark.parametrize("network", ["refused", "hangs"])
def test_hub_weights_without_network_fail_fast(
    monkeypatch: pytest.MonkeyPatch,
    silent_server: SilentServer,
    refused_port: int,
    sleeps: list[float],
    network: str,
) -> None:
    from huggingface_hub import constants

    # Online mode (huggingface_hub read HF_HUB_OFFLINE=1 at import in this process, so undo it there too),
    # pointed at a closed port, or at a server that accepts the connection and never answers.
    port = refused_port if network == "refused" else silent_server.port
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("ACMR_HUB_TIMEOUT", "1")
    reason = "Connection refused" if network == "refused" else "timed out"
    with pytest.raises(BackboneError, match=rf"cannot download weights timm/resnet101\.tv_in1k: .*{reason}"):
        create_backbone(DEFAULT_WEIGHTS_TAG, device="cpu", use_cache=False)
    # huggingface_hub alone retries a failed connection with back-off for ~25 s: one probe, no back-off.
    assert sleeps == []
    if network == "hangs":
        assert len(silent_server.connections) == 1


def test_acmr_extract_without_network_fails_fast_in_one_line(tmp_path: Path, refused_port: int) -> None:
    # A fresh process, so huggingface_hub reads this environment at import: online mode, nothing listening.
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{refused_port}", HF_HOME=str(tmp_path / "hf"))
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "a.png")
    command = [sys.executable, "-m", "acmr_core", "extract", "--images", str(images.parent)]
    command += ["--weights", "tv_in1k", "--out", str(tmp_path / "f.safetensors"), "--device", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)  # a hang guard
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("acmr extract: error: cannot download weights timm/resnet101.tv_in1k")
    assert "unreachable" in lines[-1] and "--weights random" in lines[-1]
    assert "Traceback" not in result.stderr
    assert "Retrying in" not in result.stderr  # huggingface_hub's back-off (it logs each retry) never ran
    assert not (tmp_path / "f.safetensors").exists()
