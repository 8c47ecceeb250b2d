"""Latent-space placement (k-NN interpolation) and per-class alignment on hand-checkable inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from acmr_core.errors import ACMRError
from acmr_core.viz.latent_space import LatentProjection, alignment_scores, place_points

# Three reference latents on a line (1-D latent space padded to 2-D) with known map positions.
REFERENCE = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=np.float32)
REFERENCE_XY = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 30.0]], dtype=np.float32)


def test_a_reference_latent_lands_exactly_on_its_own_position() -> None:
    projection = LatentProjection(REFERENCE, REFERENCE_XY, neighbours=2)
    assert np.allclose(projection.place(REFERENCE), REFERENCE_XY)


def test_inverse_distance_weighting_between_two_neighbours() -> None:
    projection = LatentProjection(REFERENCE, REFERENCE_XY, neighbours=2)
    # 0.25 from ref 0 and 0.75 from ref 1: weights 4 and 4/3 -> 3/4 and 1/4 -> x = 0.25 * 10.
    assert np.allclose(projection.place(np.array([[0.25, 0.0]])), [[2.5, 0.0]])
    # Equidistant from refs 1 and 2 (k=2): the midpoint of their positions.
    assert np.allclose(projection.place(np.array([[2.0, 0.0]])), [[10.0, 15.0]])


def test_placement_is_deterministic_and_handles_a_single_vector() -> None:
    projection = LatentProjection(REFERENCE, REFERENCE_XY, neighbours=3)
    query = np.array([0.7, 0.4], dtype=np.float32)
    first = place_points(query, projection)
    assert first.shape == (1, 2)
    assert np.array_equal(first, place_points(query, projection))
    assert place_points(np.zeros((0, 2)), projection).shape == (0, 2)


def test_more_neighbours_than_references_uses_all_of_them() -> None:
    projection = LatentProjection(REFERENCE, REFERENCE_XY, neighbours=50)
    placed = projection.place(np.array([[1.0, 1.0]]))
    assert np.all(np.isfinite(placed))


@pytest.mark.parametrize(
    "query, message",
    [(np.zeros((1, 3)), "expected \\(M, 2\\)"), (np.array([[np.nan, 0.0]]), "non-finite")],
)
def test_bad_queries_are_refused(query: np.ndarray, message: str) -> None:
    projection = LatentProjection(REFERENCE, REFERENCE_XY)
    with pytest.raises(ACMRError, match=message):
        projection.place(query)


def test_projection_refuses_mismatched_reference_arrays() -> None:
    with pytest.raises(ACMRError, match="latent projection needs"):
        LatentProjection(REFERENCE, REFERENCE_XY[:2])


def test_alignment_scores_by_hand() -> None:
    # Class 0 images centred at (0, 0), class 1 images centred at (4, 0); class 2 has no images.
    visual = np.array([[-1.0, 0.0], [1.0, 0.0], [4.0, 1.0], [4.0, -1.0]])
    labels = np.array([0, 0, 1, 1])
    # Class 0's semantic latent sits 1 from its centroid; class 1's sits nearer class 0's centroid.
    semantic = np.array([[0.0, 1.0], [1.0, 0.0], [5.0, 0.0]])
    scores = alignment_scores(visual, labels, semantic)
    assert [s.class_index for s in scores] == [0, 1, 2]
    assert scores[0].distance == pytest.approx(1.0)
    assert scores[0].own_is_nearest and scores[0].own_rank == 1 and scores[0].nearest_class == 0
    assert scores[1].distance == pytest.approx(3.0)
    assert not scores[1].own_is_nearest and scores[1].own_rank == 2 and scores[1].nearest_class == 0
    assert math.isnan(scores[2].distance) and scores[2].own_rank == 0 and scores[2].nearest_class == 1
    assert not scores[2].own_is_nearest


def test_alignment_scores_refuse_bad_labels() -> None:
    with pytest.raises(ACMRError, match="class indices"):
        alignment_scores(np.zeros((2, 2)), np.array([0, 5]), np.zeros((2, 2)))
    with pytest.raises(ACMRError, match="one label per visual latent"):
        alignment_scores(np.zeros((2, 2)), np.array([0]), np.zeros((2, 2)))


def test_overall_alignment_counts_only_classes_with_images() -> None:
    from acmr_core.viz.latent_space import summarise_alignment

    # Same hand-checked scene as above: class 0 aligned, class 1 not, class 2 (a user class) has no images.
    visual = np.array([[-1.0, 0.0], [1.0, 0.0], [4.0, 1.0], [4.0, -1.0]])
    semantic = np.array([[0.0, 1.0], [1.0, 0.0], [5.0, 0.0]])
    summary = summarise_alignment(alignment_scores(visual, np.array([0, 0, 1, 1]), semantic))
    assert (summary.own_nearest, summary.classes_with_images) == (1, 2)
    assert summary.fraction == pytest.approx(0.5)
    assert summary.sentence().startswith("1 of 2 classes (50%)")
    assert math.isnan(summarise_alignment([]).fraction)
    assert "cannot be measured" in summarise_alignment([]).sentence()


# ---- the latent-space figure: a colour per class, photos on top, alignment lines, highlight -----------


def _scene():
    from acmr_core.viz.plots import LatentScene

    return LatentScene(
        class_names=["zebra", "okapi", "mine"],
        class_kinds=["seen", "unseen", "user"],
        class_xy=np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]]),
        image_xy=np.array([[1.0, 1.0], [3.0, 1.0], [10.0, 4.0], [10.0, 6.0]]),
        image_class=np.array([0, 0, 1, 1]),
        image_ids=["z0", "z1", "o0", "o1"],
    )


def _prototype_colour(figure, name: str) -> str:
    """The colour of class ``name``'s prototype marker, whichever trace (kind) draws it."""
    for trace in figure.data:
        is_prototype = trace.name.endswith("prototypes") or trace.name == "your classes"
        if is_prototype and name in list(trace.customdata):
            return trace.marker.color[list(trace.customdata).index(name)]
    raise AssertionError(f"no prototype for {name}")


