"""The app's service layer on the shipped demo bundle, and the latent-space figure builder on plain arrays."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from acmr_core.data import demo_world
from acmr_core.errors import ACMRError, ImageError, UserClassError
from acmr_core.viz.map_layout import layout_map
from acmr_core.viz.plots import LatentScene, QueryPoint, latent_figure
from app.tables import (
    alignment_frame,
    apply_toggles,
    attribute_frame,
    describe_markdown,
    frame_to_attributes,
    sees_frame,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
HTML_NAME = '<img src=x onerror="alert(1)">'


# ---- figure builder (no model) ----------------------------------------------------------------------------


def _scene() -> LatentScene:
    rng = np.random.default_rng(0)
    return LatentScene(
        class_names=["zebra", "okapi", HTML_NAME],
        class_kinds=["seen", "unseen", "user"],
        class_xy=rng.normal(size=(3, 2)),
        image_xy=rng.normal(size=(6, 2)),
        image_class=np.array([0, 0, 0, 1, 1, 1]),
        image_ids=[f"img{i}" for i in range(6)],
    )


def _trace_names(figure) -> list[str]:
    return [trace.name for trace in figure.data]


def test_figure_has_images_prototypes_and_user_classes() -> None:
    figure = latent_figure(_scene())
    assert _trace_names(figure) == [
        "seen class images",
        "unseen class images",
        "seen class prototypes",
        "unseen class prototypes",
        "your classes",
    ]
    seen_images = figure.data[0]
    assert len(seen_images.x) == 3
    assert list(seen_images.customdata[:, 1]) == ["img0", "img1", "img2"]
    assert seen_images.marker.symbol != figure.data[2].marker.symbol  # images and prototypes differ


def test_names_are_html_escaped_everywhere_in_the_figure() -> None:
    figure = latent_figure(_scene(), query=QueryPoint((0.0, 0.0), HTML_NAME))
    serialised = figure.to_json()
    assert "<img" not in serialised
    assert '&lt;img src=x onerror=\\"alert(1)\\"&gt;' in serialised  # JSON-escaped quotes


def test_filters_by_class_and_kind() -> None:
    only_okapi = latent_figure(_scene(), classes=["okapi"])
    assert _trace_names(only_okapi) == ["unseen class images", "unseen class prototypes"]
    no_user = latent_figure(_scene(), kinds=["seen", "unseen"])
    assert "your classes" not in _trace_names(no_user)
    nothing = latent_figure(_scene(), classes=["okapi"], kinds=["seen"])
    assert len(nothing.data) == 0


def test_query_point_is_highlighted_and_joined_to_the_class_it_was_given() -> None:
    scene = _scene()
    figure = latent_figure(scene, query=QueryPoint((1.5, -2.0), "zebra"))
    [query] = [trace for trace in figure.data if trace.name == "your image"]
    # Drawn where the map's layout puts that point of the original map (it moves with its nearest class).
    layout = layout_map(scene.class_xy, scene.image_xy, scene.image_class)
    assert (query.x[0], query.y[0]) == pytest.approx(layout.place((1.5, -2.0)))
    [given] = [shape for shape in figure.layout.shapes if shape.line.dash == "dot"]
    assert (given.x1, given.y1) == pytest.approx(tuple(layout.class_xy[0]))  # zebra's description
    assert "given: zebra" in [note.text for note in figure.layout.annotations]


def test_scene_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="one entry per class"):
        LatentScene(["a"], ["seen", "seen"], np.zeros((1, 2)), np.zeros((0, 2)), np.zeros(0, int), [])
    with pytest.raises(ValueError, match="unknown class kinds"):
        LatentScene(["a"], ["novel"], np.zeros((1, 2)), np.zeros((0, 2)), np.zeros(0, int), [])


# ---- the service on the demo bundle (ACMR_TEST_BUNDLE, ACMR_TEST_EXAMPLES override it) -------------------

DEMO_BUNDLE = Path(os.environ.get("ACMR_TEST_BUNDLE", REPO_ROOT / "checkpoints" / "demo-world"))
EXAMPLES_DIR = Path(os.environ.get("ACMR_TEST_EXAMPLES", REPO_ROOT / "assets" / "examples"))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """The bundle and its backbone, loaded once for the module (services are cheap to build around them)."""
    from acmr_core.bundle.format import load_bundle

    if not (DEMO_BUNDLE / "manifest.json").is_file():
        raise AssertionError(
            f"the shipped demo bundle is missing at {DEMO_BUNDLE}; rebuild it: acmr build-demo"
        )
    bundle = load_bundle(DEMO_BUNDLE, device="cpu")
    return bundle, bundle.create_backbone(device="cpu")


def make_service(loaded, folder: Path):
    from acmr_core.serving.service import StudioService
    from acmr_core.serving.user_classes import open_store

    bundle, backbone = loaded
    store = open_store(folder, DEMO_BUNDLE.name, bundle.catalog.attribute_names)
    return StudioService(bundle, backbone, store, DEMO_BUNDLE.name)


@pytest.fixture
def service(loaded, tmp_path: Path):
    made = make_service(loaded, tmp_path / "user_classes")
    yield made
    made.store.close()


@pytest.fixture(scope="module")
def example_features(loaded) -> dict[str, np.ndarray]:
    """Backbone features of one example image per class (the forward pass is the slow part: do it once)."""
    from acmr_core.data.images import load_image

    _, backbone = loaded
    chosen: dict[str, Path] = {}
    for path in sorted(EXAMPLES_DIR.glob("*.png")):
        chosen.setdefault(path.name.split("__")[1] if "__" in path.name else path.stem, path)
    assert chosen, f"no example images in {EXAMPLES_DIR}"
    paths = list(chosen.values())[:4]
    features = backbone.features([load_image(path) for path in paths])
    return {path.name: row for path, row in zip(paths, features, strict=True)}


def test_predict_ranks_every_class_with_kinds_and_probabilities(service, example_features) -> None:
    features = next(iter(example_features.values()))
    n_classes = len(service.class_names())
    prediction = service.predict_features(features, top_k=n_classes)
    probabilities = [item.probability for item in prediction.ranked]
    assert len(prediction.ranked) == n_classes
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert {item.kind for item in prediction.ranked} == {"seen", "unseen"}
    assert set(prediction.decoded) == set(service.attribute_names)
    assert all(0.0 <= value <= 1.0 for value in prediction.decoded.values())
    assert 0.0 <= prediction.agreement <= 1.0
    assert np.all(np.isfinite(prediction.xy))
    groups = list(dict.fromkeys(name.split(": ")[0] for name in service.attribute_names))
    assert list(sees_frame(prediction)["group"]) == groups  # one row per attribute group
    assert service.predict_features(features, top_k=3).ranked == prediction.ranked[:3]  # deterministic


def test_predict_from_a_file_matches_predict_from_features(service, loaded, example_features) -> None:
    name, features = next(iter(example_features.items()))
    from_file = service.predict(EXAMPLES_DIR / name)
    from_features = service.predict_features(features).ranked
    # Same classes in the same order; the features were extracted in a batch, so the last bits may differ.
    assert [item.name for item in from_file.ranked] == [item.name for item in from_features]
    assert [item.probability for item in from_file.ranked] == pytest.approx(
        [item.probability for item in from_features], abs=1e-5
    )


def test_gamma_moves_predictions_between_seen_and_unseen(service, example_features) -> None:
    features = list(example_features.values())
    assert all(service.predict_features(f, gamma=50.0).ranked[0].kind == "unseen" for f in features)
    assert all(service.predict_features(f, gamma=-50.0).ranked[0].kind == "seen" for f in features)
    with pytest.raises(ACMRError, match="finite"):
        service.predict_features(features[0], gamma=float("nan"))


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_bad_images_raise_image_errors_and_the_service_keeps_working(service, tmp_path, payload) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(payload)
    with pytest.raises(ImageError):
        service.predict(path)
    assert service.predict(Image.new("RGB", (64, 64), (200, 30, 30))).ranked


def test_define_class_joins_predictions_plot_catalog_and_alignment(service, example_features) -> None:
    features = next(iter(example_features.values()))
    top = service.predict_features(features).ranked[0].name
    values = service.class_values(top)
    stored = service.define_class("Twin", values)
    # A copy of a drawable class: nothing had to be assumed, and the model cannot tell the two apart.
    warning = stored.pop("warning")
    assert stored == {"name": "Twin", "kind": "user", "attributes": pytest.approx(values), "assumed": {}}
    assert top in warning["confused_with"] and top in warning["message"]
    n_classes = len(service.class_names())
    ranked = service.predict_features(features, top_k=n_classes).ranked
    assert [item.kind for item in ranked if item.name == "Twin"] == ["user"]
    assert sum(item.probability for item in ranked) == pytest.approx(1.0, abs=1e-4)
    assert service.catalog()["classes"][-1]["name"] == "Twin"
    figure = service.latent_figure()
    # One set of classes for every visitor (the default): named "added", not "yours", and labelled on the map.
    [user_trace] = [trace for trace in figure.data if trace.name == "added classes"]
    assert list(user_trace.customdata) == ["Twin"]
    assert [note.text for note in figure.layout.annotations] == ["Twin"]
    alignment = alignment_frame(service)
    assert alignment.iloc[-1]["class"] == "Twin"
    assert alignment.iloc[-1]["own images nearest"] == "(no images)"


def test_user_classes_persist_across_restarts(loaded, tmp_path: Path) -> None:
    first = make_service(loaded, tmp_path)
    first.define_class("Stored", {first.attribute_names[0]: 1.0, first.attribute_names[-1]: 0.5})
    first.store.close()
    second = make_service(loaded, tmp_path)
    assert second.user_class_names() == ["Stored"]
    assert second.class_values("Stored")[second.attribute_names[-1]] == 0.5
    assert second.predict_features(np.zeros(2048, np.float32), top_k=100).ranked  # classifier covers it
    assert len(second.predict_features(np.zeros(2048, np.float32), top_k=100).ranked) == len(
        second.class_names()
    )
    second.store.close()


def test_names_are_unique_case_insensitively_including_the_models(service) -> None:
    attribute = {service.attribute_names[0]: 1.0}
    bundle_class = service.class_names()[0]
    with pytest.raises(UserClassError, match="is already a class of this model"):
        service.define_class(bundle_class.upper(), attribute)
    service.define_class("Mine", attribute)
    with pytest.raises(UserClassError, match="already exists"):
        service.define_class("mine", attribute)
    with pytest.raises(UserClassError, match="only yours can be deleted"):
        service.delete_class(bundle_class)
    assert service.user_class_names() == ["Mine"]


def test_rename_keeps_the_classifier_and_delete_removes_the_class(service, example_features) -> None:
    features = next(iter(example_features.values()))
    service.define_class("before", {service.attribute_names[1]: 1.0})
    classifier = service.class_space().classifier
    service.rename_class("before", "after")
    assert service.class_space().classifier is classifier  # a rename needs no re-fit
    names = [item.name for item in service.predict_features(features, top_k=100).ranked]
    assert "after" in names and "before" not in names
    assert service.store.get("after") is not None
    service.delete_class("after")
    assert "after" not in service.class_names()
    assert service.store.list() == []
    assert (
        service.class_space().classifier is service.bundle.classifier
    )  # back to the validated bundle classifier
    with pytest.raises(UserClassError, match="no class named"):
        service.delete_class("after")


def test_export_import_round_trip_and_a_bad_import_changes_nothing(loaded, service, tmp_path: Path) -> None:
    service.define_class("one", {service.attribute_names[0]: 1.0})
    service.define_class("two", {service.attribute_names[2]: 0.25})
    exported = service.export_classes()
    other = make_service(loaded, tmp_path / "other")
    assert other.import_classes(exported) == ["one", "two"]
    assert other.catalog()["classes"][-2:] == service.catalog()["classes"][-2:]
    with pytest.raises(UserClassError, match="class #1"):
        other.import_classes(exported)  # every class already exists: refused as a whole
    bad = json.loads(exported)
    bad["classes"][1]["attributes"][service.attribute_names[0]] = 7
    with pytest.raises(UserClassError, match="outside"):
        service.import_classes(json.dumps(bad).replace('"one"', '"three"').replace('"two"', '"four"'))
    assert service.user_class_names() == ["one", "two"]
    other.store.close()


def test_editor_table_round_trip_and_bad_cells(service) -> None:
    frame = attribute_frame(service, {service.attribute_names[0]: 0.5})
    assert list(frame.columns) == ["group", "attribute", "value"]
    assert frame_to_attributes(frame)[service.attribute_names[0]] == 0.5
    bad = frame.copy()
    first, second, third = service.attribute_names[:3]
    frame = attribute_frame(service, {first: 0.75, third: 0.25})
    values = frame_to_attributes(apply_toggles(service, frame, [first, second]))
    assert values[first] == 0.75  # already on: keeps its strength
    assert values[second] == 1.0  # newly on
    assert values[third] == 0.25  # a partial value typed into the table is left alone
    values = frame_to_attributes(apply_toggles(service, attribute_frame(service, values), [second]))
    assert (values[first], values[second], values[third]) == (0.0, 1.0, 0.25)  # first toggled off
    bad["value"] = bad["value"].astype(object)  # what a user types into the table arrives as text
    bad.loc[2, "value"] = "lots"
    with pytest.raises(UserClassError, match="use a number"):
        frame_to_attributes(bad)


def _ranked_everything(service, features: np.ndarray) -> list:
    return service.predict_features(features, top_k=1000).ranked


def test_predictions_during_a_write_see_the_old_snapshot_whole(
    service, example_features, monkeypatch
) -> None:
    """Readers are not blocked by a class edit in progress and see the classes from before it, consistently.

    The re-fit (the slow middle of every edit, run under the write lock) starts a reader thread and waits for
    its prediction, so a reader and a writer are provably in flight at once.
    """
    features = next(iter(example_features.values()))
    before = _ranked_everything(service, features)
    refit = service.bundle.fast_classifier
    seen_mid_write: list[list] = []

    def refit_while_a_reader_predicts(*args, **kwargs):
        reader = threading.Thread(target=lambda: seen_mid_write.append(_ranked_everything(service, features)))
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "a prediction waited for the class edit: readers must not block"
        return refit(*args, **kwargs)

    monkeypatch.setattr(service.bundle, "fast_classifier", refit_while_a_reader_predicts)
    service.define_class("concurrent", {service.attribute_names[0]: 1.0})
    assert seen_mid_write == [before]  # the old snapshot, every class and probability as before the edit
    after = _ranked_everything(service, features)
    assert [item.name for item in after if item.kind == "user"] == ["concurrent"]
    assert sum(item.probability for item in after) == pytest.approx(1.0, abs=1e-4)


def test_concurrent_class_edits_are_serialised(service, monkeypatch) -> None:
    """Two edits started together: the second's re-fit never starts while the first's runs (the write lock);
    both classes land in the store and the classifier in the same order."""
    refit = service.bundle.fast_classifier
    entered = threading.Condition()
    refits: list[int] = []  # how many re-fits were running when each one started
    running = [0]
    barrier = threading.Barrier(2)

    def counting_refit(*args, **kwargs):
        with entered:
            running[0] += 1
            refits.append(running[0])
            entered.notify_all()
            # Wait (at most 1 s) for the other writer to reach its re-fit too: only the write lock stops it.
            entered.wait_for(lambda: len(refits) == 2, timeout=1.0)
        try:
            return refit(*args, **kwargs)
        finally:
            with entered:
                running[0] -= 1

    monkeypatch.setattr(service.bundle, "fast_classifier", counting_refit)
    errors: list[BaseException] = []

    def define(index: int) -> None:
        barrier.wait(timeout=60)  # both writers in flight at once
        try:
            service.define_class(f"writer {index}", {service.attribute_names[index]: 1.0})
        except BaseException as error:
            errors.append(error)

    writers = [threading.Thread(target=define, args=(index,)) for index in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
    assert not errors and len(refits) == 2
    assert max(refits) == 1, "two class edits re-fitted at once: the write lock is not held"
    names = sorted(service.user_class_names())
    assert names == ["writer 0", "writer 1"]
    assert sorted(item.name for item in service.store.list()) == names
    assert service.class_space().classifier.num_classes == len(service.class_names())


def _state(service, features: np.ndarray) -> tuple:
    """Everything a failed edit must leave alone: classes, the store file's contents and a prediction."""
    return (
        service.class_names(),
        [(item.name, item.values) for item in service.store.list()],
        _ranked_everything(service, features),
    )


