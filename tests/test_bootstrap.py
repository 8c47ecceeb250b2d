"""acmr bootstrap: sources and layouts of CUB / AwA2 / SUN / xlsa17, the image plan, and the whole pipeline,
all against tiny archives in the real layouts served by a loopback HTTP server (no other network)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acmr_core.data.image_plan import (
    ORIGIN_REBUILT,
    ORIGIN_RES101,
    plan_images,
    relative_image_path,
    write_xlsa17_folder,
)
from acmr_core.data.layouts import get_dataset, load_xlsa17_meta
from acmr_core.data.sources import SOURCES
from acmr_core.errors import DataError, DownloadError
from acmr_core.pipelines.bootstrap import BootstrapOptions, StepCache, weights_slug
from acmr_core.pipelines.bootstrap_steps import source_roots
from tests.fixtures_archives import (
    LoopbackServer,
    TinyDataset,
    build_tiny_dataset,
    install_loopback_only_guard,
)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    install_loopback_only_guard(monkeypatch)
    for source in SOURCES.values():  # the user's environment must not redirect the tests
        monkeypatch.delenv(source.env, raising=False)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer().running() as running:
        yield running


@dataclass
class Served:
    tiny: TinyDataset
    urls: dict[str, str]


def serve_tiny(server: LoopbackServer, key: str, **kwargs: object) -> Served:
    tiny = build_tiny_dataset(key, **kwargs)  # type: ignore[arg-type]
    urls = {name: server.serve(f"{key}/{tiny.filenames[name]}", data) for name, data in tiny.archives.items()}
    return Served(tiny, urls)


def options_for(served: Served, tmp_path: Path, **overrides: object) -> BootstrapOptions:
    values: dict[str, object] = {
        "dataset": served.tiny.key,
        "data_dir": tmp_path / "data",
        "weights": "random",
        "device": "cpu",
        "checkpoints": tmp_path / "checkpoints",
        "epochs": 2,
        "batch_size": 16,
        "workers": 0,
        "timeout": 5.0,
        "urls": served.urls,
        "progress": False,
    }
    values.update(overrides)
    return BootstrapOptions(**values)  # type: ignore[arg-type]


def plan_for(served: Served, tmp_path: Path):  # -> (plan, meta, layout)
    spec = get_dataset(served.tiny.key)
    options = options_for(served, tmp_path)
    roots, urls, _ = source_roots(spec, options)
    meta = load_xlsa17_meta(roots["xlsa17"], spec, urls["xlsa17"])
    layout = spec.locate(roots, urls)
    return plan_images(spec, layout, meta), meta, layout


# ------------------------------------------------------------------------------------------------------------
# Sources and URLs


def test_every_source_has_a_default_url_a_flag_and_an_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    for source in SOURCES.values():
        assert source.url.startswith("https://") and source.url.endswith(source.filename)
        assert source.flag.startswith("--") and source.env.startswith("ACMR_")
        assert source.resolve_url() == source.url
        monkeypatch.setenv(source.env, "/mirror/" + source.filename)
        assert source.resolve_url() == "/mirror/" + source.filename
        assert source.resolve_url("https://flag.example/x") == "https://flag.example/x"  # the flag wins
        assert source.flag in source.hint() and source.env in source.hint()
    assert SOURCES["cub"].checksum == "md5:97eceeb196236b17998738112f37df78"


def test_relative_image_path_maps_the_real_res101_image_files() -> None:
    cub = "/BS/Deep_Fragments/work/MSc/CUB_200_2011/CUB_200_2011/images/001.Black_footed_Albatross/a_1.jpg"
    awa = "/BS/xian/work/data/Animals_with_Attributes2//JPEGImages/antelope/antelope_10001.jpg"
    sun = "/BS/Deep_Fragments/work/MSc/data/SUN/images/a/apse/indoor/sun_abc.jpg"
    assert relative_image_path(cub, "images") == "001.Black_footed_Albatross/a_1.jpg"
    assert relative_image_path(awa, "JPEGImages") == "antelope/antelope_10001.jpg"
    assert relative_image_path(sun, "images") == "a/apse/indoor/sun_abc.jpg"
    assert get_dataset("sun").class_of("a/apse/indoor/sun_abc.jpg") == "apse_indoor"
    with pytest.raises(DataError, match="no '/JPEGImages/' folder"):
        relative_image_path("/elsewhere/antelope.jpg", "JPEGImages")
    with pytest.raises(DataError, match="unknown dataset 'apy'"):
        get_dataset("apy")


def test_weights_slug_names_the_bundle_folder() -> None:
    assert weights_slug("random") == "random"
    assert weights_slug("tv_in1k") == "tv_in1k"
    assert weights_slug("resnet101.a1h_in1k") == "resnet101.a1h_in1k"
    assert weights_slug("/models/my weights.safetensors") == "my_weights"


# ------------------------------------------------------------------------------------------------------------
# Layouts and the image plan


@pytest.mark.parametrize("key", ["cub", "awa2", "sun"])
def test_plan_follows_res101_image_files(server: LoopbackServer, tmp_path: Path, key: str) -> None:
    served = serve_tiny(server, key)
    plan, _, layout = plan_for(served, tmp_path)
    tiny = served.tiny
    assert plan.origin == ORIGIN_RES101
    assert plan.relative_paths == tiny.image_files
    np.testing.assert_array_equal(plan.labels, tiny.labels)
    np.testing.assert_array_equal(plan.trainval, tiny.trainval)
    np.testing.assert_array_equal(plan.test_seen, tiny.test_seen)
    np.testing.assert_array_equal(plan.test_unseen, tiny.test_unseen)
    assert all(path.is_file() for path in plan.paths)
    # The column order is xlsa17's (pairs swapped w.r.t. the dataset), so labels follow allclasses, not ids.
    first = plan.relative_paths[0]
    assert tiny.class_names[plan.labels[0]] == get_dataset(key).class_of(first)
    assert layout.attribute_names_file is not None and layout.attribute_names_file.is_file()


@pytest.mark.parametrize("key", ["cub", "sun"])
def test_plan_is_rebuilt_from_class_lists_without_res101(
    server: LoopbackServer, tmp_path: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    served = serve_tiny(server, key, with_res101=False)
    with caplog.at_level("WARNING"):
        plan, _, _ = plan_for(served, tmp_path)
    tiny = served.tiny
    assert plan.origin == ORIGIN_REBUILT
    assert "rebuilt" in caplog.text and any("not comparable" in note for note in plan.notes)
    assert sorted(plan.relative_paths) == sorted(tiny.image_files)
    names = [tiny.class_names[label] for label in plan.labels]
    assert {names[i] for i in plan.test_unseen} == set(tiny.unseen)
    assert {names[i] for i in plan.trainval} == set(tiny.seen) == {names[i] for i in plan.test_seen}
    every = np.concatenate([plan.trainval, plan.test_seen, plan.test_unseen])
    assert sorted(every.tolist()) == list(range(len(plan.relative_paths)))  # a partition of all images
    # Folder names agree with the labels for every image.
    spec = get_dataset(key)
    assert all(spec.class_of(path) == name for path, name in zip(plan.relative_paths, names, strict=True))


@pytest.mark.parametrize(
    ("key", "omit", "expected"),
    [
        ("cub", ("CUB_200_2011/classes.txt",), "classes.txt"),
        ("cub", ("attributes.txt",), "attributes.txt"),
        ("awa2", ("predicates.txt",), "predicates.txt"),
        ("sun", ("images.mat",), "images.mat"),
        ("cub", ("att_splits.mat",), "xlsa17/data/CUB/att_splits.mat"),
    ],
)
def test_a_missing_file_in_an_archive_is_named(
    server: LoopbackServer, tmp_path: Path, key: str, omit: tuple[str, ...], expected: str
) -> None:
    served = serve_tiny(server, key, omit=omit)
    with pytest.raises(DataError) as error:
        plan_for(served, tmp_path)
    message = str(error.value)
    assert expected in message and "\n" not in message
    assert "http://127.0.0.1" in message  # which archive (URL) lacks it


def test_a_missing_image_is_named(server: LoopbackServer, tmp_path: Path) -> None:
    tiny = build_tiny_dataset("cub")
    missing = tiny.image_files[5]
    served = serve_tiny(server, "cub", omit=(missing,))
    with pytest.raises(DataError, match=rf"1 of {len(tiny.image_files)} images .*first: '{missing}'"):
        plan_for(served, tmp_path)


@pytest.mark.parametrize(("with_res101", "val_locs"), [(True, True), (True, False), (False, True)])
def test_written_dataset_folder_loads_as_xlsa17(
    server: LoopbackServer, tmp_path: Path, with_res101: bool, val_locs: bool
) -> None:
    from acmr_core.data.xlsa17 import load_xlsa17

    served = serve_tiny(server, "cub", with_res101=with_res101, with_val_locs=val_locs)
    plan, meta, layout = plan_for(served, tmp_path)
    features = np.random.default_rng(0).normal(size=(len(plan.relative_paths), 2048)).astype(np.float32)
    write_xlsa17_folder(tmp_path / "ds" / "CUB", plan, features, meta, layout)
    data = load_xlsa17(tmp_path / "ds", "CUB")
    np.testing.assert_allclose(data.features, features, rtol=1e-6)
    np.testing.assert_array_equal(data.labels, plan.labels)
    np.testing.assert_array_equal(data.trainval, plan.trainval)
    np.testing.assert_array_equal(data.test_unseen, plan.test_unseen)
    assert data.class_names == served.tiny.class_names
    assert data.attribute_names == served.tiny.attribute_names  # from CUB's attributes.txt
    assert data.image_files == plan.relative_paths
    # The official validation locs are kept when the rows are res101's own; else the class lists are used.
    assert data.val_split_source == ("locs" if with_res101 and val_locs else "class-files")
    assert {data.class_names[c] for c in np.unique(data.labels[data.val])} == set(served.tiny.seen[4:])
    assert {data.class_names[c] for c in np.unique(data.labels[data.train])} == set(served.tiny.seen[:4])


@pytest.mark.parametrize("key", ["cub", "awa2"])
def test_xlsa17_columns_are_cross_checked_against_the_datasets_own_table(
    server: LoopbackServer, tmp_path: Path, key: str
) -> None:
    from acmr_core.data.image_plan import check_attribute_order

    served = serve_tiny(server, key)
    _, meta, layout = plan_for(served, tmp_path)
    spec = get_dataset(key)
    assert layout.class_attributes is not None
    assert check_attribute_order(spec, layout, meta)
    # Pairing xlsa17 column j with the dataset's j-th class (the documented CUB pitfall) is caught.
    rows = list(layout.class_attributes.values())  # dataset (class id) order
    by_position = {name: rows[column] for column, name in enumerate(meta.class_names)}
    misread = type(layout)(layout.images_root, None, None, class_attributes=by_position)
    assert not check_attribute_order(spec, misread, meta)


def test_unreadable_images_leave_the_split_consistently(server: LoopbackServer, tmp_path: Path) -> None:
    from acmr_core.data.xlsa17 import load_xlsa17

    served = serve_tiny(server, "awa2")
    plan, meta, layout = plan_for(served, tmp_path)
    dropped_positions = np.array([plan.trainval[0], plan.test_unseen[-1]])
    kept = plan.drop(dropped_positions)
    assert len(kept.relative_paths) == len(plan.relative_paths) - 2
    assert plan.relative_paths[plan.trainval[0]] not in kept.relative_paths
    # Every split index still points at the same image as before.
    for before, after in ((plan.trainval[1:], kept.trainval), (plan.test_unseen[:-1], kept.test_unseen)):
        assert [plan.relative_paths[i] for i in before] == [kept.relative_paths[i] for i in after]
    assert kept.n_dropped == 2 and any("dropped" in note for note in kept.notes)
    features = np.ones((len(kept.relative_paths), 2048), dtype=np.float32)
    write_xlsa17_folder(tmp_path / "ds" / "AWA2", kept, features, meta, layout)
    data = load_xlsa17(tmp_path / "ds", "AWA2")
    assert data.features.shape[0] == len(kept.relative_paths) and data.val_split_source == "class-files"
    assert data.attribute_names == served.tiny.attribute_names  # from AwA2's predicates.txt


# ------------------------------------------------------------------------------------------------------------
# Step cache


def test_step_cache_skips_only_unchanged_steps_with_existing_outputs(tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "state")
    output = tmp_path / "out.bin"
    output.write_bytes(b"1")
    assert cache.done("plan", {"a": 1}) is None
    cache.record("plan", {"a": 1}, {"n": 3}, [output])
    assert cache.done("plan", {"a": 1}) == {"n": 3}
    assert cache.done("plan", {"a": 2}) is None  # inputs changed
    output.unlink()
    assert cache.done("plan", {"a": 1}) is None  # output gone
    cache.record("features", {"b": 1}, {}, [])
    cache.invalidate_after("plan")
    assert cache.done("features", {"b": 1}) is None


# ------------------------------------------------------------------------------------------------------------
# Offline


def test_offline_bootstrap_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], refused_port: int, sleeps: list[float]
) -> None:
    from acmr_core.cli import main

    port = refused_port
    code = main(
        [
            "bootstrap",
            "cub",
            "--data-dir",
            str(tmp_path / "data"),
            "--weights",
            "random",
            "--cub-url",
            f"http://127.0.0.1:{port}/CUB_200_2011.tgz",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and sleeps == []  # refused at once: no retry with back-off
    assert len(err.splitlines()) == 1 and "connection refused" in err and "--cub-url" in err


def test_default_urls_are_unreachable_here_and_say_how_to_use_a_mirror(tmp_path: Path) -> None:
    # The loopback-only guard stands in for "offline": the default host cannot be resolved.
    from acmr_core.pipelines.bootstrap import bootstrap

    with pytest.raises(DownloadError) as error:
        bootstrap(
            BootstrapOptions(dataset="awa2", data_dir=tmp_path, weights="random", progress=False, timeout=2)
        )
    message = str(error.value)
    assert "cvml.ista.ac.at" in message and "--awa2-url" in message and "ACMR_AWA2_URL" in message


# ------------------------------------------------------------------------------------------------------------
# The whole pipeline


@pytest.mark.slow
def test_full_bootstrap_cub_with_random_weights_serves_in_the_app(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from acmr_core.bundle.format import list_bundles, load_bundle
    from acmr_core.cli import main
    from acmr_core.serving.service import StudioService

    served = serve_tiny(server, "cub", images_per_class=3)
    server.plan("cub/CUB_200_2011.tgz", "cut")  # the first transfer breaks off half-way
    data_dir, checkpoints = tmp_path / "data", tmp_path / "checkpoints"
    argv = [
        "bootstrap", "cub", "--weights", "random", "--epochs", "1", "--device", "cpu", "--workers", "0",
        "--batch-size", "12", "--data-dir", str(data_dir), "--checkpoints", str(checkpoints), "--no-progress",
        "--cub-url", served.urls["cub"], "--xlsa17-url", served.urls["xlsa17"],
    ]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "H " in summary and "cub-random" in summary and "res101.mat image_files" in summary

    # The interrupted download was resumed with a Range request.
    first, second = server.requests_for("cub/CUB_200_2011.tgz")
    assert first.behaviour == "cut" and second.headers.get("Range", "").startswith("bytes=")

    bundle_dir = checkpoints / "cub-random"
    assert list_bundles(checkpoints) == [bundle_dir]
    bundle = load_bundle(bundle_dir, device="cpu")
    tiny = served.tiny
    assert bundle.catalog.num_classes == len(tiny.class_names)
    assert bundle.catalog.names[0] == "Laysan Albatross"  # xlsa17 column 0, readable name
    assert [bundle.catalog.names[i] for i in bundle.catalog.unseen_classes] == [
        name.split(".", 1)[1].replace("_", " ") for name in tiny.unseen
    ]
    assert list(bundle.catalog.attribute_names) == tiny.attribute_names
    provenance = bundle.provenance
    assert provenance["split_origin"] == ORIGIN_RES101 and provenance["dataset"] == "CUB"
    assert provenance["sources"]["cub"]["url"] == served.urls["cub"]
    assert provenance["backbone"] == {"weights": "random", "model_name": "resnet101", "seed": 0}
    assert bundle.identity.weight_source == "random(seed=0)"
    metrics = json.loads((data_dir / "work" / "cub-random" / "train" / "metrics.json").read_text())
    assert {"U", "S", "H", "zsl_top1"} <= metrics.keys() and metrics["selection"] == "validation"
    assert provenance["metrics"]["H"] == pytest.approx(metrics["H"])

    # The app opens it with the backbone it names and predicts over seen and unseen classes.
    service = StudioService.open(bundle_dir, device="cpu", user_classes_dir=tmp_path / "uc", warm=False)
    image = data_dir / "sources" / "cub" / "CUB_200_2011" / "images" / tiny.image_files[0]
    prediction = service.predict(image)
    assert {ranked.name for ranked in prediction.ranked} <= set(bundle.catalog.names)
    probabilities = [ranked.probability for ranked in prediction.ranked]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6

    # A rerun downloads nothing, redoes nothing and leaves the bundle untouched.
    requests_before = len(server.requests)
    manifest_mtime = (bundle_dir / "manifest.json").stat().st_mtime_ns
    features_mtime = (data_dir / "work" / "cub-random" / "features.safetensors").stat().st_mtime_ns
    assert main(argv) == 0
    assert len(server.requests) == requests_before
    assert (bundle_dir / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert (data_dir / "work" / "cub-random" / "features.safetensors").stat().st_mtime_ns == features_mtime
    state = json.loads((data_dir / "work" / "cub-random" / "state" / "bundle.json").read_text())
    assert Path(state["outputs"]["bundle"]) == bundle_dir


def test_unavailable_weights_fail_before_any_download(
    server: LoopbackServer, tmp_path: Path, sleeps: list[float]
) -> None:
    # HF_HUB_OFFLINE=1 with an empty cache (tests/conftest.py): the default timm weights cannot be had.
    from acmr_core.errors import ACMRError
    from acmr_core.pipelines.bootstrap import bootstrap

    served = serve_tiny(server, "cub")
    with pytest.raises(ACMRError) as error:
        bootstrap(options_for(served, tmp_path, weights="tv_in1k"))
    assert sleeps == [] and "\n" not in str(error.value)  # no retry with back-off
    assert "random" in str(error.value)  # the message says how else to supply weights
    assert server.requests == []  # not one byte of the dataset was downloaded


# ------------------------------------------------------------------------------------------------------------
# Feature extraction in shards (a tiny stand-in backbone keeps these fast; the full test uses ResNet-101)


class _CountingModel:
    """Mean colour of a 16×16 image, repeated: a deterministic 8-d 'feature' that counts its forward calls."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, batch):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during extraction
        means = batch.mean(dim=(2, 3))
        return means.repeat(1, 3)[:, :8] if means.shape[1] >= 3 else means


