"""Each visitor's classes are their own (issue 24): the service's write side, on the shipped demo bundle.

Views checked for isolation: class names, top-k, catalog, both plots' data, the alignment table, export.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from acmr_core.errors import UserClassError
from tests.test_service import DEMO_BUNDLE, loaded  # noqa: F401  (module fixture: bundle + backbone)

A = "visitor-a-" + "a" * 32
B = "visitor-b-" + "b" * 32
RED_BALL = {"colour: red": 1.0, "pattern: dotted": 1.0, "shape: circle": 1.0, "size: small": 1.0,
            "count: three": 1.0, "background: dark": 1.0}  # fmt: skip


def open_service(loaded, folder: Path, *, per_visitor: bool = True, **limits):  # noqa: F811
    from acmr_core.serving.service import StudioService
    from acmr_core.serving.user_classes import open_store
    from acmr_core.serving.visitors import VisitorClasses

    bundle, backbone = loaded
    store = open_store(folder, DEMO_BUNDLE.name, bundle.catalog.attribute_names, per_visitor=per_visitor)
    service = StudioService(bundle, backbone, store, DEMO_BUNDLE.name, per_visitor=per_visitor)
    if limits:  # smaller residency bounds, to see eviction
        classes = service.classes
        service.classes = VisitorClasses(
            classes.builder,
            store,
            per_visitor=per_visitor,
            check_values=service.reads.check_drawable,
            **limits,
        )
    return service


@pytest.fixture
def service(loaded, tmp_path: Path):  # noqa: F811
    made = open_service(loaded, tmp_path)
    yield made
    made.store.close()


def held(call):
    """``(wrapper, entered, release)``: the wrapper signals ``entered``, then waits for ``release`` before
    calling ``call`` (to hold an edit or a refinement in the middle of its fit)."""
    entered, release = threading.Event(), threading.Event()

    def wrapper(*args):
        entered.set()
        assert release.wait(60)
        return call(*args)

    return wrapper, entered, release


def everything_shown(view) -> str:
    """Every place a class name can appear for a visitor, as one text."""
    figure = view.latent_figure().to_json()
    ranked = view.predict_features(np.zeros(2048, np.float32), top_k=len(view.class_names())).ranked
    return json.dumps(
        [view.class_names(), [item.name for item in ranked], view.catalog(), figure,
         [item.name for item in view.alignment()], view.export_classes()]
    )  # fmt: skip


def test_a_visitors_class_is_invisible_to_every_other_visitor(service) -> None:
    a, b = service.for_visitor(A), service.for_visitor(B)
    a.define_class("only for a", RED_BALL)
    assert "only for a" in everything_shown(a)
    assert "only for a" not in everything_shown(b)
    assert "only for a" not in everything_shown(service)  # the default (anonymous) view has the bundle's only
    assert b.user_class_names() == [] and a.user_class_names() == ["only for a"]
    for attempt in (lambda: b.delete_class("only for a"), lambda: b.rename_class("only for a", "stolen")):
        with pytest.raises(UserClassError, match=r"no (user )?class named 'only for a'"):
            attempt()
    assert a.user_class_names() == ["only for a"]
    # The same name is free for another visitor; each keeps their own values.
    b.define_class("Only For A", {**RED_BALL, "colour: red": 0.0, "colour: blue": 1.0})
    assert a.class_values("only for a")["colour: red"] == 1.0
    assert b.class_values("only for a")["colour: blue"] == 1.0


def test_a_visitor_keeps_their_classes_across_a_restart(loaded, tmp_path: Path) -> None:  # noqa: F811
    first = open_service(loaded, tmp_path)
    first.for_visitor(A).define_class("kept", RED_BALL)
    first.store.close()
    second = open_service(loaded, tmp_path)
    try:
        assert second.for_visitor(A).user_class_names() == ["kept"]
        assert second.for_visitor(B).user_class_names() == []
    finally:
        second.store.close()


def test_an_anonymous_or_forged_visitor_keeps_nothing(service) -> None:
    for visitor in (None, "", "short", "x" * 500, "../../etc"):
        view = service.for_visitor(visitor)
        with pytest.raises(UserClassError, match=r"no visitor id yet.*reload"):
            view.define_class("nobody's", RED_BALL)
        assert view.user_class_names() == []
    assert len(service.store) == 0


def test_the_shared_mode_gives_every_visitor_one_set_of_classes(loaded, tmp_path: Path) -> None:  # noqa: F811
    shared = open_service(loaded, tmp_path, per_visitor=False)
    try:
        shared.for_visitor(A).define_class("for everyone", RED_BALL)
        assert shared.for_visitor(B).user_class_names() == ["for everyone"]
        assert shared.for_visitor(None).user_class_names() == ["for everyone"]
        shared.for_visitor(B).delete_class("for everyone")
        assert shared.for_visitor(A).user_class_names() == []
    finally:
        shared.store.close()


def test_idle_visitors_are_evicted_and_rebuilt_on_return(loaded, tmp_path: Path) -> None:  # noqa: F811
    service = open_service(loaded, tmp_path, max_resident=1)
    try:
        a, b = service.for_visitor(A), service.for_visitor(B)
        a.define_class("a's", RED_BALL)
        space_a = a.class_space()
        b.define_class("b's", {**RED_BALL, "size: small": 0.0, "size: large": 1.0})
        assert service.classes.resident_count() == 1  # A was evicted for B
        rebuilt = a.class_space()
        assert rebuilt is not space_a and rebuilt.names == space_a.names
        assert np.array_equal(
            rebuilt.classifier.fc.weight.detach().numpy(), space_a.classifier.fc.weight.detach().numpy()
        )
    finally:
        service.store.close()
    idle = open_service(loaded, tmp_path / "idle", idle_eviction_s=0.0)
    try:
        idle.for_visitor(A).define_class("a's", RED_BALL)
        idle.for_visitor(B).define_class("b's", RED_BALL)
        assert idle.classes.resident_count() == 1  # A idle past the limit when B came
        assert idle.for_visitor(A).user_class_names() == ["a's"]
    finally:
        idle.store.close()


def test_one_visitors_edit_never_holds_up_another_visitors_prediction(service, monkeypatch) -> None:
    b = service.for_visitor(B)
    b.define_class("b's", RED_BALL)
    builder = service.classes.builder
    slow_fit, fitting, release = held(builder._fit_classifier)
    monkeypatch.setattr(builder, "_fit_classifier", slow_fit)
    editor = threading.Thread(target=lambda: service.for_visitor(A).define_class("a's", RED_BALL))
    editor.start()
    try:
        assert fitting.wait(30)  # A's edit is in the middle of its fit, holding A's lock
        ranked = b.predict_features(np.zeros(2048, np.float32), top_k=100).ranked  # answered meanwhile
        assert "b's" in [item.name for item in ranked] and "a's" not in [item.name for item in ranked]
        assert editor.is_alive()
    finally:
        release.set()
        editor.join(30)
    assert service.for_visitor(A).user_class_names() == ["a's"]


def test_limits_are_refused_naming_the_limit(service, monkeypatch) -> None:
    import acmr_core.serving.user_classes as user_classes

    monkeypatch.setattr(user_classes, "MAX_USER_CLASSES", 1)
    monkeypatch.setattr(user_classes, "MAX_STORED_CLASSES", 2)
    a, b = service.for_visitor(A), service.for_visitor(B)
    a.define_class("first", RED_BALL)
    with pytest.raises(UserClassError, match="one visitor holds at most 1"):
        a.define_class("second", RED_BALL)
    b.define_class("first", RED_BALL)
    with pytest.raises(
        UserClassError, match="this server holds its limit of 2 user classes over all visitors"
    ):
        service.for_visitor("visitor-c-" + "c" * 32).define_class("first", RED_BALL)


# ---- background refinement: the full re-fit replaces the fast rows after an edit --------------------------


def test_a_refined_classifier_is_the_full_refit_and_an_edit_meanwhile_wins(loaded, tmp_path: Path) -> None:  # noqa: F811
    import torch

    from acmr_core.serving.visitors import VisitorClasses

    service = open_service(loaded, tmp_path)
    classes = service.classes
    service.classes = VisitorClasses(
        classes.builder,
        service.store,
        per_visitor=True,
        check_values=service.reads.check_drawable,
        refine=True,
    )
    builder = service.classes.builder
    real_full = builder.full_classifier
    held_full, started, release = held(real_full)

    a = service.for_visitor(A)
    try:
        builder.full_classifier = held_full  # the first refinement waits until released
        a.define_class("first", RED_BALL)
        assert started.wait(60)
        fast = a.class_space()
        assert not fast.refined  # answered at once, with the fast rows
        a.define_class("second", {**RED_BALL, "size: small": 0.0, "size: large": 1.0})  # an edit meanwhile
        builder.full_classifier = real_full
        release.set()
        assert service.classes.wait_refined(120)
        space = a.class_space()
        assert space.refined and space.names[-2:] == ("first", "second")  # the stale refinement was dropped
        seen_mask = np.array([kind == "seen" for kind in space.kinds])
        expected = service.bundle.refit_classifier(space.unit_attributes * builder.scale, seen_mask, seed=0)
        assert torch.equal(space.classifier.fc.weight, expected.fc.weight)  # the full re-fit, bit for bit
        ranked = a.predict_features(np.zeros(2048, np.float32), top_k=100).ranked
        assert {"first", "second"} <= {item.name for item in ranked}
    finally:
        release.set()
        service.store.close()


def test_torch_threads_come_back_when_overlapping_single_thread_bursts_end() -> None:
    import torch

    from acmr_core.serving.threads import single_torch_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # more than one, so "stuck at 1" shows (tests run with OMP_NUM_THREADS=1)
    inside, leave_first = threading.Event(), threading.Event()

    def first() -> None:
        with single_torch_thread():
            inside.set()
            assert leave_first.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(30)
    with single_torch_thread():  # a second burst starts while the first is inside ...
        leave_first.set()
        thread.join(30)  # ... and the first one ends before it
        assert torch.get_num_threads() == 1
    try:
        assert torch.get_num_threads() == 2  # not stuck at 1 (the second burst saw 1 as "before")
    finally:
        torch.set_num_threads(before)
