"""See your class recognised: a user class of the demo world drawn by the renderer and predicted by the
model (service), and the attribute-vector → drawable-combination mapping it relies on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from acmr_core.data import demo_world
from acmr_core.errors import ACMRError, UserClassError
from tests.test_service import loaded, make_service  # noqa: F401  (module fixture reused)

# A combination that is neither a seen nor an unseen class of the shipped world.
NEW_VALUES = {
    "colour": "green",
    "pattern": "plain",
    "shape": "circle",
    "size": "large",
    "count": "one",
    "background": "dark",
}


def _attributes(values: dict[str, str]) -> dict[str, float]:
    return {f"{group}: {value}": 1.0 for group, value in values.items()}


# ---- mapping and rendering (no model) ----------------------------------------------------------------------


def test_the_new_combination_is_not_a_class_of_the_world() -> None:
    assert NEW_VALUES not in [c.values for c in demo_world.default_world().classes]


def test_one_value_per_group_maps_to_a_combination() -> None:
    attributes = {**_attributes(NEW_VALUES), "colour: red": 0.2}  # weak values below 0.5 do not count
    assert demo_world.combination_from_attributes(attributes) == NEW_VALUES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour: red": 1.0}, "exactly one colour.*red, green"),
        ({"shape: circle": 0.0}, "exactly one shape.*none"),
        ({"wings: feathered": 1.0}, "cannot draw attribute 'wings: feathered'"),
    ],
)
def test_combinations_the_renderer_cannot_draw_are_refused(change: dict[str, float], message: str) -> None:
    with pytest.raises(ACMRError, match=message):
        demo_world.combination_from_attributes({**_attributes(NEW_VALUES), **change})


def test_a_combination_renders_like_the_world_class_with_the_same_values() -> None:
    world = demo_world.default_world()
    values = world.classes[3].values
    same = demo_world.render_combination(dict(values), seed=5, index=2)
    assert np.array_equal(np.asarray(same), np.asarray(world.render(3, seed=5, index=2)))
    other = demo_world.render_combination(dict(values), seed=5, index=3)
    assert not np.array_equal(np.asarray(same), np.asarray(other))


# ---- the service on the shipped demo bundle ----------------------------------------------------------------


@pytest.fixture
def service(loaded, tmp_path: Path, one_torch_thread: None):  # noqa: F811
    made = make_service(loaded, tmp_path / "user_classes")
    yield made
    made.store.close()


def test_a_user_class_is_drawn_and_predicted_among_all_classes(service) -> None:
    service.define_class("my green ball", _attributes(NEW_VALUES))
    every_class = len(service.class_names())
    examples = service.render_examples("my green ball", count=3, top_k=every_class)
    assert len(examples) == 3
    for example in examples:
        assert example.class_name == "my green ball"
        assert example.image.size == (demo_world.RENDER_SIZE, demo_world.RENDER_SIZE)
        names = [item.name for item in example.prediction.ranked]
        assert "my green ball" in names and len(names) == len(service.class_names())
        assert example.recognised == (names[0] == "my green ball")
        record = example.record()
        assert json.loads(json.dumps(record)) == record
        assert record["predicted"] == names[0] and record["unfamiliar"] is False
    # Deterministic: the same class draws the same images and gets the same answers.
    again = service.render_examples("my green ball", count=3, top_k=every_class)
    assert [np.asarray(e.image).tobytes() for e in again] == [np.asarray(e.image).tobytes() for e in examples]
    assert [e.prediction.ranked for e in again] == [e.prediction.ranked for e in examples]


def test_undrawable_classes_and_bad_counts_are_refused(service) -> None:
    # A class the world could never draw is refused before it is added (issue 25), naming the group ...
    with pytest.raises(UserClassError, match=r"cannot be added: .*exactly one colour .*it has red, green"):
        service.define_class("two colours", {**_attributes(NEW_VALUES), "colour: red": 1.0})
    assert "two colours" not in service.class_names()
    # ... and an empty group is filled in with the world's most common value, and said so.
    partial = {
        key: value for key, value in _attributes(NEW_VALUES).items() if not key.startswith("background")
    }
    record = service.define_class("no background", partial)
    assert set(record["assumed"]) == {"background"}
    assert record["attributes"][f"background: {record['assumed']['background']}"] == 1.0
    assert len(service.render_examples("no background", count=1)) == 1
    with pytest.raises(UserClassError, match="there is no class named"):
        service.render_examples("nobody")
    with pytest.raises(UserClassError, match="1 to 12"):
        service.render_examples(service.class_names()[0], count=0)


def test_only_a_demo_world_bundle_can_draw(loaded, tmp_path: Path) -> None:  # noqa: F811
    from acmr_core.serving.service import StudioService
    from acmr_core.serving.user_classes import open_store

    bundle, backbone = loaded
    other = dataclasses.replace(
        bundle, provenance={k: v for k, v in bundle.provenance.items() if k != "demo_world"}
    )
    store = open_store(tmp_path, "other", bundle.catalog.attribute_names)
    service = StudioService(other, backbone, store, "other")
    try:
        assert not service.can_render
        with pytest.raises(UserClassError, match="not a demo-world bundle"):
            service.render_examples(service.class_names()[0])
    finally:
        store.close()


def _with_render_size(bundle, size: object):
    record = {**bundle.provenance["demo_world"], "render_size": size}
    return dataclasses.replace(bundle, provenance={**bundle.provenance, "demo_world": record})


def test_a_class_is_drawn_at_the_bundles_recorded_render_size(loaded, tmp_path: Path) -> None:  # noqa: F811
    """Serving reads the same demo-world record as evaluation: 64 px recorded, 64 px drawn."""
    bundle, backbone = loaded
    service = make_service((_with_render_size(bundle, 64), backbone), tmp_path / "small")
    try:
        service.define_class("my green ball", _attributes(NEW_VALUES))
        (example,) = service.render_examples("my green ball", count=1)
        assert example.image.size == (64, 64)
        expected = demo_world.render_combination(NEW_VALUES, demo_world.EXAMPLES_SEED, 0, size=64)
        assert np.array_equal(np.asarray(example.image), np.asarray(expected))
    finally:
        service.store.close()
    broken = make_service((_with_render_size(bundle, 4096), backbone), tmp_path / "broken")
    try:  # a bad record refuses the drawing, in one line naming the bundle, not the adding of a class
        broken.define_class("my green ball", _attributes(NEW_VALUES))
        with pytest.raises(UserClassError, match=r"demo-world: the demo-world record says render_size 4096"):
            broken.render_examples("my green ball", count=1)
    finally:
        broken.store.close()
