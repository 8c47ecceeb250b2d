"""Model bundles: save/load round trip, validation of every part, class metadata, classifier re-fit."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from acmr_core.bundle.catalog import ClassCatalog, attribute_group, load_class_metadata
from acmr_core.bundle.format import FORMAT_VERSION, MANIFEST, PARTS, list_bundles, load_bundle, save_bundle
from acmr_core.data.classes import attribute_name, split_attribute_name
from acmr_core.data.demo_world import DEFAULT_RESIDUAL_SCALE, default_world
from acmr_core.errors import BundleError, DataError
from acmr_core.features.backbone import BackboneIdentity
from acmr_core.pipelines.build import LabelledFeatures, build_bundle

IDENTITY = BackboneIdentity(
    model_name="resnet101",
    weight_source="random(seed=0)",
    weights_sha256="0" * 64,
    transform={"input_size": [3, 224, 224], "crop_pct": 0.875},
    feature_dim=2048,
)


def _tiny_catalog(seen_classes: int = 4, unseen_classes: int = 2) -> ClassCatalog:
    world = default_world()
    seen = [n for n, s in zip(world.class_names, world.seen_mask, strict=True) if s][:seen_classes]
    unseen = [n for n, s in zip(world.class_names, world.seen_mask, strict=True) if not s][:unseen_classes]
    return ClassCatalog.from_demo_world(world.subset(seen + unseen))


def _features(catalog: ClassCatalog, labels: np.ndarray, seed: int, dim: int = 2048) -> np.ndarray:
    """Features that carry the class attributes linearly (plus noise), like a backbone would."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(123).normal(size=(catalog.attribute_matrix.shape[1], dim))
    signal = catalog.attribute_matrix[labels] @ mixing
    return np.maximum(signal + rng.normal(scale=0.5, size=signal.shape), 0).astype(np.float32)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    catalog = _tiny_catalog()
    train_labels = np.repeat(catalog.seen_classes, 6)
    plot_labels = np.repeat(np.arange(catalog.num_classes), 2)
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    build_bundle(
        LabelledFeatures(_features(catalog, train_labels, 0), train_labels),
        catalog,
        out,
        identity=IDENTITY,
        plot_features=LabelledFeatures(
            _features(catalog, plot_labels, 1),
            plot_labels,
            tuple(f"img-{i}" for i in range(plot_labels.size)),
        ),
        epochs=2,
        device="cpu",
        projection="pca",  # UMAP's numba compilation is covered once, by the end-to-end test
        progress=False,
        provenance={"backbone": {"weights": "random", "model_name": "resnet101", "seed": 0}},
    )
    return out