def _tiny_backbone(model: _CountingModel):
    import torch

    from acmr_core.features.backbone import Backbone, BackboneIdentity

    identity = BackboneIdentity("tiny", "test", "0" * 64, {"size": 16}, feature_dim=8)

    def transform(image):
        return torch.from_numpy(np.asarray(image.resize((16, 16)), dtype=np.float32).copy()).permute(2, 0, 1)

    return Backbone(model, identity, transform, torch.device("cpu"), batch_size=4)  # type: ignore[arg-type]


def _interrupted_extraction(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Any, Any, Path, Path]:
    """A tiny extraction (32 images, 4 shards of 2 batches) stopped by Ctrl-C in its 3rd shard: (plan, class
    metadata, options, work folder, shard folder)."""
    import acmr_core.pipelines.bootstrap_steps as bootstrap_module

    served = serve_tiny(server, "sun")
    plan, meta, _ = plan_for(served, tmp_path)
    monkeypatch.setattr(bootstrap_module, "SHARD_IMAGES", 8)
    options = options_for(served, tmp_path, batch_size=4)
    work = tmp_path / "work"
    interrupted = _CountingModel(fail_on_call=5)  # dies in the 3rd shard
    monkeypatch.setattr(bootstrap_module, "chosen_backbone", lambda _: _tiny_backbone(interrupted))
    with pytest.raises(KeyboardInterrupt):
        bootstrap_module.extract_features(plan, meta.class_names, options, work, "a" * 64)
    return plan, meta, options, work, work / ("features.shards-" + "a" * 16)