def test_a_failing_refit_leaves_store_and_predictions_unchanged(
    service, example_features, monkeypatch
) -> None:
    features = next(iter(example_features.values()))
    service.define_class("kept", {service.attribute_names[0]: 1.0})
    service.define_class("also kept", {service.attribute_names[1]: 1.0})
    exported = json.loads(service.export_classes())
    for entry in exported["classes"]:
        entry["name"] = f"imported {entry['name']}"
    before = _state(service, features)

    def failing_refit(*args, **kwargs):
        raise RuntimeError("re-fit failed (out of memory)")

    monkeypatch.setattr(service.bundle, "fast_classifier", failing_refit)
    with pytest.raises(RuntimeError, match="re-fit failed"):
        service.define_class("new", {service.attribute_names[2]: 1.0})
    assert _state(service, features) == before
    with pytest.raises(RuntimeError, match="re-fit failed"):
        service.delete_class("kept")
    assert _state(service, features) == before
    with pytest.raises(RuntimeError, match="re-fit failed"):
        service.import_classes(json.dumps(exported))
    assert _state(service, features) == before  # the imported classes were taken out of the store again
    monkeypatch.undo()
    assert service.import_classes(json.dumps(exported)) == [entry["name"] for entry in exported["classes"]]


def test_header_describes_the_bundle_and_its_caveat(service) -> None:
    service.define_class("<b>bold</b>", {service.attribute_names[0]: 1.0})
    text = describe_markdown(service)
    assert "1 user-defined classes" in text
    assert service.backbone.identity.weights_sha256[:12] in text
    # The demo bundle's backbone has random weights: it must say what such a backbone reads poorly.
    assert service.backbone.identity.weight_source.startswith("random")
    caveat = service.bundle.caveat
    assert caveat == demo_world.SHAPE_CAVEAT and caveat in text
    assert "<b>" not in text