@pytest.fixture()
def copy(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(built, target)
    return target


def rehash_manifest(directory: Path) -> None:
    """Make the manifest agree with edited parts (simulates a consistent but wrong bundle)."""
    manifest = json.loads((directory / MANIFEST).read_text())
    for part in {*PARTS, *manifest["files"]}:  # the optional parts the manifest lists, too
        data = (directory / part).read_bytes()
        manifest["files"][part] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (directory / MANIFEST).write_text(json.dumps(manifest))


def _one_line_error(directory: Path, match: str) -> BundleError:
    with pytest.raises(BundleError, match=match) as caught:
        load_bundle(directory, device="cpu")
    assert "\n" not in str(caught.value)
    return caught.value


# --------------------------------------------------------------------------------------------- round trip


def test_round_trip_gives_identical_predictions(built: Path) -> None:
    first, second = load_bundle(built, device="cpu"), load_bundle(built, device="cpu")
    catalog = first.catalog
    features = _features(catalog, np.arange(catalog.num_classes), 7)
    assert np.array_equal(first.scores(features), second.scores(features))
    assert first.catalog.names == _tiny_catalog().names
    assert np.array_equal(first.catalog.attribute_matrix, _tiny_catalog().attribute_matrix)
    assert first.identity == IDENTITY
    probabilities = first.probabilities(features)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    top = first.top_k(features, k=3)
    assert all(len(row) == 3 and row[0][1] >= row[1][1] >= row[2][1] for row in top)


def test_saving_a_loaded_bundle_reproduces_it(built: Path, tmp_path: Path) -> None:
    bundle = load_bundle(built, device="cpu")
    again = save_bundle(bundle, tmp_path / "again")
    reloaded = load_bundle(again, device="cpu")
    features = _features(bundle.catalog, np.arange(bundle.catalog.num_classes), 3)
    assert np.array_equal(bundle.scores(features), reloaded.scores(features))
    assert reloaded.gamma == bundle.gamma


def test_bundle_is_json_and_safetensors_only_with_checksums(built: Path) -> None:
    manifest = json.loads((built / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert set(manifest["files"]) == set(PARTS)
    for part, entry in manifest["files"].items():
        assert part.endswith((".json", ".safetensors"))
        assert hashlib.sha256((built / part).read_bytes()).hexdigest() == entry["sha256"]
    assert sorted(p.name for p in built.iterdir()) == sorted([*PARTS, MANIFEST])


def test_latent_cache_places_new_points_and_scores_alignment(built: Path) -> None:
    bundle = load_bundle(built, device="cpu")
    cache = bundle.latent
    assert cache.visual.shape[0] == cache.visual_xy.shape[0] == len(cache.image_ids)
    assert cache.semantic.shape == (bundle.catalog.num_classes, bundle.trained.arch.latent_dim)
    # A plotted image placed again lands where the map put it (it is one of the reference points).
    assert np.allclose(bundle.place(cache.visual[:3]), cache.visual_xy[:3], atol=1e-5)
    new = bundle.place(bundle.semantic_latents(bundle.catalog.attribute_matrix[:1] * 0.5))
    assert new.shape == (1, 2) and np.all(np.isfinite(new))
    scores = bundle.alignment()
    assert [s.class_index for s in scores] == list(range(bundle.catalog.num_classes))


def test_refit_classifier_adds_a_class(built: Path) -> None:
    bundle = load_bundle(built, device="cpu")
    catalog = bundle.catalog
    extra = np.vstack([catalog.attribute_matrix, catalog.attribute_matrix[-1:]])
    classifier = bundle.refit_classifier(extra, np.append(catalog.seen_mask, False))
    assert classifier.num_classes == catalog.num_classes + 1
    with pytest.raises(BundleError, match="seen classes"):
        bundle.refit_classifier(extra, np.ones(extra.shape[0], dtype=bool))


def test_list_bundles_finds_folders_with_a_manifest(built: Path, tmp_path: Path) -> None:
    shutil.copytree(built, tmp_path / "b-one")
    (tmp_path / "not-a-bundle").mkdir()
    assert list_bundles(tmp_path) == [tmp_path / "b-one"]
    assert list_bundles(tmp_path / "missing") == []


def test_save_refuses_to_overwrite_a_folder_that_is_not_a_bundle(built: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a bundle"):
        save_bundle(load_bundle(built, device="cpu"), precious)
    assert (precious / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------------------------- validation


def test_missing_part_is_refused(copy: Path) -> None:
    (copy / "model.safetensors").unlink()
    _one_line_error(copy, "missing model.safetensors")


def test_corrupted_part_is_refused_by_its_checksum(copy: Path) -> None:
    path = copy / "classifier.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(data))
    _one_line_error(copy, "classifier.safetensors is corrupt \\(SHA-256 mismatch\\)")


def test_truncated_safetensors_is_refused(copy: Path) -> None:
    path = copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    _one_line_error(copy, "model.safetensors is truncated")


def test_truncated_safetensors_with_a_matching_manifest_is_still_refused(copy: Path) -> None:
    path = copy / "latent.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    rehash_manifest(copy)
    _one_line_error(copy, "latent.safetensors is not a valid safetensors file")


def test_wrong_format_version_is_refused(copy: Path) -> None:
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (copy / MANIFEST).write_text(json.dumps(manifest))
    _one_line_error(copy, f"format version {FORMAT_VERSION + 1}")


def test_corrupt_manifest_and_missing_folder_are_refused(copy: Path, tmp_path: Path) -> None:
    _one_line_error(tmp_path / "nowhere", "not a folder")
    (copy / MANIFEST).write_text("{ not json")
    _one_line_error(copy, "manifest.json is corrupt")
    (copy / MANIFEST).unlink()
    _one_line_error(copy, "has no manifest.json")


def test_inconsistent_parts_are_refused(copy: Path) -> None:
    catalog = json.loads((copy / "catalog.json").read_text())
    n_attributes = len(catalog["attributes"])
    catalog["attributes"] = catalog["attributes"][:-1]
    for entry in catalog["classes"]:
        entry["attributes"] = entry["attributes"][:-1]
    (copy / "catalog.json").write_text(json.dumps(catalog))
    rehash_manifest(copy)
    expected = f"inconsistent: model expects {n_attributes} attributes, catalog has {n_attributes - 1}"
    _one_line_error(copy, expected)


def _set(path: tuple, value: object) -> Callable[[dict], None]:
    def edit(document: dict) -> None:
        *parents, last = path
        for key in parents:
            document = document[key]
        document[last] = value

    return edit


def _first_class_renamed_like_the_second(catalog: dict) -> None:
    catalog["classes"][0]["name"] = catalog["classes"][1]["name"]


def _every_class_seen(catalog: dict) -> None:
    for entry in catalog["classes"]:
        entry["seen"] = True


@pytest.mark.parametrize(
    ("part", "edit", "message"),
    [
        ("catalog.json", _set(("classes", 0, "seen"), "yes"), "needs 'seen': true or false"),
        ("catalog.json", _set(("classes", 0, "attributes", 0), "high"), "non-numeric attribute value"),
        ("catalog.json", _set(("classes", 0, "attributes", 0), float("nan")), "NaN or infinite"),
        ("catalog.json", _first_class_renamed_like_the_second, "duplicate class name"),
        ("catalog.json", _every_class_seen, "at least one seen and one unseen class"),
        ("catalog.json", _set(("classes",), {"a": 1}), "needs an 'attributes' list and a 'classes' list"),
        ("classifier.json", _set(("gamma",), "x"), "lacks a numeric 'gamma'"),
        ("classifier.json", _set(("gamma",), float("nan")), "lacks a numeric 'gamma'"),
        ("latent.json", _set(("image_ids",), ["one"]), "lists 1 image ids for"),
        ("backbone.json", _set(("feature_dim",), 512), "expects .*-d features, backbone gives 512"),
        ("model.json", _set(("arch", "latent_dim"), -1), "latent_dim must be positive"),
        ("model.json", _set(("train",), "x"), "training config must be a JSON object"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " not in value else None,
)
def test_valid_json_with_matching_hashes_but_invalid_content_is_refused(
    copy: Path, part: str, edit: Callable[[dict], None], message: str
) -> None:
    document = json.loads((copy / part).read_text())
    edit(document)
    (copy / part).write_text(json.dumps(document))  # NaN is written as JSON's NaN, which json.loads accepts
    rehash_manifest(copy)
    _one_line_error(copy, message)


def test_weights_that_do_not_fit_the_config_are_refused(copy: Path) -> None:
    model = json.loads((copy / "model.json").read_text())
    model["arch"]["latent_dim"] = 32
    (copy / "model.json").write_text(json.dumps(model))
    rehash_manifest(copy)
    _one_line_error(copy, "model.safetensors does not fit its config")


def test_backbone_identity_mismatch_is_refused_in_one_line(built: Path) -> None:
    bundle = load_bundle(built, device="cpu")
    other = BackboneIdentity(
        model_name="resnet101", weight_source="random(seed=1)", weights_sha256="1" * 64,
        transform=dict(IDENTITY.transform), feature_dim=2048,
    )  # fmt: skip
    bundle.check_backbone(IDENTITY)  # the right one passes
    with pytest.raises(BundleError, match="backbone mismatch") as caught:
        bundle.check_backbone(other)
    assert "\n" not in str(caught.value)


def test_features_of_the_wrong_size_are_refused(built: Path) -> None:
    bundle = load_bundle(built, device="cpu")
    with pytest.raises(BundleError, match="expects \\(N, 2048\\)"):
        bundle.scores(np.zeros((1, 512), dtype=np.float32))


# --------------------------------------------------------------------------------------------- class metadata


def _metadata() -> dict:
    return {
        "attributes": ["colour: red", "colour: blue", {"name": "size: large", "group": "size"}],
        "classes": [
            {"name": "red thing", "seen": True, "attributes": [1, 0, 0]},
            {"name": "blue thing", "seen": True, "attributes": {"colour: blue": 1}},
            {"name": "big red thing", "seen": False, "attributes": {"colour: red": 1, "size: large": 1}},
        ],
    }


def test_class_metadata_accepts_lists_and_objects(tmp_path: Path) -> None:
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(_metadata()))
    catalog = load_class_metadata(path)
    assert catalog.names == ("red thing", "blue thing", "big red thing")
    assert catalog.attribute_matrix.tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert catalog.seen_mask.tolist() == [True, True, False]
    assert catalog.attribute_groups() == {"colour": ["colour: red", "colour: blue"], "size": ["size: large"]}
    assert ClassCatalog.from_dict(catalog.to_dict()).names == catalog.names


def test_the_demo_world_produces_the_catalog_of_its_classes() -> None:
    world = default_world()
    catalog = ClassCatalog.from_demo_world(world)
    assert catalog.names == world.names and catalog.descriptions == world.descriptions
    assert catalog.attribute_names == tuple(world.attribute_names)
    assert np.array_equal(catalog.attribute_matrix, world.attribute_matrix())
    # Seen / unseen indices, kinds and attribute groups are computed once, for the world and its catalog.
    seen = [i for i, c in enumerate(world.classes) if c.seen]
    assert catalog.seen_classes.tolist() == world.seen_classes.tolist() == seen and len(seen) == 42
    unseen = sorted(set(range(48)) - set(seen))
    assert catalog.unseen_classes.tolist() == world.unseen_classes.tolist() == unseen
    assert catalog.kinds == world.kinds == tuple("seen" if c.seen else "unseen" for c in world.classes)
    assert catalog.attribute_groups() == world.attribute_groups()
    assert list(catalog.attribute_groups()) == list(world.groups)


@pytest.mark.parametrize(
    "name, group, value",
    [("colour: red", "colour", "red"), ("has_bill::hooked", "has_bill", "hooked"), ("furry", "", "furry")],
)
def test_one_attribute_name_rule_builds_and_parses_grouped_names(name: str, group: str, value: str) -> None:
    assert split_attribute_name(name) == (group, value) and attribute_group(name) == group
    if group and ": " in name:
        assert attribute_name(group, value) == name


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m: m["classes"][1]["attributes"].update({"colour: green": 1}),
            "unknown attribute 'colour: green'",
        ),
        (lambda m: m["classes"][0].pop("seen"), "needs 'seen'"),
        (lambda m: m["classes"][0].update(attributes=[1, 0]), "2 attribute values for 3 names"),
        (lambda m: m["classes"][0].update(attributes=[1, "x", 0]), "non-numeric"),
        (lambda m: m["classes"][0].update(attributes=[float("nan"), 0, 0]), "NaN"),
        (lambda m: m["classes"][1].update(name="Red Thing"), "duplicate class name"),
        (lambda m: m["classes"][2].update(seen=True), "at least one seen and one unseen"),
        (lambda m: m.pop("classes"), "'classes' list"),
    ],
)
def test_bad_class_metadata_is_refused_in_one_line(tmp_path: Path, edit, message: str) -> None:
    data = _metadata()
    edit(data)
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=message) as caught:
        load_class_metadata(path)
    assert "\n" not in str(caught.value)


def test_unreadable_class_metadata_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_class_metadata(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(DataError, match="must be a JSON file"):
        load_class_metadata(tmp_path / "bad.json")


# --------------------------------------------------------------------------------------------- shipped bundle


def test_shipped_demo_bundle_loads_and_recognises_unseen_classes() -> None:
    import torch

    from acmr_core.model.gzsl import predict_scores

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "demo-world"
    bundle = load_bundle(shipped, device="cpu")
    world = default_world()
    assert bundle.catalog.names == tuple(world.class_names)
    assert np.array_equal(bundle.catalog.attribute_matrix, world.attribute_matrix())
    assert np.array_equal(bundle.catalog.seen_mask, world.seen_mask)
    assert bundle.catalog.to_dict() == ClassCatalog.from_demo_world(world).to_dict()  # descriptions too
    scale = DEFAULT_RESIDUAL_SCALE
    # Issue 23: the seeded scaled weights plus the learnt part the bundle carries.
    assert bundle.backbone_spec == {"weights": "backbone.safetensors", "model_name": "resnet101"}
    assert bundle.identity.weight_source.startswith(f"random(seed=0, residual_scale={scale:g})+learnt:")
    assert "shape" in bundle.caveat
    # The plotted images are gallery renders (seed 1), never used in training: classify their stored latents.
    cache = bundle.latent
    with torch.no_grad():
        logits = bundle.classifier(torch.from_numpy(cache.visual))
        seen_mask = torch.from_numpy(bundle.catalog.seen_mask.astype(np.float32))
        predicted = predict_scores(logits, seen_mask, bundle.gamma).argmax(1).numpy()
    unseen_images = ~bundle.catalog.seen_mask[cache.visual_labels]
    unseen_accuracy = float(np.mean(predicted[unseen_images] == cache.visual_labels[unseen_images]))
    assert unseen_accuracy > 3 / bundle.catalog.num_classes  # far above chance (1/24); measured ≈ 0.6