def test_extraction_resumes_at_the_first_unfinished_shard(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import acmr_core.pipelines.bootstrap_steps as bootstrap_module
    from acmr_core.features.extract import load_features

    plan, meta, options, work, shard_dir = _interrupted_extraction(server, tmp_path, monkeypatch)
    assert sorted(p.name for p in shard_dir.glob("*.safetensors")) == [
        "00000.safetensors",
        "00001.safetensors",
    ]

    resumed = _CountingModel()
    monkeypatch.setattr(bootstrap_module, "chosen_backbone", lambda _: _tiny_backbone(resumed))
    outputs = bootstrap_module.extract_features(plan, meta.class_names, options, work, "a" * 64)
    assert resumed.calls == 4  # only the last two shards ran
    assert not shard_dir.exists()
    features = load_features(Path(outputs["file"]))
    assert features.image_paths == plan.relative_paths and outputs["dropped"] == []
    np.testing.assert_array_equal(features.labels, plan.labels)

    fresh = _CountingModel()
    monkeypatch.setattr(bootstrap_module, "chosen_backbone", lambda _: _tiny_backbone(fresh))
    reference = bootstrap_module.extract_features(plan, meta.class_names, options, tmp_path / "w2", "b" * 64)
    np.testing.assert_allclose(load_features(Path(reference["file"])).features, features.features)


def test_a_damaged_feature_shard_is_extracted_again(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import acmr_core.pipelines.bootstrap_steps as bootstrap_module
    from acmr_core.features.extract import load_features

    plan, meta, options, work, shard_dir = _interrupted_extraction(server, tmp_path, monkeypatch)
    shard = shard_dir / "00001.safetensors"  # the second of the two shards completed before Ctrl-C
    shard.write_bytes(shard.read_bytes()[:100])  # damaged on disk (a full disk, a crash while copying)

    resumed = _CountingModel()
    monkeypatch.setattr(bootstrap_module, "chosen_backbone", lambda _: _tiny_backbone(resumed))
    with caplog.at_level("WARNING", logger="acmr_core.features.sharding"):
        outputs = bootstrap_module.extract_features(plan, meta.class_names, options, work, "a" * 64)
    assert f"{shard} is not a readable features shard" in caplog.text
    assert "its images are extracted again" in caplog.text
    assert resumed.calls == 6  # the damaged 2nd shard again (2 batches), then the last two shards (4)
    features = load_features(Path(outputs["file"]))
    fresh = _CountingModel()
    monkeypatch.setattr(bootstrap_module, "chosen_backbone", lambda _: _tiny_backbone(fresh))
    reference = bootstrap_module.extract_features(plan, meta.class_names, options, tmp_path / "w2", "b" * 64)
    np.testing.assert_array_equal(load_features(Path(reference["file"])).features, features.features)


def test_an_unreadable_image_is_dropped_and_recorded(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import acmr_core.pipelines.bootstrap_steps as bootstrap_module
    from acmr_core.features.extract import load_features

    served = serve_tiny(server, "awa2")
    plan, meta, _ = plan_for(served, tmp_path)
    broken = plan.test_unseen[0]
    plan.paths[broken].write_bytes(b"\xff\xd8\xff truncated jpeg")
    monkeypatch.setattr(bootstrap_module, "chosen_backbone", lambda _: _tiny_backbone(_CountingModel()))
    outputs = bootstrap_module.extract_features(
        plan, meta.class_names, options_for(served, tmp_path), tmp_path, "c" * 64
    )
    assert outputs["dropped"] == [int(broken)] and outputs["n_features"] == len(plan.paths) - 1
    saved = load_features(Path(outputs["file"]))
    assert [entry["path"] for entry in saved.skipped] == [plan.relative_paths[broken]]
    assert plan.relative_paths[broken] not in saved.image_paths


def test_a_download_that_is_no_archive_is_deleted_and_explained(
    server: LoopbackServer, tmp_path: Path
) -> None:
    served = serve_tiny(server, "cub")
    served.urls["xlsa17"] = server.serve("cub/moved/xlsa17.zip", b"<html>This dataset has moved</html>")
    with pytest.raises(DownloadError, match=r"did not give a usable xlsa17\.zip.*--xlsa17-url") as error:
        plan_for(served, tmp_path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "data" / "downloads" / "xlsa17.zip").exists()  # a rerun downloads it again


def test_published_checksum_guards_the_default_url(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import hashlib

    served = serve_tiny(server, "cub")
    md5 = hashlib.md5(served.tiny.archives["cub"]).hexdigest()
    urls = {"xlsa17": served.urls["xlsa17"]}  # CUB from its "default" URL, pointed at the loopback server
    wrong = dataclasses.replace(SOURCES["cub"], url=served.urls["cub"], checksum="md5:" + "0" * 32)
    monkeypatch.setitem(SOURCES, "cub", wrong)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        source_roots(get_dataset("cub"), options_for(served, tmp_path, urls=urls))
    right = dataclasses.replace(wrong, checksum=f"md5:{md5}")
    monkeypatch.setitem(SOURCES, "cub", right)
    _, _, identities = source_roots(get_dataset("cub"), options_for(served, tmp_path, urls=urls))
    assert identities["cub"]["sha256"] == hashlib.sha256(served.tiny.archives["cub"]).hexdigest()


def test_bad_arguments_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from acmr_core.cli import main

    for extra, expected in ((["--device", "tpu"], "unknown device"), (["--epochs", "0"], "--epochs")):
        try:
            code = main(["bootstrap", "cub", "--data-dir", str(tmp_path), "--weights", "random", *extra])
        except SystemExit as refused:  # --device is refused by the parser itself (the same one line, exit 2)
            code = refused.code
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "downloads").exists()


def test_xlsa17_metadata_is_found_in_any_usual_folder_but_never_another_datasets(
    tmp_path: Path, xlsa17_dir: Path
) -> None:
    import shutil

    from acmr_core.data.layouts import _xlsa17_dataset_folder

    data = tmp_path / "xlsa17" / "data"
    for name in ("CUB", "AWA1"):  # the real metadata (no res101.mat), in the xlsa17.zip layout
        shutil.copytree(xlsa17_dir / name, data / name)
    assert _xlsa17_dataset_folder(tmp_path, "CUB") == data / "CUB"  # the xlsa17.zip layout
    assert _xlsa17_dataset_folder(data, "CUB") == data / "CUB"  # pointed at xlsa17/data
    assert _xlsa17_dataset_folder(data / "CUB", "CUB") == data / "CUB"  # pointed at the dataset folder
    assert _xlsa17_dataset_folder(tmp_path, "SUN") is None  # not AWA1's file
    meta = load_xlsa17_meta(data, get_dataset("cub"), "local")
    assert meta.class_names[0] == "002.Laysan_Albatross" and meta.res101 is None
    with pytest.raises(DataError, match=r"xlsa17/data/SUN/att_splits\.mat"):
        load_xlsa17_meta(tmp_path, get_dataset("sun"), "local")


def test_rebuilt_split_on_the_real_cub_class_lists(tmp_path: Path, xlsa17_dir: Path) -> None:
    """The real xlsa17 CUB metadata (no res101.mat) over a CUB_200_2011-layout tree of tiny images."""
    import shutil

    from PIL import Image

    from acmr_core.data.layouts import DatasetLayout
    from acmr_core.data.xlsa17 import load_xlsa17

    shutil.copytree(xlsa17_dir / "CUB", tmp_path / "xlsa17" / "data" / "CUB")
    meta = load_xlsa17_meta(tmp_path / "xlsa17", get_dataset("cub"), "local")
    images = tmp_path / "CUB_200_2011" / "images"
    relative = []
    for name in sorted(meta.class_names):  # CUB class-id order: 001.Black_footed_Albatross first
        (images / name).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (4, 4), (k, 0, 0)).save(images / name / f"{k}.jpg")
            relative.append(f"{name}/{k}.jpg")
    layout = DatasetLayout(images, xlsa17_dir / "CUB" / "attributes.txt", relative)
    plan = plan_images(get_dataset("cub"), layout, meta)
    assert plan.origin == ORIGIN_REBUILT and len(plan.relative_paths) == 600
    names = [meta.class_names[label] for label in plan.labels]
    assert len({names[i] for i in plan.test_unseen}) == 50 and len({names[i] for i in plan.trainval}) == 150
    assert plan.test_unseen.size == 150 and plan.test_seen.size == 150  # 1 of 3 images of each seen class
    # CUB class 001 is not xlsa17 column 0 (allclasses.txt starts with 002.Laysan_Albatross).
    albatross = meta.class_names.index("001.Black_footed_Albatross")
    assert albatross != 0 and meta.class_names[0] == "002.Laysan_Albatross"
    assert plan.relative_paths[0].startswith("001.Black_footed_Albatross/") and plan.labels[0] == albatross

    features = np.zeros((600, 2048), dtype=np.float32)
    write_xlsa17_folder(tmp_path / "ds" / "CUB", plan, features, meta, layout)
    data = load_xlsa17(tmp_path / "ds", "CUB")
    assert data.attributes.shape == (200, 312) and len(data.attribute_names) == 312
    assert data.val_split_source == "class-files"
    assert np.unique(data.labels[data.train]).size == 100 and np.unique(data.labels[data.val]).size == 50
