"""The demo world: deterministic renders, a proper zero-shot split, readable grouped attributes."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from acmr_core.data import demo_world
from acmr_core.data.demo_world import ATTRIBUTE_GROUPS, STRONG_GROUPS, default_world
from acmr_core.errors import ACMRError, BundleError


@pytest.fixture(scope="module")
def world() -> demo_world.DemoWorld:
    return default_world()


def test_same_seed_renders_identical_pixels(world: demo_world.DemoWorld) -> None:
    first = np.asarray(world.render(3, seed=5, index=2))
    again = np.asarray(world.render(3, seed=5, index=2))
    assert first.shape == (demo_world.RENDER_SIZE, demo_world.RENDER_SIZE, 3)
    assert np.array_equal(first, again)


def test_other_seed_or_index_renders_a_different_image(world: demo_world.DemoWorld) -> None:
    base = np.asarray(world.render(3, seed=5, index=2), dtype=np.int16)
    for other in (world.render(3, seed=6, index=2), world.render(3, seed=5, index=3)):
        assert np.abs(base - np.asarray(other, dtype=np.int16)).mean() > 1.0


def test_subset_renders_the_same_images_as_the_full_world(world: demo_world.DemoWorld) -> None:
    name = world.class_names[7]
    small = world.subset([world.class_names[1], name])
    assert np.array_equal(np.asarray(small.render(1, 0, 4)), np.asarray(world.render(7, 0, 4)))
    assert small.image_id(1, 0, 4) == world.image_id(7, 0, 4)


def test_every_attribute_value_occurs_in_a_seen_class(world: demo_world.DemoWorld) -> None:
    assert world.uncovered_values() == []
    seen_rows = world.attribute_matrix()[world.seen_mask]
    assert seen_rows.max(axis=0).min() == 1.0


def test_uncovered_values_reports_a_value_only_unseen_classes_have(world: demo_world.DemoWorld) -> None:
    purple = [c.name for c in world.classes if c.values["colour"] == "purple"]
    others = [c.name for c in world.classes if c.values["colour"] != "purple" and c.seen][:3]
    # Only unseen purple classes: "colour: purple" is no longer covered by a seen class.
    unseen_purple = [n for n in purple if not world.classes[world.class_names.index(n)].seen]
    assert "colour: purple" in world.subset(others + unseen_purple).uncovered_values()


def test_split_is_zero_shot_and_classes_are_separable_by_strong_attributes(
    world: demo_world.DemoWorld,
) -> None:
    assert 40 <= len(world.classes) <= 60
    assert world.unseen_classes.size >= 4 and world.seen_classes.size > world.unseen_classes.size
    assert len(set(world.class_names)) == len(world.class_names)
    # Shape is weak for a random-weight backbone: no two classes may differ only by shape, and an unseen
    # class must differ from every other class in two strong groups (one misread one does not swap them).
    for a, b in itertools.combinations(world.classes, 2):
        strong_differences = sum(a.values[g] != b.values[g] for g in STRONG_GROUPS)
        assert strong_differences >= (1 if a.seen and b.seen else 2), (a.name, b.name)


def test_seen_classes_do_not_confound_attributes(world: demo_world.DemoWorld) -> None:
    # A decoder trained on seen classes in which e.g. "large" always came with "dotted" learns the confound:
    # every value pair of every two groups occurs in some seen class, and none far more often than expected.
    seen = [c for c in world.classes if c.seen]
    for a, b in itertools.combinations(ATTRIBUTE_GROUPS, 2):
        pairs = list(itertools.product(ATTRIBUTE_GROUPS[a], ATTRIBUTE_GROUPS[b]))
        counts = {pair: sum((c.values[a], c.values[b]) == pair for c in seen) for pair in pairs}
        expected = len(seen) / len(pairs)
        assert min(counts.values()) >= 1, (a, b, counts)
        assert max(counts.values()) <= 1.5 * expected + 1, (a, b, counts)


def test_attribute_matrix_is_one_hot_per_group_with_grouped_names(world: demo_world.DemoWorld) -> None:
    matrix = world.attribute_matrix()
    names = world.attribute_names
    assert matrix.shape == (len(world.classes), sum(len(v) for v in ATTRIBUTE_GROUPS.values()))
    assert names[0] == "colour: red"
    for group in ATTRIBUTE_GROUPS:
        columns = [i for i, n in enumerate(names) if n.startswith(f"{group}: ")]
        assert np.array_equal(matrix[:, columns].sum(axis=1), np.ones(len(world.classes)))
    row = world.class_names.index("large red plain square on dark")
    assert {names[i] for i in np.flatnonzero(matrix[row])} == {
        "colour: red", "pattern: plain", "shape: square", "size: large", "count: one", "background: dark",
    }  # fmt: skip


def test_names_and_descriptions_are_readable(world: demo_world.DemoWorld) -> None:
    three = next(c for c in world.classes if c.values["count"] == "three")
    assert three.name.startswith("three ") and three.description.startswith("three ")
    one = next(c for c in world.classes if c.values["count"] == "one")
    assert one.description.startswith("a single ")


def test_render_draws_the_class_colour_on_the_right_background(world: demo_world.DemoWorld) -> None:
    index = world.class_names.index("large red plain square on dark")
    pixels = np.asarray(world.render(index, 0, 0), dtype=np.int16).reshape(-1, 3)
    reddish = (pixels[:, 0] > 150) & (pixels[:, 1] < 90) & (pixels[:, 2] < 90)
    dark = pixels.max(axis=1) < 80
    assert reddish.mean() > 0.08  # a large square covers a good part of the image
    assert dark.mean() > 0.5


def test_subset_rejects_unknown_class(world: demo_world.DemoWorld) -> None:
    with pytest.raises(ACMRError, match="unknown demo class"):
        world.subset(["blue unicorn"])


def test_write_examples_writes_pngs_and_an_index(tmp_path, world: demo_world.DemoWorld) -> None:
    small = world.subset(world.class_names[:2])
    written = demo_world.write_examples(tmp_path, small, per_class=2)
    assert len(written) == 4 and all(p.suffix == ".png" and p.stat().st_size > 0 for p in written)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["file"] for e in index] == [p.name for p in written]
    assert {e["class"] for e in index} == set(small.class_names)
    assert all(e["image_id"].startswith(f"demo/s{demo_world.GALLERY_SEED}/") for e in index)


def test_validation_split_keeps_the_zero_shot_property(world: demo_world.DemoWorld) -> None:
    val_unseen = world.validation_unseen(seed=0)
    # As many validation-unseen classes as the world's unseen share of its classes (e.g. 18 seen, 6 of 24).
    n_seen, n_unseen = world.seen_classes.size, world.unseen_classes.size
    assert val_unseen.size == round(n_seen * n_unseen / (n_seen + n_unseen))
    assert set(val_unseen) <= set(world.seen_classes)
    val_seen = [c for c in world.seen_classes if c not in val_unseen]
    covered = {name for c in val_seen for name in world.classes[c].attribute_names}
    assert covered == set(world.attribute_names)
    assert np.array_equal(val_unseen, world.validation_unseen(seed=0))


# ---- the record a demo-world bundle keeps of its renders ---------------------------------------------------


def test_the_demo_world_record_round_trips_through_provenance() -> None:
    record = demo_world.DemoWorldRecord(
        used_seeds=(0, 1), train_per_class=8, plot_per_class=3, render_size=64
    )
    provenance = json.loads(json.dumps({"name": "x", record.KEY: record.to_provenance()}))
    assert demo_world.DemoWorldRecord.from_provenance(provenance) == record
    assert provenance["demo_world"]["used_seeds"] == [0, 1]
    # A bundle without the record is not a demo-world bundle; an old record without a size is 224 px.
    assert demo_world.DemoWorldRecord.from_provenance({"name": "x"}) is None
    old = demo_world.DemoWorldRecord.from_provenance({"demo_world": {"used_seeds": [0, 1]}})
    assert old is not None and old.render_size == demo_world.RENDER_SIZE == 224


@pytest.mark.parametrize(
    "record, message",
    [
        ({"render_size": 8}, "render_size 8; expected 16 to 1024 px"),
        ({"render_size": 2048}, "render_size 2048; expected 16 to 1024 px"),
        ({"render_size": True}, "render_size True"),
        ({"render_size": "64"}, "render_size '64'"),
        ({"render_size": 64.0}, "render_size 64.0"),
        ({"used_seeds": [0, "one"]}, "used_seeds 'one'; expected a whole number"),
        ({"used_seeds": 3}, "used_seeds must be a list"),
        ({"train_per_class": 1.5}, "train_per_class 1.5"),
    ],
)
def test_a_bad_demo_world_record_is_refused_in_one_line(record: dict, message: str) -> None:
    with pytest.raises(BundleError, match=re.escape(message)) as caught:
        demo_world.DemoWorldRecord.from_provenance({"demo_world": record})
    assert "\n" not in str(caught.value)


def test_a_bundle_maps_back_to_its_world_by_attribute_values(world: demo_world.DemoWorld) -> None:
    names = world.class_names[40:]
    small = world.subset(names)
    # A renamed class still maps to its combination: its images are the ones its values draw.
    mapped = demo_world.DemoWorld.of_classes(
        ["renamed", *names[1:]], small.attribute_names, small.attribute_matrix(), small.seen_mask
    )
    assert mapped.class_names == names and mapped.kinds == small.kinds
    assert np.array_equal(np.asarray(mapped.render(0, 5, 0, 32)), np.asarray(small.render(0, 5, 0, 32)))
    undrawable = small.attribute_matrix()
    undrawable[1, small.attribute_names.index("colour: red")] = 1.0  # a second colour
    with pytest.raises(ACMRError, match=rf"{names[1]!r}: to be drawn, a class needs exactly one colour"):
        demo_world.DemoWorld.of_classes(names, small.attribute_names, undrawable, small.seen_mask)
