"""The separability guard (issue 32): a class the model cannot tell apart from another is never accepted
silently, and the warning stays with it. On the shipped demo bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acmr_core.serving import separability
from tests.test_service import DEMO_BUNDLE, loaded  # noqa: F401  (module fixture: bundle + backbone)


@pytest.fixture(scope="module")
def builder(loaded):  # noqa: F811
    from acmr_core.serving.class_space import SpaceBuilder

    return SpaceBuilder(loaded[0])


def fresh_guard(builder, read: dict[str, float | None] | None = None):
    """A guard of its own (the builder's caches untouched), optionally with readability evidence replaced."""
    guard = separability.SeparabilityGuard(builder.bundle, builder.scale, builder.attribute_names)
    if read is not None:
        guard.__dict__["read"] = read
    return guard


def judge(guard, builder, unit: np.ndarray):
    base = builder.base
    return guard.judge(
        base.names, base.kinds, base.unit_attributes, base.semantic_latents, base.classifier, unit
    )


def swapped(builder, position: int, group: str) -> np.ndarray:
    """Bundle class ``position`` with another value of ``group`` (one value per group, as the world draws)."""
    names = builder.attribute_names
    unit = builder.base.unit_attributes[position].copy()
    columns = [i for i, name in enumerate(names) if name.startswith(f"{group}: ")]
    on = next(i for i in columns if unit[i] >= 0.5)
    unit[on], unit[next(i for i in columns if i != on)] = 0.0, 1.0
    return unit


def test_readability_is_measured_on_unseen_images_and_falls_to_chance_without_signal(builder) -> None:
    guard = fresh_guard(builder)
    assert set(guard.read) == {"colour", "pattern", "shape", "size", "count", "background"}
    assert all(value is None or 0.0 <= value <= 1.0 for value in guard.read.values())
    assert guard.read["colour"] >= separability.READ_ACCURACY  # any backbone sees colour
    # The same images' latents handed to the wrong classes: nothing can be read any more.
    cache = builder.bundle.latent
    shuffled = np.random.default_rng(0).permutation(
        np.flatnonzero(np.isin(cache.visual_labels, builder.bundle.catalog.unseen_classes))
    )
    original = cache.visual.copy()
    try:
        cache.visual[np.sort(shuffled)] = original[shuffled]
        blind = fresh_guard(builder).read
    finally:
        cache.visual[:] = original
    assert blind["colour"] < guard.read["colour"] - 0.2


def test_a_difference_only_in_unread_groups_is_warned_naming_the_class_and_the_groups(builder) -> None:
    seen = int(builder.bundle.catalog.seen_classes[0])
    unit = swapped(builder, seen, "colour")
    read = dict.fromkeys(fresh_guard(builder).group_names, 1.0)
    told_apart = judge(fresh_guard(builder, read), builder, unit)
    assert builder.base.names[seen] not in [c.other for c in told_apart.confusions if c.reason == "unread"]
    verdict = judge(fresh_guard(builder, {**read, "colour": 0.4}), builder, unit)
    confusion = next(c for c in verdict.confusions if c.other == builder.base.names[seen])
    assert confusion.reason == "unread" and confusion.groups == ("colour",)
    message = verdict.message()
    assert builder.base.names[seen] in message and "colour" in message and "40%" in message
    record = verdict.record()
    assert builder.base.names[seen] in record["confused_with"]


def test_the_same_description_is_always_warned(builder) -> None:
    position = int(builder.bundle.catalog.unseen_classes[0])
    unit = builder.base.unit_attributes[position] * 0.9  # every group within GROUP_DIFFERENCE
    verdict = judge(fresh_guard(builder), builder, unit)
    assert not verdict.ok
    same = next(c for c in verdict.confusions if c.other == builder.base.names[position])
    assert same.reason == "same" and same.groups == ()


def test_a_class_whose_images_would_move_is_named_as_taken_over(builder) -> None:
    # Everything read, so only the classifier's evidence can name a class: a near copy of a seen class
    # (one attribute lowered to 0.7: another group value on paper, the same description in effect).
    read = dict.fromkeys(fresh_guard(builder).group_names, 1.0)
    position = int(builder.bundle.catalog.seen_classes[0])
    unit = builder.base.unit_attributes[position].copy()
    unit[int(np.flatnonzero(unit >= 0.5)[0])] = 0.7
    verdict = judge(fresh_guard(builder, read), builder, unit)
    taken = next(c for c in verdict.confusions if c.other == builder.base.names[position])
    assert taken.reason == "takeover" and taken.share >= separability.TAKEOVER_SHARE


def test_differing_groups_compare_groups_not_entries(builder) -> None:
    guard = fresh_guard(builder)
    unit = builder.base.unit_attributes[0]
    differs = guard.differing_groups(swapped(builder, 0, "shape"), builder.base.unit_attributes[:1])
    # A shape swap turns two one-hot entries but is one group.
    assert (np.abs(swapped(builder, 0, "shape") - unit) > separability.GROUP_DIFFERENCE).sum() == 2
    assert differs.sum() == 1 and differs[0, guard.group_names.index("shape")]


def test_verdict_forgets_a_deleted_class_and_follows_a_rename() -> None:
    confusion = separability.Confusion("Zebra", "user", ("colour",), "unread")
    verdict = separability.Separability((confusion,), {"colour": 0.4})
    assert verdict.renamed("zebra", "Okapi").confused_with == ["Okapi"]
    assert verdict.without("ZEBRA").ok and verdict.without("ZEBRA").message() == ""
    assert verdict.without("other") is verdict


def test_service_keeps_the_warning_with_the_class(loaded, tmp_path: Path) -> None:  # noqa: F811
    from tests.test_visitors import open_service

    service = open_service(loaded, tmp_path, per_visitor=False)
    original = service.class_names()[int(service.bundle.catalog.unseen_classes[0])]
    values = service.class_values(original)
    service.define_class("first", {name: 0.9 * value for name, value in values.items()})
    record = service.define_class("copy of first", {name: 0.95 * value for name, value in values.items()})
    assert "first" in record["warning"]["confused_with"] and original in record["warning"]["confused_with"]
    assert "first" in service.class_warning("copy of first")
    # The warning rides on every answer the class wins (and only on a user class's).
    image = service.render_examples(original, count=1)[0].image
    prediction = service.predict(image)
    top = prediction.ranked[0].name
    assert top in {original, "first", "copy of first"}
    assert prediction.warning == (service.class_warning(top) if top != original else "")
    assert (prediction.warning != "") == (top != original)
    # Rename and delete keep the warning in step.
    service.rename_class("first", "renamed first")
    assert "renamed first" in service.class_warning_record("copy of first")["confused_with"]
    service.delete_class("renamed first")
    assert "renamed first" not in service.class_warning_record("copy of first")["confused_with"]
    assert original in service.class_warning_record("copy of first")["confused_with"]
    # A visitor rebuilt from the store gets the verdict its add was given (the deleted class aside).
    reopened = open_service(loaded, tmp_path, per_visitor=False)
    rebuilt = reopened.class_warning_record("copy of first")["confused_with"]
    assert original in rebuilt and "renamed first" not in rebuilt
    service.store.close()
    reopened.store.close()


def test_weak_groups_add_up_but_one_alone_is_not_enough(builder) -> None:
    seen = int(builder.bundle.catalog.seen_classes[1])
    other = builder.base.names[seen]
    read = {**dict.fromkeys(fresh_guard(builder).group_names, 1.0), "colour": 0.65, "pattern": 0.65}
    guard = fresh_guard(builder, read)

    def unread(unit: np.ndarray) -> list[str]:
        return [c.other for c in judge(guard, builder, unit).confusions if c.reason == "unread"]

    colour_only = swapped(builder, seen, "colour")
    assert other in unread(colour_only)
    both = colour_only.copy()
    both[:] = swapped(builder, seen, "pattern")
    colour_columns = [i for i, name in enumerate(builder.attribute_names) if name.startswith("colour: ")]
    both[colour_columns] = colour_only[colour_columns]
    assert other not in unread(both)