def test_a_photo_shares_its_class_colour_and_the_legend_names_the_kinds() -> None:
    from acmr_core.viz.plots import latent_figure

    figure = latent_figure(_scene())
    by_name = {trace.name: trace for trace in figure.data}
    for trace_name in ("seen class images", "unseen class images"):
        photos = by_name[trace_name]
        for colour, class_name in zip(photos.marker.color, photos.customdata[:, 0], strict=True):
            assert colour == _prototype_colour(figure, class_name)
    colours = [_prototype_colour(figure, name) for name in ("zebra", "okapi", "mine")]
    assert len(set(colours)) == 3  # three classes, three colours
    # The kind is in the legend (one entry per kind, not per class) and the symbol.
    assert all(trace.showlegend is not False for trace in figure.data)
    assert by_name["seen class images"].marker.symbol != by_name["unseen class images"].marker.symbol
    # Hover names the photo's class.
    assert "zebra" in list(by_name["seen class images"].customdata[:, 0])
    assert "customdata[0]" in by_name["seen class images"].hovertemplate
    # A class keeps its colour when the map is filtered or another class is highlighted.
    only_okapi = latent_figure(_scene(), classes=["okapi"])
    assert _prototype_colour(only_okapi, "okapi") == colours[1]
    assert _prototype_colour(latent_figure(_scene(), highlight="zebra"), "okapi") == colours[1]


def test_photos_are_drawn_above_the_prototypes_smaller_and_see_through() -> None:
    from acmr_core.viz.plots import QueryPoint, latent_figure

    figure = latent_figure(_scene(), query=QueryPoint((2.0, 2.0), "zebra"))
    by_name = {trace.name: trace for trace in figure.data}
    photos = [by_name["seen class images"], by_name["unseen class images"]]
    prototypes = [by_name["seen class prototypes"], by_name["unseen class prototypes"]]
    # Every photo lies near (often under) its class's diamond: photos must be in front of every prototype.
    assert min(trace.zorder for trace in photos) > max(trace.zorder for trace in prototypes)
    for photo in photos:
        assert photo.marker.opacity < 1.0
        assert all(photo.marker.size < prototype.marker.size for prototype in prototypes)
    # Your classes are above the photos, your image above everything and drawn last.
    assert by_name["your classes"].zorder > max(trace.zorder for trace in photos)
    assert figure.data[-1].name == "your image"
    assert figure.data[-1].zorder > max(trace.zorder for trace in figure.data[:-1])
    assert figure.data[-1].marker.size > by_name["seen class prototypes"].marker.size


def test_class_colours_differ_up_to_the_palette_size_and_then_keep_neighbours_apart() -> None:
    from acmr_core.viz.plots import CLASS_PALETTE, class_colours

    rng = np.random.default_rng(3)
    xy = rng.normal(size=(len(CLASS_PALETTE), 2))
    assert len(set(class_colours(xy))) == len(CLASS_PALETTE)
    # Two colours, points at 0, 10, 1, 11 on a line: cycling would give the close pair (0, 1) one colour.
    line = np.array([[0.0, 0.0], [10.0, 0.0], [1.0, 0.0], [11.0, 0.0]])
    assert class_colours(line, palette=("a", "b")) == ["a", "b", "b", "a"]
    # Appending a class (one of yours) never recolours the earlier ones.
    more = np.vstack([xy, rng.normal(size=(30, 2))])
    assert class_colours(more)[: len(xy)] == class_colours(xy)