def test_registry_lists_bundles_and_opens_another_on_demand(tmp_path: Path) -> None:
    import shutil

    from acmr_core.errors import BundleError
    from acmr_core.serving.registry import ServiceRegistry

    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(DEMO_BUNDLE, checkpoints / "demo-copy")
    (checkpoints / "not-a-bundle").mkdir()
    registry = ServiceRegistry(
        checkpoints=checkpoints,
        default_bundle=str(DEMO_BUNDLE),
        device="cpu",
        user_classes_dir=tmp_path / "user_classes",
        warm_default=False,
    )
    assert registry.names() == [DEMO_BUNDLE.name, "demo-copy"]
    other = registry.get("demo-copy")
    assert other is registry.get("demo-copy")  # loaded once
    assert other is not registry.default()
    other.define_class("only in the copy", {other.attribute_names[0]: 1.0})
    assert registry.default().user_class_names() == []  # each bundle has its own store
    with pytest.raises(BundleError, match="unknown bundle"):
        registry.get("not-a-bundle")
    with pytest.raises(BundleError, match="not found"):
        ServiceRegistry(checkpoints=checkpoints, default_bundle="missing", user_classes_dir=tmp_path)


def test_a_draft_preview_places_the_draft_without_adding_or_fitting(service, example_features, monkeypatch):
    """Issue 25's live preview: a copy of a class lands on it, its nearest class is that class, and on an
    image of the class its description ranks near the top; nothing is added and no row is fitted."""
    from acmr_core.viz.plots import QueryPoint

    prediction = service.predict_features(next(iter(example_features.values())))
    name = prediction.ranked[0].name
    fits: list[int] = []
    monkeypatch.setattr(service.classes.builder, "_fit_classifier", lambda attributes: fits.append(1))
    preview = service.preview_class(service.class_values(name), prediction.latent)
    assert preview.nearest[0].name == name and preview.nearest[0].distance == pytest.approx(0.0, abs=1e-4)
    assert [item.distance for item in preview.nearest] == sorted(item.distance for item in preview.nearest)
    space = service.class_space()
    assert np.allclose(preview.xy, space.semantic_xy[space.position(name)], atol=1e-3)
    assert preview.image is not None and preview.image.candidates == len(service.class_names()) + 1
    # A copy of the class: on the image it is exactly as far as the class's own description.
    own = np.linalg.norm(space.semantic_latents[space.position(name)] - np.asarray(prediction.latent))
    assert preview.image.distance == pytest.approx(float(own), rel=1e-4)
    assert preview.image.nearest_distance <= preview.image.distance + 1e-5  # the class itself, up to rounding
    assert 1 <= preview.image.rank <= preview.image.candidates
    other = {attribute: 1.0 - value for attribute, value in service.class_values(name).items()}
    assert service.preview_class(other).nearest[0].name != name  # another draft lands elsewhere
    figure = service.latent_figure(draft=QueryPoint(preview.xy, "<b>draft</b>"), photos=False)
    traces = {trace.name: trace for trace in figure.data}
    assert "your draft" in traces and "seen class images" not in traces
    assert [note.text for note in figure.layout.annotations] == ["draft: &lt;b&gt;draft&lt;/b&gt;"]
    assert fits == [] and service.user_class_names() == []
    with pytest.raises(UserClassError, match="every attribute is 0"):
        service.preview_class({})