def _big_scene(n_classes: int = 200, per_class: int = 15):
    from acmr_core.viz.plots import LatentScene

    rng = np.random.default_rng(7)
    kinds = ["seen"] * 150 + ["unseen"] * (n_classes - 152) + ["user"] * 2
    class_xy = rng.uniform(-50, 50, size=(n_classes, 2))
    with_images = [index for index, kind in enumerate(kinds) if kind != "user"]
    image_class = np.repeat(with_images, per_class)
    image_xy = class_xy[image_class] + rng.normal(scale=0.5, size=(len(image_class), 2))
    names = [f"class {index}" for index in range(n_classes - 1)] + ["<b>bold</b> & co"]
    return LatentScene(
        class_names=names,
        class_kinds=kinds,
        class_xy=class_xy,
        image_xy=image_xy,
        image_class=image_class,
        image_ids=[f"i{index}" for index in range(len(image_class))],
    )


def test_two_hundred_classes_and_thousands_of_photos_stay_a_handful_of_traces() -> None:
    from acmr_core.viz.plots import QueryPoint, latent_figure

    scene = _big_scene()
    assert len(scene.image_ids) == 198 * 15
    figure = latent_figure(scene, query=QueryPoint((0.0, 0.0), "class 3"))
    # One trace per kind (legend per kind), not per class.
    assert [trace.name for trace in figure.data] == [
        "seen class images",
        "unseen class images",
        "seen class prototypes",
        "unseen class prototypes",
        "your classes",
        "your image",
    ]
    assert sum(len(trace.x) for trace in figure.data[:2]) == len(scene.image_ids)
    # Each class's nearest other class on the map has another colour (23 colours cycled over 200 classes).
    colours = {name: _prototype_colour(figure, name) for name in scene.class_names[:-1]}
    colours[scene.class_names[-1]] = _prototype_colour(figure, "&lt;b&gt;bold&lt;/b&gt; &amp; co")
    distance = np.linalg.norm(scene.class_xy[:, None] - scene.class_xy[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    nearest = distance.argmin(axis=1)
    names = list(scene.class_names)
    assert all(colours[names[i]] != colours[names[j]] for i, j in enumerate(nearest))
    assert "<b>bold" not in figure.to_json()  # names stay escaped


def _lines(figure) -> list:
    return [shape for shape in figure.layout.shapes if shape.type == "line"]


def test_each_prototype_is_joined_to_the_centre_of_its_photos_and_sits_on_a_tinted_cloud() -> None:
    from acmr_core.viz.plots import latent_figure

    figure = latent_figure(_scene())
    by_name = {trace.name: trace for trace in figure.data}
    lines = _lines(figure)
    assert len(lines) == 2  # zebra and okapi; "mine" (a user class) has no images
    for line, name, kind in zip(lines, ("zebra", "okapi"), ("seen", "unseen"), strict=True):
        prototypes = by_name[f"{kind} class prototypes"]
        at = list(prototypes.customdata).index(name)
        assert (line.x0, line.y0) == pytest.approx((prototypes.x[at], prototypes.y[at]))
        photos = by_name[f"{kind} class images"]
        own = [i for i, row in enumerate(photos.customdata) if row[0] == name]
        centre = (np.mean([photos.x[i] for i in own]), np.mean([photos.y[i] for i in own]))
        assert (line.x1, line.y1) == pytest.approx(centre, abs=1e-6)
    assert [line.showlegend for line in lines] == [True, False]  # one legend entry for all lines
    # A disc in the class's colour behind each class's photos.
    discs = [shape for shape in figure.layout.shapes if shape.type == "circle"]
    assert sorted(disc.fillcolor for disc in discs) == sorted(
        [_prototype_colour(figure, "zebra"), _prototype_colour(figure, "okapi")]
    )
    assert len(_lines(latent_figure(_scene(), classes=["okapi"]))) == 1


def test_highlight_brings_one_class_forward_and_fades_the_rest() -> None:
    from acmr_core.viz.plots import latent_figure

    figure = latent_figure(_scene(), highlight="okapi")
    by_name = {trace.name: trace for trace in figure.data}
    assert list(by_name["unseen class images"].marker.opacity) == [1.0, 1.0]
    assert max(by_name["seen class images"].marker.opacity) < 0.5
    assert [note.text for note in figure.layout.annotations] == ["okapi", "mine"]  # it, then the user class
    # Its photos (drawn on top, enlarged) still leave its prototype's rim showing.
    assert max(by_name["unseen class images"].marker.size) < min(
        by_name["unseen class prototypes"].marker.size
    )
    zebra_line, okapi_line = _lines(figure)
    assert okapi_line.opacity > zebra_line.opacity
    # An unknown name (a class deleted meanwhile) highlights nothing rather than failing.
    plain = latent_figure(_scene(), highlight="gone")
    assert latent_figure(_scene()).to_json() == plain.to_json()
